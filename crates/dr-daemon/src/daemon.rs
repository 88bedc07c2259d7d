//! The daemon's main task: journal, backend, API, then the control loop with
//! API commands and configuration reloads between ticks.

use crate::api::{self, ApiState, Command};
use crate::backend;
use crate::config::DaemonConfig;
use crate::journal::{resolve_open, JournalPort};
use crate::state::{Shared, Status};
use dr_control::events::{ControlEvent, EventSink as _};
use dr_control::ControlLoop;
use dr_core::ports::{Clock, Hypervisor, Prober};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// Why the daemon cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The recovery journal (its errors say "journal" and the file).
    #[error(transparent)]
    Journal(#[from] dr_journal::JournalError),
    /// The backend.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The policy.
    #[error(transparent)]
    Policy(#[from] dr_core::PolicyError),
    /// The API's address.
    // The cause is in the text, not also a `source`: printed as a chain
    // it came out twice.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
    /// A check before the start failed (a file the configuration names).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `[cluster]` cannot work (an etcd client that cannot be built).
    #[error("cluster: {0}")]
    Cluster(String),
    /// A worker failed.
    #[error("internal: {0}")]
    Internal(String),
}

/// How long shutdown waits for running recoveries before leaving them to
/// the journal (the next start resolves them).
const DRAIN: Duration = Duration::from_secs(30);

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The control loop as the daemon runs it: over any backend.
type Loop = ControlLoop<dyn Hypervisor, dyn Prober, dyn Clock>;

/// Runs the daemon until `shutdown` turns true. `reload` asks for the
/// configuration file to be re-read (SIGHUP); it is also re-read when it
/// changes on disk. `listening` learns the API's address once it is bound.
pub async fn run(
    cfg: DaemonConfig,
    shutdown: watch::Receiver<bool>,
    reload: mpsc::Receiver<()>,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), DaemonError> {
    crate::preflight::check(&cfg)?;
    // Bound first: a cluster node advertises where its API answers.
    let listener = bind_api(&cfg).await?;
    let (stop_tasks, tasks_stopped) = watch::channel(false);
    let node = join_cluster(&cfg, &listener, &tasks_stopped)?;
    let journal: Arc<dyn dr_journal::Store> = match &node {
        Some(n) => n.journal.clone(),
        None => open_journal(&cfg.journal).await?,
    };
    let state_dir = cfg
        .journal
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let ports = backend::start(&cfg.backend, &state_dir).await?;
    let (hv, restores) =
        with_replica_receivers(&cfg, ports.hv.clone(), tasks_stopped.clone()).await?;
    let hv = match &cfg.agents {
        Some(a) => crate::agents::start(a, hv, ports.clock.clone(), tasks_stopped.clone()).await?,
        None => hv,
    };
    let authority = node
        .as_ref()
        .map(|n| n.authority.clone() as Arc<dyn dr_core::ports::Authority>);
    // In a cluster, every change goes through the node's authority: a node
    // that does not lead starts nothing, whichever task would.
    let hv: Arc<dyn Hypervisor> = match &authority {
        Some(a) => Arc::new(dr_core::ports::Authorized::new(hv, a.clone())),
        None => hv,
    };
    // A single daemon resolves what its previous run left open now; a
    // cluster node when it takes over (`Running::take_over`).
    let interrupted = match &node {
        None => close_interrupted(&journal, ports.clock.now()).await?,
        Some(_) => crate::journal::Resolved::default(),
    };
    let shared = Arc::new(Shared::default());
    let fence = fence_agents(&cfg)?;
    let mut fencer = loop_fencer(&cfg, &ports, &fence);
    if let Some(a) = &authority {
        fencer = Arc::new(dr_core::ports::AuthorizedFencer::new(fencer, a.clone()));
    }
    let mut control: Loop = ControlLoop::new(
        hv.clone(),
        ports.prober.clone(),
        ports.clock.clone(),
        shared.clone(),
        cfg.control.clone(),
    )?
    .with_journal(Arc::new(JournalPort(journal.clone())))
    .with_fencer(fencer);
    if let Some(a) = &authority {
        control = control.with_authority(a.clone());
    }
    hold_interrupted(&mut control, &shared, interrupted, &cfg, ports.clock.now());
    let saved_addresses = saved_addresses(&journal, node.is_some()).await?;
    control.remember_ips(saved_addresses.clone());
    restore_pauses(&mut control, &shared, &journal).await;
    let snapshot_cfg = start_tasks(&cfg, &hv, &ports, &shared, &authority, &tasks_stopped);
    let (commands, command_rx) = mpsc::channel::<Command>(64);
    let server = start_api(
        &cfg,
        listener,
        ApiState {
            shared: shared.clone(),
            commands: commands.clone(),
            token: cfg.api.token.as_deref().map(Arc::from),
            journal: journal.clone(),
            restores: restores.clone(),
            stopping: tasks_stopped.clone(),
            cluster: node.as_ref().map(|n| n.leadership.clone()),
            // An operation (a failover) may take minutes: the leader's
            // answer is waited for as long as the caller waits.
            forward: reqwest::Client::new(),
        },
        &tasks_stopped,
        listening,
    )?;

    let mut daemon = Running {
        seen_mtime: mtime(&cfg.path),
        operations: Operations {
            hv: hv.clone(),
            clock: ports.clock.clone(),
            journal: journal.clone(),
            events: shared.clone(),
            restores,
        },
        clock: ports.clock.clone(),
        cfg,
        control,
        shared,
        fence,
        journal,
        node,
        loopback: commands,
        failing_over: std::collections::BTreeSet::new(),
        snapshot_cfg,
        saved_addresses,
        ticks: 0,
        budget_of: None,
    };
    daemon.serve(shutdown, reload, command_rx).await;
    daemon.drain().await;
    let _ = stop_tasks.send(true);
    let _ = server.await;
    if let Some(v) = ports.vsphere {
        v.close().await;
    }
    Ok(())
}

/// Binds the API's listener.
async fn bind_api(cfg: &DaemonConfig) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .map_err(|cause| DaemonError::Listen {
            addr: cfg.api.listen,
            cause,
        })
}

