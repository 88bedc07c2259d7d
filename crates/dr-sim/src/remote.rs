//! The simulated datacenter as a process of its own (`drctl sim-server`),
//! and the backend that drives it over HTTP (`[sim] url = ...`).
//!
//! Why: the embedded simulation starts and stops with the daemon, so what a
//! restarted daemon does about work its predecessor left under way cannot
//! be seen there. A datacenter in its own process outlives the daemon, as a
//! real hypervisor does: an operation it accepted finishes even if the
//! daemon that asked dies meanwhile (as a vCenter task does), and its
//! report counts what matters across restarts — a VM running twice, a VM
//! started more often than it went down, a start refused because a copy
//! already ran, an action on a VM a user stopped.
//!
//! It serves the hosts' fence devices too (the [`Fencer`] port), so a
//! daemon on a served datacenter fences as one on the embedded one does.
//!
//! Wire: `POST /sim/v1/call` with one [`Call`] as JSON answers a [`Reply`];
//! `GET /sim/v1/report` answers a [`SimReport`]. The timeline is the
//! server's (milliseconds since it started); the backend's clock follows it.

use crate::{Scenario, SimFencer, SimHypervisor, SimProber, World};
use async_trait::async_trait;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use dr_core::model::{
    Actor, Inventory, PowerEvent, PowerEventKind, PowerState, RestoreSource, SnapshotInfo,
    SnapshotTarget,
};
use dr_core::ports::{
    Capabilities, Clock, FenceError, FencePower, Fencer, Hypervisor, HypervisorError, ProbeError,
    ProbeResult, ProbeTarget, Prober,
};
use dr_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// One operation asked of the simulated datacenter.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// Its timeline's now and its capabilities.
    Hello,
    /// [`Hypervisor::inventory`].
    Inventory,
    /// [`Hypervisor::power_events`].
    PowerEvents {
        /// From.
        since: Timestamp,
    },
    /// [`Hypervisor::create_snapshot`].
    CreateSnapshot {
        /// Of what.
        target: SnapshotTarget,
        /// Its name.
        name: String,
    },
    /// [`Hypervisor::list_snapshots`].
    ListSnapshots {
        /// Of what.
        target: SnapshotTarget,
    },
    /// [`Hypervisor::remove_snapshot`].
    RemoveSnapshot {
        /// Of what.
        target: SnapshotTarget,
        /// Which.
        id: String,
    },
    /// [`Hypervisor::revert_vm`].
    RevertVm {
        /// The VM.
        vm: String,
        /// Which snapshot (`None`: the newest).
        snapshot: Option<String>,
    },
    /// [`Hypervisor::power_on`].
    PowerOn {
        /// The VM.
        vm: String,
    },
    /// [`Hypervisor::power_off`].
    PowerOff {
        /// The VM.
        vm: String,
    },
    /// [`Hypervisor::reset`].
    Reset {
        /// The VM.
        vm: String,
    },
    /// [`Hypervisor::restore_vm`].
    RestoreVm {
        /// The VM.
        vm: String,
        /// Onto.
        host: String,
        /// From.
        source: RestoreSource,
    },
    /// [`Hypervisor::migrate_vm`].
    MigrateVm {
        /// The VM.
        vm: String,
        /// To.
        host: String,
    },
    /// [`Hypervisor::recover_host`].
    RecoverHost {
        /// The host.
        host: String,
    },
    /// [`Hypervisor::add_host`].
    AddHost {
        /// The host.
        host: String,
    },
    /// [`Hypervisor::start_drill_copy`].
    StartDrillCopy {
        /// The VM.
        vm: String,
        /// Onto.
        host: String,
        /// From.
        source: RestoreSource,
        /// The copy's name.
        copy: String,
    },
    /// [`Hypervisor::remove_drill_copy`].
    RemoveDrillCopy {
        /// The copy's name.
        copy: String,
    },
    /// [`Fencer::power_off`].
    FenceOff {
        /// The host.
        host: String,
    },
    /// [`Fencer::power_status`].
    FenceStatus {
        /// The host.
        host: String,
    },
    /// [`Prober::probe`].
    Probe {
        /// What to probe.
        targets: Vec<ProbeTarget>,
        /// How long to wait.
        timeout: Duration,
    },
}

/// The answer to a [`Call`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done; the call's result.
    Ok(serde_json::Value),
    /// Refused or failed.
    Err(RemoteError),
}

