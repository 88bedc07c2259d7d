use crate::events::{ControlEvent, EventSink};
use crate::executor::{self, Action, RetryPolicy};
use crate::journal::RecoveryJournal;
use crate::registry::Registry;
use dr_core::engine::{ledger, ClusterFacts, Fencing, PlanScratch};
use dr_core::model::{Heartbeat, HostLink, PowerEvent, PowerState};
use dr_core::ports::{Clock, Fencer, Hypervisor, NoFencer, ProbeTarget, Prober};
use dr_core::{Decision, Engine, Policy, PolicyError, Timestamp};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How the loop runs. Defaults suit a real datacenter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// The engine's rules.
    pub policy: Policy,
    /// Health is checked (probe + hypervisor view + decisions) this often.
    pub probe_interval: Duration,
    /// A probe not answered within this is a failed probe.
    pub probe_timeout: Duration,
    /// The inventory is re-read for new and removed objects this often.
    pub inventory_interval: Duration,
    /// Each attempt of each step of an action is abandoned after this.
    pub action_timeout: Duration,
    /// Each attempt of a fence (its device's off, then its status read) is
    /// abandoned after this.
    pub fence_timeout: Duration,
    /// Every fence device's status is read this often between incidents
    /// (a device found failing is reported before it is needed); zero: never.
    pub fence_monitor_interval: Duration,
    /// Retries of an action after a transient error (of a fence, after any
    /// failure).
    pub action_retries: u32,
    /// Pause between those retries.
    pub retry_delay: Duration,
    /// How far back the first read of the hypervisor's power events goes.
    /// A VM found off when the loop starts counts as stopped on purpose
    /// unless its events say otherwise: this is what lets a (re)started
    /// daemon recover a VM that crashed while it was down, or whose
    /// recovery it was killed in the middle of.
    pub event_lookback: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            policy: Policy::default(),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(800),
            inventory_interval: Duration::from_secs(60),
            action_timeout: Duration::from_secs(300),
            fence_timeout: Duration::from_secs(60),
            fence_monitor_interval: Duration::from_secs(300),
            action_retries: 2,
            retry_delay: Duration::from_secs(5),
            event_lookback: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the fence devices' monitor reports: one device's status read, or
/// the end of a round.
enum Monitored {
    Read(String, Result<dr_core::ports::FencePower, String>),
    Done,
}

/// An action's outcome, sent back from its task.
struct Completion {
    action: Action,
    ok: bool,
}

/// The control loop over a hypervisor, a prober and a clock. See the crate
/// documentation for what one tick does.
pub struct ControlLoop<H: ?Sized, P: ?Sized, C: ?Sized> {
    hv: Arc<H>,
    prober: Arc<P>,
    clock: Arc<C>,
    sink: Arc<dyn EventSink>,
    cfg: ControlConfig,
    engine: Engine,
    registry: Registry,
    scratch: PlanScratch,
    decisions: Vec<Decision>,
    cluster_in_flight: u32,
    /// Hosts' fence devices, and the fences running now (not recoveries:
    /// outside the recovery limits).
    fencer: Arc<dyn Fencer>,
    fences_in_flight: u32,
    /// The fence devices' monitor: its results, whether one runs, and when
    /// the next is due.
    monitor_tx: mpsc::UnboundedSender<Monitored>,
    monitor_rx: mpsc::UnboundedReceiver<Monitored>,
    monitoring: bool,
    next_monitor: Timestamp,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    events_since: Option<Timestamp>,
    next_inventory: Timestamp,
    synced: bool,
    journal: Option<Arc<dyn RecoveryJournal>>,
    /// Whether this loop may act now (a cluster's leader); without one it
    /// always may. While it may not, ticks observe and decide nothing.
    authority: Option<Arc<dyn dr_core::ports::Authority>>,
    /// Whether the last tick could act (to say so when that changes).
    acting: bool,
    paused: BTreeSet<String>,
    /// Sites the policy names that no host is on, already warned of.
    unknown_sites: BTreeSet<String>,
    last_probes: Vec<dr_core::ports::ProbeResult>,
    health: crate::health::ViewHealth,
}