/// With `[cluster]`: this node's campaign, started (it ends, giving the
/// leadership up, when the tasks stop). etcd need not answer yet: until it
/// does, the node acts on nothing.
fn join_cluster(
    cfg: &DaemonConfig,
    listener: &tokio::net::TcpListener,
    tasks_stopped: &watch::Receiver<bool>,
) -> Result<Option<crate::cluster::Node>, DaemonError> {
    let Some(c) = &cfg.cluster else {
        return Ok(None);
    };
    let addr = listener.local_addr().map_err(|cause| DaemonError::Listen {
        addr: cfg.api.listen,
        cause,
    })?;
    crate::cluster::start(c, addr, tasks_stopped.clone())
        .map(Some)
        .map_err(|e| DaemonError::Cluster(e.to_string()))
}

/// The pauses operators set, as stored: they outlive a restart (and, in a
/// cluster, the leader that set them).
async fn restore_pauses(control: &mut Loop, shared: &Shared, journal: &Arc<dyn dr_journal::Store>) {
    let j = journal.clone();
    match tokio::task::spawn_blocking(move || j.paused()).await {
        Ok(Ok(paused)) => {
            for vm in paused {
                tracing::info!(%vm, "automation stays paused for this VM, as an operator set it");
                control.set_paused(&vm, true);
                shared.set_paused(&vm, true);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the stored pauses"),
        Err(e) => tracing::warn!(error = %e, "cannot read the stored pauses"),
    }
}

/// The hosts' fence devices, as the loop's `Fencer`.
fn fence_agents(cfg: &DaemonConfig) -> Result<Arc<dr_fence::FenceAgents>, DaemonError> {
    for d in &cfg.fence {
        tracing::info!(host = %d.host, agent = %d.agent.display(), "fence device");
    }
    dr_fence::FenceAgents::new(cfg.fence.clone())
        .map(Arc::new)
        .map_err(|e| DaemonError::Internal(e.to_string()))
}

/// The loop's fencer: the backend's own devices when it has them (the
/// simulated hosts'), else `[[fence.device]]`.
fn loop_fencer(
    cfg: &DaemonConfig,
    ports: &backend::Ports,
    fence: &Arc<dr_fence::FenceAgents>,
) -> Arc<dyn dr_core::ports::Fencer> {
    match &ports.fencer {
        Some(own) => {
            if !cfg.fence.is_empty() {
                tracing::warn!("the simulated datacenter's own fence devices are used; [[fence.device]] is ignored");
            }
            own.clone()
        }
        None => fence.clone(),
    }
}

/// Opens the recovery journal, off the async threads.
async fn open_journal(path: &std::path::Path) -> Result<Arc<dyn dr_journal::Store>, DaemonError> {
    let path = path.to_path_buf();
    let journal = tokio::task::spawn_blocking(move || dr_journal::Journal::open(&path))
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))??;
    Ok(Arc::new(journal))
}