/// A [`HypervisorError`] (or a prober's) on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum RemoteError {
    /// [`HypervisorError::NotFound`].
    NotFound {
        /// What kind of object.
        kind: String,
        /// Its name.
        name: String,
    },
    /// [`HypervisorError::InvalidState`].
    InvalidState {
        /// The object.
        name: String,
        /// Why.
        detail: String,
    },
    /// [`HypervisorError::HostUnreachable`].
    HostUnreachable {
        /// The host.
        host: String,
    },
    /// [`HypervisorError::Timeout`].
    Timeout {
        /// The operation.
        op: String,
        /// After.
        after: Duration,
    },
    /// [`HypervisorError::InsufficientCapacity`].
    InsufficientCapacity {
        /// The host.
        host: String,
        /// The VM.
        vm: String,
    },
    /// [`HypervisorError::Unsupported`].
    Unsupported {
        /// The operation.
        op: String,
    },
    /// [`HypervisorError::Failed`].
    Failed {
        /// The operation.
        op: String,
        /// Why.
        detail: String,
    },
    /// [`FenceError::NoDevice`].
    NoFenceDevice {
        /// The host.
        host: String,
    },
    /// [`FenceError::Failed`] (and [`FenceError::Credentials`]).
    FenceFailed {
        /// The host.
        host: String,
        /// `off` or `status`.
        op: String,
        /// What the device said.
        detail: String,
    },
    /// [`FenceError::Timeout`].
    FenceTimeout {
        /// The host.
        host: String,
        /// `off` or `status`.
        op: String,
        /// After.
        after: Duration,
    },
    /// Anything else, as text.
    Other {
        /// What happened.
        message: String,
    },
}

/// The names the simulation uses for object kinds and operations: the
/// error type holds `&'static str`s, so a name read off the wire is mapped
/// back onto one of these ("operation" when it is none of them).
const NAMES: &[&str] = &[
    "vm",
    "host",
    "snapshot",
    "replica",
    "drill copy",
    "inventory",
    "power_events",
    "create_snapshot",
    "list_snapshots",
    "remove_snapshot",
    "revert_vm",
    "power_on",
    "power_off",
    "reset",
    "restore_vm",
    "migrate_vm",
    "recover_host",
    "add_host",
    "start_drill_copy",
    "remove_drill_copy",
];

fn known(name: &str) -> &'static str {
    NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("operation")
}

impl From<&HypervisorError> for RemoteError {
    fn from(e: &HypervisorError) -> Self {
        match e.clone() {
            HypervisorError::NotFound { kind, name } => RemoteError::NotFound {
                kind: kind.into(),
                name,
            },
            HypervisorError::InvalidState { name, detail } => {
                RemoteError::InvalidState { name, detail }
            }
            HypervisorError::HostUnreachable { host } => RemoteError::HostUnreachable { host },
            HypervisorError::Timeout { op, after } => RemoteError::Timeout {
                op: op.into(),
                after,
            },
            HypervisorError::InsufficientCapacity { host, vm } => {
                RemoteError::InsufficientCapacity { host, vm }
            }
            HypervisorError::Unsupported { op } => RemoteError::Unsupported { op: op.into() },
            HypervisorError::Failed { op, detail } => RemoteError::Failed {
                op: op.into(),
                detail,
            },
            other => RemoteError::Other {
                message: other.to_string(),
            },
        }
    }
}

impl From<RemoteError> for HypervisorError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::NotFound { kind, name } => HypervisorError::NotFound {
                kind: known(&kind),
                name,
            },
            RemoteError::InvalidState { name, detail } => {
                HypervisorError::InvalidState { name, detail }
            }
            RemoteError::HostUnreachable { host } => HypervisorError::HostUnreachable { host },
            RemoteError::Timeout { op, after } => HypervisorError::Timeout {
                op: known(&op),
                after,
            },
            RemoteError::InsufficientCapacity { host, vm } => {
                HypervisorError::InsufficientCapacity { host, vm }
            }
            RemoteError::Unsupported { op } => HypervisorError::Unsupported { op: known(&op) },
            RemoteError::Failed { op, detail } => HypervisorError::Failed {
                op: known(&op),
                detail,
            },
            RemoteError::Other { message } => HypervisorError::Protocol(message),
            fence @ (RemoteError::NoFenceDevice { .. }
            | RemoteError::FenceFailed { .. }
            | RemoteError::FenceTimeout { .. }) => {
                HypervisorError::Protocol(format!("a fence error where none belongs: {fence:?}"))
            }
        }
    }
}

