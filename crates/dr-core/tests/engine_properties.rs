//! Property tests of every safety rule of the decision engine, over random
//! clusters, random facts and random observation histories. Each property
//! names the rule of `docs/decision-table.md` it checks.

use dr_core::engine::{
    cpu_demand, ledger, AlertReason, ClusterFacts, DownEvidence, Fencing, HaFacts, HostFacts,
    HostLoad, HostRecovery, OffCause, PlanScratch, VmFacts, WaitReason,
};
use dr_core::model::{
    AgentSignal, HaHostState, HaSignal, Heartbeat, HostLink, PowerState, Reassurance,
    RestoreSource, StorageSignal,
};
use dr_core::{Decision, Engine, Policy, Timestamp};
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

/// Failing cases are kept beside this file and replayed first on every run.
fn persistence() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
    Some(Box::new(
        proptest::test_runner::FileFailurePersistence::Direct(
            "tests/engine_properties.proptest-regressions",
        ),
    ))
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        (1u16..=5, 0u64..60_000, 1u16..=5, 1u32..=20),
        (1u64..30_000, 0u64..120_000, 1u8..=10),
        (
            0u64..120_000,
            0u64..60_000,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (0u64..5_000, any::<bool>(), 0u64..60_000),
    )
        .prop_map(
            |(
                (threshold, down_ms, per_host, total),
                (base, extra, attempts),
                (stable, grace, reset, fence, prefer),
                (margin, watchdog, fence_retry),
            )| Policy {
                failure_threshold: threshold,
                host_down_after: Duration::from_millis(down_ms),
                max_in_flight_per_host: per_host,
                max_in_flight_total: total,
                backoff_base: Duration::from_millis(base),
                backoff_max: Duration::from_millis(base + extra),
                max_attempts: attempts,
                stable_after: Duration::from_millis(stable),
                boot_grace: Duration::from_millis(grace),
                reset_hung_guests: reset,
                require_fencing: fence,
                prefer_replica: prefer,
                // The engine sees CPU as the registry counted it already.
                cpu_overcommit: 4,
                self_fence_margin: Duration::from_millis(margin),
                fence_retry: Duration::from_millis(fence_retry),
                agent_needs_watchdog: watchdog,
                // The engine sees the site's trust as a host fact.
                sites: Default::default(),
            },
        )
}

fn link() -> impl Strategy<Value = HostLink> {
    prop_oneof![
        4 => Just(HostLink::Connected),
        1 => Just(HostLink::Maintenance),
        3 => Just(HostLink::NotResponding),
        1 => Just(HostLink::Disconnected),
        1 => Just(HostLink::PoweredOff),
        1 => Just(HostLink::Standby),
    ]
}

fn host() -> impl Strategy<Value = HostFacts> {
    (
        (
            link(),
            0u16..8,
            proptest::option::of(0u64..200_000),
            0u64..65_536,
            0u32..40_000,
        ),
        (
            0u16..4,
            0u16..3,
            any::<bool>(),
            prop_oneof![
                Just(HostRecovery::NotTried),
                Just(HostRecovery::InFlight),
                Just(HostRecovery::Failed)
            ],
        ),
        (
            proptest::option::of(agent()),
            proptest::option::of(storage()),
            prop::bool::weighted(0.2),
            fencing(),
            proptest::option::weighted(0.3, ha()),
        ),
        (
            1u16..9,
            0u32..80_000,
            0u32..80_000,
            0u64..131_072,
            0u64..131_072,
        ),
    )
        .prop_map(
            |(
                (link, probe_failures, since, mem, cpu),
                (in_flight, site, snap, recovery),
                (agent, storage, trust_unreachable, fence, ha),
                (cpu_overcommit, cpu_cap, cpu_used, mem_cap, mem_used),
            )| {
                HostFacts {
                    unreachable_since: since.map(Timestamp),
                    free_memory_mb: mem,
                    free_cpu_mhz: cpu,
                    cpu_overcommit,
                    load: HostLoad {
                        cpu_mhz: cpu_cap,
                        cpu_used_mhz: cpu_used,
                        memory_mb: mem_cap,
                        memory_used_mb: mem_used,
                    },
                    probe_failures,
                    in_flight,
                    site,
                    link,
                    has_snapshot: snap,
                    recovery,
                    trust_unreachable,
                    agent,
                    storage,
                    fence,
                    ha,
                }
            },
        )
}

