//! Decisions per second of the engine over mixed clusters of 1k, 100k and
//! 1M VMs, one core; and the whole failure budget (every host and every
//! site lost, one at a time) of 10,000 VMs on 200 hosts. Figures and the
//! command: docs/BENCHMARKS.md.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dr_benches::{cluster, NOW};
use dr_core::engine::{ClusterFacts, HostFacts, PlanScratch, VmFacts};
use dr_core::{Decision, Engine, Policy};
use std::hint::black_box;
use std::mem::size_of;
use std::time::Duration;

/// No concurrency limits: every failing VM gets its action, so restores
/// (target search with capacity reservations) are on the measured path.
fn unlimited() -> Policy {
    Policy {
        max_in_flight_total: u32::MAX,
        max_in_flight_per_host: u16::MAX,
        ..Policy::default()
    }
}

fn report_memory() {
    let (vms, hosts) = cluster(1_000_000);
    let per_vm = size_of::<VmFacts>() + size_of::<Decision>();
    let hosts_bytes = hosts.len() * size_of::<HostFacts>();
    println!(
        "memory: VmFacts {} B + Decision {} B = {per_vm} B per VM; hosts {} B per VM amortized ({} hosts for {} VMs); \
         1M VMs: {:.1} MB of facts and decisions",
        size_of::<VmFacts>(),
        size_of::<Decision>(),
        hosts_bytes as f64 / vms.len() as f64,
        hosts.len(),
        vms.len(),
        (per_vm * vms.len() + hosts_bytes) as f64 / 1e6,
    );
    for (label, policy) in [
        ("default-limits", Policy::default()),
        ("unlimited", unlimited()),
    ] {
        let engine = Engine::new(policy).expect("valid policy");
        let decisions = engine.plan(NOW, &vms, &hosts, ClusterFacts::default());
        let mut kinds = std::collections::BTreeMap::new();
        for d in &decisions {
            *kinds.entry(d.kind()).or_insert(0usize) += 1;
        }
        println!("decision mix for 1M VMs ({label}): {kinds:?}");
    }
}

fn bench_plan(c: &mut Criterion) {
    report_memory();
    let mut group = c.benchmark_group("plan");
    for &n in &[1_000usize, 100_000, 1_000_000] {
        let (vms, hosts) = cluster(n);
        for (label, policy) in [
            ("default-limits", Policy::default()),
            ("unlimited", unlimited()),
        ] {
            let engine = Engine::new(policy).expect("valid");
            let mut scratch = PlanScratch::default();
            let mut out = Vec::with_capacity(n);
            group.throughput(Throughput::Elements(n as u64));
            if n >= 1_000_000 {
                group
                    .sample_size(20)
                    .measurement_time(Duration::from_secs(8));
            } else {
                group
                    .sample_size(50)
                    .measurement_time(Duration::from_secs(4));
            }
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| {
                    engine.plan_into(
                        NOW,
                        black_box(&vms),
                        black_box(&hosts),
                        ClusterFacts::default(),
                        &mut scratch,
                        &mut out,
                    );
                    black_box(out.len())
                });
            });
        }
    }
    group.finish();
}

/// The failure budget: for every host, then every site, what losing it
/// would cost (`Engine::what_if_lost`), as drd recomputes it when its
/// inventory changes.
fn bench_budget(c: &mut Criterion) {
    let (vms, hosts) = cluster(10_000);
    let engine = Engine::new(Policy::default()).expect("valid");
    let mut sites: Vec<u16> = hosts.iter().map(|h| h.site).collect();
    sites.sort_unstable();
    sites.dedup();
    let budget = || {
        let mut at_risk = 0usize;
        for h in 0..hosts.len() as u32 {
            at_risk += engine
                .what_if_lost(NOW, &vms, &hosts, &[h])
                .iter()
                .filter(|(_, f)| f.at_risk())
                .count();
        }
        for &site in &sites {
            let lost: Vec<u32> = (0..hosts.len() as u32)
                .filter(|&h| hosts[h as usize].site == site)
                .collect();
            at_risk += engine
                .what_if_lost(NOW, &vms, &hosts, &lost)
                .iter()
                .filter(|(_, f)| f.at_risk())
                .count();
        }
        at_risk
    };
    println!(
        "failure budget of {} VMs on {} hosts, {} sites: {} VM-failures at risk",
        vms.len(),
        hosts.len(),
        sites.len(),
        budget()
    );
    let mut group = c.benchmark_group("failure_budget");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("10000_vms_200_hosts", |b| b.iter(|| black_box(budget())));
    group.finish();
}

criterion_group!(benches, bench_plan, bench_budget);
criterion_main!(benches);