/// Closes the recoveries a previous run left open, and returns them.
async fn close_interrupted(
    journal: &Arc<dyn dr_journal::Store>,
    now: dr_core::Timestamp,
) -> Result<crate::journal::Resolved, DaemonError> {
    let j = journal.clone();
    let resolved = tokio::task::spawn_blocking(move || resolve_open(&*j, now.0))
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))??;
    if !resolved.closed.is_empty() {
        tracing::warn!(
            count = resolved.closed.len(),
            "closed recoveries left open by the previous run"
        );
    }
    Ok(resolved)
}

/// An interrupted recovery may still be finishing in the hypervisor (a
/// vCenter task outlives the client that started it): no new recovery of
/// that VM until it would have timed out. Its VM then shows running, or is
/// decided afresh. The VM of an entry that cannot be read is paused: what
/// was under way there is for a person to find out.
fn hold_interrupted(
    control: &mut Loop,
    shared: &Shared,
    interrupted: crate::journal::Resolved,
    cfg: &DaemonConfig,
    now: dr_core::Timestamp,
) {
    for entry in interrupted.closed {
        if let Some(until) = crate::journal::hold_until(&entry, now, cfg.control.action_timeout) {
            tracing::warn!(vm = %entry.intent.vm, until = %until, "no recovery of this VM until its interrupted one would have timed out");
            control.hold(entry.intent.vm, until);
        }
    }
    for d in interrupted.damaged {
        if let Some(vm) = d.vm {
            tracing::error!(%vm, key = %d.key, "automation paused for this VM: its interrupted recovery cannot be read");
            control.set_paused(&vm, true);
            shared.set_paused(&vm, true);
        }
    }
}