fn ha() -> impl Strategy<Value = HaFacts> {
    (
        prop_oneof![
            Just(HaHostState::Alive),
            Just(HaHostState::Partitioned),
            Just(HaHostState::Isolated),
            Just(HaHostState::Dead),
            Just(HaHostState::Unknown),
        ],
        any::<bool>(),
        proptest::option::of(0u32..400_000),
        0u64..250_000,
    )
        .prop_map(|(state, restarts, response_after_ms, since)| HaFacts {
            signal: HaSignal {
                state,
                restarts,
                response_after_ms,
            },
            since: Timestamp(since),
        })
}

fn fencing() -> impl Strategy<Value = Fencing> {
    prop_oneof![
        4 => Just(Fencing::NoDevice),
        2 => Just(Fencing::Ready),
        1 => Just(Fencing::InFlight),
        1 => Just(Fencing::Off),
        1 => (0u64..250_000).prop_map(|t| Fencing::Failed { retry_at: Timestamp(t) }),
    ]
}

fn agent() -> impl Strategy<Value = AgentSignal> {
    (
        0u64..250_000,
        prop_oneof![1 => Just(0u32), 6 => 1u32..60_000],
        prop_oneof![
            Just(Reassurance::None),
            Just(Reassurance::Gateway),
            Just(Reassurance::GatewayAndStorage)
        ],
        any::<bool>(),
        prop_oneof![Just(0u32), 100u32..5_000],
    )
        .prop_map(
            |(heard, timeout, reassurance, watchdog, interval_ms)| AgentSignal {
                last_heard: Timestamp(heard),
                interval_ms,
                isolation_timeout_ms: timeout,
                reassurance,
                watchdog,
            },
        )
}

fn storage() -> impl Strategy<Value = StorageSignal> {
    (
        prop::bool::weighted(0.8),
        0u64..250_000,
        any::<bool>(),
        prop_oneof![Just(0u32), 100u32..5_000],
    )
        .prop_map(|(readable, moved, fenced, interval_ms)| StorageSignal {
            readable,
            last_moved: Timestamp(moved),
            interval_ms,
            fenced,
        })
}

/// The evidence rules restated, apart from the engine's code: `evidence`
/// proves `host`'s VMs cannot be running at `now`.
fn evidence_holds(p: &Policy, now: Timestamp, host: &HostFacts, evidence: DownEvidence) -> bool {
    let within = |t: Timestamp, interval: u32| {
        let window = if interval == 0 {
            p.host_down_after
        } else {
            Duration::from_millis(3 * u64::from(interval))
        };
        now.since(t) < window || t > now
    };
    let storage_live = host
        .storage
        .is_some_and(|s| s.readable && !s.fenced && within(s.last_moved, s.interval_ms));
    let agent_live = host
        .agent
        .is_some_and(|a| within(a.last_heard, a.interval_ms));
    // vSphere HA's master reaches it or sees it partitioned: alive; HA
    // restarting a failed host's VMs: never vmdr's to move.
    let ha_live_or_restarting = host.ha.is_some_and(|h| {
        h.signal.restarts
            || matches!(
                h.signal.state,
                HaHostState::Alive | HaHostState::Partitioned
            )
    });
    if storage_live || agent_live || ha_live_or_restarting {
        return false;
    }
    let lost_both = host.link.is_lost()
        && host.probe_failures >= p.failure_threshold
        && host
            .unreachable_since
            .is_some_and(|s| now >= s && now.since(s) >= p.host_down_after);
    match evidence {
        DownEvidence::Fenced => {
            (host.link.is_fenced() || host.fence == Fencing::Off) && host.probe_failures > 0
        }
        _ if p.require_fencing => false,
        DownEvidence::SelfFenced => {
            lost_both && host.storage.is_some_and(|s| s.readable && s.fenced)
        }
        DownEvidence::Trusted => lost_both && host.trust_unreachable,
        DownEvidence::Deadline => {
            // HA's isolation response, counted from when vmdr first saw
            // the host reported isolated (or dead).
            let ha = host.ha.is_some_and(|h| {
                matches!(h.signal.state, HaHostState::Isolated | HaHostState::Dead)
                    && h.signal.response_after_ms.is_some_and(|r| {
                        let r = u64::from(r);
                        now.0 >= h.since.0 + r + r / 500 + p.self_fence_margin.as_millis() as u64
                    })
            });
            if lost_both && ha {
                return true;
            }
            let Some(a) = host.agent else { return false };
            let from = match a.reassurance {
                Reassurance::None => a.last_heard,
                Reassurance::Gateway => return false,
                Reassurance::GatewayAndStorage => match host.storage {
                    Some(s) if s.readable => a.last_heard.max(s.last_moved),
                    _ => return false,
                },
            };
            let t = u64::from(a.isolation_timeout_ms);
            lost_both
                && t > 0
                && (a.watchdog || !p.agent_needs_watchdog)
                && now.0 >= from.0 + t + t / 500 + p.self_fence_margin.as_millis() as u64
        }
    }
}

