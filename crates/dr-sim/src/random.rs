//! Seeded random faults and random datacenters, for the random-fault mode.
//!
//! The generator keeps to faults after which every VM is recoverable once
//! the faults stop, so that the run's final check ("every recoverable VM is
//! running again") is a real test of the engine, not of luck:
//! at most one host is lost for good, and that one can be proved down (by
//! its power-off, or by an agent whose promise counts); every lasting fault
//! ends inside the window.
//!
//! The hosts' agents and the faults that test them (full isolation, a host
//! cut off from vmdr and its manager at once, storage loss, agent crashes)
//! come from a second random stream of the same seed, so the rest of each
//! seed's datacenter and timeline is what it was before they existed.

use crate::agent::AgentSpec;
use crate::fault::{Fault, FaultKind, FaultTarget};
use crate::hypervisor::Latencies;
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::world::FenceSpec;
use crate::world::{HostSpec, VmSpec};
use dr_control::ControlConfig;
use dr_core::model::Reassurance;
use dr_core::{Policy, Timestamp};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// `count` random faults between `start` and `start + window`.
pub fn faults(
    rng: &mut Rng,
    hosts: &[HostSpec],
    vms: &[VmSpec],
    start: Duration,
    window: Duration,
    count: u32,
) -> Vec<Fault> {
    let live: Vec<&HostSpec> = hosts.iter().filter(|h| !h.standby).collect();
    let t0 = Timestamp::ZERO.saturating_add(start);
    let t_end = t0.saturating_add(window);
    let span = dr_core::time::millis(window).max(1);
    let mut out = Vec::new();
    let mut lost_for_good = false;
    // Per host: until when a partition or a management loss lasts.
    let mut net_busy: Vec<Timestamp> = vec![Timestamp::ZERO; hosts.len()];
    let secs = |rng: &mut Rng, lo: u64, hi: u64| Duration::from_secs(rng.range(lo, hi));
    for _ in 0..count {
        let at = Timestamp(t0.0 + rng.next_u64() % span);
        let clamp = |t: Timestamp| t.min(t_end);
        let roll = rng.range(0, 99);
        if (roll < 50 || live.is_empty()) && !vms.is_empty() {
            let vm = &vms[rng.index(vms.len())];
            let target = FaultTarget::Vm(vm.name.clone());
            let kind = match roll % 10 {
                0..=3 => FaultKind::VmCrash,
                4 if vm.tools => FaultKind::VmHang,
                4 => FaultKind::VmCrash,
                5 => FaultKind::VmUserPowerOff,
                6 => FaultKind::VmUserPowerOn,
                7 => packet_loss(rng, at, t_end, &target, &mut out),
                8 => {
                    let period = secs(rng, 20, 90);
                    for i in 1..rng.range(2, 3) as u32 {
                        let t = at.saturating_add(period * i);
                        if t <= t_end {
                            out.push(Fault {
                                at: t,
                                kind: FaultKind::VmCrash,
                                target: target.clone(),
                            });
                        }
                    }
                    FaultKind::VmCrash
                }
                _ => FaultKind::RestoreFails {
                    count: rng.range(1, 2) as u32,
                },
            };
            out.push(Fault { at, kind, target });
        } else if !live.is_empty() {
            let hi = rng.index(live.len());
            let host = live[hi];
            let h = hosts.iter().position(|x| x.name == host.name).unwrap_or(0);
            let target = FaultTarget::Host(host.name.clone());
            let kind = match roll % 10 {
                0..=3 => {
                    // A host that goes down comes back (by its snapshot, or
                    // repaired later), except at most one lost for good.
                    let for_good = !lost_for_good && rng.chance(0.3);
                    lost_for_good |= for_good;
                    if !for_good {
                        let back = clamp(at.saturating_add(secs(rng, 60, 300)));
                        out.push(Fault {
                            at: back,
                            kind: FaultKind::HostRecover,
                            target: target.clone(),
                        });
                    }
                    if roll % 10 == 3 {
                        FaultKind::HostPowerOff
                    } else {
                        FaultKind::HostCrash {
                            recoverable: !for_good,
                        }
                    }
                }
                4..=6 if net_busy[h] <= at => {
                    let end = clamp(at.saturating_add(secs(rng, 20, 180)));
                    net_busy[h] = end;
                    out.push(Fault {
                        at: end,
                        kind: FaultKind::HostHeal,
                        target: target.clone(),
                    });
                    if roll % 10 == 6 {
                        FaultKind::HostMgmtLoss
                    } else {
                        FaultKind::HostPartition
                    }
                }
                4..=7 => packet_loss(rng, at, t_end, &target, &mut out),
                _ => FaultKind::HostRecoveryFails { count: 1 },
            };
            out.push(Fault { at, kind, target });
        }
    }
    out
}