impl From<FenceError> for RemoteError {
    fn from(e: FenceError) -> Self {
        match e {
            FenceError::NoDevice { host } => RemoteError::NoFenceDevice { host },
            FenceError::Failed { host, op, detail } => RemoteError::FenceFailed {
                host,
                op: op.into(),
                detail,
            },
            FenceError::Timeout { host, op, after } => RemoteError::FenceTimeout {
                host,
                op: op.into(),
                after,
            },
            FenceError::Credentials { host, detail } => RemoteError::FenceFailed {
                host,
                op: "credentials".into(),
                detail,
            },
        }
    }
}

/// A fence operation's name off the wire, as the error type holds it.
fn fence_op(op: &str) -> &'static str {
    if op == "status" {
        "status"
    } else {
        "off"
    }
}

/// What a fence call's failure is to its caller: never the host off.
fn fence_error(host: &str, op: &'static str, e: HypervisorError) -> FenceError {
    FenceError::Failed {
        host: host.to_owned(),
        op,
        detail: e.to_string(),
    }
}

/// What the simulated datacenter has seen, for checking a daemon's
/// behaviour across its restarts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimReport {
    /// The server's now.
    pub now: Timestamp,
    /// Per VM.
    pub vms: Vec<VmReport>,
    /// Actions on VMs a user had stopped: (VM, operation).
    pub user_stop_violations: Vec<(String, String)>,
    /// Operations under way now ("power_on db-1"), oldest first.
    pub in_progress: Vec<String>,
}

/// One VM in a [`SimReport`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmReport {
    /// Its name.
    pub name: String,
    /// Power state of its registered copy.
    pub power: PowerState,
    /// Hosts a copy of it runs on now (more than one: a double run).
    pub running_on: Vec<String>,
    /// Times a second copy started while one ran.
    pub double_runs: u32,
    /// Times it stopped serving (crash, hang, its host lost).
    pub outages: u32,
    /// Times the orchestrator started it (power-on events it caused).
    pub starts: u32,
    /// Starts asked while it already ran or was powered on (refused).
    pub refused_starts: u32,
}

