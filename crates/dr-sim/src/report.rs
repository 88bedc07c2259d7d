//! What a run produced: the timeline, a summary per VM, and the verdict of
//! the safety checks; printable as JSON lines or as a readable timeline.

use crate::fault::{Fault, FaultTarget};
use crate::scenario::Scenario;
use crate::world::{HostState, World};
use dr_control::{ControlEvent, Subject};
use dr_core::{Decision, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::{self, Write};

/// One line of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// Something the control loop saw or did.
    Control(ControlEvent),
    /// A fault the simulation injected.
    Fault(Fault),
}

/// How one VM fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VmSummary {
    /// The VM.
    pub vm: String,
    /// `running`, `stopped_by_user`, `hung` or `down`.
    pub final_state: &'static str,
    /// Where it is registered at the end.
    pub final_host: String,
    /// Times it stopped serving while meant to run.
    pub outages: usize,
    /// Worst time from an outage's start to its detection (the engine
    /// seeing it down), milliseconds.
    pub time_to_detect_ms: Option<u64>,
    /// Worst time from an outage's start to serving again (RTO), ms.
    pub rto_ms: Option<u64>,
    /// Recovery actions started for it, in order.
    pub actions: Vec<&'static str>,
    /// Times a second copy of it ran at once. Must be 0.
    pub double_runs: u32,
}

/// The safety checks of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Total double runs. Must be 0.
    pub double_runs: u32,
    /// Actions on VMs a user had stopped, as `vm:op@time`. Must be empty.
    pub user_stop_violations: Vec<String>,
    /// VMs that should be running at the end (not stopped by a user, with a
    /// way back: their host is up, or they have a snapshot or replica) and
    /// are not.
    pub unrecovered: Vec<String>,
    /// VMs the scenario creates during the run that could not be created.
    pub setup_errors: Vec<String>,
    /// Every check passed.
    pub ok: bool,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// The timeline.
    pub records: Vec<(Timestamp, Record)>,
    /// Per VM.
    pub summaries: Vec<VmSummary>,
    /// The checks.
    pub verdict: Verdict,
}

impl Report {
    pub(crate) fn new(
        scenario: &Scenario,
        records: Vec<(Timestamp, Record)>,
        world: &World,
        end: Timestamp,
    ) -> Report {
        let mut summaries = Vec::new();
        let mut unrecovered = Vec::new();
        for vm in &world.vms {
            let name = &vm.spec.name;
            let downs: Vec<Timestamp> = records
                .iter()
                .filter_map(|(t, r)| match r {
                    Record::Control(ControlEvent::Observation {
                        subject: Subject::Vm(v),
                        field: "down",
                        ..
                    }) if v == name => Some(*t),
                    _ => None,
                })
                .collect();
            let mut detect = None::<u64>;
            let mut rto = None::<u64>;
            for o in &vm.outages {
                let stop = o.end.unwrap_or(end);
                if let Some(d) = downs.iter().find(|&&t| t >= o.start && t <= stop) {
                    detect = detect.max(Some(d.since(o.start).as_millis() as u64));
                }
                if let Some(e) = o.end {
                    rto = rto.max(Some(e.since(o.start).as_millis() as u64));
                }
            }
            let actions = records
                .iter()
                .filter_map(|(_, r)| match r {
                    Record::Control(ControlEvent::ActionStarted { action })
                        if action.vm() == name =>
                    {
                        Some(action.kind())
                    }
                    _ => None,
                })
                .collect();
            let final_state = if vm.user_stopped {
                "stopped_by_user"
            } else if vm.serving() {
                "running"
            } else if !vm.instances.is_empty() {
                "hung"
            } else {
                "down"
            };
            let host_up = world.hosts[vm.host].state == HostState::Up;
            let has_way_back = host_up || vm.spec.replica || !vm.snapshots.is_empty();
            let recoverable = !vm.user_stopped && has_way_back && (vm.spec.tools || !vm.hung);
            if recoverable && !vm.serving() {
                unrecovered.push(name.clone());
            }
            summaries.push(VmSummary {
                vm: name.clone(),
                final_state,
                final_host: world.hosts[vm.host].spec.name.clone(),
                outages: vm.outages.len(),
                time_to_detect_ms: detect,
                rto_ms: rto,
                actions,
                double_runs: vm.double_runs,
            });
        }
        let double_runs = world.vms.iter().map(|v| v.double_runs).sum();
        let user_stop_violations: Vec<String> = world
            .user_stop_violations
            .iter()
            .map(|v| format!("{}:{}@{}", v.vm, v.op, v.at))
            .collect();
        let setup_errors = world.rejected_creations.clone();
        let ok = double_runs == 0
            && user_stop_violations.is_empty()
            && unrecovered.is_empty()
            && setup_errors.is_empty();
        Report {
            name: scenario.name.clone(),
            seed: scenario.seed,
            records,
            summaries,
            verdict: Verdict {
                double_runs,
                user_stop_violations,
                unrecovered,
                setup_errors,
                ok,
            },
        }
    }