/// Gives every host an agent: most the standard one (reassured by gateway
/// and storage, with a watchdog), some a pure lease, some whose promise
/// proves nothing (reassured by the gateway alone, or without a watchdog),
/// with isolation timeouts of 20–40 s. A host lost for good gets one that
/// counts, so its VMs can come back.
fn give_agents(rng: &mut Rng, hosts: &mut [HostSpec], faults: &[Fault]) {
    let lost_for_good = |name: &str| {
        faults.iter().any(|f| {
            f.kind == FaultKind::HostCrash { recoverable: false }
                && f.target == FaultTarget::Host(name.to_owned())
        })
    };
    for h in hosts.iter_mut() {
        let mut agent = AgentSpec {
            isolation_timeout: Duration::from_secs(rng.range(20, 40)),
            ..AgentSpec::standard()
        };
        match rng.range(0, 9) {
            0..=5 => {}
            6 | 7 => agent.reassurance = Reassurance::None,
            8 => {
                agent.reassurance = Reassurance::Gateway;
                agent.storage_heartbeat = false;
            }
            _ => agent.watchdog = false,
        }
        if lost_for_good(&h.name) && (agent.reassurance == Reassurance::Gateway || !agent.watchdog)
        {
            agent = AgentSpec {
                isolation_timeout: agent.isolation_timeout,
                ..AgentSpec::standard()
            };
        }
        h.agent = Some(agent);
    }
}

/// Gives two hosts in three a fence device: most work (an off in 1–5 s),
/// some fail or hang once to three times first, and some never work (their
/// VMs then move on their agents' evidence).
fn give_fences(rng: &mut Rng, hosts: &mut [HostSpec]) {
    for h in hosts.iter_mut() {
        let mut spec = FenceSpec {
            delay: Duration::from_millis(rng.range(1_000, 5_000)),
            ..FenceSpec::working()
        };
        match rng.range(0, 11) {
            0..=3 => continue,
            4..=7 => {}
            8 => spec.failures = rng.range(1, 3) as u32,
            9 => {
                spec.failures = rng.range(1, 3) as u32;
                spec.hangs = true;
            }
            _ => spec.failures = u32::MAX,
        }
        h.fence = Some(spec);
    }
}

/// 0–3 faults of isolation per run, each ending inside the window: a host
/// fully isolated, one cut off from vmdr and from its manager at once (its
/// gateway still answering), one losing its heartbeat storage, or one
/// whose agent dies.
fn isolation_faults(
    rng: &mut Rng,
    hosts: &[HostSpec],
    start: Duration,
    window: Duration,
) -> Vec<Fault> {
    let live: Vec<&HostSpec> = hosts.iter().filter(|h| !h.standby).collect();
    let mut out = Vec::new();
    if live.is_empty() {
        return out;
    }
    let t0 = Timestamp::ZERO.saturating_add(start);
    let t_end = t0.saturating_add(window);
    let span = dr_core::time::millis(window).max(1);
    for _ in 0..rng.range(0, 3) {
        let at = Timestamp(t0.0 + rng.next_u64() % span);
        let host = FaultTarget::Host(live[rng.index(live.len())].name.clone());
        let end = at
            .saturating_add(Duration::from_secs(rng.range(20, 180)))
            .min(t_end);
        let mut push = |at, kind| {
            out.push(Fault {
                at,
                kind,
                target: host.clone(),
            })
        };
        match rng.range(0, 3) {
            0 => {
                push(at, FaultKind::HostIsolation);
                push(end, FaultKind::HostHeal);
            }
            1 => {
                push(at, FaultKind::HostPartition);
                push(at, FaultKind::HostMgmtLoss);
                push(end, FaultKind::HostHeal);
            }
            2 => {
                push(at, FaultKind::StorageLoss);
                push(end, FaultKind::StorageHeal);
            }
            _ => {
                push(at, FaultKind::AgentCrash);
                push(end, FaultKind::AgentRestart);
            }
        }
    }
    out
}