/// The server's state.
struct Served {
    hv: SimHypervisor,
    prober: SimProber,
    fencer: SimFencer,
    world: Arc<Mutex<World>>,
    clock: Arc<dyn Clock>,
    refused_starts: Mutex<BTreeMap<String, u32>>,
    /// Operations under way, by a sequence number.
    running: Mutex<BTreeMap<u64, String>>,
    next_call: std::sync::atomic::AtomicU64,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Served {
    /// Runs `call`, listed as under way meanwhile when it changes anything.
    async fn call(&self, call: Call) -> Reply {
        if read_limit(&call).is_some() {
            return self.run(call).await;
        }
        let what = describe(&call);
        let id = self
            .next_call
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        locked(&self.running).insert(id, what);
        let reply = self.run(call).await;
        locked(&self.running).remove(&id);
        reply
    }

    async fn run(&self, call: Call) -> Reply {
        let hv = &self.hv;
        let started = match &call {
            Call::PowerOn { vm } | Call::RestoreVm { vm, .. } => Some(vm.clone()),
            _ => None,
        };
        let result: Result<serde_json::Value, HypervisorError> = match call {
            Call::Hello => Ok(serde_json::json!({
                "now": self.clock.now(),
                "capabilities": hv.capabilities(),
                "fence_devices": self.fencer.devices(),
            })),
            Call::Inventory => hv.inventory().await.map(json),
            Call::PowerEvents { since } => hv.power_events(since).await.map(json),
            Call::CreateSnapshot { target, name } => {
                hv.create_snapshot(&target, &name).await.map(json)
            }
            Call::ListSnapshots { target } => hv.list_snapshots(&target).await.map(json),
            Call::RemoveSnapshot { target, id } => hv.remove_snapshot(&target, &id).await.map(json),
            Call::RevertVm { vm, snapshot } => {
                hv.revert_vm(&vm, snapshot.as_deref()).await.map(json)
            }
            Call::PowerOn { vm } => hv.power_on(&vm).await.map(json),
            Call::PowerOff { vm } => hv.power_off(&vm).await.map(json),
            Call::Reset { vm } => hv.reset(&vm).await.map(json),
            Call::RestoreVm { vm, host, source } => {
                hv.restore_vm(&vm, &host, source).await.map(json)
            }
            Call::MigrateVm { vm, host } => hv.migrate_vm(&vm, &host).await.map(json),
            Call::RecoverHost { host } => hv.recover_host(&host).await.map(json),
            Call::AddHost { host } => hv.add_host(&host).await.map(json),
            Call::StartDrillCopy {
                vm,
                host,
                source,
                copy,
            } => hv
                .start_drill_copy(&vm, &host, source, &copy)
                .await
                .map(json),
            Call::RemoveDrillCopy { copy } => hv.remove_drill_copy(&copy).await.map(json),
            Call::FenceOff { host } => {
                return match self.fencer.power_off(&host).await {
                    Ok(()) => Reply::Ok(json(())),
                    Err(e) => Reply::Err(e.into()),
                }
            }
            Call::FenceStatus { host } => {
                return match self.fencer.power_status(&host).await {
                    Ok(p) => Reply::Ok(json(p)),
                    Err(e) => Reply::Err(e.into()),
                }
            }
            Call::Probe { targets, timeout } => {
                return match self.prober.probe(&targets, timeout).await {
                    Ok(r) => Reply::Ok(json(r)),
                    Err(e) => Reply::Err(RemoteError::Other {
                        message: e.to_string(),
                    }),
                }
            }
        };
        match result {
            Ok(v) => Reply::Ok(v),
            Err(e) => {
                if let (Some(vm), HypervisorError::InvalidState { .. }) = (started, &e) {
                    *locked(&self.refused_starts).entry(vm).or_default() += 1;
                }
                Reply::Err(RemoteError::from(&e))
            }
        }
    }

    fn report(&self) -> SimReport {
        let refused = locked(&self.refused_starts).clone();
        let in_progress = locked(&self.running).values().cloned().collect();
        let w = locked(&self.world);
        let vms = w
            .vms
            .iter()
            .map(|v| VmReport {
                name: v.spec.name.clone(),
                power: v.power,
                running_on: v
                    .instances
                    .iter()
                    .map(|&h| w.hosts[h].spec.name.clone())
                    .collect(),
                double_runs: v.double_runs,
                outages: v.outages.len() as u32,
                starts: w
                    .events
                    .iter()
                    .filter(|e| {
                        e.vm == v.spec.name
                            && e.kind == PowerEventKind::PoweredOn
                            && e.by == Actor::Orchestrator
                    })
                    .count() as u32,
                refused_starts: refused.get(&v.spec.name).copied().unwrap_or(0),
            })
            .collect();
        SimReport {
            now: self.clock.now(),
            vms,
            user_stop_violations: w
                .user_stop_violations
                .iter()
                .map(|u| (u.vm.clone(), u.op.to_owned()))
                .collect(),
            in_progress,
        }
    }
}

/// "power_on db-1": the call's name and its object.
fn describe(call: &Call) -> String {
    let v = serde_json::to_value(call).unwrap_or_default();
    let name = v["call"].as_str().unwrap_or("call").to_owned();
    let object = ["vm", "copy", "host", "name"]
        .iter()
        .find_map(|k| v[*k].as_str())
        .unwrap_or("");
    format!("{name} {object}").trim_end().to_owned()
}

fn json<T: Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Serves the simulated datacenter of `scenario` on `listener` (its fault
/// schedule runs in real time from now) until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    scenario: Scenario,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let world = Arc::new(Mutex::new(
        World::new(scenario.hosts.clone(), scenario.vms.clone(), scenario.seed)
            .map_err(std::io::Error::other)?,
    ));
    let clock: Arc<dyn Clock> = Arc::new(dr_control::TokioClock::from_zero());
    let served = Arc::new(Served {
        hv: SimHypervisor::new(world.clone(), clock.clone(), scenario.latencies.clone()),
        prober: SimProber::new(world.clone(), clock.clone(), Duration::from_millis(1)),
        fencer: SimFencer::new(world.clone(), clock.clone()),
        world: world.clone(),
        clock: clock.clone(),
        refused_starts: Mutex::default(),
        running: Mutex::default(),
        next_call: std::sync::atomic::AtomicU64::new(0),
    });
    let faults = tokio::spawn(crate::fault::inject_in_real_time(
        world,
        scenario.faults,
        clock,
        shutdown.clone(),
    ));
    let app = Router::new()
        .route(
            "/sim/v1/call",
            post(
                |State(s): State<Arc<Served>>, Json(call): Json<Call>| async move {
                    // An accepted operation runs to its end even if the caller
                    // goes away meanwhile, as a hypervisor's task does.
                    let task = tokio::spawn(async move { s.call(call).await });
                    Json(task.await.unwrap_or_else(|e| {
                        Reply::Err(RemoteError::Other {
                            message: format!("the simulation failed: {e}"),
                        })
                    }))
                },
            ),
        )
        .route(
            "/sim/v1/report",
            get(|State(s): State<Arc<Served>>| async move { Json(s.report()) }),
        )
        .with_state(served);
    let served = axum::serve(listener, app).with_graceful_shutdown(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
    });
    let r = served.await;
    faults.abort();
    r
}