/// The name → address map of the previous run: a VM seen without an IP
/// (off, no guest tools yet) is still watched where it was.
/// In a cluster, etcd may not answer yet: the node starts without them
/// (it acts on nothing until etcd answers anyway).
async fn saved_addresses(
    journal: &Arc<dyn dr_journal::Store>,
    in_cluster: bool,
) -> Result<std::collections::BTreeMap<String, std::net::IpAddr>, DaemonError> {
    let j = journal.clone();
    let stored = tokio::task::spawn_blocking(move || j.addresses())
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))?;
    let stored = match stored {
        Ok(s) => s,
        Err(e) if in_cluster => {
            tracing::warn!(error = %e, "cannot read the stored addresses yet; starting without them");
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    Ok(stored
        .into_iter()
        .filter_map(|(name, ip)| match ip.parse() {
            Ok(ip) => Some((name, ip)),
            Err(_) => {
                tracing::warn!(vm = %name, address = %ip, "ignoring an unreadable stored address");
                None
            }
        })
        .collect())
}

/// The daemon's tasks beside the loop: replication of protected VMs, the
/// snapshot schedulers (whose configuration the returned sender updates),
/// and a simulated datacenter's fault schedule. All stop with the tasks.
fn start_tasks(
    cfg: &DaemonConfig,
    hv: &Arc<dyn Hypervisor>,
    ports: &backend::Ports,
    shared: &Arc<Shared>,
    authority: &Option<Arc<dyn dr_core::ports::Authority>>,
    tasks_stopped: &watch::Receiver<bool>,
) -> watch::Sender<crate::snapshots::SnapshotConfig> {
    if let Some(r) = &cfg.replication {
        let r = Arc::new(r.clone());
        for p in &r.vms {
            tracing::info!(vm = %p.vm, targets = ?p.targets, "replication protects it");
            tokio::spawn(crate::replication::protect(
                p.clone(),
                r.clone(),
                shared.replication.clone(),
                tasks_stopped.clone(),
            ));
        }
    }
    let (snapshot_cfg, snapshot_rx) = watch::channel(cfg.snapshots);
    for kind in [crate::snapshots::Kind::Vm, crate::snapshots::Kind::Host] {
        tokio::spawn(crate::snapshots::run(
            hv.clone(),
            ports.clock.clone(),
            kind,
            snapshot_rx.clone(),
            shared.clone(),
            authority.clone(),
            tasks_stopped.clone(),
        ));
    }
    if let Some(world) = &ports.world {
        tokio::spawn(dr_sim::fault::inject_in_real_time(
            world.clone(),
            ports.faults.clone(),
            ports.clock.clone(),
            tasks_stopped.clone(),
        ));
    }
    snapshot_cfg
}

/// Serves the API on `listener` until the tasks stop, and tells
/// `listening` where.
fn start_api(
    cfg: &DaemonConfig,
    listener: tokio::net::TcpListener,
    state: ApiState,
    tasks_stopped: &watch::Receiver<bool>,
    listening: impl FnOnce(SocketAddr),
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let addr = listener.local_addr().map_err(|cause| DaemonError::Listen {
        addr: cfg.api.listen,
        cause,
    })?;
    let app = api::router(state);
    let mut api_stopped = tasks_stopped.clone();
    let server = tokio::spawn(async move {
        let stopping = async move {
            let _ = api_stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopping)
            .await
        {
            tracing::error!(error = %e, "API server failed");
        }
    });
    tracing::info!(%addr, "API listening");
    listening(addr);
    Ok(server)
}

/// The running daemon: the loop and what it serves between ticks.
struct Running {
    /// The configuration in force (reloads replace what they may).
    cfg: DaemonConfig,
    control: Loop,
    shared: Arc<Shared>,
    fence: Arc<dr_fence::FenceAgents>,
    journal: Arc<dyn dr_journal::Store>,
    /// This daemon as a cluster node; `None`: a single daemon.
    node: Option<crate::cluster::Node>,
    clock: Arc<dyn Clock>,
    operations: Operations,
    /// Commands the daemon's own operations send back (a failover done).
    loopback: mpsc::Sender<Command>,
    failing_over: std::collections::BTreeSet<String>,
    snapshot_cfg: watch::Sender<crate::snapshots::SnapshotConfig>,
    /// The addresses last stored in the journal.
    saved_addresses: std::collections::BTreeMap<String, std::net::IpAddr>,
    /// When the configuration file was last seen changed.
    seen_mtime: Option<SystemTime>,
    ticks: u64,
    /// The fingerprint of what the failure budget was last computed on.
    budget_of: Option<u64>,
}

impl Running {
    /// Ticks every probe interval, and between ticks serves commands and
    /// reloads, until `shutdown` turns true.
    async fn serve(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
        mut reload: mpsc::Receiver<()>,
        mut command_rx: mpsc::Receiver<Command>,
    ) {
        let mut file_check = tokio::time::interval(Duration::from_secs(1));
        let mut next = self.clock.now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                Some(cmd) = command_rx.recv() => self.command(cmd),
                Some(()) = reload.recv() => {
                    self.reload("SIGHUP");
                    self.seen_mtime = mtime(&self.cfg.path);
                }
                _ = file_check.tick() => {
                    let now = mtime(&self.cfg.path);
                    if now != self.seen_mtime {
                        self.seen_mtime = now;
                        self.reload("file changed");
                    }
                }
                () = self.clock.sleep_until(next) => {
                    self.tick().await;
                    next = next
                        .saturating_add(self.control.config().probe_interval)
                        .max(self.clock.now());
                }
            }
        }
    }

    /// An operator's command from the API.
    fn command(&mut self, cmd: Command) {
        let control = &mut self.control;
        match cmd {
            Command::Pause { vm, paused, reply } => {
                let answer = if control.registry().vm_idx(&vm).is_some() {
                    control.set_paused(&vm, paused);
                    // Shown at once, not from the next tick on: an
                    // operator checks right after pausing.
                    self.shared.set_paused(&vm, paused);
                    tracing::info!(%vm, paused, "automation {} by an operator", if paused { "paused" } else { "resumed" });
                    Ok(())
                } else {
                    Err(format!("no VM named {vm:?} is monitored"))
                };
                let _ = reply.send(answer);
            }
            Command::Failover {
                vm,
                to,
                checkpoint,
                reply,
            } => {
                if control.registry().vm_idx(&vm).is_none() {
                    let _ = reply.send(Err(format!("no VM named {vm:?} is monitored")));
                } else if !self.failing_over.insert(vm.clone()) {
                    let _ = reply.send(Err(format!("a failover of {vm} is under way")));
                } else {
                    // Automation stays off the VM while it moves.
                    let was_paused = control.paused().contains(&vm);
                    control.set_paused(&vm, true);
                    tracing::info!(%vm, to = ?to, checkpoint = ?checkpoint, "planned failover requested");
                    tokio::spawn(self.operations.clone().planned_failover(
                        vm,
                        to,
                        checkpoint,
                        was_paused,
                        reply,
                        self.loopback.clone(),
                    ));
                }
            }
            Command::Drill { vm, to, reply } => {
                if control.registry().vm_idx(&vm).is_none() {
                    let _ = reply.send(Err(format!("no VM named {vm:?} is monitored")));
                } else {
                    tracing::info!(%vm, to = ?to, "recovery drill requested");
                    tokio::spawn(self.operations.clone().drill(vm, to, reply));
                }
            }
            Command::FailoverDone { vm, was_paused } => {
                self.failing_over.remove(&vm);
                control.set_paused(&vm, was_paused);
            }
        }
    }

    /// One tick of the loop, then what it changed: the stored addresses,
    /// the published status, the failure budget.
    async fn tick(&mut self) {
        self.take_over().await;
        self.control.tick().await;
        self.shared.metrics.probes(self.control.last_probes());
        if self.control.acting() {
            self.store_addresses();
        } else if self.node.is_some() && self.ticks.is_multiple_of(10) {
            self.follow_pauses().await;
        }
        self.ticks += 1;
        let now = self.clock.now();
        // Stale past three intervals: a tick or two may fail on a blip
        // without the daemon calling itself unready.
        let view = crate::state::ViewStatus::new(
            self.control.health(),
            now,
            self.control.config().probe_interval * 3,
        );
        self.shared.publish(Status::from_registry(
            self.control.registry(),
            self.control.paused(),
            self.ticks,
            now,
            self.control.in_flight(),
            view,
        ));
        refresh_budget(&self.control, &self.shared, &mut self.budget_of, now);
    }

    /// A cluster node that has just become leader, before it acts: what
    /// the previous leader left under way is closed in the journal and its
    /// VMs held for one action timeout from now (every attempt of the old
    /// leader started before its deadline, so before now, and ends within
    /// a timeout); the stored pauses are applied. Until this has read the
    /// journal, the node's authority refuses every change.
    async fn take_over(&mut self) {
        let Some(node) = &self.node else {
            return;
        };
        let Some(epoch) = node.authority.takeover_due() else {
            return;
        };
        let authority = node.authority.clone();
        let now = self.clock.now();
        let j = self.journal.clone();
        let resolved = tokio::task::spawn_blocking(move || resolve_open(&*j, now.0)).await;
        let resolved = match resolved {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(epoch, error = %e, "leads, but cannot read the journal to take over: acts on nothing yet");
                return;
            }
            Err(e) => {
                tracing::warn!(epoch, error = %e, "leads, but the takeover failed: acts on nothing yet");
                return;
            }
        };
        let until = now.saturating_add(self.cfg.control.action_timeout);
        for e in &resolved.closed {
            tracing::warn!(vm = %e.intent.vm, action = %e.intent.action, until = %until, "the previous leader left this recovery under way: no recovery of its VM before then");
            self.control.hold(e.intent.vm.clone(), until);
        }
        hold_interrupted(
            &mut self.control,
            &self.shared,
            crate::journal::Resolved {
                closed: Vec::new(),
                damaged: resolved.damaged,
            },
            &self.cfg,
            now,
        );
        restore_pauses(&mut self.control, &self.shared, &self.journal).await;
        authority.taken_over(epoch);
        tracing::info!(
            epoch,
            left_under_way = resolved.closed.len(),
            "took over the cluster's automation"
        );
    }

    /// A follower keeps the pauses operators set on the leader, so its
    /// status shows them and its own takeover starts from them.
    async fn follow_pauses(&mut self) {
        let j = self.journal.clone();
        let Ok(Ok(stored)) = tokio::task::spawn_blocking(move || j.paused()).await else {
            return;
        };
        let stored: std::collections::BTreeSet<String> = stored.into_iter().collect();
        let now: Vec<String> = self.control.paused().iter().cloned().collect();
        for vm in now.iter().filter(|v| !stored.contains(*v)) {
            self.control.set_paused(vm, false);
            self.shared.set_paused(vm, false);
        }
        for vm in &stored {
            self.control.set_paused(vm, true);
            self.shared.set_paused(vm, true);
        }
    }

    /// Stores the VMs' addresses in the journal when a VM or its address
    /// changed (compared in place every tick; built and stored only then,
    /// which is rare), off the async threads.
    fn store_addresses(&mut self) {
        let entries = &self.control.registry().vm_entries;
        let same = entries.iter().filter(|e| e.ip.is_some()).count() == self.saved_addresses.len()
            && entries.iter().all(|e| {
                e.ip.is_none_or(|ip| self.saved_addresses.get(&e.name) == Some(&ip))
            });
        if same {
            return;
        }
        self.saved_addresses = entries
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.ip?)))
            .collect();
        let list: Vec<(String, String)> = self
            .saved_addresses
            .iter()
            .map(|(n, ip)| (n.clone(), ip.to_string()))
            .collect();
        let j = self.journal.clone();
        tokio::spawn(async move {
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.save_addresses(&list)).await {
                tracing::warn!(error = %e, "cannot store the VMs' addresses");
            }
        });
    }

    /// Re-reads the configuration: a valid file applies from the next tick
    /// (what needs a restart says so), an invalid one is refused and the
    /// running configuration stays.
    fn reload(&mut self, why: &str) {
        let new = match DaemonConfig::load(&self.cfg.path) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(error = %e, why, "configuration refused; the running one stays");
                self.shared.metrics.reload(false);
                return;
            }
        };
        if let Err(e) = self.control.reconfigure(new.control.clone()) {
            tracing::error!(error = %e, why, "configuration refused; the running one stays");
            self.shared.metrics.reload(false);
            return;
        }
        if new.fence != self.cfg.fence {
            // Checked by the load: one device per host.
            if let Err(e) = self.fence.set_devices(new.fence.clone()) {
                tracing::error!(error = %e, why, "fence devices refused; the running ones stay");
            } else {
                tracing::info!(devices = new.fence.len(), "fence devices reloaded");
            }
        }
        let running = &self.cfg;
        if new.api.listen != running.api.listen
            || new.journal != running.journal
            || new.replication != running.replication
        {
            tracing::warn!("api, journal and replication settings take effect at the next start");
        }
        tracing::info!(
            why,
            probe_interval = ?new.control.probe_interval,
            inventory_interval = ?new.control.inventory_interval,
            "configuration reloaded"
        );
        self.shared.metrics.reload(true);
        self.cfg = DaemonConfig {
            api: running.api.clone(),
            journal: running.journal.clone(),
            backend: running.backend.clone(),
            replication: running.replication.clone(),
            ..new
        };
        let snapshots = self.cfg.snapshots;
        self.snapshot_cfg
            .send_if_modified(|c| std::mem::replace(c, snapshots) != snapshots);
    }

    /// Waits for running recoveries, for up to [`DRAIN`]; what is still
    /// running is left open in the journal, for the next start.
    async fn drain(&mut self) {
        tracing::info!(in_flight = self.control.in_flight(), "shutting down");
        if tokio::time::timeout(DRAIN, self.control.drain())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.control.in_flight(),
                "recoveries still running at shutdown: left open in the journal, resolved at the next start"
            );
        }
    }
}

