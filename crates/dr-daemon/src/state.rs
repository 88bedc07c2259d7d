//! What the daemon shares between its control loop and its API: the status
//! of every host and VM after the last tick (and, to whoever streams it,
//! what each tick changed), the recent events (also broadcast), each VM's
//! recent outages, and the metrics.

use crate::metrics::Metrics;
use crate::outages::{OutageView, Outages};
use crate::vm_state::VmState;
use dr_control::registry::Registry;
use dr_control::{ControlEvent, EventSink};
use dr_core::Timestamp;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::broadcast;

/// Recent events kept for the API.
const EVENTS_KEPT: usize = 10_000;

/// One host as the daemon sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostStatus {
    /// Name.
    pub name: String,
    /// Its site.
    pub site: String,
    /// Management address.
    pub ip: Option<String>,
    /// Last probe answered.
    pub reachable: Option<bool>,
    /// The hypervisor's link state.
    pub link: String,
    /// Lost (to probes and hypervisor) since, ms on the daemon's clock.
    pub unreachable_since_ms: Option<u64>,
    /// Recoveries charged to it now.
    pub in_flight: u16,
    /// Whether its VMs can be running, as the engine judges it
    /// (`not_down`, `awaiting_deadline`, the evidence it is down on, or
    /// `unproven: ` and what is missing).
    pub evidence: Option<String>,
    /// Its vmdr agent as last heard (times: ms on the daemon's clock).
    pub agent: Option<dr_core::model::AgentSignal>,
    /// Its storage heartbeat as last read.
    pub storage: Option<dr_core::model::StorageSignal>,
    /// Its fence device and where fencing it stands (`no_device`, `ready`,
    /// `in_flight`, `off`, `failed` with when it is tried again).
    pub fence: dr_core::engine::Fencing,
    /// Its fence device's last monitor: `ok`, or `failing: ` and why
    /// (`None`: not read yet, or no device).
    pub fence_device: Option<String>,
    /// Memory a restore may still take here, MiB (the VMs' memory and the
    /// hypervisor's overhead for them counted, and restores under way).
    pub free_memory_mb: u64,
    /// CPU a restore may still take here, MHz (counted by reservation, or
    /// nominal over `cpu_overcommit`).
    pub free_cpu_mhz: u32,
    /// Its site's CPU overcommit for restores.
    pub cpu_overcommit: u16,
    /// Its size and use by the backend's figures: restores go to the
    /// least loaded host with room.
    pub load: dr_core::engine::HostLoad,
}

/// One VM as the daemon sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VmStatus {
    /// Name.
    pub name: String,
    /// Its state in one word (healthy, suspect, down, recovering,
    /// user_stopped, suspended, paused, gave_up, unknown).
    pub state: VmState,
    /// Its state but for an operator's pause (what it turns back to when
    /// resumed before the next tick).
    #[serde(skip)]
    pub unpaused: VmState,
    /// Address watched (`None`: none known; judged by the hypervisor).
    pub ip: Option<String>,
    /// Its host.
    pub host: String,
    /// Last probe answered.
    pub reachable: Option<bool>,
    /// Power state reported by the hypervisor.
    pub power: String,
    /// Guest heartbeat.
    pub heartbeat: String,
    /// Consecutive failed probes.
    pub probe_failures: u16,
    /// The engine's current decision.
    pub decision: Option<serde_json::Value>,
    /// Automation paused by an operator.
    pub paused: bool,
    /// A recovery is running for it.
    pub in_flight: bool,
    /// It has a snapshot to revert to.
    pub snapshot: bool,
    /// It has a replica to restore from.
    pub replica: bool,
}

