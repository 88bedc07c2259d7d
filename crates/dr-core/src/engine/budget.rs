//! The failure budget: what losing a host, or a whole site, now would cost,
//! before it happens. The planner is pure and fast, so it is simply run on
//! "these hosts are lost for good, now": the VMs they run are taken as
//! down, their hosts as confirmed down with no host recovery left, and the
//! planner is run again and again (each run a *wave*: the restores the
//! concurrency limits admit at once), the admitted restores taking their
//! room on their targets, until no VM moves any more. What is left is what
//! would stay down, with the decision that keeps it there.
//!
//! It says what the planner would do, not what the world would: a restore
//! that fails is not foreseen (the simulation measures how close the
//! prediction comes).

use super::decision::{Decision, Quiet};
use super::evidence::proof_after_silence;
use super::facts::{ClusterFacts, Fencing, HostFacts, HostIdx, HostRecovery, VmFacts};
use super::plan::{Engine, PlanScratch};
use super::policy::cpu_demand;
use crate::model::{Heartbeat, HostLink, PowerState, RestoreSource};
use crate::time::Timestamp;
use serde::Serialize;

/// What would become of one VM of the lost hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum Fate {
    /// Brought up on `target` in wave `wave` (0: the first), from
    /// `source`; `spare`: the target is a standby host added first.
    Restored {
        /// Where.
        target: HostIdx,
        /// From what.
        source: RestoreSource,
        /// In which wave.
        wave: u32,
        /// The target is a spare, added first.
        spare: bool,
    },
    /// Would stay down: the decision that keeps it there.
    Down {
        /// The last decision about it.
        decision: Decision,
    },
    /// Not vmdr's to bring back (off by a user, suspended, paused): left as
    /// it is, not at risk.
    LeftAlone {
        /// Why.
        why: Quiet,
    },
}

impl Fate {
    /// Would stay down although vmdr should bring it back.
    pub fn at_risk(&self) -> bool {
        matches!(self, Fate::Down { .. })
    }
}