/// Where protected VMs come back from, by name: the replica this daemon
/// receives for each.
pub type Restores = Arc<std::collections::BTreeMap<String, crate::replica_restore::RestorePlan>>;

/// Starts the replicas this daemon receives (it is then a DR site's
/// receiver too) and, for protected VMs restored from one of them, wraps
/// the hypervisor so that a failover writes their disks from the newest
/// complete checkpoint first; returns it with those VMs' plans (for a
/// failover to a checkpoint the operator chooses). Receivers stop with the
/// daemon's tasks.
async fn with_replica_receivers(
    cfg: &DaemonConfig,
    hv: Arc<dyn Hypervisor>,
    stopped: watch::Receiver<bool>,
) -> Result<(Arc<dyn Hypervisor>, Restores), DaemonError> {
    let Some(r) = &cfg.replication else {
        return Ok((hv, Restores::default()));
    };
    let mut replicas = std::collections::BTreeMap::new();
    for rc in &r.receive {
        let (dir, keep) = (rc.dir.clone(), rc.keep);
        let replica =
            tokio::task::spawn_blocking(move || dr_replication::Replica::open(&dir, keep))
                .await
                .map_err(|e| DaemonError::Internal(e.to_string()))?
                .map_err(|e| DaemonError::Internal(format!("replica {}: {e}", rc.dir.display())))?;
        let replica = Arc::new(std::sync::Mutex::new(replica));
        let listener = tokio::net::TcpListener::bind(rc.listen)
            .await
            .map_err(|cause| DaemonError::Listen {
                addr: rc.listen,
                cause,
            })?;
        tracing::info!(listen = %rc.listen, dir = %rc.dir.display(), "receiving a replica");
        tokio::spawn(dr_replication::net::serve(
            listener,
            replica.clone(),
            Arc::new(r.key.clone()),
            stopped.clone(),
        ));
        replicas.insert(rc.dir.clone(), replica);
    }
    let plans: std::collections::BTreeMap<String, crate::replica_restore::RestorePlan> = r
        .vms
        .iter()
        .filter_map(|p| {
            let (dir, images) = p.restore.as_ref()?;
            Some((
                p.vm.clone(),
                crate::replica_restore::RestorePlan {
                    replica: replicas.get(dir)?.clone(),
                    dir: dir.clone(),
                    images: images.clone(),
                },
            ))
        })
        .collect();
    if plans.is_empty() {
        return Ok((hv, Restores::default()));
    }
    let restores = Arc::new(plans.clone());
    Ok((
        Arc::new(crate::replica_restore::ReplicaRestore::new(hv, plans)),
        restores,
    ))
}