fn power() -> impl Strategy<Value = PowerState> {
    prop_oneof![
        Just(PowerState::On),
        Just(PowerState::Off),
        Just(PowerState::Suspended),
        Just(PowerState::Unknown)
    ]
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    prop_oneof![
        Just(Heartbeat::Ok),
        Just(Heartbeat::Missing),
        Just(Heartbeat::Unknown)
    ]
}

fn off_cause() -> impl Strategy<Value = OffCause> {
    prop_oneof![
        Just(OffCause::None),
        Just(OffCause::User),
        Just(OffCause::System)
    ]
}

fn vm(hosts: usize) -> impl Strategy<Value = VmFacts> {
    (
        (
            0u64..200_000,
            0u64..200_000,
            256u32..16_384,
            100u32..8_000,
            0..hosts as u32 + 1,
        ),
        (0u16..8, 0u8..12, power(), heartbeat(), off_cause()),
        (
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
            any::<bool>(),
        ),
        prop_oneof![4 => Just(0u32), 1 => 1u32..8_000],
    )
        .prop_map(
            |(
                (retry, stable, mem, cpu, host),
                (fails, attempts, power, heartbeat, off_cause),
                (snap, replica, in_flight, paused, shared),
                reservation,
            )| VmFacts {
                retry_at: Timestamp(retry),
                stable_at: Timestamp(stable),
                memory_mb: mem,
                cpu_mhz: cpu,
                cpu_reservation_mhz: reservation,
                host,
                probe_failures: fails,
                failed_attempts: attempts,
                power,
                heartbeat,
                off_cause,
                has_snapshot: snap,
                shared_disks: shared,
                has_replica: replica,
                in_flight,
                paused,
            },
        )
}

#[derive(Debug, Clone)]
struct Cluster {
    policy: Policy,
    hosts: Vec<HostFacts>,
    vms: Vec<VmFacts>,
    now: Timestamp,
    in_flight: u32,
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (policy(), prop::collection::vec(host(), 1..12))
        .prop_flat_map(|(policy, hosts)| {
            let n = hosts.len();
            (
                Just(policy),
                Just(hosts),
                prop::collection::vec(vm(n), 0..80),
                0u64..250_000,
                0u32..25,
            )
        })
        .prop_map(|(policy, hosts, vms, now, in_flight)| Cluster {
            policy,
            hosts,
            vms,
            now: Timestamp(now),
            in_flight,
        })
}

/// What `vm` costs host `h` in CPU, at its overcommit.
fn demand(vm: &VmFacts, h: &HostFacts) -> u32 {
    cpu_demand(vm.cpu_mhz, vm.cpu_reservation_mhz, h.cpu_overcommit)
}