/// How long a call that only reads may take (`None`: it changes the
/// datacenter).
fn read_limit(call: &Call) -> Option<Duration> {
    match call {
        Call::Hello | Call::Inventory | Call::PowerEvents { .. } | Call::ListSnapshots { .. } => {
            Some(Duration::from_secs(30))
        }
        Call::Probe { timeout, .. } => Some(*timeout + Duration::from_secs(5)),
        _ => None,
    }
}

/// The backend over a simulated datacenter served by [`serve`]: the
/// [`Hypervisor`], the [`Prober`] and the [`Fencer`].
pub struct RemoteSim {
    http: reqwest::Client,
    url: String,
    caps: Capabilities,
    fence_devices: BTreeSet<String>,
}

impl RemoteSim {
    /// Connects to the server at `url` (`http://HOST:PORT`); returns the
    /// backend and the server's now (for a clock on its timeline).
    pub async fn connect(url: &str) -> Result<(RemoteSim, Timestamp), HypervisorError> {
        #[derive(Deserialize)]
        struct Hello {
            now: Timestamp,
            capabilities: Capabilities,
            #[serde(default)]
            fence_devices: BTreeSet<String>,
        }
        let http = reqwest::Client::new();
        let url = format!("{}/sim/v1/call", url.trim_end_matches('/'));
        let hello: Hello = send_call(&http, &url, &Call::Hello).await?;
        let sim = RemoteSim {
            http,
            url,
            caps: hello.capabilities,
            fence_devices: hello.fence_devices,
        };
        Ok((sim, hello.now))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        call: &Call,
    ) -> Result<T, HypervisorError> {
        send_call(&self.http, &self.url, call).await
    }
}

/// One call to the server at `url`.
async fn send_call<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    call: &Call,
) -> Result<T, HypervisorError> {
    match send(http, url, call).await? {
        Reply::Ok(v) => serde_json::from_value(v)
            .map_err(|e| HypervisorError::Protocol(format!("simulated datacenter: {e}"))),
        Reply::Err(e) => Err(e.into()),
    }
}

/// One call to the server at `url`, its reply as it came.
async fn send(http: &reqwest::Client, url: &str, call: &Call) -> Result<Reply, HypervisorError> {
    let bad = |what: String| HypervisorError::Protocol(format!("simulated datacenter: {what}"));
    let mut request = http.post(url).json(call);
    // Reads answer at once or the server is stuck: a tick must not hang
    // on it. Operations take their simulated time; the executor's action
    // timeout bounds those.
    if let Some(limit) = read_limit(call) {
        request = request.timeout(limit);
    }
    let response = request
        .send()
        .await
        .map_err(|e| HypervisorError::HostUnreachable {
            host: format!("simulated datacenter ({e})"),
        })?;
    if !response.status().is_success() {
        return Err(bad(format!("HTTP {}", response.status())));
    }
    response
        .json::<Reply>()
        .await
        .map_err(|e| bad(e.to_string()))
}

#[async_trait]
impl Hypervisor for RemoteSim {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn inventory(&self) -> Result<Inventory, HypervisorError> {
        self.call(&Call::Inventory).await
    }

    async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, HypervisorError> {
        self.call(&Call::PowerEvents { since }).await
    }

