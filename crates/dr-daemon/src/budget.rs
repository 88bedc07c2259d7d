//! The failure budget as the daemon publishes it: for every host and every
//! site, what losing it now would cost (`dr_core`'s
//! [`Engine::what_if_lost`]), by name, with a predicted RTO per restored VM
//! from the recovery durations this daemon has measured. Recomputed when
//! the picture it rests on changes, not every tick.

use dr_control::registry::Registry;
use dr_core::engine::{proof_after_silence, Fate, Fencing, HostFacts, VmFacts};
use dr_core::{Engine, Timestamp};
use serde::Serialize;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// One failure and what it would cost.
#[derive(Clone, Debug, Serialize)]
pub struct FailureCost {
    /// "host" or "site".
    pub kind: &'static str,
    /// The host's or the site's name.
    pub name: String,
    /// The VMs that would come back, where, and when.
    pub restored: Vec<Restored>,
    /// The VMs that would stay down, and why.
    pub down: Vec<Down>,
    /// VMs of it vmdr leaves alone (off by a user, paused, suspended).
    pub left_alone: usize,
    /// The longest predicted RTO among the restored, ms (`None` before a
    /// restore has been measured).
    pub worst_rto_ms: Option<u64>,
}

/// A VM that would come back.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// The VM.
    pub vm: String,
    /// Where.
    pub target: String,
    /// The target is a spare host, added first.
    pub spare: bool,
    /// The wave of restores it belongs to (0: the first; the concurrency
    /// limits admit a wave at a time).
    pub wave: u32,
    /// Detection, then its wave's turn, then the restore itself, at the
    /// measured median durations; `None` before one was measured.
    pub predicted_rto_ms: Option<u64>,
}

/// A VM that would stay down.
#[derive(Clone, Debug, Serialize)]
pub struct Down {
    /// The VM.
    pub vm: String,
    /// The decision that keeps it down (`no_capacity`,
    /// `no_recovery_source`, …).
    pub decision: serde_json::Value,
}

/// The whole budget.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Budget {
    /// When it was computed, ms on the daemon's clock; `None` before.
    pub computed_at_ms: Option<u64>,
    /// One per host, then one per site.
    pub failures: Vec<FailureCost>,
    /// Losing some single host would leave a VM down.
    pub single_host_at_risk: bool,
}

impl Budget {
    /// Prometheus text: VMs at risk and the worst predicted RTO per
    /// failure, and whether losing some single host leaves a VM down.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if self.computed_at_ms.is_none() {
            return out;
        }
        let _ = writeln!(out, "# HELP vmdr_budget_vms_at_risk VMs that would stay down if this host or site were lost now.\n# TYPE vmdr_budget_vms_at_risk gauge");
        for f in &self.failures {
            let _ = writeln!(
                out,
                "vmdr_budget_vms_at_risk{{failure=\"{}:{}\"}} {}",
                f.kind,
                f.name,
                f.down.len()
            );
        }
        let _ = writeln!(out, "# HELP vmdr_budget_worst_rto_seconds The longest predicted RTO of the VMs restored after this failure.\n# TYPE vmdr_budget_worst_rto_seconds gauge");
        for f in &self.failures {
            if let Some(ms) = f.worst_rto_ms {
                let _ = writeln!(
                    out,
                    "vmdr_budget_worst_rto_seconds{{failure=\"{}:{}\"}} {}",
                    f.kind,
                    f.name,
                    ms as f64 / 1000.0
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP vmdr_budget_single_host_at_risk 1 when losing some single host would leave a VM down.\n# TYPE vmdr_budget_single_host_at_risk gauge\nvmdr_budget_single_host_at_risk {}",
            u8::from(self.single_host_at_risk)
        );
        out
    }
}

/// The measured durations a prediction rests on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Durations {
    /// Median restore, ms.
    pub restore_ms: Option<u64>,
    /// Median add-a-spare-then-restore, ms.
    pub add_host_ms: Option<u64>,
    /// Median host recovery from its snapshot, ms: a lost host that has
    /// one is tried first, and its VMs move only once that failed.
    pub recover_host_ms: Option<u64>,
    /// Median fence of a host through its device, ms (none measured yet:
    /// taken as instant).
    pub fence_ms: Option<u64>,
    /// From a host's loss to its VMs' restores being decided, on
    /// unreachability alone: the probes that notice it plus
    /// `host_down_after`. A host whose agent's deadline comes later waits
    /// for that (`dr_core::engine::proof_after_silence`).
    pub detect: Duration,
}