/// Probe loss on `target` from `at` for 30–180 s (ending by `t_end`): pushes
/// the end, returns the start.
fn packet_loss(
    rng: &mut Rng,
    at: Timestamp,
    t_end: Timestamp,
    target: &FaultTarget,
    out: &mut Vec<Fault>,
) -> FaultKind {
    let end = at
        .saturating_add(Duration::from_secs(rng.range(30, 180)))
        .min(t_end);
    out.push(Fault {
        at: end,
        kind: FaultKind::PacketLoss { loss: 0.0 },
        target: target.clone(),
    });
    FaultKind::PacketLoss {
        loss: 0.1 + rng.next_f64() * 0.5,
    }
}

/// A random datacenter and fault timeline for `seed`: two sites, a spare,
/// 4–14 VMs with replicas, 5–25 faults in a 10-minute window, then 15 quiet
/// minutes for recovery to finish.
pub fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let host =
        |name: String, site: &str, n: u8, standby: bool, snapshot: bool, memory_mb: u64| HostSpec {
            name,
            site: site.to_owned(),
            ip: Some(IpAddr::V4(Ipv4Addr::new(
                10,
                0,
                if site == "primary" { 1 } else { 2 },
                n,
            ))),
            cpu_mhz: 64_000,
            memory_mb,
            snapshot,
            standby,
            // Drawn by `give_agents` and `give_fences`, from streams of
            // their own.
            agent: None,
            fence: None,
        };
    let primary = rng.range(3, 5) as u8;
    let mut vms = Vec::new();
    let mut load = vec![0u64; usize::from(primary)];
    for i in 0..rng.range(4, 14) as u8 {
        let on = i % primary;
        let memory_mb = rng.range(1, 4) * 2048;
        load[usize::from(on)] += memory_mb;
        vms.push(VmSpec {
            name: format!("vm-{i:02}"),
            ip: IpAddr::V4(Ipv4Addr::new(10, 1, 0, i + 1)),
            host: format!("esx-p{}", 1 + on),
            cpu_mhz: rng.range(1, 4) as u32 * 1000,
            // No draw for it: every seed's datacenter stays as it was.
            cpu_reservation_mhz: 0,
            memory_mb,
            memory_overhead_mb: 0,
            snapshot: rng.chance(0.6),
            replica: true,
            tools: true,
            powered_on: true,
            created_at: None,
        });
    }
    // Tight hosts (their load plus 0-16 GiB), small secondaries, and one
    // spare big enough for any host's load: restores compete for room and
    // sometimes need the spare, yet every VM fits once all but one host are
    // back.
    let mut hosts = Vec::new();
    for (i, l) in load.iter().enumerate() {
        let snap = rng.chance(0.7);
        let memory = (l + rng.range(0, 8) * 2048).max(8192);
        hosts.push(host(
            format!("esx-p{}", i + 1),
            "primary",
            i as u8 + 1,
            false,
            snap,
            memory,
        ));
    }
    for i in 1..=rng.range(1, 2) as u8 {
        let snap = rng.chance(0.7);
        let memory = rng.range(1, 3) * 8192;
        hosts.push(host(
            format!("esx-s{i}"),
            "secondary",
            i,
            false,
            snap,
            memory,
        ));
    }
    hosts.push(host(
        "esx-spare".to_owned(),
        "primary",
        200,
        true,
        false,
        65_536,
    ));
    let start = Duration::from_secs(30);
    let window = Duration::from_secs(600);
    let count = rng.range(5, 25) as u32;
    let mut faults = faults(&mut rng, &hosts, &vms, start, window, count);
    let mut isolation_rng = Rng::new(seed ^ 0x0015_01a7_ed0f_3bc3);
    give_agents(&mut isolation_rng, &mut hosts, &faults);
    faults.extend(isolation_faults(&mut isolation_rng, &hosts, start, window));
    give_fences(&mut Rng::new(seed ^ 0x0f3c_e0de_71ce_5eed), &mut hosts);
    faults.sort_by_key(|f| f.at);
    Scenario {
        name: format!("random seed {seed}"),
        seed,
        duration: start + window + Duration::from_secs(900),
        control: ControlConfig {
            policy: random_policy(),
            inventory_interval: Duration::from_secs(30),
            action_timeout: Duration::from_secs(120),
            ..ControlConfig::default()
        },
        latencies: Latencies::default(),
        hosts,
        vms,
        faults,
    }
}

/// The policy of random runs: the defaults, with the give-up limit above the
/// number of failures the generator can inject into one VM (so a give-up is
/// a finding, not noise) and a back-off cap that fits the quiet period.
pub fn random_policy() -> Policy {
    Policy {
        max_attempts: 30,
        backoff_max: Duration::from_secs(120),
        ..Policy::default()
    }
}