    async fn create_snapshot(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<SnapshotInfo, HypervisorError> {
        self.call(&Call::CreateSnapshot {
            target: target.clone(),
            name: name.to_owned(),
        })
        .await
    }

    async fn list_snapshots(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Vec<SnapshotInfo>, HypervisorError> {
        self.call(&Call::ListSnapshots {
            target: target.clone(),
        })
        .await
    }

    async fn remove_snapshot(
        &self,
        target: &SnapshotTarget,
        id: &str,
    ) -> Result<(), HypervisorError> {
        self.call(&Call::RemoveSnapshot {
            target: target.clone(),
            id: id.to_owned(),
        })
        .await
    }

    async fn revert_vm(&self, vm: &str, snapshot: Option<&str>) -> Result<(), HypervisorError> {
        self.call(&Call::RevertVm {
            vm: vm.to_owned(),
            snapshot: snapshot.map(str::to_owned),
        })
        .await
    }

    async fn power_on(&self, vm: &str) -> Result<(), HypervisorError> {
        self.call(&Call::PowerOn { vm: vm.to_owned() }).await
    }

    async fn power_off(&self, vm: &str) -> Result<(), HypervisorError> {
        self.call(&Call::PowerOff { vm: vm.to_owned() }).await
    }

    async fn reset(&self, vm: &str) -> Result<(), HypervisorError> {
        self.call(&Call::Reset { vm: vm.to_owned() }).await
    }

    async fn restore_vm(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
    ) -> Result<(), HypervisorError> {
        self.call(&Call::RestoreVm {
            vm: vm.to_owned(),
            host: host.to_owned(),
            source,
        })
        .await
    }

    async fn restore_vm_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[std::path::PathBuf],
    ) -> Result<(), HypervisorError> {
        // The images are on this machine; the served simulation only needs
        // to know they are whole.
        crate::check_restore_images(images).await?;
        self.restore_vm(vm, host, RestoreSource::Replica).await
    }

    async fn start_drill_copy_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[std::path::PathBuf],
        copy: &str,
    ) -> Result<(), HypervisorError> {
        crate::check_restore_images(images).await?;
        self.start_drill_copy(vm, host, RestoreSource::Replica, copy)
            .await
    }

    async fn migrate_vm(&self, vm: &str, host: &str) -> Result<(), HypervisorError> {
        self.call(&Call::MigrateVm {
            vm: vm.to_owned(),
            host: host.to_owned(),
        })
        .await
    }

    async fn recover_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.call(&Call::RecoverHost {
            host: host.to_owned(),
        })
        .await
    }

    async fn add_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.call(&Call::AddHost {
            host: host.to_owned(),
        })
        .await
    }

    async fn start_drill_copy(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
        copy: &str,
    ) -> Result<(), HypervisorError> {
        self.call(&Call::StartDrillCopy {
            vm: vm.to_owned(),
            host: host.to_owned(),
            source,
            copy: copy.to_owned(),
        })
        .await
    }

    async fn remove_drill_copy(&self, copy: &str) -> Result<(), HypervisorError> {
        self.call(&Call::RemoveDrillCopy {
            copy: copy.to_owned(),
        })
        .await
    }
}

#[async_trait]
impl Prober for RemoteSim {
    async fn probe(
        &self,
        targets: &[ProbeTarget],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, ProbeError> {
        self.call(&Call::Probe {
            targets: targets.to_vec(),
            timeout,
        })
        .await
        .map_err(|e| ProbeError::Unavailable(e.to_string()))
    }
}

impl RemoteSim {
    /// A fence call, its failures as the fence device's.
    async fn fence<T: serde::de::DeserializeOwned>(
        &self,
        call: &Call,
        host: &str,
        op: &'static str,
    ) -> Result<T, FenceError> {
        let reply = send(&self.http, &self.url, call)
            .await
            .map_err(|e| fence_error(host, op, e))?;
        match reply {
            Reply::Ok(v) => serde_json::from_value(v).map_err(|e| FenceError::Failed {
                host: host.to_owned(),
                op,
                detail: format!("simulated datacenter: {e}"),
            }),
            Reply::Err(RemoteError::NoFenceDevice { host }) => Err(FenceError::NoDevice { host }),
            Reply::Err(RemoteError::FenceFailed { host, op, detail }) => Err(FenceError::Failed {
                host,
                op: fence_op(&op),
                detail,
            }),
            Reply::Err(RemoteError::FenceTimeout { host, op, after }) => Err(FenceError::Timeout {
                host,
                op: fence_op(&op),
                after,
            }),
            Reply::Err(other) => Err(fence_error(host, op, other.into())),
        }
    }
}

#[async_trait]
impl Fencer for RemoteSim {
    fn devices(&self) -> BTreeSet<String> {
        self.fence_devices.clone()
    }

    async fn power_off(&self, host: &str) -> Result<(), FenceError> {
        self.fence(
            &Call::FenceOff {
                host: host.to_owned(),
            },
            host,
            "off",
        )
        .await
    }

    async fn power_status(&self, host: &str) -> Result<FencePower, FenceError> {
        self.fence(
            &Call::FenceStatus {
                host: host.to_owned(),
            },
            host,
            "status",
        )
        .await
    }
}
