//! How observations and recovery outcomes change the facts.
//!
//! These are the only writers of the engine's counters (hysteresis, back-off,
//! stability), kept here next to the engine so the property tests can drive
//! whole observation histories through exactly the code the control loop
//! runs.

use super::facts::{Fencing, HostFacts, HostRecovery, OffCause, VmFacts};
use super::policy::Policy;
use crate::model::{Actor, Heartbeat, HostLink, PowerEventKind, PowerState};
use crate::time::Timestamp;

/// A VM seen for the first time. A VM that is already off (or suspended)
/// when vmdr first sees it was left so by someone: it counts as user-stopped.
pub fn first_sight(vm: &mut VmFacts, power: PowerState) {
    vm.power = power;
    if matches!(power, PowerState::Off | PowerState::Suspended) {
        vm.off_cause = OffCause::User;
    }
}

/// The hypervisor's current view of a VM.
pub fn observe_vm_state(vm: &mut VmFacts, power: PowerState, heartbeat: Heartbeat) {
    vm.power = power;
    vm.heartbeat = heartbeat;
    if power == PowerState::On {
        // Whoever stopped it, it runs again: the stop no longer binds.
        vm.off_cause = OffCause::None;
    }
}

/// A power event from the hypervisor's log.
pub fn observe_power_event(vm: &mut VmFacts, kind: PowerEventKind, by: &Actor) {
    vm.off_cause = match (kind, by) {
        (PowerEventKind::PoweredOff | PowerEventKind::Suspended, Actor::User(_)) => OffCause::User,
        (PowerEventKind::PoweredOff | PowerEventKind::Crashed, _) => OffCause::System,
        (PowerEventKind::Suspended, _) => vm.off_cause,
        (PowerEventKind::PoweredOn | PowerEventKind::Reset, _) => OffCause::None,
    };
}

/// One probe of a VM. Returns `true` when this probe made the VM cross the
/// failure threshold (the moment it is detected down).
pub fn observe_vm_probe(
    policy: &Policy,
    now: Timestamp,
    vm: &mut VmFacts,
    reachable: bool,
) -> bool {
    if reachable {
        vm.probe_failures = 0;
        if vm.stable_at != Timestamp::ZERO && now >= vm.stable_at {
            // The last recovery held: the slate is clean.
            vm.failed_attempts = 0;
            vm.stable_at = Timestamp::ZERO;
        }
        return false;
    }
    vm.probe_failures = vm.probe_failures.saturating_add(1);
    let down = vm.probe_failures >= policy.failure_threshold;
    if down && vm.stable_at != Timestamp::ZERO && now >= vm.retry_at {
        // Past the boot grace and down: the last recovery never came up, or
        // came up and fell again within the stability window. Count it as a
        // failure so a flapping VM backs off. (Silence *during* the boot
        // grace is a guest still booting, not a failure.)
        note_failure(policy, now, vm);
        vm.stable_at = Timestamp::ZERO;
    }
    vm.probe_failures == policy.failure_threshold
}

/// A recovery of this VM starts.
pub fn recovery_started(vm: &mut VmFacts) {
    vm.in_flight = true;
}

/// A recovery of this VM finished. On success the VM gets `boot_grace` before
/// it is judged again, and `stable_after` to prove the recovery held; on
/// failure it backs off.
pub fn recovery_finished(policy: &Policy, now: Timestamp, vm: &mut VmFacts, ok: bool) {
    vm.in_flight = false;
    if ok {
        vm.probe_failures = 0;
        vm.off_cause = OffCause::None;
        vm.retry_at = now.saturating_add(policy.boot_grace);
        vm.stable_at = now.saturating_add(policy.stable_after).max(Timestamp(1));
    } else {
        note_failure(policy, now, vm);
    }
}

fn note_failure(policy: &Policy, now: Timestamp, vm: &mut VmFacts) {
    vm.failed_attempts = vm.failed_attempts.saturating_add(1);
    vm.retry_at = vm
        .retry_at
        .max(now.saturating_add(policy.backoff(vm.failed_attempts)));
}

/// One observation of a host: its probe and the hypervisor's view together.
pub fn observe_host(
    policy: &Policy,
    now: Timestamp,
    host: &mut HostFacts,
    reachable: bool,
    link: HostLink,
) {
    host.link = link;
    host.probe_failures = if reachable {
        0
    } else {
        host.probe_failures.saturating_add(1)
    };
    let lost = !reachable && (link.is_lost() || link.is_fenced());
    if lost && host.probe_failures >= policy.failure_threshold {
        host.unreachable_since.get_or_insert(now);
    } else if !lost {
        host.unreachable_since = None;
    }
    if (reachable || link == HostLink::Connected)
        && matches!(host.fence, Fencing::Off | Fencing::Failed { .. })
    {
        // Back (powered on again by a person, or a wrong report): the next
        // loss is fenced afresh.
        host.fence = Fencing::Ready;
    }
    if link == HostLink::Connected && host.recovery == HostRecovery::Failed {
        // Back (repaired by hand, or by itself): a later failure may try
        // the host snapshot again.
        host.recovery = HostRecovery::NotTried;
    }
}

