use super::assess::{assess, Need};
use super::decision::{AlertReason, Decision, DownEvidence, WaitReason};
use super::facts::{ClusterFacts, HostFacts, HostIdx, VmFacts};
use super::policy::{cpu_demand, Policy, PolicyError};
use crate::model::{HostLink, RestoreSource};
use crate::time::Timestamp;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The decision engine: a validated [`Policy`] and the planning pass.
#[derive(Clone, Debug)]
pub struct Engine {
    policy: Policy,
}

/// Reusable working memory for [`Engine::plan_into`], so a steady control
/// loop plans without allocating.
#[derive(Default, Debug)]
pub struct PlanScratch {
    /// Recoveries admitted in this pass, per host.
    admitted: Vec<u16>,
    /// Memory reserved on restore targets in this pass, per host.
    reserved_mem: Vec<u64>,
    /// CPU reserved on restore targets in this pass, per host.
    reserved_cpu: Vec<u32>,
    /// Host recovery or spare addition already claimed in this pass.
    claimed: Vec<bool>,
    /// Host fence already decided in this pass.
    fencing: Vec<bool>,
    /// Connected hosts, most free memory first: a target's rank, the order
    /// among equally loaded ones. Built on first use per pass.
    targets: Vec<HostIdx>,
    targets_built: bool,
    /// The targets with budget left, least loaded first: (load now, this
    /// pass's reservations counted; rank). A target's load changes only
    /// when it is picked, and it is out of the heap then, so no key is
    /// ever stale.
    by_load: BinaryHeap<Reverse<(u64, u32)>>,
    /// Targets found out of budget in this pass (budgets only shrink
    /// within a pass, so they never come back).
    exhausted: Vec<HostIdx>,
    /// Targets that could not take the VM being placed, put back after.
    aside: Vec<Reverse<(u64, u32)>>,
}

impl PlanScratch {
    fn reset(&mut self, hosts: usize) {
        self.admitted.clear();
        self.admitted.resize(hosts, 0);
        self.reserved_mem.clear();
        self.reserved_mem.resize(hosts, 0);
        self.reserved_cpu.clear();
        self.reserved_cpu.resize(hosts, 0);
        self.claimed.clear();
        self.claimed.resize(hosts, false);
        self.fencing.clear();
        self.fencing.resize(hosts, false);
        self.targets.clear();
        self.targets_built = false;
        self.by_load.clear();
        self.exhausted.clear();
        self.aside.clear();
    }
}

/// The state of one planning pass.
struct Pass<'a> {
    policy: &'a Policy,
    hosts: &'a [HostFacts],
    s: &'a mut PlanScratch,
    cluster_in_flight: u32,
    cluster_admitted: u32,
}