/// How fresh the hosts' and VMs' picture is.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ViewStatus {
    /// When a tick last read the probes and the hypervisor, ms on the
    /// daemon's clock; `None` before the first.
    pub fresh_at_ms: Option<u64>,
    /// How old that was when this status was published.
    pub age_ms: Option<u64>,
    /// Too old to trust (more than three probe intervals): what the hosts
    /// and VMs show is how they were then, not now.
    pub stale: bool,
    /// The step the latest tick failed at (the backend: "inventory",
    /// "power_events"; the prober: "probe"), its error, since when.
    pub failing: Option<Failing>,
}

/// A failing step, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failing {
    /// The step.
    pub step: &'static str,
    /// Its last error.
    pub error: String,
    /// Failing since, ms on the daemon's clock.
    pub since_ms: u64,
}

impl ViewStatus {
    /// From the loop's view health at `now`; stale past `limit`.
    pub fn new(h: &dr_control::ViewHealth, now: Timestamp, limit: std::time::Duration) -> Self {
        ViewStatus {
            fresh_at_ms: h.fresh_at.map(|t| t.0),
            age_ms: h
                .age(now)
                .map(|a| a.as_millis().try_into().unwrap_or(u64::MAX)),
            stale: h.stale(now, limit),
            failing: h.failing.as_ref().map(|f| Failing {
                step: f.step,
                error: f.error.clone(),
                since_ms: f.since.0,
            }),
        }
    }
}

/// The whole picture after one tick.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// Ticks done.
    pub ticks: u64,
    /// When the last one ended, ms on the daemon's clock.
    pub at_ms: u64,
    /// How fresh what follows is.
    pub view: ViewStatus,
    /// Recoveries running.
    pub in_flight: u32,
    /// Hosts.
    pub hosts: Vec<HostStatus>,
    /// VMs.
    pub vms: Vec<VmStatus>,
}

impl Status {
    /// Reads the registry after a tick.
    pub fn from_registry(
        reg: &Registry,
        paused: &std::collections::BTreeSet<String>,
        ticks: u64,
        at: Timestamp,
        in_flight: u32,
        view: ViewStatus,
    ) -> Status {
        let hosts = reg
            .host_entries
            .iter()
            .zip(&reg.hosts)
            .map(|(e, f)| HostStatus {
                name: e.name.clone(),
                site: reg.site_name(f.site).unwrap_or_default().to_owned(),
                ip: e.ip.map(|ip| ip.to_string()),
                reachable: e.reachable,
                link: format!("{:?}", f.link),
                unreachable_since_ms: f.unreachable_since.map(|t| t.0),
                in_flight: f.in_flight,
                evidence: e.evidence_text(),
                agent: f.agent,
                storage: f.storage,
                fence: f.fence,
                fence_device: e.fence_device.as_ref().map(|r| match r {
                    Ok(_) => "ok".to_owned(),
                    Err(why) => format!("failing: {why}"),
                }),
                free_memory_mb: f.free_memory_mb,
                free_cpu_mhz: f.free_cpu_mhz,
                cpu_overcommit: f.cpu_overcommit,
                load: f.load,
            })
            .collect();
        let vms = reg
            .vm_entries
            .iter()
            .zip(&reg.vms)
            .map(|(e, f)| {
                let is_paused = paused.contains(&e.name);
                let judge = |p| VmState::judge(e.last_decision.as_ref(), p, f.in_flight, f.power);
                VmStatus {
                    name: e.name.clone(),
                    state: judge(is_paused),
                    unpaused: judge(false),
                    ip: e.ip.map(|ip| ip.to_string()),
                    host: reg.host_name(f.host).to_owned(),
                    reachable: e.reachable,
                    power: format!("{:?}", f.power),
                    heartbeat: format!("{:?}", f.heartbeat),
                    probe_failures: f.probe_failures,
                    decision: e.last_decision.and_then(|d| serde_json::to_value(d).ok()),
                    paused: is_paused,
                    in_flight: f.in_flight,
                    snapshot: f.has_snapshot,
                    replica: f.has_replica,
                }
            })
            .collect();
        Status {
            ticks,
            at_ms: at.0,
            view,
            in_flight,
            hosts,
            vms,
        }
    }
}

