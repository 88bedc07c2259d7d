//! Power events with their cause. libvirt keeps no event log: it pushes
//! lifecycle events to connected clients and keeps each domain's state
//! with a reason. So the backend keeps the log itself: events as they
//! arrive, and, for changes it saw only in the state (events lost while the
//! connection was down, or before vmdr started), one made from the state's
//! reason.
//!
//! libvirt does not say who asked for a stop. vmdr's own actions are
//! recorded before they start ([`OwnActions`]); a stop that none of them
//! explains is a person's (a `virsh destroy`, a `shutdown`, or the guest
//! powering itself off), and one that libvirt reports as a failure
//! (`STOPPED_FAILED`, `STOPPED_CRASHED`, a guest panic) is the system's.

use dr_core::model::{Actor, PowerEvent, PowerEventKind};
use dr_core::Timestamp;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// `virDomainEventType` values.
pub mod kind {
    /// `VIR_DOMAIN_EVENT_STARTED`.
    pub const STARTED: i32 = 2;
    /// `VIR_DOMAIN_EVENT_SUSPENDED`.
    pub const SUSPENDED: i32 = 3;
    /// `VIR_DOMAIN_EVENT_STOPPED`.
    pub const STOPPED: i32 = 5;
    /// `VIR_DOMAIN_EVENT_SHUTDOWN`.
    pub const SHUTDOWN: i32 = 6;
    /// `VIR_DOMAIN_EVENT_PMSUSPENDED`.
    pub const PMSUSPENDED: i32 = 7;
    /// `VIR_DOMAIN_EVENT_CRASHED`.
    pub const CRASHED: i32 = 8;
}

/// `virDomainState` values.
pub mod state {
    /// `VIR_DOMAIN_RUNNING`.
    pub const RUNNING: i32 = 1;
    /// `VIR_DOMAIN_BLOCKED`.
    pub const BLOCKED: i32 = 2;
    /// `VIR_DOMAIN_PAUSED`.
    pub const PAUSED: i32 = 3;
    /// `VIR_DOMAIN_SHUTDOWN` (shutting down).
    pub const SHUTDOWN: i32 = 4;
    /// `VIR_DOMAIN_SHUTOFF`.
    pub const SHUTOFF: i32 = 5;
    /// `VIR_DOMAIN_CRASHED`.
    pub const CRASHED: i32 = 6;
    /// `VIR_DOMAIN_PMSUSPENDED`.
    pub const PMSUSPENDED: i32 = 7;
    /// `VIR_DOMAIN_PAUSED_USER`: a person paused it.
    pub const PAUSED_USER: i32 = 1;
    /// `VIR_DOMAIN_SHUTOFF_SHUTDOWN`.
    pub const SHUTOFF_SHUTDOWN: i32 = 1;
    /// `VIR_DOMAIN_SHUTOFF_DESTROYED`.
    pub const SHUTOFF_DESTROYED: i32 = 2;
    /// `VIR_DOMAIN_SHUTOFF_CRASHED`.
    pub const SHUTOFF_CRASHED: i32 = 3;
    /// `VIR_DOMAIN_SHUTOFF_FAILED`.
    pub const SHUTOFF_FAILED: i32 = 6;
    /// `VIR_DOMAIN_SHUTOFF_DAEMON`: the daemon found its QEMU gone.
    pub const SHUTOFF_DAEMON: i32 = 8;
}

/// How long after one of vmdr's actions ends an event of its kind is still
/// its result (events can trail the call's reply).
const OWN_GRACE: Duration = Duration::from_secs(10);
/// Events kept (the control loop reads them every tick).
const LOG_CAP: usize = 100_000;

/// What a lifecycle event means, before attribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// A power change someone asked for (or vmdr did).
    Requested(PowerEventKind),
    /// A failure stopped the domain.
    Failure,
    /// The guest asked to shut down (a stop follows).
    GuestShutdown,
    /// Nothing vmdr acts on.
    Ignore,
}

