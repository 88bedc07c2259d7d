use super::decision::{AlertReason, Decision, DownEvidence, Quiet, WaitReason};
use super::evidence::{host_verdict, HostVerdict, Missing};
use super::facts::{HostFacts, HostRecovery, OffCause, VmFacts};
use super::policy::Policy;
use crate::model::{Heartbeat, HostLink, PowerState};
use crate::time::Timestamp;

/// What one VM needs, judged from the VM and its host alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Final: needs no cluster knowledge (quiet, wait, alert).
    Settled(Decision),
    /// An action on its own host, charged to that host.
    InPlace(Decision),
    /// Its host must be fenced through its fence device first.
    FenceHost,
    /// Its host must be recovered from the host snapshot first.
    RecoverHost,
    /// It must come up on another host; its own copy cannot be running,
    /// by this evidence.
    Relocate(DownEvidence),
}

/// The paper's key workflow for one VM. Rules in order; the first that
/// applies decides (see `docs/decision-table.md`, rules V1–V17).
#[inline]
pub fn assess(policy: &Policy, now: Timestamp, vm: &VmFacts, host: &HostFacts) -> Need {
    use Need::{InPlace, Settled};
    // V1–V3: people's decisions first.
    if vm.paused {
        return Settled(Decision::None { why: Quiet::Paused });
    }
    // Even if the hypervisor's last read still showed it on: the event of a
    // user's power-off can be newer than that read.
    if vm.off_cause == OffCause::User {
        return Settled(Decision::None {
            why: Quiet::UserStopped,
        });
    }
    if vm.power == PowerState::Suspended {
        return Settled(Decision::None {
            why: Quiet::Suspended,
        });
    }
    // V4: one recovery per VM at a time.
    if vm.in_flight {
        return Settled(Decision::Wait {
            why: WaitReason::InFlight,
        });
    }
    // V5–V6: hysteresis. Not for a VM its connected host reports stopped
    // by a failure (its QEMU died, a guest panic): the hypervisor's own
    // report needs no failed probes to be believed, and a power-on in place
    // cannot make a second copy. Unless a recovery of it is still proving
    // itself (`stable_at`): a crash then goes through the probes, which
    // count it as a flap (back-off, then give up), as any failure does.
    let reported_crash = vm.power == PowerState::Off
        && vm.off_cause == OffCause::System
        && host.link == HostLink::Connected
        && vm.stable_at == Timestamp::ZERO;
    if !reported_crash && vm.probe_failures < policy.failure_threshold {
        let why = if vm.probe_failures == 0 {
            Quiet::Healthy
        } else {
            Quiet::Suspect
        };
        return Settled(Decision::None { why });
    }
    // V7–V8: no restart storms.
    if vm.failed_attempts >= policy.max_attempts {
        return Settled(Decision::Alert {
            why: AlertReason::GaveUp,
        });
    }
    if now < vm.retry_at {
        return Settled(Decision::Wait {
            why: WaitReason::Backoff,
        });
    }
    match host.link {
        // Scenario 2: the host is alive and managed; the VM is dealt with in
        // place, never copied elsewhere (its original may be running).
        HostLink::Connected => match vm.power {
            // V9–V11: running but silent.
            PowerState::On => match vm.heartbeat {
                Heartbeat::Missing if policy.reset_hung_guests => {
                    InPlace(Decision::RestartInPlace { reset: true })
                }
                Heartbeat::Ok => Settled(Decision::Alert {
                    why: AlertReason::GuestUnreachable,
                }),
                _ => Settled(Decision::Alert {
                    why: AlertReason::GuestUnresponsive,
                }),
            },
            // V12: down by failure: power on; after a failure, the snapshot.
            // Not while its host's agent says it fenced itself (cut off
            // from vmdr, it destroys whatever starts there).
            PowerState::Off if host.storage.is_some_and(|s| s.readable && s.fenced) => {
                Settled(Decision::Wait {
                    why: WaitReason::HostSelfFenced,
                })
            }
            PowerState::Off => {
                if vm.failed_attempts > 0 && vm.has_snapshot {
                    InPlace(Decision::RevertToSnapshot)
                } else {
                    InPlace(Decision::RestartInPlace { reset: false })
                }
            }
            PowerState::Suspended | PowerState::Unknown => Settled(Decision::Wait {
                why: WaitReason::StateUnknown,
            }),
        },
        HostLink::Maintenance => Settled(Decision::Alert {
            why: AlertReason::HostInMaintenance,
        }),
        // Scenario 3: the host is gone (or so it seems).
        HostLink::NotResponding
        | HostLink::Disconnected
        | HostLink::PoweredOff
        | HostLink::Standby => {
            // V13–V14: no split brain: its VMs move only on evidence that
            // they cannot be running.
            let evidence = match host_verdict(policy, now, host) {
                HostVerdict::Down { evidence } => evidence,
                HostVerdict::NotDown | HostVerdict::AwaitingDeadline { .. } => {
                    return Settled(Decision::Wait {
                        why: WaitReason::HostNotConfirmedDown,
                    })
                }
                HostVerdict::LeftToHa => {
                    return Settled(Decision::None {
                        why: Quiet::LeftToHa,
                    })
                }
                HostVerdict::Fence => return Need::FenceHost,
                HostVerdict::Fencing => {
                    return Settled(Decision::Wait {
                        why: WaitReason::HostFencing,
                    })
                }
                HostVerdict::Unproven {
                    missing: Missing::NotFenced,
                } => {
                    return Settled(Decision::Alert {
                        why: AlertReason::NeedsFencing,
                    })
                }
                HostVerdict::Unproven { .. } => {
                    return Settled(Decision::Alert {
                        why: AlertReason::HostDownUnproven,
                    })
                }
            };
            // V14–V16: the host from its snapshot first, then elsewhere.
            match host.recovery {
                HostRecovery::NotTried if host.has_snapshot => Need::RecoverHost,
                HostRecovery::InFlight => Settled(Decision::Wait {
                    why: WaitReason::HostRecoveryInFlight,
                }),
                _ => Need::Relocate(evidence),
            }
        }
    }
}