/// What a tick (or an operator's pause) changed in the status: the hosts
/// and VMs that differ, whole, the names of those gone, and the replication
/// reports when they changed. Applied in order to the snapshot a stream
/// began with, it gives the status published; applying one twice changes
/// nothing (a stream's first delta may already be in its snapshot).
#[derive(Clone, Debug, Serialize)]
pub struct StatusDelta {
    /// Ticks done.
    pub ticks: u64,
    /// When the tick ended, ms on the daemon's clock.
    pub at_ms: u64,
    /// When this was published, ms since the Unix epoch (how late a
    /// client shows it is measured against this).
    pub wall_ms: u64,
    /// How fresh the picture is.
    pub view: ViewStatus,
    /// Recoveries running.
    pub in_flight: u32,
    /// Hosts new or changed.
    pub hosts: Vec<HostStatus>,
    /// VMs new or changed.
    pub vms: Vec<VmStatus>,
    /// Hosts gone from the inventory.
    pub removed_hosts: Vec<String>,
    /// VMs gone from the inventory.
    pub removed_vms: Vec<String>,
    /// Every protected VM's replication, when any changed.
    pub replication: Option<Vec<crate::replication::VmReplication>>,
}

/// The items of `new` not equal in `old` (by name), and the names in `old`
/// not in `new`. In the common case, the same names in the same order, a
/// walk of both; else by name.
fn changes<T: PartialEq + Clone>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
) -> (Vec<T>, Vec<String>) {
    let same_names = old.len() == new.len() && old.iter().zip(new).all(|(a, b)| name(a) == name(b));
    if same_names {
        let changed = old
            .iter()
            .zip(new)
            .filter(|(a, b)| a != b)
            .map(|(_, b)| b.clone())
            .collect();
        return (changed, Vec::new());
    }
    let before: std::collections::HashMap<&str, &T> = old.iter().map(|x| (name(x), x)).collect();
    let now: std::collections::HashSet<&str> = new.iter().map(&name).collect();
    let changed = new
        .iter()
        .filter(|x| before.get(name(x)).is_none_or(|b| *b != *x))
        .cloned()
        .collect();
    let removed = old
        .iter()
        .map(&name)
        .filter(|n| !now.contains(n))
        .map(str::to_owned)
        .collect();
    (changed, removed)
}

impl StatusDelta {
    /// From `old` to `new`, published at `wall_ms`.
    pub fn between(old: &Status, new: &Status, wall_ms: u64) -> StatusDelta {
        let (hosts, removed_hosts) = changes(&old.hosts, &new.hosts, |h| &h.name);
        let (vms, removed_vms) = changes(&old.vms, &new.vms, |v| &v.name);
        StatusDelta {
            ticks: new.ticks,
            at_ms: new.at_ms,
            wall_ms,
            view: new.view.clone(),
            in_flight: new.in_flight,
            hosts,
            vms,
            removed_hosts,
            removed_vms,
            replication: None,
        }
    }
}

/// Milliseconds since the Unix epoch now.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// One event as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    /// Increasing id: `?since=` it for the ones after.
    pub id: u64,
    /// When, ms on the daemon's clock.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub event: ControlEvent,
}