/// What a lifecycle event (`virDomainEventType`, detail) means.
pub fn meaning(event: i32, detail: i32) -> Meaning {
    match (event, detail) {
        // Started by a migration: the domain moved, it did not power on.
        (kind::STARTED, 1) => Meaning::Ignore,
        (kind::STARTED, _) => Meaning::Requested(PowerEventKind::PoweredOn),
        // Paused by a person; other pauses (I/O error, migration,
        // snapshot) are transient or a fault the state shows.
        (kind::SUSPENDED, 0) => Meaning::Requested(PowerEventKind::Suspended),
        (kind::STOPPED, 2 | 5) => Meaning::Failure,
        (kind::STOPPED, 3) => Meaning::Ignore,
        (kind::STOPPED, 4) => Meaning::Requested(PowerEventKind::Suspended),
        (kind::STOPPED, _) => Meaning::Requested(PowerEventKind::PoweredOff),
        (kind::SHUTDOWN, 1) => Meaning::GuestShutdown,
        (kind::PMSUSPENDED, _) => Meaning::Requested(PowerEventKind::Suspended),
        (kind::CRASHED, _) => Meaning::Failure,
        _ => Meaning::Ignore,
    }
}

/// What a domain found off (`state`, `reason`) says about how it stopped,
/// when no event told: a failure, or a stop someone asked for.
pub fn off_meaning(state: i32, reason: i32) -> Meaning {
    match (state, reason) {
        (state::CRASHED, _) => Meaning::Failure,
        (
            state::SHUTOFF,
            state::SHUTOFF_CRASHED | state::SHUTOFF_FAILED | state::SHUTOFF_DAEMON,
        ) => Meaning::Failure,
        (state::SHUTOFF, state::SHUTOFF_SHUTDOWN | state::SHUTOFF_DESTROYED) => {
            Meaning::Requested(PowerEventKind::PoweredOff)
        }
        _ => Meaning::Ignore,
    }
}

#[derive(Debug)]
struct Own {
    vm: String,
    kind: PowerEventKind,
    ended: Option<Instant>,
}

/// vmdr's actions under way or just ended, by VM and kind.
#[derive(Debug, Default)]
pub struct OwnActions {
    list: Vec<Own>,
}

impl OwnActions {
    /// Records an action about to start ([`OwnActions::end`] marks it
    /// ended).
    pub fn begin(&mut self, vm: &str, kind: PowerEventKind) {
        let now = Instant::now();
        self.list
            .retain(|o| o.ended.is_none_or(|t| now.duration_since(t) < OWN_GRACE));
        self.list.push(Own {
            vm: vm.to_owned(),
            kind,
            ended: None,
        });
    }

    /// Marks an action ended (its events may still trail it a little).
    pub fn end(&mut self, vm: &str, kind: PowerEventKind) {
        let now = Instant::now();
        if let Some(o) = self
            .list
            .iter_mut()
            .rev()
            .find(|o| o.vm == vm && o.kind == kind && o.ended.is_none())
        {
            o.ended = Some(now);
        }
    }

    /// Whether an event of `kind` for `vm` now is vmdr's doing; the match
    /// is used up, so a person's stop right after is still theirs.
    pub fn claim(&mut self, vm: &str, kind: PowerEventKind) -> bool {
        let now = Instant::now();
        let i = self.list.iter().position(|o| {
            o.vm == vm
                && o.kind == kind
                && o.ended.is_none_or(|t| now.duration_since(t) < OWN_GRACE)
        });
        match i {
            Some(i) => {
                self.list.remove(i);
                true
            }
            None => false,
        }
    }
}

/// The power events the backend has seen, oldest first.
#[derive(Debug, Default)]
pub struct EventLog {
    events: VecDeque<PowerEvent>,
    /// VMs whose guest asked to shut down: their next stop is the guest's.
    guest_shutdown: Vec<String>,
}

