//! A VM's state in one word, as an operator reads it (the console's tile
//! colour, the API's `state`): judged from the engine's decision, the
//! operator's pause and whether a recovery runs, so the console and the CLI
//! never judge it apart.

use dr_core::engine::{AlertReason, Decision, Quiet, WaitReason};
use dr_core::model::PowerState;
use serde::Serialize;

/// What an operator sees of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Not judged yet (before its first decision).
    #[default]
    Unknown,
    /// Runs and answers.
    Healthy,
    /// Missed probes, fewer than the threshold; or runs with a live guest
    /// heartbeat but does not answer (a network problem, not restarted).
    Suspect,
    /// Not running or not answering, and no recovery runs for it yet (held
    /// back until it is safe, or waiting for a person).
    Down,
    /// Being brought back: an action runs for it, its host is being
    /// recovered or fenced for it, or it is in its grace after a restart.
    Recovering,
    /// A person switched it off: left alone.
    UserStopped,
    /// A person suspended it: left alone.
    Suspended,
    /// An operator paused automation for it.
    Paused,
    /// Recoveries failed too often: a person must look.
    GaveUp,
}

impl VmState {
    /// The state of a VM whose latest decision is `decision`.
    pub fn judge(
        decision: Option<&Decision>,
        paused: bool,
        in_flight: bool,
        power: PowerState,
    ) -> VmState {
        if paused {
            return VmState::Paused;
        }
        if in_flight {
            return VmState::Recovering;
        }
        let Some(decision) = decision else {
            return VmState::Unknown;
        };
        match decision {
            Decision::None { why } => match why {
                Quiet::Healthy => VmState::Healthy,
                Quiet::Suspect => VmState::Suspect,
                Quiet::UserStopped => VmState::UserStopped,
                Quiet::Suspended => VmState::Suspended,
                Quiet::Paused => VmState::Paused,
                // vSphere HA brings it back, not vmdr.
                Quiet::LeftToHa => VmState::Recovering,
            },
            Decision::Alert { why } => match why {
                AlertReason::GaveUp => VmState::GaveUp,
                AlertReason::GuestUnreachable => VmState::Suspect,
                _ => VmState::Down,
            },
            Decision::Wait { why } => match why {
                WaitReason::InFlight
                | WaitReason::HostRecoveryInFlight
                | WaitReason::AwaitingHost
                | WaitReason::HostFencing => VmState::Recovering,
                // Back-off after a failed recovery leaves it down; the
                // same wait on a running VM is its grace after a restart.
                WaitReason::Backoff if power == PowerState::On => VmState::Recovering,
                _ => VmState::Down,
            },
            // An action decided but not running yet (held by a limit
            // between ticks): still down.
            _ => VmState::Down,
        }
    }

    /// As the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            VmState::Unknown => "unknown",
            VmState::Healthy => "healthy",
            VmState::Suspect => "suspect",
            VmState::Down => "down",
            VmState::Recovering => "recovering",
            VmState::UserStopped => "user_stopped",
            VmState::Suspended => "suspended",
            VmState::Paused => "paused",
            VmState::GaveUp => "gave_up",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_core::model::RestoreSource;

    fn judge(d: Decision) -> VmState {
        VmState::judge(Some(&d), false, false, PowerState::Off)
    }

    #[test]
    fn the_pause_and_a_running_recovery_come_before_the_decision() {
        let healthy = Decision::None {
            why: Quiet::Healthy,
        };
        assert_eq!(
            VmState::judge(Some(&healthy), true, true, PowerState::On),
            VmState::Paused
        );
        assert_eq!(
            VmState::judge(Some(&healthy), false, true, PowerState::On),
            VmState::Recovering
        );
        assert_eq!(
            VmState::judge(None, false, false, PowerState::On),
            VmState::Unknown
        );
    }

    #[test]
    fn quiet_decisions_name_themselves() {
        for (why, state) in [
            (Quiet::Healthy, VmState::Healthy),
            (Quiet::Suspect, VmState::Suspect),
            (Quiet::UserStopped, VmState::UserStopped),
            (Quiet::Suspended, VmState::Suspended),
            (Quiet::Paused, VmState::Paused),
            // vSphere HA brings it back.
            (Quiet::LeftToHa, VmState::Recovering),
        ] {
            assert_eq!(judge(Decision::None { why }), state, "{why:?}");
        }
    }

    #[test]
    fn a_vm_held_back_is_down_and_one_being_worked_on_is_recovering() {
        assert_eq!(
            judge(Decision::Wait {
                why: WaitReason::HostNotConfirmedDown
            }),
            VmState::Down
        );
        assert_eq!(
            judge(Decision::Wait {
                why: WaitReason::HostFencing
            }),
            VmState::Recovering
        );
        assert_eq!(
            judge(Decision::Wait {
                why: WaitReason::Backoff
            }),
            VmState::Down,
            "back-off after a failure"
        );
        assert_eq!(
            VmState::judge(
                Some(&Decision::Wait {
                    why: WaitReason::Backoff
                }),
                false,
                false,
                PowerState::On
            ),
            VmState::Recovering,
            "the grace after a restart"
        );
        assert_eq!(
            judge(Decision::Restore {
                target: 1,
                source: RestoreSource::Replica,
                evidence: dr_core::engine::DownEvidence::Fenced,
            }),
            VmState::Down,
            "decided, not started"
        );
    }

    #[test]
    fn alerts_are_down_but_a_gave_up_and_a_network_problem() {
        assert_eq!(
            judge(Decision::Alert {
                why: AlertReason::GaveUp
            }),
            VmState::GaveUp
        );
        assert_eq!(
            judge(Decision::Alert {
                why: AlertReason::GuestUnreachable
            }),
            VmState::Suspect
        );
        assert_eq!(
            judge(Decision::Alert {
                why: AlertReason::NeedsFencing
            }),
            VmState::Down
        );
    }
}