/// Host `t` (index `h`) has room for `vm` beside what is reserved on it.
fn room(
    vm: &VmFacts,
    t: &HostFacts,
    reserved_mem: &HashMap<usize, u64>,
    reserved_cpu: &HashMap<usize, u64>,
    h: usize,
) -> bool {
    t.free_memory_mb
        .saturating_sub(reserved_mem.get(&h).copied().unwrap_or(0))
        >= u64::from(vm.memory_mb)
        && u64::from(t.free_cpu_mhz).saturating_sub(reserved_cpu.get(&h).copied().unwrap_or(0))
            >= u64::from(demand(vm, t))
}

fn charged_host(vm: &VmFacts, d: &Decision) -> Option<usize> {
    match *d {
        Decision::RestartInPlace { .. } | Decision::RevertToSnapshot => Some(vm.host as usize),
        Decision::RecoverHost { host } => Some(host as usize),
        Decision::Restore { target, .. } => Some(target as usize),
        Decision::AddHostThenRestore { spare, .. } => Some(spare as usize),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: persistence(), ..ProptestConfig::default() })]

    /// Every rule that can be judged from one plan of one random cluster.
    #[test]
    fn every_decision_is_safe(c in cluster()) {
        let engine = Engine::new(c.policy.clone()).expect("generated policies are valid");
        let p = &c.policy;
        let decisions = engine.plan(c.now, &c.vms, &c.hosts, ClusterFacts { in_flight: c.in_flight });
        prop_assert_eq!(decisions.len(), c.vms.len());

        let mut charged: HashMap<usize, u32> = HashMap::new();
        let mut reserved_mem: HashMap<usize, u64> = HashMap::new();
        let mut reserved_cpu: HashMap<usize, u64> = HashMap::new();
        let mut host_recoveries: HashMap<usize, u32> = HashMap::new();
        let mut spare_adds: HashMap<usize, u32> = HashMap::new();
        let mut fences: HashMap<usize, u32> = HashMap::new();
        let mut actions = 0u32;

        for (vm, d) in c.vms.iter().zip(&decisions) {
            let Some(host) = c.hosts.get(vm.host as usize) else {
                // R0: a VM on an unknown host is never acted on.
                prop_assert!(!d.is_action(), "vm on unknown host got {:?}", d);
                continue;
            };
            if d.is_action() {
                actions += u32::from(!matches!(d, Decision::FenceHost { .. }));
                // V1/V2/V3: people's decisions.
                prop_assert!(!vm.paused, "paused vm got {:?}", d);
                prop_assert!(vm.off_cause != OffCause::User, "user-stopped vm got {:?}", d);
                prop_assert!(vm.power != PowerState::Suspended, "suspended vm got {:?}", d);
                // V4: one recovery per VM.
                prop_assert!(!vm.in_flight, "vm with a recovery in flight got {:?}", d);
                // V5: hysteresis.
                prop_assert!(vm.probe_failures >= p.failure_threshold, "vm with {} failed probes (threshold {}) got {:?}", vm.probe_failures, p.failure_threshold, d);
                // V7/V8: back-off and give-up.
                prop_assert!(c.now >= vm.retry_at, "vm in back-off got {:?}", d);
                prop_assert!(vm.failed_attempts < p.max_attempts, "vm past max attempts got {:?}", d);
                // A fence moves nothing and is not charged to the limits.
                if !matches!(d, Decision::FenceHost { .. }) {
                    let h = charged_host(vm, d).expect("actions are charged");
                    *charged.entry(h).or_default() += 1;
                }
            }
            // V9: a VM the hypervisor says runs on a connected host is never
            // started anywhere else, and at most reset in place.
            if host.link == HostLink::Connected && vm.power == PowerState::On {
                prop_assert!(matches!(d, Decision::None { .. } | Decision::Wait { .. } | Decision::Alert { .. } | Decision::RestartInPlace { reset: true }), "running vm on connected host got {:?}", d);
            }
            if matches!(d, Decision::RestartInPlace { reset: true }) {
                prop_assert!(vm.heartbeat == Heartbeat::Missing && p.reset_hung_guests, "reset without a missing heartbeat: {:?}", vm);
            }
            // V13: no split brain: moving a VM off its host needs evidence
            // its copy there cannot run, and says which; recovering the
            // host needs the same.
            if let Decision::Restore { evidence, .. } | Decision::AddHostThenRestore { evidence, .. } = *d {
                prop_assert!(evidence_holds(p, c.now, host, evidence), "moved off a host on {:?} that does not hold: {:?} {:?}", evidence, host, d);
            }
            if d.moves_vm() || matches!(d, Decision::RecoverHost { .. }) {
                prop_assert!([DownEvidence::Fenced, DownEvidence::SelfFenced, DownEvidence::Deadline, DownEvidence::Trusted]
                    .into_iter().any(|e| evidence_holds(p, c.now, host, e)), "moved/recovered off a host with no evidence: {:?} {:?}", host, d);
                prop_assert!(!p.require_fencing || host.link.is_fenced() || host.fence == Fencing::Off, "require_fencing but host not fenced: {:?}", d);
            }
            match *d {
                Decision::RestartInPlace { .. } | Decision::RevertToSnapshot => {
                    prop_assert_eq!(host.link, HostLink::Connected, "in-place action on a host that is not connected");
                    if matches!(d, Decision::RevertToSnapshot) {
                        prop_assert!(vm.has_snapshot);
                    }
                }
                // F: a host is fenced when it is lost to every view, has a
                // device that is not running or failed recently, and nothing
                // quicker proves it down already; once per pass.
                Decision::FenceHost { host: h } => {
                    prop_assert_eq!(h, vm.host);
                    prop_assert!(!host.ha.is_some_and(|ha| ha.signal.restarts), "fenced a host vSphere HA restarts: {:?}", host);
                    let due = match host.fence {
                        Fencing::Ready => true,
                        Fencing::Failed { retry_at } => c.now >= retry_at,
                        _ => false,
                    };
                    prop_assert!(due, "fenced a host whose device is not due: {:?}", host);
                    let lost = host.link.is_lost() && host.probe_failures >= p.failure_threshold
                        && host.unreachable_since.is_some_and(|s| c.now >= s && c.now.since(s) >= p.host_down_after);
                    prop_assert!(lost, "fenced a host not lost to both views: {:?}", host);
                    prop_assert!(!evidence_holds(p, c.now, host, DownEvidence::SelfFenced) && !evidence_holds(p, c.now, host, DownEvidence::Deadline),
                        "fenced a host its agent already proved down: {:?}", host);
                    *fences.entry(h as usize).or_default() += 1;
                }
                Decision::RecoverHost { host: h } => {
                    prop_assert_eq!(h, vm.host);
                    prop_assert!(host.has_snapshot && host.recovery == HostRecovery::NotTried);
                    *host_recoveries.entry(h as usize).or_default() += 1;
                }
                // R-T: a restore target is connected, has room, and is not
                // the failed host; the source exists and is reachable from it.
                Decision::Restore { target, source, .. } => {
                    let t = target as usize;
                    prop_assert_ne!(target, vm.host, "restored onto its failed host");
                    prop_assert_eq!(c.hosts[t].link, HostLink::Connected, "restore target not connected");
                    // S1: spreading: no other target that could take it
                    // now (room, a source, budget) is less loaded than the
                    // one chosen (this pass's restores counted).
                    let load = |h: usize| c.hosts[h].load.after(
                        reserved_cpu.get(&h).copied().unwrap_or(0),
                        reserved_mem.get(&h).copied().unwrap_or(0),
                    );
                    for (h, o) in c.hosts.iter().enumerate() {
                        let eligible = h != t && h != vm.host as usize && o.link == HostLink::Connected
                            && room(vm, o, &reserved_mem, &reserved_cpu, h)
                            && (vm.has_replica || ((vm.has_snapshot || vm.shared_disks) && o.site == host.site))
                            && u32::from(o.in_flight) + charged.get(&h).copied().unwrap_or(0) < u32::from(p.max_in_flight_per_host);
                        prop_assert!(!eligible || load(h) >= load(t), "restored to host {} (load {}) although host {} is less loaded ({})", t, load(t), h, load(h));
                    }
                    *reserved_mem.entry(t).or_default() += u64::from(vm.memory_mb);
                    *reserved_cpu.entry(t).or_default() += u64::from(demand(vm, &c.hosts[t]));
                    match source {
                        // From the site's shared storage: a snapshot, or the
                        // VM's own disks there.
                        RestoreSource::Snapshot => prop_assert!((vm.has_snapshot || vm.shared_disks) && c.hosts[t].site == host.site),
                        RestoreSource::Replica => prop_assert!(vm.has_replica),
                    }
                    prop_assert!(host.recovery != HostRecovery::InFlight);
                    prop_assert!(!(host.has_snapshot && host.recovery == HostRecovery::NotTried), "moved before trying the host snapshot");
                }
                Decision::AddHostThenRestore { spare, source, .. } => {
                    let s = spare as usize;
                    prop_assert_ne!(spare, vm.host);
                    prop_assert_eq!(c.hosts[s].link, HostLink::Standby, "added host is not a standby host");
                    prop_assert_eq!(c.hosts[s].in_flight, 0, "spare already being added");
                    *spare_adds.entry(s).or_default() += 1;
                    *reserved_mem.entry(s).or_default() += u64::from(vm.memory_mb);
                    *reserved_cpu.entry(s).or_default() += u64::from(demand(vm, &c.hosts[s]));
                    match source {
                        // As for a restore: a snapshot, or the VM's disks on
                        // the site's shared storage, which a spare of the
                        // same site reaches too.
                        RestoreSource::Snapshot => prop_assert!((vm.has_snapshot || vm.shared_disks) && c.hosts[s].site == host.site),
                        RestoreSource::Replica => prop_assert!(vm.has_replica),
                    }
                }
                _ => {}
            }
        }
        for (h, mem) in &reserved_mem {
            prop_assert!(*mem <= c.hosts[*h].free_memory_mb, "host {} over-committed: {} MiB > {}", h, mem, c.hosts[*h].free_memory_mb);
            prop_assert!(reserved_cpu[h] <= u64::from(c.hosts[*h].free_cpu_mhz), "host {} CPU over-committed", h);
        }
        // R5: out of capacity only when no host could take it: none with
        // its room (after this pass's reservations, which only grow), a
        // source it can use, and not held back by a limit (a limit is a
        // wait, not a missing host).
        for (vm, d) in c.vms.iter().zip(&decisions) {
            if !matches!(d, Decision::Alert { why: AlertReason::NoCapacity }) {
                continue;
            }
            let home = c.hosts[vm.host as usize];
            for (h, t) in c.hosts.iter().enumerate() {
                let usable = match t.link {
                    HostLink::Connected => true,
                    HostLink::Standby => t.in_flight == 0 && !spare_adds.contains_key(&h),
                    _ => false,
                };
                let source = vm.has_replica || ((vm.has_snapshot || vm.shared_disks) && t.site == home.site);
                let room = room(vm, t, &reserved_mem, &reserved_cpu, h);
                prop_assert!(
                    !(usable && h != vm.host as usize && source && room),
                    "NoCapacity although host {} could take it: {:?} {:?}", h, vm, t
                );
            }
        }
        // V17: one recovery per host, one addition per spare.
        prop_assert!(host_recoveries.values().all(|&n| n == 1), "a host recovered twice in one pass");
        prop_assert!(fences.values().all(|&n| n == 1), "a host fenced twice in one pass");
        prop_assert!(spare_adds.values().all(|&n| n == 1), "a spare added twice in one pass");
        // L1/L2: concurrency limits.
        for (h, n) in &charged {
            prop_assert!(u32::from(c.hosts[*h].in_flight) + n <= u32::from(p.max_in_flight_per_host), "host {} over its limit", h);
        }
        if actions > 0 {
            prop_assert!(c.in_flight + actions <= p.max_in_flight_total, "cluster over its limit");
        }
    }

    /// Same inputs, same decisions; reused scratch changes nothing.
    #[test]
    fn planning_is_deterministic(a in cluster(), b in cluster()) {
        let engine = Engine::new(a.policy.clone()).expect("valid");
        let mut scratch = PlanScratch::default();
        let mut out = Vec::new();
        engine.plan_into(b.now, &b.vms, &b.hosts, ClusterFacts { in_flight: b.in_flight }, &mut scratch, &mut out);
        engine.plan_into(a.now, &a.vms, &a.hosts, ClusterFacts { in_flight: a.in_flight }, &mut scratch, &mut out);
        let fresh = engine.plan(a.now, &a.vms, &a.hosts, ClusterFacts { in_flight: a.in_flight });
        prop_assert_eq!(out, fresh);
    }
}