/// Shared between the loop and the API.
pub struct Shared {
    status: RwLock<Status>,
    events: Mutex<VecDeque<EventRecord>>,
    next_event: AtomicU64,
    feed: broadcast::Sender<EventRecord>,
    /// Each published change, as the JSON the status stream sends (made
    /// once, whatever the number of clients).
    deltas: broadcast::Sender<Arc<str>>,
    /// The replication reports the last delta carried.
    replication_sent: Mutex<Vec<crate::replication::VmReplication>>,
    outages: Mutex<Outages>,
    ready: AtomicBool,
    /// The metrics.
    pub metrics: Metrics,
    /// The replication manager's reports.
    pub replication: std::sync::Arc<crate::replication::ReplicationState>,
    budget: RwLock<crate::budget::Budget>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            status: RwLock::new(Status::default()),
            events: Mutex::new(VecDeque::new()),
            next_event: AtomicU64::new(1),
            feed: broadcast::channel(1024).0,
            deltas: broadcast::channel(64).0,
            replication_sent: Mutex::default(),
            outages: Mutex::default(),
            ready: AtomicBool::new(false),
            metrics: Metrics::default(),
            replication: Default::default(),
            budget: RwLock::default(),
        }
    }
}

impl Shared {
    /// Publishes the status after a tick; the daemon is ready from the first.
    /// What changed is sent to the status streams first, under the lock,
    /// so a stream that takes its snapshot after subscribing misses none.
    pub fn publish(&self, status: Status) {
        self.metrics.observe_status(&status);
        let mut cur = self.status.write().unwrap_or_else(PoisonError::into_inner);
        if self.deltas.receiver_count() > 0 {
            let mut delta = StatusDelta::between(&cur, &status, wall_ms());
            let replication = self.replication.all();
            let mut sent = self
                .replication_sent
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *sent != replication {
                delta.replication = Some(replication.clone());
                *sent = replication;
            }
            self.send_delta(&delta);
        }
        *cur = status;
        drop(cur);
        self.ready.store(true, Ordering::Release);
    }

    fn send_delta(&self, delta: &StatusDelta) {
        match serde_json::to_string(delta) {
            Ok(json) => {
                let _ = self.deltas.send(json.into());
            }
            Err(e) => tracing::error!(error = %e, "a status change could not be encoded"),
        }
    }

    /// Marks `vm` paused (or not) in the published status, before the next
    /// tick publishes it anew, and streams that change.
    pub fn set_paused(&self, vm: &str, paused: bool) {
        let mut st = self.status.write().unwrap_or_else(PoisonError::into_inner);
        let mut changed = Vec::new();
        for v in st.vms.iter_mut().filter(|v| v.name == vm) {
            v.paused = paused;
            v.state = if paused { VmState::Paused } else { v.unpaused };
            changed.push(v.clone());
        }
        let count = st.vms.iter().filter(|v| v.paused).count();
        if self.deltas.receiver_count() > 0 {
            self.send_delta(&StatusDelta {
                ticks: st.ticks,
                at_ms: st.at_ms,
                wall_ms: wall_ms(),
                view: st.view.clone(),
                in_flight: st.in_flight,
                hosts: Vec::new(),
                vms: changed,
                removed_hosts: Vec::new(),
                removed_vms: Vec::new(),
                replication: None,
            });
        }
        drop(st);
        self.metrics.set_paused_count(count);
    }

    /// The status now, with the replication reports and the time, as the
    /// JSON a status stream begins with; and the stream of what changes
    /// after it (subscribed first: see [`Shared::publish`]).
    pub fn status_stream(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let rx = self.deltas.subscribe();
        let replication = self.replication.all();
        let st = self.status.read().unwrap_or_else(PoisonError::into_inner);
        let snapshot = serde_json::json!({
            "wall_ms": wall_ms(),
            "status": &*st,
            "replication": replication,
        });
        (snapshot.to_string(), rx)
    }

    /// `vm`'s recent outages, newest first.
    pub fn outages(&self, vm: &str) -> Vec<OutageView> {
        self.outages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .of(vm)
    }

