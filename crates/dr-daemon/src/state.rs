//! What the daemon shares between its control loop and its API: the status
//! of every host and VM after the last tick, the recent events (also
//! broadcast), and the metrics.

use crate::metrics::Metrics;
use dr_control::registry::Registry;
use dr_control::{ControlEvent, EventSink};
use dr_core::Timestamp;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use tokio::sync::broadcast;

/// Recent events kept for the API.
const EVENTS_KEPT: usize = 10_000;

/// One host as the daemon sees it.
#[derive(Clone, Debug, Serialize)]
pub struct HostStatus {
    /// Name.
    pub name: String,
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
}

/// One VM as the daemon sees it.
#[derive(Clone, Debug, Serialize)]
pub struct VmStatus {
    /// Name.
    pub name: String,
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
#[derive(Clone, Debug, Default, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
            })
            .collect();
        let vms = reg
            .vm_entries
            .iter()
            .zip(&reg.vms)
            .map(|(e, f)| VmStatus {
                name: e.name.clone(),
                ip: e.ip.map(|ip| ip.to_string()),
                host: reg.host_name(f.host).to_owned(),
                reachable: e.reachable,
                power: format!("{:?}", f.power),
                heartbeat: format!("{:?}", f.heartbeat),
                probe_failures: f.probe_failures,
                decision: e.last_decision.and_then(|d| serde_json::to_value(d).ok()),
                paused: paused.contains(&e.name),
                in_flight: f.in_flight,
                snapshot: f.has_snapshot,
                replica: f.has_replica,
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
            ready: AtomicBool::new(false),
            metrics: Metrics::default(),
            replication: Default::default(),
            budget: RwLock::default(),
        }
    }
}

impl Shared {
    /// Publishes the status after a tick; the daemon is ready from the first.
    pub fn publish(&self, status: Status) {
        self.metrics.observe_status(&status);
        *self.status.write().unwrap_or_else(PoisonError::into_inner) = status;
        self.ready.store(true, Ordering::Release);
    }

    /// Marks `vm` paused (or not) in the published status, before the next
    /// tick publishes it anew.
    pub fn set_paused(&self, vm: &str, paused: bool) {
        let mut st = self.status.write().unwrap_or_else(PoisonError::into_inner);
        for v in st.vms.iter_mut().filter(|v| v.name == vm) {
            v.paused = paused;
        }
        let count = st.vms.iter().filter(|v| v.paused).count();
        drop(st);
        self.metrics.set_paused_count(count);
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

    /// New events as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.feed.subscribe()
    }
}

impl EventSink for Shared {
    fn emit(&self, at: Timestamp, event: ControlEvent) {
        self.metrics.observe_event(at, &event);
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