impl Engine {
    /// What losing the hosts `lost` for good at `now` would do to the VMs
    /// they run: one `(index into vms, fate)` per such VM, in `vms` order.
    /// Every other VM is taken as it is now (it keeps its host and its
    /// room); recoveries under way now are taken as finished.
    pub fn what_if_lost(
        &self,
        now: Timestamp,
        vms: &[VmFacts],
        hosts: &[HostFacts],
        lost: &[HostIdx],
    ) -> Vec<(usize, Fate)> {
        let policy = self.policy();
        // Lost now, every channel silent from now (its agent dies with it),
        // confirmed down `host_down_after` later (fenced then, if it has a
        // fence device) or at its agent's deadline: the waves are planned from the last of those. A host
        // nothing can prove down keeps its VMs down, as it would.
        let mut at = now.saturating_add(policy.host_down_after);
        let mut world: Vec<HostFacts> = hosts.to_vec();
        for &h in lost {
            if let Some(f) = world.get_mut(h as usize) {
                f.link = HostLink::NotResponding;
                f.unreachable_since = Some(now);
                f.probe_failures = policy.failure_threshold;
                f.recovery = HostRecovery::Failed;
                if let Some(proof) = proof_after_silence(policy, f) {
                    at = at.max(now.saturating_add(proof));
                }
                if let Some(a) = &mut f.agent {
                    a.last_heard = now;
                }
                if let Some(s) = &mut f.storage {
                    s.last_moved = now;
                    s.fenced = false;
                }
                // Its fence device, if it has one, is taken to work (a
                // broken one shows only when it is run).
                if f.fence != Fencing::NoDevice {
                    f.fence = Fencing::Off;
                }
            }
        }
        for f in &mut world {
            f.in_flight = 0;
        }
        let mut pending: Vec<(usize, VmFacts)> = vms
            .iter()
            .enumerate()
            .filter(|(_, v)| lost.contains(&v.host))
            .map(|(i, v)| {
                let mut f = *v;
                f.probe_failures = policy.failure_threshold;
                f.power = PowerState::Unknown;
                f.heartbeat = Heartbeat::Unknown;
                f.in_flight = false;
                f.retry_at = Timestamp::ZERO;
                f.stable_at = Timestamp::ZERO;
                (i, f)
            })
            .collect();
        let mut fates: Vec<(usize, Fate)> = Vec::with_capacity(pending.len());
        let mut scratch = PlanScratch::default();
        let mut decisions = Vec::new();
        let mut facts: Vec<VmFacts> = Vec::new();
        let mut wave = 0u32;
        while !pending.is_empty() {
            facts.clear();
            facts.extend(pending.iter().map(|(_, f)| *f));
            self.plan_into(
                at,
                &facts,
                &world,
                ClusterFacts { in_flight: 0 },
                &mut scratch,
                &mut decisions,
            );
            let mut moved = false;
            let mut next = Vec::new();
            for (&(i, f), &d) in pending.iter().zip(&decisions) {
                let (target, source, spare) = match d {
                    Decision::Restore { target, source, .. } => (target, source, false),
                    Decision::AddHostThenRestore { spare, source, .. } => (spare, source, true),
                    Decision::None { why } => {
                        fates.push((i, Fate::LeftAlone { why }));
                        continue;
                    }
                    // Held back by a limit, or by a spare being added: the
                    // next wave.
                    Decision::Wait { .. } => {
                        next.push((i, f, d));
                        continue;
                    }
                    _ => {
                        fates.push((i, Fate::Down { decision: d }));
                        continue;
                    }
                };
                moved = true;
                if let Some(t) = world.get_mut(target as usize) {
                    let cpu = cpu_demand(f.cpu_mhz, f.cpu_reservation_mhz, t.cpu_overcommit);
                    t.free_memory_mb = t.free_memory_mb.saturating_sub(u64::from(f.memory_mb));
                    t.free_cpu_mhz = t.free_cpu_mhz.saturating_sub(cpu);
                    // Its load as a VM on its way there counts (the
                    // registry does the same for restores under way).
                    t.load.cpu_used_mhz = t.load.cpu_used_mhz.saturating_add(cpu);
                    t.load.memory_used_mb += u64::from(f.memory_mb);
                    // An added spare takes VMs like any connected host.
                    t.link = HostLink::Connected;
                }
                fates.push((
                    i,
                    Fate::Restored {
                        target,
                        source,
                        wave,
                        spare,
                    },
                ));
            }
            if !moved {
                // Nothing moved: what waits now waits for good.
                fates.extend(
                    next.into_iter()
                        .map(|(i, _, d)| (i, Fate::Down { decision: d })),
                );
                break;
            }
            pending = next.into_iter().map(|(i, f, _)| (i, f)).collect();
            wave += 1;
        }
        fates.sort_by_key(|&(i, _)| i);
        fates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::policy::Policy;

    fn engine(per_host: u16) -> Engine {
        Engine::new(Policy {
            max_in_flight_per_host: per_host,
            ..Policy::default()
        })
        .expect("policy")
    }

    /// A host whose agent (with a watchdog, heard long ago) promises to
    /// fence itself after 30 s.
    fn with_agent(mut h: HostFacts) -> HostFacts {
        h.agent = Some(crate::model::AgentSignal {
            last_heard: Timestamp(0),
            interval_ms: 1_000,
            isolation_timeout_ms: 30_000,
            reassurance: crate::model::Reassurance::None,
            watchdog: true,
        });
        h
    }

    #[test]
    fn the_lost_hosts_vms_go_where_there_is_room_in_waves_and_the_rest_stay_down() {
        // h0 runs five VMs of 4 GiB; h1 has room for three, h2 for none.
        let hosts = [
            with_agent(HostFacts::connected(0, 0, 0)),
            HostFacts::connected(0, 12_288, 100_000),
            HostFacts::connected(0, 1_024, 100_000),
        ];
        let mut vms: Vec<VmFacts> = (0..5)
            .map(|_| {
                let mut v = VmFacts::running_on(0);
                v.memory_mb = 4_096;
                v.has_snapshot = true;
                v
            })
            .collect();
        // One on h1, untouched by h0's loss; one stopped by a user.
        vms.push(VmFacts::running_on(1));
        vms[4].off_cause = crate::engine::facts::OffCause::User;
        let fates = engine(2).what_if_lost(Timestamp(1_000_000), &vms, &hosts, &[0]);
        assert_eq!(fates.len(), 5, "only the lost host's VMs: {fates:?}");
        let restored: Vec<u32> = fates
            .iter()
            .filter_map(|(_, f)| match f {
                Fate::Restored {
                    target: 1, wave, ..
                } => Some(*wave),
                _ => None,
            })
            .collect();
        // Two per wave on h1 (its limit), then the third: room for three.
        assert_eq!(restored, vec![0, 0, 1], "{fates:?}");
        assert!(matches!(fates[3].1, Fate::Down { .. }), "{fates:?}");
        assert!(fates[3].1.at_risk());
        assert_eq!(
            fates[4].1,
            Fate::LeftAlone {
                why: Quiet::UserStopped
            }
        );
    }

    #[test]
    fn a_spare_is_added_when_no_connected_host_has_room() {
        let mut spare = HostFacts::connected(0, 65_536, 100_000);
        spare.link = HostLink::Standby;
        let hosts = [with_agent(HostFacts::connected(0, 0, 0)), spare];
        let mut v = VmFacts::running_on(0);
        v.has_replica = true;
        let fates = engine(4).what_if_lost(Timestamp(1_000_000), &[v, v], &hosts, &[0]);
        assert!(
            fates
                .iter()
                .all(|(_, f)| matches!(f, Fate::Restored { target: 1, .. })),
            "{fates:?}"
        );
        assert!(matches!(fates[0].1, Fate::Restored { spare: true, .. }));
    }

    #[test]
    fn a_host_nothing_can_prove_down_keeps_its_vms_down() {
        let hosts = [
            HostFacts::connected(0, 0, 0),
            HostFacts::connected(0, 65_536, 100_000),
        ];
        let mut v = VmFacts::running_on(0);
        v.has_replica = true;
        let fates = engine(4).what_if_lost(Timestamp(1_000_000), &[v], &hosts, &[0]);
        assert_eq!(
            fates[0].1,
            Fate::Down {
                decision: Decision::Alert {
                    why: crate::engine::decision::AlertReason::HostDownUnproven
                }
            }
        );
        // Its site trusting unreachability, it comes back.
        let mut trusting = hosts;
        trusting[0].trust_unreachable = true;
        let fates = engine(4).what_if_lost(Timestamp(1_000_000), &[v], &trusting, &[0]);
        assert!(matches!(fates[0].1, Fate::Restored { target: 1, .. }));
    }
}