    /// The failure budget last computed.
    pub fn budget(&self) -> crate::budget::Budget {
        self.budget
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes a newly computed budget (an older one than what is shown
    /// is dropped), and says when losing a single host starts or stops
    /// leaving a VM down.
    pub fn set_budget(&self, b: crate::budget::Budget) {
        let mut cur = self.budget.write().unwrap_or_else(PoisonError::into_inner);
        if cur.computed_at_ms > b.computed_at_ms {
            return;
        }
        if b.single_host_at_risk && !cur.single_host_at_risk {
            for f in b
                .failures
                .iter()
                .filter(|f| f.kind == "host" && !f.down.is_empty())
            {
                let vms: Vec<&str> = f.down.iter().map(|d| d.vm.as_str()).collect();
                tracing::warn!(host = %f.name, vms = ?vms, "failure budget: losing this host would leave VMs down");
            }
        } else if !b.single_host_at_risk && cur.single_host_at_risk {
            tracing::info!("failure budget: losing any single host leaves no VM down again");
        }
        *cur = b;
    }

    /// The status after the last tick.
    pub fn status(&self) -> Status {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One VM's status after the last tick.
    pub fn vm(&self, name: &str) -> Option<VmStatus> {
        let st = self.status.read().unwrap_or_else(PoisonError::into_inner);
        st.vms.iter().find(|v| v.name == name).cloned()
    }

    /// Whether a tick has completed.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Ready to be relied on: a tick completed and the view is not stale.
    /// `Err` says why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready() {
            return Err("no tick completed yet".into());
        }
        let st = self.status.read().unwrap_or_else(PoisonError::into_inner);
        if !st.view.stale {
            return Ok(());
        }
        let age = st.view.age_ms.map_or("never read".to_owned(), |a| {
            format!("{:.1} s old", a as f64 / 1000.0)
        });
        Err(match &st.view.failing {
            Some(f) => format!("the view is stale ({age}): {} failing: {}", f.step, f.error),
            None => format!("the view is stale ({age})"),
        })
    }

    /// Events after id `since`, at most `limit`, oldest first.
    pub fn events_since(&self, since: u64, limit: usize) -> Vec<EventRecord> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .iter()
            .filter(|e| e.id > since)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The newest `n` events, oldest first.
    pub fn events_tail(&self, n: usize) -> Vec<EventRecord> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .iter()
            .skip(events.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The newest `limit` events about `vm` still kept, oldest first.
    pub fn events_of(&self, vm: &str, limit: usize) -> Vec<EventRecord> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let mut mine: Vec<EventRecord> = events
            .iter()
            .rev()
            .filter(|e| about_vm(&e.event, vm))
            .take(limit)
            .cloned()
            .collect();
        mine.reverse();
        mine
    }

    /// New events as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.feed.subscribe()
    }
}

/// Whether `event` is about `vm` (an observation of it, its decision, an
/// action or an operator's operation for it).
fn about_vm(event: &ControlEvent, vm: &str) -> bool {
    match event {
        ControlEvent::Observation {
            subject: dr_control::Subject::Vm(v),
            ..
        }
        | ControlEvent::Decision { vm: v, .. }
        | ControlEvent::OperationStarted { vm: v, .. }
        | ControlEvent::OperationFinished { vm: v, .. } => v == vm,
        ControlEvent::ActionStarted { action } | ControlEvent::ActionFinished { action, .. } => {
            action.vm() == vm
        }
        ControlEvent::Observation { .. }
        | ControlEvent::Inventory { .. }
        | ControlEvent::Error { .. } => false,
    }
}

impl EventSink for Shared {
    fn emit(&self, at: Timestamp, event: ControlEvent) {
        self.metrics.observe_event(at, &event);
        self.outages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(at, &event);
        dr_control::events::log(at, &event);
        let record = EventRecord {
            id: self.next_event.fetch_add(1, Ordering::Relaxed),
            at_ms: at.0,
            event,
        };
        let _ = self.feed.send(record.clone());
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, host: &str, state: VmState) -> VmStatus {
        VmStatus {
            name: name.into(),
            state,
            unpaused: state,
            ip: None,
            host: host.into(),
            reachable: Some(true),
            power: "On".into(),
            heartbeat: "Ok".into(),
            probe_failures: 0,
            decision: None,
            paused: false,
            in_flight: false,
            snapshot: false,
            replica: false,
        }
    }