impl Pass<'_> {
    fn host_has_budget(&self, h: usize) -> bool {
        u32::from(self.hosts[h].in_flight) + u32::from(self.s.admitted[h])
            < u32::from(self.policy.max_in_flight_per_host)
    }

    fn cluster_has_budget(&self) -> bool {
        self.cluster_in_flight.saturating_add(self.cluster_admitted)
            < self.policy.max_in_flight_total
    }

    /// Admits `d`, charged to host `h`, or says why not.
    fn admit(&mut self, h: usize, d: Decision) -> Decision {
        if !self.cluster_has_budget() {
            return Decision::Wait {
                why: WaitReason::ClusterLimit,
            };
        }
        if !self.host_has_budget(h) {
            return Decision::Wait {
                why: WaitReason::HostLimit,
            };
        }
        self.s.admitted[h] += 1;
        self.cluster_admitted += 1;
        d
    }

    /// What `vm` costs host `h` in CPU, at the host's overcommit.
    fn cpu_demand(&self, h: usize, vm: &VmFacts) -> u32 {
        cpu_demand(
            vm.cpu_mhz,
            vm.cpu_reservation_mhz,
            self.hosts[h].cpu_overcommit,
        )
    }

    fn fits(&self, h: usize, vm: &VmFacts) -> bool {
        let host = &self.hosts[h];
        host.free_memory_mb.saturating_sub(self.s.reserved_mem[h]) >= u64::from(vm.memory_mb)
            && host.free_cpu_mhz.saturating_sub(self.s.reserved_cpu[h]) >= self.cpu_demand(h, vm)
    }

    fn reserve(&mut self, h: usize, vm: &VmFacts) {
        self.s.reserved_mem[h] += u64::from(vm.memory_mb);
        self.s.reserved_cpu[h] += self.cpu_demand(h, vm);
    }

    /// How loaded host `h` is now, with what this pass has already sent
    /// there (millionths of its busier resource).
    fn load_now(&self, h: usize) -> u64 {
        self.hosts[h]
            .load
            .after(u64::from(self.s.reserved_cpu[h]), self.s.reserved_mem[h])
    }

    fn build_targets(&mut self) {
        if self.s.targets_built {
            return;
        }
        self.s.targets_built = true;
        let hosts = self.hosts;
        self.s.targets.extend(
            (0..hosts.len())
                .filter(|&h| hosts[h].link.accepts_vms())
                .map(|h| h as HostIdx),
        );
        self.s.targets.sort_by(|&a, &b| {
            hosts[b as usize]
                .free_memory_mb
                .cmp(&hosts[a as usize].free_memory_mb)
                .then(a.cmp(&b))
        });
        for rank in 0..self.s.targets.len() {
            let h = self.s.targets[rank] as usize;
            let key = (self.load_now(h), rank as u32);
            self.s.by_load.push(Reverse(key));
        }
    }

    /// Picks where `vm` (whose host `from` is confirmed down) comes up.
    fn relocate(&mut self, vm: &VmFacts, evidence: DownEvidence) -> Decision {
        if !vm.has_snapshot && !vm.shared_disks && !vm.has_replica {
            return Decision::Alert {
                why: AlertReason::NoRecoverySource,
            };
        }
        if !self.cluster_has_budget() {
            return Decision::Wait {
                why: WaitReason::ClusterLimit,
            };
        }
        let from = vm.host as usize;
        let from_site = self.hosts.get(from).map(|h| h.site);
        // The VM's snapshot (or its disks) live on its site's shared
        // storage; its replica is reachable from every site.
        let source_for = |site: u16| -> Option<RestoreSource> {
            let same_site = Some(site) == from_site;
            match (
                (vm.has_snapshot || vm.shared_disks) && same_site,
                vm.has_replica,
            ) {
                (true, true) if self.policy.prefer_replica => Some(RestoreSource::Replica),
                (true, _) => Some(RestoreSource::Snapshot),
                (false, true) => Some(RestoreSource::Replica),
                (false, false) => None,
            }
        };
        self.build_targets();
        // Spreading: the least loaded target that can take it (what this
        // pass already sent there counted), so a lost host's VMs land
        // across the site, not on one host until it is full. Targets out
        // of budget leave the heap for the pass; those that cannot take
        // this VM are put back after.
        let mut pick = None;
        while let Some(Reverse((load, rank))) = self.s.by_load.pop() {
            let h = self.s.targets[rank as usize] as usize;
            if !self.host_has_budget(h) {
                self.s.exhausted.push(h as HostIdx);
                continue;
            }
            let source = source_for(self.hosts[h].site);
            match source {
                Some(source) if h != from && self.fits(h, vm) => {
                    pick = Some((h, rank, source));
                    break;
                }
                _ => self.s.aside.push(Reverse((load, rank))),
            }
        }
        while let Some(e) = self.s.aside.pop() {
            self.s.by_load.push(e);
        }
        if let Some((h, rank, source)) = pick {
            self.reserve(h, vm);
            let key = (self.load_now(h), rank);
            self.s.by_load.push(Reverse(key));
            return self.admit(
                h,
                Decision::Restore {
                    target: h as HostIdx,
                    source,
                    evidence,
                },
            );
        }
        // The targets out of budget may have the room: then the VM waits
        // for them (a pass later), it is not out of capacity.
        let host_limited = self.s.exhausted.iter().any(|&t| {
            let h = t as usize;
            h != from && self.fits(h, vm) && source_for(self.hosts[h].site).is_some()
        });
        if host_limited {
            return Decision::Wait {
                why: WaitReason::HostLimit,
            };
        }
        // No connected host has room: the paper's "add a new vHost".
        let mut spare_busy = false;
        for h in 0..self.hosts.len() {
            let host = &self.hosts[h];
            if host.link != HostLink::Standby || h == from || !self.fits(h, vm) {
                continue;
            }
            if host.in_flight > 0 || self.s.claimed[h] {
                spare_busy = true;
                continue;
            }
            let Some(source) = source_for(host.site) else {
                continue;
            };
            self.s.claimed[h] = true;
            self.reserve(h, vm);
            return self.admit(
                h,
                Decision::AddHostThenRestore {
                    spare: h as HostIdx,
                    source,
                    evidence,
                },
            );
        }
        if spare_busy {
            return Decision::Wait {
                why: WaitReason::AwaitingHost,
            };
        }
        Decision::Alert {
            why: AlertReason::NoCapacity,
        }
    }
}

