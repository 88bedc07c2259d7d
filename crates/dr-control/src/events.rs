//! What the control loop reports: every observation change, decision change
//! and action, with the clock's timestamp.

use dr_core::{Decision, Timestamp};
use serde::Serialize;

/// What an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A VM, by name.
    Vm(String),
    /// A host, by name.
    Host(String),
}

/// One thing the control loop saw or did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlEvent {
    /// The inventory sync found new or removed hosts and VMs.
    Inventory {
        /// Hosts now monitored.
        added_hosts: Vec<String>,
        /// Hosts no longer in the inventory.
        removed_hosts: Vec<String>,
        /// VMs now monitored.
        added_vms: Vec<String>,
        /// VMs no longer in the inventory.
        removed_vms: Vec<String>,
    },
    /// Something observed about a VM or host changed.
    Observation {
        /// About what.
        subject: Subject,
        /// Which observation ("reachable", "power", "heartbeat", "link",
        /// "host", "down").
        field: &'static str,
        /// The old value.
        from: String,
        /// The new value.
        to: String,
    },
    /// The engine's decision for a VM changed.
    Decision {
        /// The VM.
        vm: String,
        /// The decision, with host indices resolved to names.
        decision: Decision,
        /// The host a host-level decision is about, or the restore target.
        host: Option<String>,
    },
    /// A recovery action started.
    ActionStarted {
        /// The action.
        action: crate::executor::Action,
    },
    /// A recovery action finished.
    ActionFinished {
        /// The action.
        action: crate::executor::Action,
        /// It succeeded.
        ok: bool,
        /// Attempts made (1 + retries).
        attempts: u32,
        /// Wall or virtual milliseconds it took.
        duration_ms: u64,
        /// The last error, when it failed.
        error: Option<String>,
    },
    /// An operation an operator asked for (a planned failover, a drill)
    /// began, journaled.
    OperationStarted {
        /// "planned_failover" or "drill".
        operation: &'static str,
        /// The VM.
        vm: String,
        /// Its host.
        from: String,
        /// Where it goes (a drill: where its copy runs).
        to: String,
    },
    /// That operation ended.
    OperationFinished {
        /// "planned_failover" or "drill".
        operation: &'static str,
        /// The VM.
        vm: String,
        /// Its host before.
        from: String,
        /// Where it went.
        to: String,
        /// It succeeded.
        ok: bool,
        /// How long it took, ms.
        duration_ms: u64,
        /// Why it failed.
        error: Option<String>,
    },
    /// A port call of the loop itself failed (the tick goes on or is skipped).
    Error {
        /// What the loop was doing.
        context: &'static str,
        /// The error.
        error: String,
    },
}

/// Receives the control loop's events. Called from the loop's task and from
/// action tasks: implementations must be cheap and must not block.
pub trait EventSink: Send + Sync {
    /// One event, stamped with the loop's clock.
    fn emit(&self, at: Timestamp, event: ControlEvent);
}

/// Logs events with `tracing` and otherwise drops them.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn emit(&self, at: Timestamp, event: ControlEvent) {
        log(at, &event);
    }
}

/// The decision's kind and its reason (`why`), as the API spells them.
fn decision_parts(decision: &Decision) -> (String, String) {
    let v = serde_json::to_value(decision).unwrap_or_default();
    let text = |key: &str| v.get(key).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    (text("decision"), text("why"))
}

/// Logs one event with fields an operator can search for (`vm=`, `host=`,
/// `action=`, `decision=`, `why=`, `operation=`), not as Rust debug text.
/// Observations are debug-level: there are many.
pub fn log(at: Timestamp, event: &ControlEvent) {
    use tracing::{debug, info, warn};
    match event {
        ControlEvent::Inventory {
            added_hosts,
            removed_hosts,
            added_vms,
            removed_vms,
        } => info!(t = %at, added_hosts = ?added_hosts, removed_hosts = ?removed_hosts,
            added_vms = ?added_vms, removed_vms = ?removed_vms, "inventory changed"),
        ControlEvent::Observation {
            subject: Subject::Vm(vm),
            field,
            from,
            to,
        } => debug!(t = %at, vm = %vm, field = *field, from = %from, to = %to, "observation"),
        ControlEvent::Observation {
            subject: Subject::Host(host),
            field,
            from,
            to,
        } => debug!(t = %at, host = %host, field = *field, from = %from, to = %to, "observation"),
        ControlEvent::Decision { vm, decision, host } => {
            let (kind, why) = decision_parts(decision);
            info!(t = %at, vm = %vm, decision = %kind, why = %why,
                host = host.as_deref().unwrap_or(""), "decision")
        }
        ControlEvent::ActionStarted { action } => {
            let (from, to) = action.hosts();
            info!(t = %at, vm = action.vm(), action = action.kind(), from, to, "action started")
        }
        ControlEvent::ActionFinished {
            action,
            ok,
            attempts,
            duration_ms,
            error,
        } => {
            let (from, to) = action.hosts();
            let error = error.as_deref().unwrap_or("");
            if *ok {
                info!(t = %at, vm = action.vm(), action = action.kind(), from, to, ok, attempts,
                    duration_ms, "action finished")
            } else {
                warn!(t = %at, vm = action.vm(), action = action.kind(), from, to, ok, attempts,
                    duration_ms, error, "action failed")
            }
        }
        ControlEvent::OperationStarted {
            operation,
            vm,
            from,
            to,
        } => info!(t = %at, vm = %vm, operation = *operation, from = %from, to = %to,
            "operation started"),
        ControlEvent::OperationFinished {
            operation,
            vm,
            from,
            to,
            ok,
            duration_ms,
            error,
        } => {
            let error = error.as_deref().unwrap_or("");
            if *ok {
                info!(t = %at, vm = %vm, operation = *operation, from = %from, to = %to, ok,
                    duration_ms, "operation finished")
            } else {
                warn!(t = %at, vm = %vm, operation = *operation, from = %from, to = %to, ok,
                    duration_ms, error, "operation failed")
            }
        }
        ControlEvent::Error { context, error } => {
            warn!(t = %at, context = *context, error = %error, "control loop error")
        }
    }
}