    /// The timeline, then one summary line per VM, then the verdict, each a
    /// JSON object on its own line with `t_ms` (virtual milliseconds) first.
    pub fn write_json_lines(&self, out: &mut dyn Write) -> io::Result<()> {
        for (t, r) in &self.records {
            let mut line = Map::new();
            line.insert("t_ms".into(), Value::from(t.as_millis()));
            let body = match r {
                Record::Control(e) => serde_json::to_value(e),
                Record::Fault(f) => serde_json::to_value(f).map(|mut v| {
                    if let Value::Object(m) = &mut v {
                        m.insert("type".into(), Value::from("fault"));
                    }
                    v
                }),
            }
            .map_err(io::Error::other)?;
            if let Value::Object(m) = body {
                if let Some(ty) = m.get("type") {
                    line.insert("type".into(), ty.clone());
                }
                line.extend(m);
            }
            writeln!(out, "{}", Value::Object(line))?;
        }
        for s in &self.summaries {
            let mut v = serde_json::to_value(s).map_err(io::Error::other)?;
            if let Value::Object(m) = &mut v {
                let mut line = Map::new();
                line.insert("type".into(), Value::from("summary"));
                line.extend(std::mem::take(m));
                v = Value::Object(line);
            }
            writeln!(out, "{v}")?;
        }
        let mut line = Map::new();
        line.insert("type".into(), Value::from("verdict"));
        line.insert("scenario".into(), Value::from(self.name.clone()));
        line.insert("seed".into(), Value::from(self.seed));
        if let Value::Object(m) = serde_json::to_value(&self.verdict).map_err(io::Error::other)? {
            line.extend(m);
        }
        writeln!(out, "{}", Value::Object(line))
    }

    /// A readable timeline and summary table.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "scenario: {} (seed {})", self.name, self.seed)?;
        for (t, r) in &self.records {
            writeln!(out, "{t}  {}", human_line(r))?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:<16} {:<16} {:<14} {:>7} {:>10} {:>10} {:>6}  actions",
            "vm", "final state", "host", "outages", "detect", "rto", "double"
        )?;
        for s in &self.summaries {
            let secs = |ms: Option<u64>| {
                ms.map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
            };
            writeln!(
                out,
                "{:<16} {:<16} {:<14} {:>7} {:>10} {:>10} {:>6}  {}",
                s.vm,
                s.final_state,
                s.final_host,
                s.outages,
                secs(s.time_to_detect_ms),
                secs(s.rto_ms),
                s.double_runs,
                s.actions.join(", ")
            )?;
        }
        let v = &self.verdict;
        writeln!(out)?;
        writeln!(
            out,
            "verdict: {} (double runs: {}, actions on user-stopped VMs: {}, unrecovered: {})",
            if v.ok { "OK" } else { "FAILED" },
            v.double_runs,
            v.user_stop_violations.len(),
            if v.unrecovered.is_empty() {
                "none".to_owned()
            } else {
                v.unrecovered.join(", ")
            }
        )
    }
}

fn subject(s: &Subject) -> String {
    match s {
        Subject::Vm(n) => format!("vm {n}"),
        Subject::Host(n) => format!("host {n}"),
    }
}

fn decision_text(d: &Decision, host: Option<&str>) -> String {
    let on = host.unwrap_or("?");
    match d {
        Decision::None { why } => format!("no action ({why:?})"),
        Decision::Wait { why } => format!("wait ({why:?})"),
        Decision::Alert { why } => format!("ALERT ({why:?})"),
        Decision::RestartInPlace { reset: false } => "power on in place".to_owned(),
        Decision::RestartInPlace { reset: true } => "reset in place".to_owned(),
        Decision::RevertToSnapshot => "revert to snapshot in place".to_owned(),
        Decision::FenceHost { .. } => format!("fence host {on} through its fence device"),
        Decision::RecoverHost { .. } => format!("recover host {on} from its snapshot"),
        Decision::Restore {
            source, evidence, ..
        } => format!(
            "restore on {on} from {source:?} (its host: {})",
            evidence.as_str()
        ),
        Decision::AddHostThenRestore {
            source, evidence, ..
        } => format!(
            "add host {on}, restore there from {source:?} (its host: {})",
            evidence.as_str()
        ),
    }
}

fn human_line(r: &Record) -> String {
    match r {
        Record::Fault(f) => {
            let target = match &f.target {
                FaultTarget::Vm(n) => format!("vm {n}"),
                FaultTarget::Host(n) => format!("host {n}"),
            };
            let kind = serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.get("fault").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            format!("FAULT     {kind} on {target}")
        }
        Record::Control(e) => match e {
            ControlEvent::Inventory {
                added_hosts,
                removed_hosts,
                added_vms,
                removed_vms,
            } => format!(
                "inventory +{} hosts -{} hosts +{} vms -{} vms",
                added_hosts.len(),
                removed_hosts.len(),
                added_vms.len(),
                removed_vms.len()
            ),
            ControlEvent::Observation {
                subject: s,
                field,
                from,
                to,
            } => format!("observe   {} {field}: {from} -> {to}", subject(s)),
            ControlEvent::Decision { vm, decision, host } => format!(
                "decide    vm {vm}: {}",
                decision_text(decision, host.as_deref())
            ),
            ControlEvent::ActionStarted { action } => format!(
                "start     {} for vm {} (host {})",
                action.kind(),
                action.vm(),
                action.charged_host()
            ),
            ControlEvent::ActionFinished {
                action,
                ok,
                attempts,
                duration_ms,
                error,
            } => format!(
                "finish    {} for vm {}: {} after {:.1}s, {attempts} attempt(s){}",
                action.kind(),
                action.vm(),
                if *ok { "ok" } else { "FAILED" },
                *duration_ms as f64 / 1000.0,
                error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            ),
            ControlEvent::OperationStarted {
                operation,
                vm,
                from,
                to,
            } => format!("start     {operation} for vm {vm} ({from} -> {to})"),
            ControlEvent::OperationFinished {
                operation,
                vm,
                ok,
                duration_ms,
                error,
                ..
            } => format!(
                "finish    {operation} for vm {vm}: {} after {:.1}s{}",
                if *ok { "ok" } else { "FAILED" },
                *duration_ms as f64 / 1000.0,
                error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            ),
            ControlEvent::Error { context, error } => format!("error     {context}: {error}"),
        },
    }
}