impl Engine {
    /// An engine with a checked policy.
    pub fn new(policy: Policy) -> Result<Self, PolicyError> {
        policy.validate()?;
        Ok(Engine { policy })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// One decision per VM (same order as `vms`). Pure: same inputs, same
    /// decisions. Allocates only the returned vector and scratch; see
    /// [`Engine::plan_into`] to reuse both.
    pub fn plan(
        &self,
        now: Timestamp,
        vms: &[VmFacts],
        hosts: &[HostFacts],
        cluster: ClusterFacts,
    ) -> Vec<Decision> {
        let mut out = Vec::with_capacity(vms.len());
        self.plan_into(
            now,
            vms,
            hosts,
            cluster,
            &mut PlanScratch::default(),
            &mut out,
        );
        out
    }

    /// [`Engine::plan`] into caller-owned buffers. `out` is cleared first.
    ///
    /// A VM whose `host` index is out of range is treated as on a lost,
    /// unconfirmed host: it waits, it is never moved.
    pub fn plan_into(
        &self,
        now: Timestamp,
        vms: &[VmFacts],
        hosts: &[HostFacts],
        cluster: ClusterFacts,
        scratch: &mut PlanScratch,
        out: &mut Vec<Decision>,
    ) {
        scratch.reset(hosts.len());
        out.clear();
        out.reserve(vms.len());
        let mut pass = Pass {
            policy: &self.policy,
            hosts,
            s: scratch,
            cluster_in_flight: cluster.in_flight,
            cluster_admitted: 0,
        };
        for vm in vms {
            let h = vm.host as usize;
            let Some(host) = hosts.get(h) else {
                out.push(Decision::Wait {
                    why: WaitReason::HostNotConfirmedDown,
                });
                continue;
            };
            let d = match assess(&self.policy, now, vm, host) {
                Need::Settled(d) => d,
                Need::InPlace(d) => pass.admit(h, d),
                // One fence per host; not charged to the recovery limits:
                // it moves nothing and it is what every other recovery of
                // the host's VMs waits for.
                Need::FenceHost if pass.s.fencing[h] => Decision::Wait {
                    why: WaitReason::HostFencing,
                },
                Need::FenceHost => {
                    pass.s.fencing[h] = true;
                    Decision::FenceHost { host: vm.host }
                }
                Need::RecoverHost => {
                    if pass.s.claimed[h] {
                        Decision::Wait {
                            why: WaitReason::HostRecoveryInFlight,
                        }
                    } else {
                        let d = pass.admit(h, Decision::RecoverHost { host: vm.host });
                        if d.is_action() {
                            pass.s.claimed[h] = true;
                        }
                        d
                    }
                }
                Need::Relocate(evidence) => pass.relocate(vm, evidence),
            };
            out.push(d);
        }
    }
}