/// From `host`'s loss to its VMs' restores being decided: the probes and
/// `host_down_after`, or its agent's deadline when that comes later; with a
/// fence device, the fence after that, unless the agent's deadline (or a
/// trusting site) comes first.
fn detection(policy: &dr_core::Policy, host: &HostFacts, d: &Durations) -> Duration {
    let proof = proof_after_silence(policy, host).unwrap_or_default();
    let lost = d.detect.max(proof);
    if host.fence == Fencing::NoDevice {
        return lost;
    }
    let fenced = lost + Duration::from_millis(d.fence_ms.unwrap_or(0));
    let deviceless = HostFacts {
        fence: Fencing::NoDevice,
        ..*host
    };
    proof_after_silence(policy, &deviceless).map_or(fenced, |other| fenced.min(d.detect.max(other)))
}

/// A fingerprint of what the budget rests on: hosts' links, room and load,
/// each VM's host, size, power and recovery sources. Equal fingerprints, equal budget.
pub fn fingerprint(reg: &Registry) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &reg.hosts {
        (
            f.link as u8,
            f.free_memory_mb,
            f.free_cpu_mhz,
            f.site,
            f.has_snapshot,
            // What would prove it down, not when it was last heard.
            f.trust_unreachable,
            f.agent
                .map(|a| (a.isolation_timeout_ms, a.reassurance, a.watchdog)),
            f.storage.map(|s| s.readable),
            f.fence != Fencing::NoDevice,
            f.cpu_overcommit,
            // The load orders restore targets; in steps of 5 %, so usage
            // that only wavers does not recompute the budget.
            f.load.after(0, 0) / 50_000,
        )
            .hash(&mut h);
    }
    for e in &reg.host_entries {
        e.fence_device.as_ref().map(Result::is_ok).hash(&mut h);
    }
    for f in &reg.vms {
        (
            f.host,
            f.power as u8,
            f.memory_mb,
            f.cpu_mhz,
            f.cpu_reservation_mhz,
            f.has_snapshot,
            f.shared_disks,
            f.has_replica,
            f.paused,
            f.off_cause as u8,
        )
            .hash(&mut h);
    }
    h.finish()
}

/// What the budget is computed from: the registry's facts and names,
/// copied, so the computation runs off the loop (and its async threads).
#[derive(Clone, Debug, Default)]
pub struct Input {
    vms: Vec<VmFacts>,
    hosts: Vec<HostFacts>,
    vm_names: Vec<String>,
    host_names: Vec<String>,
    site_names: std::collections::BTreeMap<u16, String>,
}

impl Input {
    /// A copy of what `reg` knows now.
    pub fn of(reg: &Registry) -> Input {
        Input {
            vms: reg.vms.clone(),
            // A device failing its monitor is not one to count on.
            hosts: reg
                .hosts
                .iter()
                .zip(&reg.host_entries)
                .map(|(f, e)| match e.fence_device {
                    Some(Err(_)) => HostFacts {
                        fence: Fencing::NoDevice,
                        ..*f
                    },
                    _ => *f,
                })
                .collect(),
            vm_names: reg.vm_entries.iter().map(|e| e.name.clone()).collect(),
            host_names: reg.host_entries.iter().map(|e| e.name.clone()).collect(),
            site_names: reg
                .hosts
                .iter()
                .filter_map(|h| Some((h.site, reg.site_name(h.site)?.to_owned())))
                .collect(),
        }
    }

    fn host_name(&self, h: u32) -> &str {
        self.host_names.get(h as usize).map_or("?", String::as_str)
    }
}