/// Recomputes the failure budget when what it rests on changed since the
/// last time (`seen`: that picture's fingerprint), off the async threads;
/// the shared state gets it when it is ready.
fn refresh_budget<H, P, C>(
    control: &ControlLoop<H, P, C>,
    shared: &Arc<Shared>,
    seen: &mut Option<u64>,
    now: dr_core::Timestamp,
) where
    H: Hypervisor + ?Sized + 'static,
    P: Prober + ?Sized + 'static,
    C: Clock + ?Sized + 'static,
{
    let fp = crate::budget::fingerprint(control.registry());
    if *seen == Some(fp) || control.health().failing.is_some() {
        // Unchanged, or resting on a view that failed to refresh.
        return;
    }
    *seen = Some(fp);
    let input = crate::budget::Input::of(control.registry());
    let engine = control.engine().clone();
    let policy = engine.policy();
    let durations = crate::budget::Durations {
        restore_ms: shared.metrics.median_ms("restore"),
        add_host_ms: shared.metrics.median_ms("add_host_then_restore"),
        recover_host_ms: shared.metrics.median_ms("recover_host"),
        fence_ms: shared.metrics.median_ms("fence_host"),
        detect: policy.host_down_after
            + control.config().probe_interval * u32::from(policy.failure_threshold),
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let computed = tokio::task::spawn_blocking(move || {
            crate::budget::compute(&engine, &input, now, durations)
        })
        .await;
        match computed {
            Ok(b) => shared.set_budget(b),
            Err(e) => tracing::error!(error = %e, "failure budget computation failed"),
        }
    });
}

