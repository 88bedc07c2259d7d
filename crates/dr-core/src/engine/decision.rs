use super::facts::HostIdx;
use crate::model::RestoreSource;
use serde::{Deserialize, Serialize};

/// Why nothing is done and nothing is wrong (or nothing is ours to fix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quiet {
    /// Answers probes (scenario 1).
    Healthy,
    /// Off by a user's intent: left alone.
    UserStopped,
    /// Suspended: left alone.
    Suspended,
    /// Automation paused by an operator.
    Paused,
    /// Failing probes, but fewer than the threshold (hysteresis).
    Suspect,
    /// Its host failed and vSphere HA restarts its VMs itself (its cluster
    /// has HA with host monitoring and restarts on): one orchestrator per
    /// VM, never two.
    LeftToHa,
}

/// Why an action is held back for now; it may come on a later pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// A recovery of this VM is already running.
    InFlight,
    /// Back-off after a failed recovery, or boot grace after a good one.
    Backoff,
    /// Its host is unreachable but not yet confirmed down: moving it now
    /// could start it twice.
    HostNotConfirmedDown,
    /// Its host is being recovered from its snapshot.
    HostRecoveryInFlight,
    /// The per-host limit of concurrent recoveries is reached.
    HostLimit,
    /// The cluster limit of concurrent recoveries is reached.
    ClusterLimit,
    /// The hypervisor does not know the VM's power state on a connected host.
    StateUnknown,
    /// A spare host is being added; the VM will be placed once it is in.
    AwaitingHost,
    /// Its host's agent, cut off from vmdr, destroyed its guests and
    /// destroys any that starts there until vmdr reaches it again: a
    /// power-on in place would not hold.
    HostSelfFenced,
    /// Its host is being fenced through its fence device (by this VM's
    /// decision or another's); it moves once the device reads it off.
    HostFencing,
}

/// Something a person should know, where no automatic action is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertReason {
    /// Runs on a connected host with a live guest heartbeat but does not
    /// answer probes: a network problem, not a reason to restart.
    GuestUnreachable,
    /// Runs on a connected host, does not answer, and has no heartbeat
    /// information (or resets of hung guests are disabled).
    GuestUnresponsive,
    /// Its host is in maintenance mode.
    HostInMaintenance,
    /// Must move, but has neither a snapshot nor a replica.
    NoRecoverySource,
    /// Must move, and no connected host or spare has room.
    NoCapacity,
    /// Too many consecutive failed recoveries.
    GaveUp,
    /// Its host is unreachable and the policy requires it fenced first.
    NeedsFencing,
    /// Its host has been lost to probes and to the manager for
    /// `host_down_after`, but nothing proves its VMs stopped: no fence, no
    /// agent's deadline, no report of it powered off. Starting them
    /// elsewhere could run them twice; the host's `evidence` observation
    /// names what is missing.
    HostDownUnproven,
}

/// What proves a host's VMs cannot be running, so they may start elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownEvidence {
    /// Its fence device powered it off and read it back off, or the
    /// manager reports it powered off.
    Fenced,
    /// Its agent's storage heartbeat says it destroyed its guests.
    SelfFenced,
    /// Its agent promised to destroy its guests after its isolation
    /// timeout without vmdr, and every channel has been silent for that
    /// long and a margin.
    Deadline,
    /// Its site trusts unreachability alone (`trust_unreachable`).
    Trusted,
}

impl DownEvidence {
    /// As events and the API spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DownEvidence::Fenced => "fenced",
            DownEvidence::SelfFenced => "self_fenced",
            DownEvidence::Deadline => "deadline",
            DownEvidence::Trusted => "trusted",
        }
    }
}

/// The one thing to do about one VM now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// Nothing to do.
    None {
        /// Why.
        why: Quiet,
    },
    /// Hold back.
    Wait {
        /// Why.
        why: WaitReason,
    },
    /// Tell a person; change nothing.
    Alert {
        /// Why.
        why: AlertReason,
    },
    /// Bring it back on its own host: power on (`reset == false`) or
    /// power-cycle a hung guest (`reset == true`).
    RestartInPlace {
        /// Power-cycle rather than power on.
        reset: bool,
    },
    /// Revert to its newest snapshot and power on, on its own host.
    RevertToSnapshot,
    /// Fence its lost host through the host's fence device (power off,
    /// then a status that must read off): the proof its VMs need to move.
    /// Changes nothing of the VM itself.
    FenceHost {
        /// The host.
        host: HostIdx,
    },
    /// Recover its (confirmed down) host from the host snapshot.
    RecoverHost {
        /// The host.
        host: HostIdx,
    },
    /// Bring it up on another connected host.
    Restore {
        /// The target host: connected, with room, not its failed host.
        target: HostIdx,
        /// Where its data comes from.
        source: RestoreSource,
        /// What proves its own copy is not running.
        evidence: DownEvidence,
    },
    /// Add a standby host, then bring the VM up on it.
    AddHostThenRestore {
        /// The standby host.
        spare: HostIdx,
        /// Where its data comes from.
        source: RestoreSource,
        /// What proves its own copy is not running.
        evidence: DownEvidence,
    },
}

impl Decision {
    /// Changes something in the datacenter.
    pub const fn is_action(&self) -> bool {
        !matches!(
            self,
            Decision::None { .. } | Decision::Wait { .. } | Decision::Alert { .. }
        )
    }

    /// Starts the VM somewhere other than its own host.
    pub const fn moves_vm(&self) -> bool {
        matches!(
            self,
            Decision::Restore { .. } | Decision::AddHostThenRestore { .. }
        )
    }

    /// A short stable name, for logs and metrics.
    pub const fn kind(&self) -> &'static str {
        match self {
            Decision::None { .. } => "none",
            Decision::Wait { .. } => "wait",
            Decision::Alert { .. } => "alert",
            Decision::RestartInPlace { reset: false } => "power_on",
            Decision::RestartInPlace { reset: true } => "reset",
            Decision::RevertToSnapshot => "revert_to_snapshot",
            Decision::FenceHost { .. } => "fence_host",
            Decision::RecoverHost { .. } => "recover_host",
            Decision::Restore { .. } => "restore",
            Decision::AddHostThenRestore { .. } => "add_host_then_restore",
        }
    }
}