    fn status(ticks: u64, vms: Vec<VmStatus>) -> Status {
        Status {
            ticks,
            vms,
            ..Status::default()
        }
    }

    #[test]
    fn a_delta_carries_only_what_changed_and_what_went() {
        let old = status(
            1,
            vec![
                vm("a", "h1", VmState::Healthy),
                vm("b", "h1", VmState::Healthy),
            ],
        );
        let same_names = status(
            2,
            vec![
                vm("a", "h1", VmState::Healthy),
                vm("b", "h1", VmState::Down),
            ],
        );
        let d = StatusDelta::between(&old, &same_names, 7);
        assert_eq!((d.ticks, d.wall_ms), (2, 7));
        assert_eq!(d.vms, vec![vm("b", "h1", VmState::Down)]);
        assert!(d.removed_vms.is_empty());

        let reshaped = status(
            3,
            vec![
                vm("c", "h2", VmState::Healthy),
                vm("a", "h2", VmState::Healthy),
            ],
        );
        let d = StatusDelta::between(&old, &reshaped, 8);
        let names: Vec<&str> = d.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["c", "a"], "a new VM, and one that moved");
        assert_eq!(d.removed_vms, ["b"]);
        assert!(StatusDelta::between(&reshaped, &reshaped, 9).vms.is_empty());
    }

    #[test]
    fn a_stream_gets_its_snapshot_then_each_change_and_a_pause_at_once() {
        let shared = Shared::default();
        shared.publish(status(1, vec![vm("a", "h1", VmState::Healthy)]));
        let (snapshot, mut rx) = shared.status_stream();
        let snap: serde_json::Value = serde_json::from_str(&snapshot).expect("json");
        assert_eq!(snap["status"]["vms"][0]["state"], "healthy");

        shared.publish(status(2, vec![vm("a", "h1", VmState::Down)]));
        let d: serde_json::Value =
            serde_json::from_str(&rx.try_recv().expect("delta")).expect("json");
        assert_eq!(
            (d["ticks"].as_u64(), d["vms"][0]["state"].as_str()),
            (Some(2), Some("down"))
        );

        shared.set_paused("a", true);
        let d: serde_json::Value =
            serde_json::from_str(&rx.try_recv().expect("delta")).expect("json");
        assert_eq!(d["vms"][0]["state"], "paused");
        assert_eq!(shared.vm("a").map(|v| v.paused), Some(true));
        shared.set_paused("a", false);
        let d: serde_json::Value =
            serde_json::from_str(&rx.try_recv().expect("delta")).expect("json");
        assert_eq!(d["vms"][0]["state"], "down", "back to its own state");
    }

    #[test]
    fn a_vms_timeline_holds_only_events_about_it() {
        let shared = Shared::default();
        let seen = |vm: &str| ControlEvent::Observation {
            subject: dr_control::Subject::Vm(vm.into()),
            field: "reachable",
            from: "yes".into(),
            to: "no".into(),
        };
        shared.emit(Timestamp(1), seen("a"));
        shared.emit(Timestamp(2), seen("b"));
        shared.emit(
            Timestamp(3),
            ControlEvent::Observation {
                subject: dr_control::Subject::Host("a".into()),
                field: "link",
                from: "Connected".into(),
                to: "NotResponding".into(),
            },
        );
        shared.emit(Timestamp(4), seen("a"));
        let mine: Vec<u64> = shared.events_of("a", 10).iter().map(|e| e.at_ms).collect();
        assert_eq!(mine, [1, 4], "a host of the same name is not the VM");
        assert_eq!(shared.events_of("a", 1)[0].at_ms, 4, "the newest");
        let tail: Vec<u64> = shared.events_tail(2).iter().map(|e| e.at_ms).collect();
        assert_eq!(tail, [3, 4]);
    }
}
