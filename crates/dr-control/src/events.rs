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
        tracing::info!(t = %at, event = ?event, "control event");
    }
}