/// Computes the budget of `reg` at `now`.
pub fn compute(engine: &Engine, reg: &Input, now: Timestamp, d: Durations) -> Budget {
    let mut failures = Vec::new();
    for (i, name) in reg.host_names.iter().enumerate() {
        if !reg.hosts[i].link.accepts_vms() {
            continue;
        }
        failures.push(cost(engine, reg, now, d, "host", name.clone(), &[i as u32]));
    }
    let mut sites: Vec<u16> = reg.hosts.iter().map(|h| h.site).collect();
    sites.sort_unstable();
    sites.dedup();
    if sites.len() > 1 {
        for site in sites {
            let lost: Vec<u32> = (0..reg.hosts.len())
                .filter(|&h| reg.hosts[h].site == site)
                .map(|h| h as u32)
                .collect();
            let name = reg
                .site_names
                .get(&site)
                .cloned()
                .unwrap_or_else(|| "?".into());
            failures.push(cost(engine, reg, now, d, "site", name, &lost));
        }
    }
    let single_host_at_risk = failures
        .iter()
        .any(|f| f.kind == "host" && !f.down.is_empty());
    Budget {
        computed_at_ms: Some(now.0),
        failures,
        single_host_at_risk,
    }
}

fn cost(
    engine: &Engine,
    reg: &Input,
    now: Timestamp,
    d: Durations,
    kind: &'static str,
    name: String,
    lost: &[u32],
) -> FailureCost {
    let mut out = FailureCost {
        kind,
        name,
        restored: Vec::new(),
        down: Vec::new(),
        left_alone: 0,
        worst_rto_ms: None,
    };
    for (i, fate) in engine.what_if_lost(now, &reg.vms, &reg.hosts, lost) {
        let vm = reg.vm_names.get(i).cloned().unwrap_or_default();
        match fate {
            Fate::Restored {
                target,
                spare,
                wave,
                ..
            } => {
                let each = if spare { d.add_host_ms } else { d.restore_ms };
                let home = reg.vms.get(i).map(|v| v.host as usize);
                let host_try = match home.and_then(|h| reg.hosts.get(h)) {
                    Some(h) if h.has_snapshot => d.recover_host_ms,
                    _ => Some(0),
                };
                let detect = dr_core::time::millis(
                    home.and_then(|h| reg.hosts.get(h))
                        .map_or(d.detect, |h| detection(engine.policy(), h, &d)),
                );
                let predicted_rto_ms = each.zip(host_try).map(|(ms, first)| {
                    detect
                        .saturating_add(first)
                        .saturating_add(ms.saturating_mul(u64::from(wave) + 1))
                });
                out.worst_rto_ms = out.worst_rto_ms.max(predicted_rto_ms);
                out.restored.push(Restored {
                    vm,
                    target: reg.host_name(target).to_owned(),
                    spare,
                    wave,
                    predicted_rto_ms,
                });
            }
            Fate::Down { decision } => out.down.push(Down {
                vm,
                decision: serde_json::to_value(decision).unwrap_or_default(),
            }),
            Fate::LeftAlone { .. } => out.left_alone += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_core::model::{AgentSignal, Reassurance};

    #[test]
    fn detection_adds_the_fence_unless_the_agents_deadline_comes_first() {
        let policy = dr_core::Policy::default();
        let d = Durations {
            fence_ms: Some(3_000),
            detect: Duration::from_secs(18),
            ..Durations::default()
        };
        let mut h = HostFacts::connected(0, 0, 0);
        assert_eq!(detection(&policy, &h, &d), Duration::from_secs(18));
        h.fence = Fencing::Ready;
        assert_eq!(detection(&policy, &h, &d), Duration::from_secs(21));
        // Its agent's deadline (30 s + 0.2 % + 0.5 s) comes later: the fence.
        h.agent = Some(AgentSignal {
            last_heard: Timestamp::ZERO,
            interval_ms: 1_000,
            isolation_timeout_ms: 30_000,
            reassurance: Reassurance::None,
            watchdog: true,
        });
        assert_eq!(detection(&policy, &h, &d), Duration::from_secs(21));
        // A fence slower than the deadline: the deadline.
        let slow = Durations {
            fence_ms: Some(60_000),
            ..d
        };
        assert_eq!(detection(&policy, &h, &slow), Duration::from_millis(30_560));
    }
}