/// The host's fence (through its fence device) starts.
pub fn fence_started(host: &mut HostFacts) {
    host.fence = Fencing::InFlight;
}

/// The host's fence finished: `off` when its device powered it off and a
/// status read it back off; anything else is a failure, never success.
pub fn fence_finished(policy: &Policy, now: Timestamp, host: &mut HostFacts, off: bool) {
    if host.fence == Fencing::NoDevice {
        // Its device was removed from the configuration meanwhile.
        return;
    }
    host.fence = if off {
        Fencing::Off
    } else {
        Fencing::Failed {
            retry_at: now.saturating_add(policy.fence_retry),
        }
    };
}

/// The host's recovery from its snapshot starts.
pub fn host_recovery_started(host: &mut HostFacts) {
    host.recovery = HostRecovery::InFlight;
}

/// The host's recovery from its snapshot finished.
pub fn host_recovery_finished(host: &mut HostFacts, ok: bool) {
    host.recovery = if ok {
        HostRecovery::NotTried
    } else {
        HostRecovery::Failed
    };
    if ok {
        host.unreachable_since = None;
        host.probe_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> Policy {
        Policy {
            failure_threshold: 3,
            backoff_base: Duration::from_secs(10),
            stable_after: Duration::from_secs(60),
            boot_grace: Duration::from_secs(20),
            ..Policy::default()
        }
    }

    #[test]
    fn threshold_crossed_exactly_once() {
        let p = policy();
        let mut vm = VmFacts::running_on(0);
        let crossed: Vec<bool> = (0..5)
            .map(|i| observe_vm_probe(&p, Timestamp(i), &mut vm, false))
            .collect();
        assert_eq!(crossed, [false, false, true, false, false]);
        observe_vm_probe(&p, Timestamp(6), &mut vm, true);
        assert_eq!(vm.probe_failures, 0);
    }

    #[test]
    fn a_recovery_that_does_not_stick_counts_as_failure() {
        let p = policy();
        let mut vm = VmFacts::running_on(0);
        recovery_started(&mut vm);
        recovery_finished(&p, Timestamp(1_000), &mut vm, true);
        assert_eq!(vm.retry_at, Timestamp(21_000));
        for t in 0..3 {
            observe_vm_probe(&p, Timestamp(30_000 + t), &mut vm, false);
        }
        assert_eq!(vm.failed_attempts, 1);
        assert_eq!(vm.retry_at, Timestamp(30_002 + 10_000));
    }

    #[test]
    fn silence_during_boot_grace_is_not_a_failure() {
        let p = policy();
        let mut vm = VmFacts::running_on(0);
        recovery_finished(&p, Timestamp(1_000), &mut vm, true);
        for t in 0..5 {
            observe_vm_probe(&p, Timestamp(2_000 + t * 1_000), &mut vm, false);
        }
        assert_eq!(vm.failed_attempts, 0, "still booting");
        assert_eq!(vm.retry_at, Timestamp(21_000), "grace not shortened");
        observe_vm_probe(&p, Timestamp(21_000), &mut vm, false);
        assert_eq!(
            vm.failed_attempts, 1,
            "not up after the grace: the recovery failed"
        );
        assert_eq!(vm.retry_at, Timestamp(31_000));
    }

    #[test]
    fn a_recovery_that_holds_clears_the_failures() {
        let p = policy();
        let mut vm = VmFacts {
            failed_attempts: 2,
            ..VmFacts::running_on(0)
        };
        recovery_finished(&p, Timestamp(1_000), &mut vm, true);
        observe_vm_probe(&p, Timestamp(30_000), &mut vm, true);
        assert_eq!(vm.failed_attempts, 2, "not yet stable");
        observe_vm_probe(&p, Timestamp(61_000), &mut vm, true);
        assert_eq!(vm.failed_attempts, 0);
    }

    #[test]
    fn user_power_off_binds_until_powered_on() {
        let mut vm = VmFacts::running_on(0);
        observe_power_event(
            &mut vm,
            PowerEventKind::PoweredOff,
            &Actor::User("alice".into()),
        );
        assert_eq!(vm.off_cause, OffCause::User);
        observe_vm_state(&mut vm, PowerState::Off, Heartbeat::Unknown);
        assert_eq!(vm.off_cause, OffCause::User);
        observe_vm_state(&mut vm, PowerState::On, Heartbeat::Ok);
        assert_eq!(vm.off_cause, OffCause::None);
    }

    #[test]
    fn host_unreachable_since_needs_both_views() {
        let p = policy();
        let mut h = HostFacts::connected(0, 0, 0);
        for t in 0..5 {
            observe_host(&p, Timestamp(t), &mut h, false, HostLink::Connected);
        }
        assert_eq!(h.unreachable_since, None, "the hypervisor still sees it");
        for t in 5..10 {
            observe_host(&p, Timestamp(t), &mut h, false, HostLink::NotResponding);
        }
        assert_eq!(h.unreachable_since, Some(Timestamp(5)));
        observe_host(&p, Timestamp(10), &mut h, true, HostLink::NotResponding);
        assert_eq!(h.unreachable_since, None);
    }
}