impl EventLog {
    /// Records what a lifecycle event of `vm` on `host` means.
    pub fn record(
        &mut self,
        own: &mut OwnActions,
        vm: &str,
        host: &str,
        meaning: Meaning,
        at: Timestamp,
    ) {
        let (kind, by) = match meaning {
            Meaning::Ignore => return,
            Meaning::GuestShutdown => {
                if !self.guest_shutdown.iter().any(|v| v == vm) {
                    self.guest_shutdown.push(vm.to_owned());
                }
                return;
            }
            Meaning::Failure => (PowerEventKind::Crashed, Actor::System),
            Meaning::Requested(kind) => {
                let guest = self.guest_shutdown.iter().position(|v| v == vm);
                let by = if own.claim(vm, kind) {
                    Actor::Orchestrator
                } else if kind == PowerEventKind::PoweredOff && guest.is_some() {
                    Actor::User(format!("the guest OS of {vm}"))
                } else {
                    Actor::User(format!("a libvirt client of {host}"))
                };
                (kind, by)
            }
        };
        if kind != PowerEventKind::PoweredOn {
            self.guest_shutdown.retain(|v| v != vm);
        }
        if self.events.len() == LOG_CAP {
            self.events.pop_front();
        }
        // Arrival order is time order on one clock; keep it monotonic.
        let at = self.events.back().map_or(at, |l| at.max(l.at));
        self.events.push_back(PowerEvent {
            vm: vm.to_owned(),
            at,
            kind,
            by,
        });
    }

    /// Events at or after `since`, oldest first.
    pub fn since(&self, since: Timestamp) -> Vec<PowerEvent> {
        let start = self.events.partition_point(|e| e.at < since);
        self.events.range(start..).cloned().collect()
    }

    /// The newest event of `vm`, if any.
    pub fn last_of(&self, vm: &str) -> Option<&PowerEvent> {
        self.events.iter().rev().find(|e| e.vm == vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_lab_shows_is_read_as_meant() {
        // A QEMU killed: "Stopped Failed".
        assert_eq!(meaning(kind::STOPPED, 5), Meaning::Failure);
        // virsh destroy: "Stopped Destroyed".
        assert_eq!(
            meaning(kind::STOPPED, 1),
            Meaning::Requested(PowerEventKind::PoweredOff)
        );
        // The guest powers itself off: "Shutdown Finished after guest
        // request", then "Stopped Shutdown".
        assert_eq!(meaning(kind::SHUTDOWN, 1), Meaning::GuestShutdown);
        assert_eq!(
            meaning(kind::STOPPED, 0),
            Meaning::Requested(PowerEventKind::PoweredOff)
        );
        assert_eq!(meaning(kind::CRASHED, 0), Meaning::Failure);
        assert_eq!(meaning(kind::STARTED, 1), Meaning::Ignore);
        assert_eq!(off_meaning(state::SHUTOFF, 3), Meaning::Failure);
        assert_eq!(off_meaning(state::SHUTOFF, 0), Meaning::Ignore);
    }

    #[test]
    fn vmdrs_own_stop_is_the_orchestrators_and_a_persons_right_after_is_theirs() {
        let mut own = OwnActions::default();
        let mut log = EventLog::default();
        own.begin("g1", PowerEventKind::PoweredOff);
        own.end("g1", PowerEventKind::PoweredOff);
        let off = Meaning::Requested(PowerEventKind::PoweredOff);
        log.record(&mut own, "g1", "a1", off, Timestamp(10));
        log.record(&mut own, "g1", "a1", off, Timestamp(20));
        log.record(&mut own, "g2", "a1", Meaning::GuestShutdown, Timestamp(30));
        log.record(&mut own, "g2", "a1", off, Timestamp(31));
        log.record(&mut own, "g3", "a1", Meaning::Failure, Timestamp(5));
        let e = log.since(Timestamp(0));
        assert_eq!(e[0].by, Actor::Orchestrator);
        assert!(matches!(&e[1].by, Actor::User(u) if u.contains("libvirt client")));
        assert!(matches!(&e[2].by, Actor::User(u) if u.contains("guest OS")));
        assert_eq!(
            (e[3].kind, &e[3].by),
            (PowerEventKind::Crashed, &Actor::System)
        );
        assert!(e.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
        assert_eq!(log.since(Timestamp(25)).len(), 2);
    }
}
