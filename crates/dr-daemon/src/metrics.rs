//! Prometheus metrics, kept by hand (a few counters, gauges and
//! histograms) and written in the text exposition format.

use crate::state::Status;
use dr_control::{ControlEvent, Subject};
use dr_core::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

/// Histogram bucket bounds, seconds: recoveries, detection, RTO.
const BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Probe round-trip bucket bounds, seconds.
const RTT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
];

#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64; 12],
    counts: [u64; 12],
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with(&BUCKETS)
    }
}

impl Histogram {
    fn with(bounds: &'static [f64; 12]) -> Self {
        Histogram {
            bounds,
            counts: [0; 12],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, secs: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    ticks: u64,
    /// The last successful recoveries' durations (ms), by action kind, for
    /// the failure budget's predicted RTOs.
    durations: BTreeMap<&'static str, std::collections::VecDeque<u64>>,
    /// The view's age (ms), whether it is stale, the step failing.
    view: (Option<u64>, bool, Option<&'static str>),
    hosts: usize,
    vms: usize,
    vms_unreachable: usize,
    vms_paused: usize,
    in_flight: u32,
    decisions: BTreeMap<String, u64>,
    started: BTreeMap<String, u64>,
    finished: BTreeMap<(String, bool), u64>,
    errors: BTreeMap<&'static str, u64>,
    reloads: BTreeMap<bool, u64>,
    recovery: Histogram,
    detection: Histogram,
    rto: Histogram,
    rtt: Option<Histogram>,
    probes_answered: u64,
    probes_lost: u64,
    /// Per VM: when it first stopped answering (detection and RTO start).
    unreachable_since: HashMap<String, Timestamp>,
    /// Per VM: when it was judged down.
    down_at: HashMap<String, Timestamp>,
    /// The daemon's clock at the last tick.
    now: Timestamp,
    /// Per kind ("vm", "host"): taken, pruned, failed, start of the last
    /// round that took any.
    snapshots: BTreeMap<&'static str, (u64, u64, u64, Option<Timestamp>)>,
}

/// Successful recoveries kept per kind for their median duration.
const DURATIONS_KEPT: usize = 64;

/// The daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<Inner>);

fn secs(from: Timestamp, to: Timestamp) -> f64 {
    to.0.saturating_sub(from.0) as f64 / 1000.0
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one probe batch: round-trip times of the answers, and losses.
    pub fn probes(&self, results: &[dr_core::ports::ProbeResult]) {
        let mut m = self.inner();
        let rtt = m.rtt.get_or_insert_with(|| Histogram::with(&RTT_BUCKETS));
        let mut lost = 0;
        for r in results {
            match (r.reachable, r.rtt) {
                (true, Some(t)) => rtt.observe(t.as_secs_f64()),
                (true, None) => {}
                (false, _) => lost += 1,
            }
        }
        m.probes_lost += lost;
        m.probes_answered += results.len() as u64 - lost;
    }

    /// Counts a configuration reload.
    pub fn reload(&self, ok: bool) {
        *self.inner().reloads.entry(ok).or_default() += 1;
    }

    /// Counts a snapshot round of `kind` that started at `started`.
    pub fn snapshots(
        &self,
        kind: &'static str,
        taken: usize,
        pruned: usize,
        failed: usize,
        started: Timestamp,
    ) {
        let mut m = self.inner();
        let e = m.snapshots.entry(kind).or_default();
        e.0 += taken as u64;
        e.1 += pruned as u64;
        e.2 += failed as u64;
        if taken > 0 {
            e.3 = Some(started);
        }
    }

    pub(crate) fn observe_status(&self, s: &Status) {
        let mut m = self.inner();
        m.now = Timestamp(s.at_ms);
        m.ticks = s.ticks;
        m.view = (
            s.view.age_ms,
            s.view.stale,
            s.view.failing.as_ref().map(|f| f.step),
        );
        m.hosts = s.hosts.len();
        m.vms = s.vms.len();
        m.vms_unreachable = s.vms.iter().filter(|v| v.reachable == Some(false)).count();
        m.vms_paused = s.vms.iter().filter(|v| v.paused).count();
        m.in_flight = s.in_flight;
    }

    /// The median duration of the last successful recoveries of `kind`
    /// ("restore", "add_host_then_restore", …), ms; `None` before one.
    pub fn median_ms(&self, kind: &str) -> Option<u64> {
        let m = self.inner();
        let mut d: Vec<u64> = m.durations.get(kind)?.iter().copied().collect();
        d.sort_unstable();
        d.get(d.len() / 2).copied()
    }

    pub(crate) fn set_paused_count(&self, n: usize) {
        self.inner().vms_paused = n;
    }

    pub(crate) fn observe_event(&self, at: Timestamp, e: &ControlEvent) {
        let mut m = self.inner();
        match e {
            ControlEvent::Observation {
                subject: Subject::Vm(vm),
                field,
                to,
                ..
            } => match (*field, to.as_str()) {
                ("reachable", "no") => {
                    m.unreachable_since.entry(vm.clone()).or_insert(at);
                }
                // Answering again without a recovery (a blip, or a recovery
                // already counted): no RTO to measure.
                ("reachable", "yes") if !m.down_at.contains_key(vm) => {
                    m.unreachable_since.remove(vm);
                }
                ("down", "yes") => {
                    if let Some(&since) = m.unreachable_since.get(vm) {
                        m.detection.observe(secs(since, at));
                    }
                    m.down_at.insert(vm.clone(), at);
                }
                _ => {}
            },
            ControlEvent::Decision { decision, .. } => {
                let kind = serde_json::to_value(decision)
                    .ok()
                    .and_then(|v| {
                        v.get("decision")
                            .and_then(|d| d.as_str())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "unknown".into());
                *m.decisions.entry(kind).or_default() += 1;
            }
            ControlEvent::ActionStarted { action } => {
                *m.started.entry(action.kind().to_owned()).or_default() += 1;
            }
            ControlEvent::ActionFinished {
                action,
                ok,
                duration_ms,
                ..
            } => {
                *m.finished
                    .entry((action.kind().to_owned(), *ok))
                    .or_default() += 1;
                m.recovery.observe(*duration_ms as f64 / 1000.0);
                if *ok {
                    let kept = m.durations.entry(action.kind()).or_default();
                    if kept.len() == DURATIONS_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(*duration_ms);
                }
                if *ok {
                    let vm = action.vm().to_owned();
                    m.down_at.remove(&vm);
                    if let Some(since) = m.unreachable_since.remove(&vm) {
                        m.rto.observe(secs(since, at));
                    }
                }
            }
            ControlEvent::Error { context, .. } => {
                *m.errors.entry(context).or_default() += 1;
            }
            _ => {}
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let m = self.inner();
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let _ = writeln!(
            out,
            "# HELP vmdr_ticks_total Control loop ticks.\n# TYPE vmdr_ticks_total counter\nvmdr_ticks_total {}",
            m.ticks
        );
        gauge(
            &mut out,
            "vmdr_hosts",
            "Hosts monitored.",
            m.hosts.to_string(),
        );
        gauge(&mut out, "vmdr_vms", "VMs monitored.", m.vms.to_string());
        let (age, stale, failing) = m.view;
        if let Some(age) = age {
            gauge(
                &mut out,
                "vmdr_view_age_seconds",
                "How old the hosts' and VMs' picture is: since a tick last read the prober and the hypervisor.",
                (age as f64 / 1000.0).to_string(),
            );
        }
        gauge(
            &mut out,
            "vmdr_view_stale",
            "1 when that picture is too old to trust (the backend or the prober failing).",
            u8::from(stale).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP vmdr_step_failing 1 for the tick step failing now.\n# TYPE vmdr_step_failing gauge"
        );
        for step in ["probe", "inventory", "power_events"] {
            let _ = writeln!(
                out,
                "vmdr_step_failing{{step=\"{step}\"}} {}",
                u8::from(failing == Some(step))
            );
        }
        gauge(
            &mut out,
            "vmdr_vms_unreachable",
            "VMs whose last probe went unanswered.",
            m.vms_unreachable.to_string(),
        );
        gauge(
            &mut out,
            "vmdr_vms_paused",
            "VMs with automation paused.",
            m.vms_paused.to_string(),
        );
        gauge(
            &mut out,
            "vmdr_recoveries_in_flight",
            "Recoveries running.",
            m.in_flight.to_string(),
        );
        let _ = writeln!(out, "# HELP vmdr_decisions_total Decision changes, by kind.\n# TYPE vmdr_decisions_total counter");
        for (k, v) in &m.decisions {
            let _ = writeln!(out, "vmdr_decisions_total{{kind=\"{}\"}} {v}", escape(k));
        }
        let _ = writeln!(out, "# HELP vmdr_recoveries_started_total Recoveries started, by action.\n# TYPE vmdr_recoveries_started_total counter");
        for (k, v) in &m.started {
            let _ = writeln!(
                out,
                "vmdr_recoveries_started_total{{action=\"{}\"}} {v}",
                escape(k)
            );
        }
        let _ = writeln!(out, "# HELP vmdr_recoveries_finished_total Recoveries ended, by action and result.\n# TYPE vmdr_recoveries_finished_total counter");
        for ((k, ok), v) in &m.finished {
            let result = if *ok { "ok" } else { "failed" };
            let _ = writeln!(
                out,
                "vmdr_recoveries_finished_total{{action=\"{}\",result=\"{result}\"}} {v}",
                escape(k)
            );
        }
        let _ = writeln!(out, "# HELP vmdr_loop_errors_total Failed steps of the control loop, by step.\n# TYPE vmdr_loop_errors_total counter");
        for (k, v) in &m.errors {
            let _ = writeln!(out, "vmdr_loop_errors_total{{step=\"{k}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP vmdr_config_reloads_total Configuration reloads, by result.\n# TYPE vmdr_config_reloads_total counter");
        for (ok, v) in &m.reloads {
            let result = if *ok { "applied" } else { "rejected" };
            let _ = writeln!(out, "vmdr_config_reloads_total{{result=\"{result}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP vmdr_snapshots_total Scheduled snapshots, by target kind and result.\n# TYPE vmdr_snapshots_total counter");
        for (kind, (taken, pruned, failed, _)) in &m.snapshots {
            let _ = writeln!(
                out,
                "vmdr_snapshots_total{{kind=\"{kind}\",result=\"taken\"}} {taken}"
            );
            let _ = writeln!(
                out,
                "vmdr_snapshots_total{{kind=\"{kind}\",result=\"pruned\"}} {pruned}"
            );
            let _ = writeln!(
                out,
                "vmdr_snapshots_total{{kind=\"{kind}\",result=\"failed\"}} {failed}"
            );
        }
        let _ = writeln!(out, "# HELP vmdr_snapshot_age_seconds Age of the last scheduled snapshot round that took snapshots, by target kind.\n# TYPE vmdr_snapshot_age_seconds gauge");
        for (kind, (_, _, _, last)) in &m.snapshots {
            if let Some(t) = last {
                let _ = writeln!(
                    out,
                    "vmdr_snapshot_age_seconds{{kind=\"{kind}\"}} {}",
                    secs(*t, m.now)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP vmdr_probes_total Probes sent, by result.\n# TYPE vmdr_probes_total counter"
        );
        let _ = writeln!(
            out,
            "vmdr_probes_total{{result=\"answered\"}} {}",
            m.probes_answered
        );
        let _ = writeln!(
            out,
            "vmdr_probes_total{{result=\"lost\"}} {}",
            m.probes_lost
        );
        if let Some(rtt) = &m.rtt {
            rtt.write(
                &mut out,
                "vmdr_probe_rtt_seconds",
                "Round-trip time of answered probes.",
            );
        }
        m.recovery.write(
            &mut out,
            "vmdr_recovery_duration_seconds",
            "How long recovery actions took.",
        );
        m.detection.write(
            &mut out,
            "vmdr_detection_seconds",
            "From a VM's first unanswered probe to its being judged down.",
        );
        m.rto.write(
            &mut out,
            "vmdr_rto_seconds",
            "From a VM's first unanswered probe to its successful recovery.",
        );
        out
    }
}

/// The cluster's metrics from this node's view of it.
pub fn cluster(s: &dr_cluster::ClusterStatus) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, v: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    metric(
        "vmdr_cluster_leader",
        "gauge",
        "1 while this node leads the cluster (and may act).",
        u8::from(s.role == dr_cluster::Role::Leader).to_string(),
    );
    metric(
        "vmdr_cluster_epoch",
        "gauge",
        "The leader's epoch (its leader key's creation revision); 0 with no leader.",
        s.leader.as_ref().map_or(0, |l| l.epoch).to_string(),
    );
    metric(
        "vmdr_cluster_leader_changes_total",
        "counter",
        "Changes of leader this node has seen.",
        s.leader_changes.to_string(),
    );
    metric(
        "vmdr_cluster_leaderless_seconds_total",
        "counter",
        "Time this node has seen no leader since it started.",
        (s.leaderless_ms as f64 / 1000.0).to_string(),
    );
    if let Some(ms) = s.renew_ms {
        metric(
            "vmdr_cluster_lease_renew_seconds",
            "gauge",
            "The last lease renewal's round trip to etcd.",
            (ms / 1000.0).to_string(),
        );
    }
    if let Some(left) = s.lease_left_ms {
        metric(
            "vmdr_cluster_lease_left_seconds",
            "gauge",
            "While leading: time before this node stops acting unless a renewal succeeds.",
            (left as f64 / 1000.0).to_string(),
        );
    }
    metric(
        "vmdr_cluster_etcd_reachable",
        "gauge",
        "0 while etcd does not answer this node.",
        u8::from(s.etcd_error.is_none()).to_string(),
    );
    out
}
