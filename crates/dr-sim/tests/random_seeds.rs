//! The random-fault mode: seeded runs, each checked for the safety
//! invariants; and a seed replays exactly. Here 300 seeds, in the debug
//! build `cargo test` makes; the README's test command sweeps 10,000 more
//! with the release build (`drctl simulate --random --seeds`).

use dr_sim::random;
use std::sync::atomic::{AtomicU64, Ordering};

const SEEDS: u64 = 300;

#[test]
fn random_seeds_keep_every_invariant() {
    let next = AtomicU64::new(1);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut failed = Vec::new();
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed > SEEDS {
                            return failed;
                        }
                        let report = dr_sim::run(&random::scenario(seed)).expect("random scenarios are valid");
                        if !report.verdict.ok {
                            failed.push(format!(
                                "seed {seed}: {:?} (replay: drctl simulate --random --seed {seed} --human)",
                                report.verdict
                            ));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} seeds broke an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_runs_inject_real_trouble() {
    // The invariants above are only worth something if the runs are hard:
    // across a sample of seeds, VMs went down, were recovered in every way,
    // and users stopped some of them.
    let mut actions = std::collections::BTreeSet::new();
    let mut outages = 0;
    let mut stopped = 0;
    for seed in 1..=60 {
        let report = dr_sim::run(&random::scenario(seed)).expect("valid");
        for s in &report.summaries {
            outages += s.outages;
            stopped += usize::from(s.final_state == "stopped_by_user");
            actions.extend(s.actions.iter().copied());
        }
    }
    assert!(outages > 100, "only {outages} outages in 60 seeds");
    assert!(stopped > 5, "only {stopped} user-stopped VMs in 60 seeds");
    for kind in [
        "power_on",
        "reset",
        "revert_to_snapshot",
        "recover_host",
        "restore",
        "add_host_then_restore",
    ] {
        assert!(actions.contains(kind), "no {kind} in 60 seeds: {actions:?}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let render = |seed| {
        let report = dr_sim::run(&random::scenario(seed)).expect("valid");
        let mut out = Vec::new();
        report.write_json_lines(&mut out).expect("in-memory write");
        out
    };
    for seed in [3, 77, 1234] {
        let a = render(seed);
        assert!(a.len() > 1_000, "seed {seed} produced almost nothing");
        assert_eq!(a, render(seed), "seed {seed} did not replay identically");
    }
    assert_ne!(render(3), render(4), "different seeds, same run");
}
