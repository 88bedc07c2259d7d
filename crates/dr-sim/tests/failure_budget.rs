//! The failure budget against the simulated world: for random datacenters,
//! the budget of the host with the most VMs is computed from the world as
//! it starts, then that host is killed for good and the run's outcome is
//! compared with the prediction: the VMs that stay down must be the ones
//! the budget named. The predicted RTOs' error is reported.

use dr_control::registry::Registry;
use dr_core::engine::Fate;
use dr_core::{Engine, Timestamp};
use dr_sim::fault::{Fault, FaultKind, FaultTarget};
use dr_sim::{random, World};
use std::collections::BTreeSet;
use std::time::Duration;

const SEEDS: u64 = 200;
const LOSS_AT: Timestamp = Timestamp(60_000);

/// How long the loop takes to fence a host through the simulated device
/// `f`: its failures first (each attempt cut off by the fence timeout when
/// it hangs; a fence whose every attempt failed is run again after
/// `fence_retry`, at the next tick), then an off and a status read, and the
/// tick after.
fn fence_time(c: &dr_control::ControlConfig, f: dr_sim::world::FenceSpec) -> Duration {
    let attempts = c.action_retries + 1;
    let failed = if f.hangs { c.fence_timeout } else { f.delay };
    let (rounds, last) = (f.failures / attempts, f.failures % attempts);
    let round = failed * attempts + c.retry_delay * (attempts - 1) + c.policy.fence_retry;
    (round + c.probe_interval) * rounds
        + (failed + c.retry_delay) * last
        + f.delay
        + Duration::from_millis(200)
        + c.probe_interval
}

#[test]
fn the_vms_a_host_loss_leaves_down_are_the_ones_the_budget_named() {
    let mut mismatches = Vec::new();
    let (mut rto_error_ms, mut rtos) = (0u64, 0u64);
    for seed in 1..=SEEDS {
        let mut s = random::scenario(seed);
        s.faults.clear();
        let world = World::new(s.hosts.clone(), s.vms.clone(), s.seed).expect("world");
        let inv = world.inventory(dr_core::Timestamp::ZERO);
        let mut reg = Registry::default();
        reg.sync(&inv);
        let policy = s.control.policy.clone();
        reg.refresh(
            &inv,
            &policy,
            Timestamp::ZERO,
            &dr_control::events::TracingSink,
        );
        // The budget trusts a configured fence device to work (a broken one
        // shows only when it is run): a device that never works is not
        // one it can count on, so it is not given to it.
        reg.set_fence_devices(
            &s.hosts
                .iter()
                .filter(|h| h.fence.is_some_and(|f| f.failures != u32::MAX))
                .map(|h| h.name.clone())
                .collect(),
        );
        // The host running the most VMs.
        let lost = (0..reg.hosts.len())
            .filter(|&h| reg.hosts[h].link.accepts_vms())
            .max_by_key(|&h| reg.vms.iter().filter(|v| v.host as usize == h).count())
            .expect("a host");
        let engine = Engine::new(policy.clone()).expect("policy");
        let fates = engine.what_if_lost(LOSS_AT, &reg.vms, &reg.hosts, &[lost as u32]);
        let predicted: BTreeSet<String> = fates
            .iter()
            .filter(|(_, f)| f.at_risk())
            .map(|(i, _)| reg.vm_entries[*i].name.clone())
            .collect();
        let name = reg.host_entries[lost].name.clone();
        s.faults.push(Fault {
            at: LOSS_AT,
            kind: FaultKind::HostCrash { recoverable: false },
            target: FaultTarget::Host(name.clone()),
        });
        let report = dr_sim::run(&s).expect("runs");
        assert_eq!(report.verdict.double_runs, 0, "seed {seed}");
        let on_lost: BTreeSet<&str> = fates
            .iter()
            .map(|(i, _)| reg.vm_entries[*i].name.as_str())
            .collect();
        let actual: BTreeSet<String> = report
            .summaries
            .iter()
            .filter(|v| on_lost.contains(v.vm.as_str()) && v.final_state != "running")
            .map(|v| v.vm.clone())
            .collect();
        if predicted != actual {
            mismatches.push(format!(
                "seed {seed}, {name} lost: predicted down {predicted:?}, actually down {actual:?}"
            ));
        }
        // Predicted RTO: detection, then the wave's turn at the world's own
        // restore time.
        for (i, f) in &fates {
            let Fate::Restored { wave, source, .. } = f else {
                continue;
            };
            let restore = match source {
                dr_core::model::RestoreSource::Snapshot => s.latencies.restore_snapshot,
                dr_core::model::RestoreSource::Replica => s.latencies.restore_replica,
            };
            // A host with a snapshot is tried first (lost for good, the
            // try fails after its time).
            let host_try = if reg.hosts[lost].has_snapshot {
                s.latencies.recover_host
            } else {
                Duration::ZERO
            };
            // Detection: the probes and `host_down_after`, or the lost
            // host's agent's deadline when that comes later.
            let unreachable = policy.host_down_after
                + s.control.probe_interval * u32::from(policy.failure_threshold);
            let proof =
                dr_core::engine::proof_after_silence(&policy, &reg.hosts[lost]).unwrap_or_default();
            let mut detect = unreachable.max(proof);
            // A fence starts once the host is lost and takes its time; the
            // agent's deadline, if it comes first, proves it meanwhile.
            if let Some(f) = s.hosts[lost].fence.filter(|f| f.failures != u32::MAX) {
                let mut deviceless = reg.hosts[lost];
                deviceless.fence = dr_core::engine::Fencing::NoDevice;
                let fenced = detect + fence_time(&s.control, f);
                detect = dr_core::engine::proof_after_silence(&policy, &deviceless)
                    .map_or(fenced, |other| fenced.min(unreachable.max(other)));
            }
            let predicted_ms = dr_core::time::millis(detect + host_try + restore * (wave + 1));
            let vm = &reg.vm_entries[*i].name;
            if let Some(actual_ms) = report
                .summaries
                .iter()
                .find(|v| &v.vm == vm)
                .and_then(|v| v.rto_ms)
            {
                rto_error_ms += predicted_ms.abs_diff(actual_ms);
                rtos += 1;
            }
        }
    }
    println!(
        "failure budget over {SEEDS} random datacenters: {} mismatches; predicted RTO off by {:.1} s on average over {rtos} restores",
        mismatches.len(),
        rto_error_ms as f64 / rtos.max(1) as f64 / 1000.0
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