/// What an operation an operator asked for (a planned failover, a drill)
/// needs: the ports, the journal, and the event stream it reports to.
#[derive(Clone)]
struct Operations {
    hv: Arc<dyn Hypervisor>,
    clock: Arc<dyn Clock>,
    journal: Arc<dyn dr_journal::Store>,
    events: Arc<Shared>,
    restores: Restores,
}

/// An operation decided and about to begin: what the journal and the
/// events record.
struct Begun<'a> {
    operation: &'static str,
    vm: &'a str,
    from: String,
    to: String,
}

impl Operations {
    /// Runs `work` with its intent in the journal (begun, durably, before
    /// it starts; ended with its outcome; not started if the journal
    /// fails), and in the event stream as it starts and ends.
    async fn journaled<T>(
        &self,
        op: Begun<'_>,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let started = self.clock.now();
        let intent = dr_journal::Intent {
            vm: op.vm.to_owned(),
            action: op.operation.into(),
            from_host: Some(op.from.clone()),
            to_host: Some(op.to.clone()),
            started_ms: started.0,
        };
        let j = self.journal.clone();
        let id = tokio::task::spawn_blocking(move || j.begin(&intent))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| format!("not started: the recovery journal failed: {e}"))?;
        self.events.emit(
            started,
            ControlEvent::OperationStarted {
                operation: op.operation,
                vm: op.vm.to_owned(),
                from: op.from.clone(),
                to: op.to.clone(),
            },
        );
        let result = work.await;
        let outcome = match &result {
            Ok(_) => dr_journal::Outcome::Succeeded,
            Err(e) => dr_journal::Outcome::Failed { error: e.clone() },
        };
        let now = self.clock.now();
        let j = self.journal.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.end(id, outcome, now.0)).await {
            tracing::error!(entry = id, error = %e, "cannot mark an operation ended in the journal");
        }
        self.events.emit(
            now,
            ControlEvent::OperationFinished {
                operation: op.operation,
                vm: op.vm.to_owned(),
                from: op.from,
                to: op.to,
                ok: result.is_ok(),
                duration_ms: now
                    .since(started)
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
                error: result.as_ref().err().cloned(),
            },
        );
        result
    }

    /// A drill as a task (it starts a copy of a VM). Decided first, so the
    /// journal records where the copy runs; a drill refused at that point
    /// touched nothing and is only answered.
    async fn drill(
        self,
        vm: String,
        to: Option<String>,
        reply: tokio::sync::oneshot::Sender<Result<crate::drill::DrillReport, String>>,
    ) {
        let result = match crate::drill::prepare(&*self.hv, &vm, to.as_deref()).await {
            Err(e) => Err(e.to_string()),
            Ok(planned) => {
                let begun = Begun {
                    operation: "drill",
                    vm: &vm,
                    from: planned.from.clone(),
                    to: planned.host.clone(),
                };
                self.journaled(begun, async {
                    crate::drill::execute(&*self.hv, &*self.clock, planned)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await
            }
        };
        match &result {
            Ok(r) => {
                tracing::info!(vm = %r.vm, host = %r.host, source = r.source, rto_ms = r.rto_ms, untouched = r.production_untouched, "recovery drill done")
            }
            Err(e) => tracing::warn!(%vm, error = %e, "recovery drill failed"),
        }
        let _ = reply.send(result);
    }

    /// A planned failover as a task: journaled like any recovery, reported
    /// to the operator, then automation handed back. Decided first, so the
    /// journal records both hosts; one refused at that point touched
    /// nothing and is only answered.
    async fn planned_failover(
        self,
        vm: String,
        to: Option<String>,
        checkpoint: Option<u64>,
        was_paused: bool,
        reply: tokio::sync::oneshot::Sender<Result<crate::failover::FailoverReport, String>>,
        loopback: mpsc::Sender<Command>,
    ) {
        let prepared = crate::failover::prepare(&*self.hv, &vm, to.as_deref(), checkpoint).await;
        let result = match prepared {
            Err(e) => Err(e.to_string()),
            Ok(planned) => {
                let begun = Begun {
                    operation: "planned_failover",
                    vm: &vm,
                    from: planned.from.clone(),
                    to: planned.to.clone(),
                };
                self.journaled(begun, async {
                    let replica = self.restores.get(&vm);
                    crate::failover::execute(&*self.hv, &*self.clock, planned, replica)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await
            }
        };
        match &result {
            Ok(r) => {
                tracing::info!(vm = %r.vm, from = %r.from, to = %r.to, method = r.method, downtime_ms = r.downtime_ms, "planned failover done")
            }
            Err(e) => tracing::warn!(%vm, error = %e, "planned failover failed"),
        }
        let _ = reply.send(result);
        let _ = loopback
            .send(Command::FailoverDone { vm, was_paused })
            .await;
    }
}
