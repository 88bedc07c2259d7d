//! Each VM's recent outages, read off the control loop's events: when it
//! stopped answering, when vmdr judged it down (detection time), when a
//! recovery brought it back (RTO). The console's VM page shows them; the
//! metrics' histograms count the same spans over all VMs.

use dr_control::events::Subject;
use dr_control::ControlEvent;
use dr_core::Timestamp;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

/// Outages kept per VM, newest last.
const KEPT: usize = 5;

/// One outage of a VM (times: ms on the daemon's clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// It stopped answering (or was judged down, if it never answered
    /// probes).
    pub since_ms: u64,
    /// vmdr judged it down.
    pub detected_ms: Option<u64>,
    /// A recovery of it succeeded.
    pub recovered_ms: Option<u64>,
    /// The recovery that did (`power_on`, `restore`, ...).
    pub action: Option<String>,
}

impl Outage {
    /// From its first missed answer to vmdr judging it down.
    pub fn detection_ms(&self) -> Option<u64> {
        self.detected_ms.map(|d| d.saturating_sub(self.since_ms))
    }

    /// From its first missed answer to its recovery.
    pub fn rto_ms(&self) -> Option<u64> {
        self.recovered_ms.map(|r| r.saturating_sub(self.since_ms))
    }
}

/// What the API shows of one outage: its times and spans.
#[derive(Clone, Debug, Serialize)]
pub struct OutageView {
    /// The outage.
    #[serde(flatten)]
    pub outage: Outage,
    /// Detection time, ms.
    pub detection_ms: Option<u64>,
    /// Recovery time, ms.
    pub rto_ms: Option<u64>,
}

/// Every VM's open outage and its last few closed ones.
#[derive(Debug, Default)]
pub struct Outages {
    open: HashMap<String, Outage>,
    closed: HashMap<String, VecDeque<Outage>>,
}

impl Outages {
    /// Takes one event into account.
    pub fn observe(&mut self, at: Timestamp, event: &ControlEvent) {
        match event {
            ControlEvent::Observation {
                subject: Subject::Vm(vm),
                field,
                to,
                ..
            } => match (*field, to.as_str()) {
                ("reachable", "no") => self.open_at(vm, at),
                // Answering again before it was judged down: a blip.
                ("reachable", "yes")
                    if self.open.get(vm).is_some_and(|o| o.detected_ms.is_none()) =>
                {
                    self.open.remove(vm);
                }
                ("down", "yes") => {
                    self.open_at(vm, at);
                    if let Some(o) = self.open.get_mut(vm) {
                        o.detected_ms.get_or_insert(at.0);
                    }
                }
                _ => {}
            },
            ControlEvent::ActionFinished {
                action, ok: true, ..
            } => {
                if let Some(mut o) = self.open.remove(action.vm()) {
                    o.recovered_ms = Some(at.0);
                    o.action = Some(action.kind().to_owned());
                    let kept = self.closed.entry(action.vm().to_owned()).or_default();
                    if kept.len() == KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(o);
                }
            }
            ControlEvent::Inventory { removed_vms, .. } => {
                for vm in removed_vms {
                    self.open.remove(vm);
                    self.closed.remove(vm);
                }
            }
            _ => {}
        }
    }

    fn open_at(&mut self, vm: &str, at: Timestamp) {
        if !self.open.contains_key(vm) {
            self.open.insert(
                vm.to_owned(),
                Outage {
                    since_ms: at.0,
                    detected_ms: None,
                    recovered_ms: None,
                    action: None,
                },
            );
        }
    }

    /// `vm`'s outages, newest first (an open one first of all).
    pub fn of(&self, vm: &str) -> Vec<OutageView> {
        let open = self.open.get(vm).into_iter();
        let closed = self.closed.get(vm).into_iter().flat_map(|c| c.iter().rev());
        open.chain(closed)
            .map(|o| OutageView {
                outage: o.clone(),
                detection_ms: o.detection_ms(),
                rto_ms: o.rto_ms(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_control::executor::Action;

    fn seen(vm: &str, field: &'static str, to: &str) -> ControlEvent {
        ControlEvent::Observation {
            subject: Subject::Vm(vm.into()),
            field,
            from: String::new(),
            to: to.into(),
        }
    }

    fn powered_on(vm: &str) -> ControlEvent {
        ControlEvent::ActionFinished {
            action: Action::PowerOn {
                vm: vm.into(),
                host: "esx-1".into(),
            },
            ok: true,
            attempts: 1,
            duration_ms: 300,
            error: None,
        }
    }

    #[test]
    fn an_outage_runs_from_the_first_missed_answer_to_the_recovery() {
        let mut o = Outages::default();
        o.observe(Timestamp(1_000), &seen("db-1", "reachable", "no"));
        o.observe(Timestamp(3_000), &seen("db-1", "down", "yes"));
        let open = o.of("db-1");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].detection_ms, Some(2_000));
        assert_eq!(open[0].rto_ms, None, "not back yet");
        o.observe(Timestamp(4_500), &powered_on("db-1"));
        let done = o.of("db-1");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].rto_ms, Some(3_500));
        assert_eq!(done[0].outage.action.as_deref(), Some("power_on"));
        assert!(o.of("web-1").is_empty());
    }

    #[test]
    fn a_blip_is_no_outage_and_a_recovery_without_one_records_nothing() {
        let mut o = Outages::default();
        o.observe(Timestamp(1_000), &seen("db-1", "reachable", "no"));
        o.observe(Timestamp(1_500), &seen("db-1", "reachable", "yes"));
        assert!(o.of("db-1").is_empty());
        o.observe(Timestamp(2_000), &powered_on("db-1"));
        assert!(o.of("db-1").is_empty());
    }

    #[test]
    fn a_vm_judged_down_without_probes_opens_its_outage_then_and_few_are_kept() {
        let mut o = Outages::default();
        for i in 0..(KEPT as u64 + 2) {
            o.observe(Timestamp(i * 10_000), &seen("db-1", "down", "yes"));
            o.observe(Timestamp(i * 10_000 + 700), &powered_on("db-1"));
        }
        let all = o.of("db-1");
        assert_eq!(all.len(), KEPT);
        assert_eq!(
            all[0].outage.since_ms,
            (KEPT as u64 + 1) * 10_000,
            "newest first"
        );
        assert!(all
            .iter()
            .all(|v| v.rto_ms == Some(700) && v.detection_ms == Some(0)));
        o.observe(
            Timestamp(100_000),
            &ControlEvent::Inventory {
                added_hosts: vec![],
                removed_hosts: vec![],
                added_vms: vec![],
                removed_vms: vec!["db-1".into()],
            },
        );
        assert!(o.of("db-1").is_empty(), "forgotten with the VM");
    }
}