impl<H, P, C> ControlLoop<H, P, C>
where
    H: Hypervisor + ?Sized + 'static,
    P: Prober + ?Sized + 'static,
    C: Clock + ?Sized + 'static,
{
    /// A loop over these ports. Fails on an invalid policy.
    pub fn new(
        hv: Arc<H>,
        prober: Arc<P>,
        clock: Arc<C>,
        sink: Arc<dyn EventSink>,
        cfg: ControlConfig,
    ) -> Result<Self, PolicyError> {
        let engine = Engine::new(cfg.policy.clone())?;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (monitor_tx, monitor_rx) = mpsc::unbounded_channel();
        Ok(ControlLoop {
            hv,
            prober,
            clock,
            sink,
            cfg,
            engine,
            registry: Registry::default(),
            scratch: PlanScratch::default(),
            decisions: Vec::new(),
            cluster_in_flight: 0,
            fencer: Arc::new(NoFencer),
            fences_in_flight: 0,
            monitor_tx,
            monitor_rx,
            monitoring: false,
            next_monitor: Timestamp::ZERO,
            done_tx,
            done_rx,
            events_since: None,
            next_inventory: Timestamp::ZERO,
            synced: false,
            journal: None,
            authority: None,
            acting: true,
            paused: BTreeSet::new(),
            unknown_sites: BTreeSet::new(),
            last_probes: Vec::new(),
            health: crate::health::ViewHealth::default(),
        })
    }

    /// Records every action in `journal` before it starts and when it ends.
    pub fn with_journal(mut self, journal: Arc<dyn RecoveryJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Acts only while `authority` allows (a cluster's leader whose lease
    /// holds): otherwise each tick still probes, reads the hypervisor and
    /// keeps every fact current (so a takeover starts from them), but
    /// decides and starts nothing. The backends should be wrapped in
    /// `dr_core::ports::Authorized` too, so that what runs already stops
    /// at its next step.
    pub fn with_authority(mut self, authority: Arc<dyn dr_core::ports::Authority>) -> Self {
        self.authority = Some(authority);
        self
    }

    /// Whether the last tick could decide and act.
    pub fn acting(&self) -> bool {
        self.acting
    }

    /// Asks the authority, and says when the answer changes.
    fn may_act(&mut self) -> bool {
        let answer = self.authority.as_ref().map_or(Ok(()), |a| a.may_act());
        let now = answer.is_ok();
        if now != self.acting {
            match &answer {
                Ok(()) => tracing::info!("this loop acts: it decides and recovers"),
                Err(why) => {
                    tracing::warn!(why = %why, "this loop stops acting: it observes, decides nothing")
                }
            }
            self.acting = now;
        }
        now
    }

    /// Fences lost hosts that have a device through `fencer` (without one,
    /// no host has a fence device).
    pub fn with_fencer(mut self, fencer: Arc<dyn Fencer>) -> Self {
        self.fencer = fencer;
        self
    }

    /// Stops (`true`) or resumes automation for VM `vm`: while paused it is
    /// still watched, and the engine decides to leave it alone.
    pub fn set_paused(&mut self, vm: &str, paused: bool) {
        if paused {
            self.paused.insert(vm.to_owned());
        } else {
            self.paused.remove(vm);
        }
    }

    /// The VMs whose automation is paused.
    pub fn paused(&self) -> &BTreeSet<String> {
        &self.paused
    }

    /// The outcome of the last tick's probe batch (VMs, then hosts with an
    /// address), for probe metrics.
    pub fn last_probes(&self) -> &[dr_core::ports::ProbeResult] {
        &self.last_probes
    }

    /// The configuration in force.
    pub fn config(&self) -> &ControlConfig {
        &self.cfg
    }

    /// The decision engine, with the policy in force.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The monitored hosts and VMs and their facts.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Addresses known from before (see [`Registry::remember_ips`]).
    pub fn remember_ips(&mut self, ips: impl IntoIterator<Item = (String, std::net::IpAddr)>) {
        self.registry.remember_ips(ips);
    }

    /// No recovery of `vm` before `until` (see [`Registry::hold`]).
    pub fn hold(&mut self, vm: String, until: Timestamp) {
        self.registry.hold(vm, until);
    }

    /// Recoveries running now.
    pub fn in_flight(&self) -> u32 {
        self.cluster_in_flight
    }

    /// Applies a new configuration from the next tick on (the daemon's
    /// reload). Running actions keep the settings they started with.
    pub fn reconfigure(&mut self, cfg: ControlConfig) -> Result<(), PolicyError> {
        self.engine = Engine::new(cfg.policy.clone())?;
        if cfg.inventory_interval != self.cfg.inventory_interval {
            self.next_inventory = self.clock.now();
        }
        self.cfg = cfg;
        Ok(())
    }

    /// Ticks every probe interval until `shutdown` turns true (or its sender
    /// is dropped), then waits for the actions still running so none is left
    /// half-accounted.
    pub async fn run(&mut self, shutdown: watch::Receiver<bool>) {
        self.run_with_reload(shutdown, None).await;
    }

    /// [`ControlLoop::run`], also applying every configuration published on
    /// `config` from the next tick on (the daemon's reload). An invalid one
    /// is reported as an error event and the running configuration stays.
    pub async fn run_with_reload(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
        mut config: Option<watch::Receiver<ControlConfig>>,
    ) {
        let mut next = self.clock.now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let reload = async {
                match config.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
                reloaded = reload => {
                    match config.as_mut() {
                        Some(rx) if reloaded => {
                            let cfg = rx.borrow_and_update().clone();
                            if let Err(e) = self.reconfigure(cfg) {
                                self.error("reconfigure", &e);
                            }
                        }
                        // The publisher is gone: keep running as configured.
                        _ => config = None,
                    }
                    continue;
                }
                () = self.clock.sleep_until(next) => {}
            }
            self.tick().await;
            next = next
                .saturating_add(self.cfg.probe_interval)
                .max(self.clock.now());
        }
        self.drain().await;
    }

    /// Waits for every running action to report back.
    pub async fn drain(&mut self) {
        while self.cluster_in_flight + self.fences_in_flight > 0 {
            match self.done_rx.recv().await {
                Some(c) => self.complete(c),
                None => break,
            }
        }
    }

    /// One pass: outcomes in; probes; the hypervisor's view (inventory, then
    /// power events); inventory sync when due; decisions; actions out.
    ///
    /// The hypervisor is read *after* the probes, right before deciding, so
    /// decisions rest on its freshest view (a probe batch can take its whole
    /// timeout); and the inventory before the events, so every power change
    /// the inventory shows has its event, and so who caused it, in hand.
    pub async fn tick(&mut self) {
        while let Ok(c) = self.done_rx.try_recv() {
            self.complete(c);
        }
        let policy = self.cfg.policy.clone();

        // Probe every monitored VM and host in one batch.
        let reg = &self.registry;
        let mut targets: Vec<ProbeTarget> = Vec::with_capacity(reg.vm_entries.len());
        let vm_slots: Vec<Option<usize>> = reg
            .vm_entries
            .iter()
            .map(|v| {
                v.ip.map(|ip| {
                    targets.push(ProbeTarget::icmp(ip));
                    targets.len() - 1
                })
            })
            .collect();
        let host_slots: Vec<Option<usize>> = reg
            .host_entries
            .iter()
            .map(|h| {
                h.ip.map(|ip| {
                    targets.push(ProbeTarget::icmp(ip));
                    targets.len() - 1
                })
            })
            .collect();
        let results = match self.prober.probe(&targets, self.cfg.probe_timeout).await {
            Ok(r) if r.len() == targets.len() => r,
            Ok(r) => {
                self.step_failed(
                    "probe",
                    format!(
                        "prober returned {} results for {} targets",
                        r.len(),
                        targets.len()
                    ),
                );
                return;
            }
            Err(e) => {
                self.step_failed("probe", e.to_string());
                return;
            }
        };

        self.last_probes.clone_from(&results);
        let since = self.events_since.unwrap_or_else(|| {
            Timestamp(
                self.clock
                    .now()
                    .0
                    .saturating_sub(dr_core::time::millis(self.cfg.event_lookback)),
            )
        });
        let inv = match self.hv.inventory().await {
            Ok(inv) => inv,
            Err(e) => {
                // Deciding on a stale view of the hypervisor is how split
                // brains start: skip this tick.
                self.step_failed("inventory", e.to_string());
                return;
            }
        };
        let events = match self.hv.power_events(since).await {
            Ok(events) => events,
            Err(e) => {
                self.step_failed("power_events", e.to_string());
                return;
            }
        };
        let now = self.clock.now();

        // Probe outcomes belong to the registry as it was probed: apply them
        // before a sync can reorder it.
        for (i, slot) in vm_slots.into_iter().enumerate() {
            if let Some(s) = slot {
                self.registry
                    .observe_vm_probe(&policy, now, i, results[s].reachable, &*self.sink);
            }
        }
        let links: Vec<HostLink> = inv_links(&inv, &self.registry);
        for (i, slot) in host_slots.into_iter().enumerate() {
            // A host without a management address is judged by the
            // hypervisor alone.
            let reachable = slot.map_or(links[i].accepts_vms(), |s| results[s].reachable);
            self.registry
                .observe_host(&policy, now, i, reachable, links[i], &*self.sink);
        }

        if !self.synced || now >= self.next_inventory {
            self.sync(&inv, now);
        }
        self.registry.refresh(&inv, &policy, now, &*self.sink);
        self.registry.set_fence_devices(&self.fencer.devices());
        self.fence_monitor(now);
        // VMs without an address to probe: the hypervisor's fresh view
        // stands in for the probe (on, and the guest not known silent).
        for i in 0..self.registry.vms.len() {
            if self.registry.vm_entries[i].ip.is_none() {
                let f = &self.registry.vms[i];
                let up = f.power == PowerState::On && f.heartbeat != Heartbeat::Missing;
                self.registry
                    .observe_vm_probe(&policy, now, i, up, &*self.sink);
            }
        }
        self.apply_power_events(&events, since);
        self.registry.observe_evidence(&policy, now, &*self.sink);
        if self.may_act() {
            self.decide_and_act(now);
        }
        self.health.fresh(now);
    }

    /// How fresh the view is: when a tick last read everything and
    /// decided, and the step failing now.
    pub fn health(&self) -> &crate::health::ViewHealth {
        &self.health
    }

    /// A step of the tick failed: the tick stops there, and the view is
    /// older by one more tick.
    fn step_failed(&mut self, step: &'static str, error: String) {
        self.health.failed(step, error.clone(), self.clock.now());
        self.error_msg(step, error);
    }

    fn sync(&mut self, inv: &dr_core::model::Inventory, now: Timestamp) {
        let diff = self.registry.sync(inv);
        self.synced = true;
        // A misspelt site in the policy silently trusts nothing: say so,
        // once.
        for site in self.engine.policy().sites.keys() {
            if self.registry.has_site(site) || self.unknown_sites.contains(site) {
                continue;
            }
            tracing::warn!(site = %site, "policy.sites names a site no host is on");
            self.unknown_sites.insert(site.clone());
        }
        self.next_inventory = now.saturating_add(self.cfg.inventory_interval);
        if !diff.is_empty() {
            // Logged as an event by the sink (`events::log`).
            self.sink.emit(
                now,
                ControlEvent::Inventory {
                    added_hosts: diff.added_hosts,
                    removed_hosts: diff.removed_hosts,
                    added_vms: diff.added_vms,
                    removed_vms: diff.removed_vms,
                },
            );
        }
    }

    fn decide_and_act(&mut self, now: Timestamp) {
        // The engine leaves a paused VM alone (and says so in its decision).
        for (facts, entry) in self.registry.vms.iter_mut().zip(&self.registry.vm_entries) {
            facts.paused = self.paused.contains(&entry.name);
        }
        let cluster = ClusterFacts {
            in_flight: self.cluster_in_flight,
        };
        self.engine.plan_into(
            now,
            &self.registry.vms,
            &self.registry.hosts,
            cluster,
            &mut self.scratch,
            &mut self.decisions,
        );
        for i in 0..self.decisions.len() {
            let d = self.decisions[i];
            let entry = &self.registry.vm_entries[i];
            if entry.last_decision != Some(d) {
                let host = match d {
                    Decision::FenceHost { host } | Decision::RecoverHost { host } => Some(host),
                    Decision::Restore { target, .. } => Some(target),
                    Decision::AddHostThenRestore { spare, .. } => Some(spare),
                    _ => None,
                };
                self.sink.emit(
                    now,
                    ControlEvent::Decision {
                        vm: entry.name.clone(),
                        decision: d,
                        host: host.map(|h| self.registry.host_name(h).to_owned()),
                    },
                );
                self.registry.vm_entries[i].last_decision = Some(d);
            }
            if d.is_action() {
                self.start(i, d, now);
            }
        }
    }

    fn start(&mut self, i: usize, d: Decision, now: Timestamp) {
        let reg = &mut self.registry;
        let vm = reg.vm_entries[i].name.clone();
        let home = reg.vms[i].host;
        let host = reg.host_name(home).to_owned();
        let action = match d {
            Decision::RestartInPlace { reset: false } => Action::PowerOn { vm, host },
            Decision::RestartInPlace { reset: true } => Action::Reset { vm, host },
            Decision::RevertToSnapshot => Action::RevertToSnapshot { vm, host },
            Decision::FenceHost { host: h } => Action::FenceHost {
                vm,
                host: reg.host_name(h).to_owned(),
            },
            Decision::RecoverHost { host: h } => Action::RecoverHost {
                vm,
                host: reg.host_name(h).to_owned(),
            },
            Decision::Restore {
                target,
                source,
                evidence,
            } => Action::Restore {
                vm,
                from: host,
                target: reg.host_name(target).to_owned(),
                source,
                evidence,
            },
            Decision::AddHostThenRestore {
                spare,
                source,
                evidence,
            } => Action::AddHostThenRestore {
                vm,
                from: host,
                spare: reg.host_name(spare).to_owned(),
                source,
                evidence,
            },
            Decision::None { .. } | Decision::Wait { .. } | Decision::Alert { .. } => return,
        };
        if action.is_fence() {
            if let Some(h) = reg.host_idx(action.charged_host()) {
                ledger::fence_started(&mut reg.hosts[h]);
            }
            self.fences_in_flight += 1;
        } else {
            if let Some(h) = reg.host_idx(action.charged_host()) {
                reg.hosts[h].in_flight += 1;
                if action.is_host_recovery() {
                    ledger::host_recovery_started(&mut reg.hosts[h]);
                }
            }
            if !action.is_host_recovery() {
                ledger::recovery_started(&mut reg.vms[i]);
            }
            if let Action::Restore { vm, target: to, .. }
            | Action::AddHostThenRestore { vm, spare: to, .. } = &action
            {
                reg.arriving(vm, Some(to));
            }
            self.cluster_in_flight += 1;
        }
        tracing::info!(
            action = action.kind(),
            vm = action.vm(),
            host = action.charged_host(),
            "recovery started"
        );
        self.sink.emit(
            now,
            ControlEvent::ActionStarted {
                action: action.clone(),
            },
        );

        let (hv, fencer, clock, sink, tx, journal) = (
            self.hv.clone(),
            self.fencer.clone(),
            self.clock.clone(),
            self.sink.clone(),
            self.done_tx.clone(),
            self.journal.clone(),
        );
        let retry = RetryPolicy {
            timeout: if action.is_fence() {
                self.cfg.fence_timeout
            } else {
                self.cfg.action_timeout
            },
            retries: self.cfg.action_retries,
            delay: self.cfg.retry_delay,
        };
        tokio::spawn(async move {
            let started = clock.now();
            // Durably recorded before anything is done, off the async threads.
            let entry = match &journal {
                Some(j) => {
                    let (j, a) = (j.clone(), action.clone());
                    tokio::task::spawn_blocking(move || j.begin(&a, started))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                        .map(Some)
                }
                None => Ok(None),
            };
            let (attempts, result): (u32, Result<(), String>) = match (&entry, &action) {
                (Ok(_), Action::FenceHost { host, .. }) => {
                    let (n, r) = executor::fence(&*fencer, &*clock, retry, host).await;
                    (n, r.map_err(|e| e.to_string()))
                }
                (Ok(_), _) => {
                    let (n, r) = executor::execute(&*hv, &*clock, retry, &action).await;
                    (n, r.map_err(|e| e.to_string()))
                }
                (Err(e), _) => (
                    0,
                    Err(format!("not started: the recovery journal failed: {e}")),
                ),
            };
            let end = clock.now();
            if let (Some(j), Ok(Some(id))) = (&journal, &entry) {
                let (j, id) = (j.clone(), *id);
                let error = result.as_ref().err().cloned();
                let ended = tokio::task::spawn_blocking(move || j.end(id, error.as_deref(), end))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                if let Err(e) = ended {
                    tracing::error!(entry = id, error = %e, "cannot mark a recovery ended in the journal");
                }
            }
            if let Err(e) = &result {
                tracing::warn!(action = action.kind(), vm = action.vm(), error = %e, "recovery failed");
            }
            sink.emit(
                end,
                ControlEvent::ActionFinished {
                    action: action.clone(),
                    ok: result.is_ok(),
                    attempts,
                    duration_ms: end
                        .since(started)
                        .as_millis()
                        .try_into()
                        .unwrap_or(u64::MAX),
                    error: result.as_ref().err().cloned(),
                },
            );
            // The loop may be gone (shutdown without drain): nothing to tell.
            let _ = tx.send(Completion {
                action,
                ok: result.is_ok(),
            });
        });
    }

    fn complete(&mut self, c: Completion) {
        let now = self.clock.now();
        let reg = &mut self.registry;
        if c.action.is_fence() {
            self.fences_in_flight = self.fences_in_flight.saturating_sub(1);
            if let Some(h) = reg.host_idx(c.action.charged_host()) {
                ledger::fence_finished(&self.cfg.policy, now, &mut reg.hosts[h], c.ok);
            }
            return;
        }
        self.cluster_in_flight = self.cluster_in_flight.saturating_sub(1);
        if let Some(h) = reg.host_idx(c.action.charged_host()) {
            reg.hosts[h].in_flight = reg.hosts[h].in_flight.saturating_sub(1);
            if c.action.is_host_recovery() {
                ledger::host_recovery_finished(&mut reg.hosts[h], c.ok);
            }
        }
        if !c.action.is_host_recovery() {
            if let Some(i) = reg.vm_idx(c.action.vm()) {
                ledger::recovery_finished(&self.cfg.policy, now, &mut reg.vms[i], c.ok);
            }
        }
        reg.arriving(c.action.vm(), None);
    }

    /// Applies what the fence devices' monitor read, and starts its next
    /// round when one is due: every device's status, one after another,
    /// each bounded by the fence timeout, off the tick. A device being
    /// fenced is not read.
    fn fence_monitor(&mut self, now: Timestamp) {
        while let Ok(m) = self.monitor_rx.try_recv() {
            match m {
                Monitored::Read(host, r) => {
                    self.registry
                        .observe_fence_monitor(now, &host, r, &*self.sink);
                }
                Monitored::Done => self.monitoring = false,
            }
        }
        let every = self.cfg.fence_monitor_interval;
        if every.is_zero() || self.monitoring || now < self.next_monitor {
            return;
        }
        let hosts: Vec<String> = self
            .registry
            .hosts
            .iter()
            .zip(&self.registry.host_entries)
            .filter(|(f, _)| !matches!(f.fence, Fencing::NoDevice | Fencing::InFlight))
            .map(|(_, e)| e.name.clone())
            .collect();
        self.next_monitor = now.saturating_add(every);
        if hosts.is_empty() {
            return;
        }
        self.monitoring = true;
        let (fencer, clock, tx, t) = (
            self.fencer.clone(),
            self.clock.clone(),
            self.monitor_tx.clone(),
            self.cfg.fence_timeout,
        );
        tokio::spawn(async move {
            for host in hosts {
                let r = tokio::select! {
                    biased;
                    r = fencer.power_status(&host) => r.map_err(|e| e.to_string()),
                    () = clock.sleep(t) => Err(format!("no answer in {t:?}")),
                };
                let _ = tx.send(Monitored::Read(host, r));
            }
            let _ = tx.send(Monitored::Done);
        });
    }

    /// Applies events read from `since` on; the next read starts just after
    /// the newest one applied.
    fn apply_power_events(&mut self, events: &[PowerEvent], since: Timestamp) {
        let mut newest = since;
        for ev in events {
            newest = newest.max(Timestamp(ev.at.0.saturating_add(1)));
            if let Some(i) = self.registry.vm_idx(&ev.vm) {
                ledger::observe_power_event(&mut self.registry.vms[i], ev.kind, &ev.by);
            }
        }
        self.events_since = Some(newest);
    }

    fn error(&self, context: &'static str, e: &dyn std::fmt::Display) {
        self.error_msg(context, e.to_string());
    }

    fn error_msg(&self, context: &'static str, error: String) {
        // Logged as an event by the sink (`events::log`).
        self.sink
            .emit(self.clock.now(), ControlEvent::Error { context, error });
    }
}

/// The hypervisor's link state for each monitored host, by index. A host
/// that vanished from this read counts as not responding.
fn inv_links(inv: &dr_core::model::Inventory, reg: &Registry) -> Vec<HostLink> {
    let mut links = vec![HostLink::NotResponding; reg.hosts.len()];
    for h in &inv.hosts {
        if let Some(i) = reg.host_idx(&h.name) {
            links[i] = h.link;
        }
    }
    links
}