/// One step of a VM's life as the control loop sees it.
#[derive(Debug, Clone)]
enum Step {
    Probe(bool),
    Finish(bool),
    Wait(u64),
}

fn history() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            6 => any::<bool>().prop_map(Step::Probe),
            1 => any::<bool>().prop_map(Step::Finish),
            2 => (0u64..30_000).prop_map(Step::Wait),
        ],
        1..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: persistence(), ..ProptestConfig::default() })]

    /// Hysteresis and no restart storms over whole histories, driven through
    /// the ledger exactly as the control loop drives it: an action only after
    /// `threshold` consecutive failed probes; never two at once; never
    /// before the back-off (after a failure) or the boot grace (after a
    /// success) has passed.
    #[test]
    fn histories_respect_hysteresis_and_backoff(p in policy(), steps in history(), crashed in any::<bool>()) {
        let engine = Engine::new(p.clone()).expect("valid");
        let hosts = [HostFacts::connected(0, 1 << 20, 1 << 20)];
        let mut vm = VmFacts { has_snapshot: true, ..VmFacts::running_on(0) };
        if crashed {
            vm.power = PowerState::Off;
            vm.off_cause = OffCause::System;
        } else {
            vm.heartbeat = Heartbeat::Missing;
        }
        let mut now = Timestamp(0);
        let mut recent: Vec<bool> = Vec::new();
        let mut earliest_next = Timestamp(0);
        for step in steps {
            match step {
                Step::Probe(ok) => {
                    ledger::observe_vm_probe(&p, now, &mut vm, ok);
                    recent.push(ok);
                }
                Step::Finish(ok) if vm.in_flight => {
                    ledger::recovery_finished(&p, now, &mut vm, ok);
                    let pause = if ok { p.boot_grace } else { p.backoff(vm.failed_attempts) };
                    earliest_next = now.saturating_add(pause);
                    if ok {
                        // A success restarts the count; a failure does not
                        // (the VM is still down, its failures still count).
                        recent.clear();
                    }
                }
                Step::Finish(_) => {}
                Step::Wait(ms) => now = Timestamp(now.0 + ms),
            }
            let d = engine.plan(now, &[vm], &hosts, ClusterFacts::default())[0];
            if d.is_action() {
                let n = usize::from(p.failure_threshold);
                // A crash the hypervisor reports is believed without probes,
                // but only when no recovery is proving itself.
                let reported = crashed && vm.stable_at == Timestamp::ZERO;
                prop_assert!(reported || (recent.len() >= n && recent[recent.len() - n..].iter().all(|ok| !ok)),
                    "action {:?} without {} consecutive failed probes: {:?}", d, n, recent);
                prop_assert!(!vm.in_flight, "second action while one runs");
                prop_assert!(now >= earliest_next, "action at {} before {}", now, earliest_next);
                prop_assert!(vm.failed_attempts < p.max_attempts);
                ledger::recovery_started(&mut vm);
            }
        }
    }

    /// A VM leaves its host only after the host was unreachable by probe and
    /// lost to the hypervisor, continuously, for `host_down_after` (or is
    /// reported powered off).
    #[test]
    fn a_vm_moves_only_off_a_confirmed_down_host(
        p in policy(),
        obs in prop::collection::vec((any::<bool>(), link(), 0u64..10_000), 1..150),
        trust in any::<bool>(),
    ) {
        let engine = Engine::new(p.clone()).expect("valid");
        let mut hosts = [HostFacts::connected(0, 0, 0), HostFacts::connected(0, 1 << 20, 1 << 20)];
        hosts[0].has_snapshot = false;
        // Without an agent, only a trusting site moves VMs off a host
        // lost to both views; any site, off a fenced one.
        hosts[0].trust_unreachable = trust;
        let vm = VmFacts { probe_failures: u16::MAX, has_replica: true, power: PowerState::Unknown, heartbeat: Heartbeat::Unknown, ..VmFacts::running_on(0) };
        let mut now = Timestamp(0);
        // Since when both views have been bad: at least `threshold`
        // consecutive failed probes, and the hypervisor lost the host.
        let mut bad_since: Option<Timestamp> = None;
        let mut failed_probes = 0u16;
        for (reachable, link, dt) in obs {
            now = Timestamp(now.0 + dt);
            ledger::observe_host(&p, now, &mut hosts[0], reachable, link);
            failed_probes = if reachable { 0 } else { failed_probes + 1 };
            if failed_probes >= p.failure_threshold && (link.is_lost() || link.is_fenced()) {
                bad_since.get_or_insert(now);
            } else {
                bad_since = None;
            }
            let d = engine.plan(now, &[vm], &hosts, ClusterFacts::default())[0];
            if d.moves_vm() {
                let confirmed = (link.is_fenced() && !reachable)
                    || (trust && !p.require_fencing && bad_since.is_some_and(|s| now.since(s) >= p.host_down_after));
                prop_assert!(confirmed, "moved at {} with host facts {:?}", now, hosts[0]);
                prop_assert!(!reachable);
            }
        }
    }

    /// Evidence, both ways: a VM that must move (down, with a replica, a
    /// target with room, no host snapshot) moves exactly when one kind of
    /// evidence holds for its host, and says which.
    #[test]
    fn a_vm_moves_exactly_when_evidence_holds(
        p in policy(),
        mut host in host(),
        now in 0u64..300_000,
        lost in any::<bool>(),
    ) {
        let engine = Engine::new(Policy { max_in_flight_per_host: 5, max_in_flight_total: 20, ..p.clone() }).expect("valid");
        let p = engine.policy().clone();
        let now = Timestamp(now);
        if lost {
            // Half the cases lost to both views, for a random while.
            host.link = HostLink::NotResponding;
            host.probe_failures = host.probe_failures.max(p.failure_threshold);
        }
        host.has_snapshot = false;
        host.recovery = HostRecovery::Failed;
        host.in_flight = 0;
        let hosts = [host, HostFacts::connected(host.site, 1 << 20, 1 << 20)];
        let vm = VmFacts { probe_failures: u16::MAX, has_replica: true, power: PowerState::Unknown, heartbeat: Heartbeat::Unknown, ..VmFacts::running_on(0) };
        let d = engine.plan(now, &[vm], &hosts, ClusterFacts::default())[0];
        let holds: Vec<DownEvidence> = [DownEvidence::Fenced, DownEvidence::SelfFenced, DownEvidence::Deadline, DownEvidence::Trusted]
            .into_iter().filter(|&e| evidence_holds(&p, now, &host, e)).collect();
        match d {
            Decision::Restore { evidence, .. } => prop_assert!(holds.contains(&evidence), "moved on {:?}, holds {:?}: {:?}", evidence, holds, host),
            // A device is run before silence is trusted.
            Decision::FenceHost { .. } | Decision::Wait { why: WaitReason::HostFencing } => prop_assert!(holds.iter().all(|&e| e == DownEvidence::Trusted), "fenced though {:?} holds: {:?}", holds, host),
            _ => {
                let relevant = matches!(host.link, HostLink::NotResponding | HostLink::Disconnected | HostLink::PoweredOff);
                prop_assert!(!relevant || holds.is_empty(), "evidence {:?} holds but got {:?}: {:?}", holds, d, host);
            }
        }
    }
}
