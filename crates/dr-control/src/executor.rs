//! Recovery execution: one decided action, carried out through the
//! [`Hypervisor`] port with a timeout per attempt and retries of transient
//! errors; a fence through the [`Fencer`] port, where every failure is
//! retried and only a status that reads "off" is success.

use dr_core::engine::DownEvidence;
use dr_core::model::RestoreSource;
use dr_core::ports::{Clock, FenceError, FencePower, Fencer, Hypervisor, HypervisorError};
use serde::Serialize;
use std::time::Duration;

/// A recovery action with every object named (decisions carry host indices,
/// which are only valid for one planning pass).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Power a stopped VM on, on its own host.
    PowerOn {
        /// The VM.
        vm: String,
        /// Its host (charged for the action).
        host: String,
    },
    /// Power-cycle a hung VM in place.
    Reset {
        /// The VM.
        vm: String,
        /// Its host.
        host: String,
    },
    /// Revert to the newest snapshot and power on, in place.
    RevertToSnapshot {
        /// The VM.
        vm: String,
        /// Its host.
        host: String,
    },
    /// Fence a lost host through its fence device: power off, then a
    /// status that must read off.
    FenceHost {
        /// The VM whose decision asked for it.
        vm: String,
        /// The host.
        host: String,
    },
    /// Recover a host from its host snapshot.
    RecoverHost {
        /// The VM whose decision asked for it.
        vm: String,
        /// The host.
        host: String,
    },
    /// Bring a VM up on another host.
    Restore {
        /// The VM.
        vm: String,
        /// Its failed host.
        from: String,
        /// The target.
        target: String,
        /// Its data's source.
        source: RestoreSource,
        /// What proves its copy on its failed host is not running.
        evidence: DownEvidence,
    },
    /// Add a standby host, then bring the VM up on it.
    AddHostThenRestore {
        /// The VM.
        vm: String,
        /// Its failed host.
        from: String,
        /// The standby host.
        spare: String,
        /// Its data's source.
        source: RestoreSource,
        /// What proves its copy on its failed host is not running.
        evidence: DownEvidence,
    },
}

impl Action {
    /// The VM the action is for.
    pub fn vm(&self) -> &str {
        match self {
            Action::PowerOn { vm, .. }
            | Action::Reset { vm, .. }
            | Action::RevertToSnapshot { vm, .. }
            | Action::FenceHost { vm, .. }
            | Action::RecoverHost { vm, .. }
            | Action::Restore { vm, .. }
            | Action::AddHostThenRestore { vm, .. } => vm,
        }
    }

    /// The host the action is charged to for the per-host limit.
    pub fn charged_host(&self) -> &str {
        match self {
            Action::PowerOn { host, .. }
            | Action::Reset { host, .. }
            | Action::RevertToSnapshot { host, .. }
            | Action::FenceHost { host, .. }
            | Action::RecoverHost { host, .. } => host,
            Action::Restore { target, .. } => target,
            Action::AddHostThenRestore { spare, .. } => spare,
        }
    }

    /// The host the VM is on before the action and the one it runs on
    /// after (the same one for an action in place): what the journal
    /// records.
    pub fn hosts(&self) -> (&str, &str) {
        match self {
            Action::PowerOn { host, .. }
            | Action::Reset { host, .. }
            | Action::RevertToSnapshot { host, .. }
            | Action::FenceHost { host, .. }
            | Action::RecoverHost { host, .. } => (host, host),
            Action::Restore { from, target, .. } => (from, target),
            Action::AddHostThenRestore { from, spare, .. } => (from, spare),
        }
    }

    /// A host-level action: its outcome is the host's, not the VM's.
    pub fn is_host_recovery(&self) -> bool {
        matches!(self, Action::RecoverHost { .. })
    }

    /// A fence: carried out by the [`Fencer`], not charged to the recovery
    /// limits, its outcome the host's.
    pub fn is_fence(&self) -> bool {
        matches!(self, Action::FenceHost { .. })
    }

    /// The restore source, for actions that restore.
    pub fn restore_source(&self) -> Option<RestoreSource> {
        match self {
            Action::Restore { source, .. } | Action::AddHostThenRestore { source, .. } => {
                Some(*source)
            }
            _ => None,
        }
    }

    /// A short stable name.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::PowerOn { .. } => "power_on",
            Action::Reset { .. } => "reset",
            Action::RevertToSnapshot { .. } => "revert_to_snapshot",
            Action::FenceHost { .. } => "fence_host",
            Action::RecoverHost { .. } => "recover_host",
            Action::Restore { .. } => "restore",
            Action::AddHostThenRestore { .. } => "add_host_then_restore",
        }
    }
}

/// How hard to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Each attempt of each step is abandoned after this long.
    pub timeout: Duration,
    /// Extra attempts after a transient error (timeout, host unreachable).
    pub retries: u32,
    /// Pause between attempts.
    pub delay: Duration,
}

/// Runs `action` to completion. Returns the attempts made and the outcome.
pub async fn execute<H, C>(
    hv: &H,
    clock: &C,
    retry: RetryPolicy,
    action: &Action,
) -> (u32, Result<(), HypervisorError>)
where
    H: Hypervisor + ?Sized,
    C: Clock + ?Sized,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = attempt(hv, clock, retry.timeout, action, attempts > 1).await;
        match result {
            Err(e) if e.is_transient() && attempts <= retry.retries => {
                tracing::warn!(action = action.kind(), vm = action.vm(), error = %e, attempts, "retrying");
                clock.sleep(retry.delay).await;
            }
            other => return (attempts, other),
        }
    }
}

/// Fences `host` through `fencer`: an off, then a status that must read
/// off, each bounded by `retry.timeout`. Every failure (the device refusing,
/// not answering, reading on after the off) is retried `retry.retries`
/// times; none is ever success. Returns the attempts made and the outcome.
pub async fn fence<F, C>(
    fencer: &F,
    clock: &C,
    retry: RetryPolicy,
    host: &str,
) -> (u32, Result<(), FenceError>)
where
    F: Fencer + ?Sized,
    C: Clock + ?Sized,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = fence_once(fencer, clock, retry.timeout, host).await;
        match result {
            Err(e) if !matches!(e, FenceError::NoDevice { .. }) && attempts <= retry.retries => {
                tracing::warn!(host, error = %e, attempts, "fence failed; retrying");
                clock.sleep(retry.delay).await;
            }
            other => return (attempts, other),
        }
    }
}

async fn fence_once<F, C>(fencer: &F, clock: &C, t: Duration, host: &str) -> Result<(), FenceError>
where
    F: Fencer + ?Sized,
    C: Clock + ?Sized,
{
    let timeout = |op| FenceError::Timeout {
        host: host.to_owned(),
        op,
        after: t,
    };
    tokio::select! {
        biased;
        r = fencer.power_off(host) => r?,
        () = clock.sleep(t) => return Err(timeout("off")),
    }
    let power = tokio::select! {
        biased;
        r = fencer.power_status(host) => r?,
        () = clock.sleep(t) => return Err(timeout("status")),
    };
    match power {
        FencePower::Off => Ok(()),
        FencePower::On => Err(FenceError::Failed {
            host: host.to_owned(),
            op: "status",
            detail: "reads on after the off".into(),
        }),
    }
}

/// Bounds one port call by `timeout` on `clock`.
async fn bounded<T, C: Clock + ?Sized>(
    clock: &C,
    timeout: Duration,
    op: &'static str,
    fut: impl std::future::Future<Output = Result<T, HypervisorError>>,
) -> Result<T, HypervisorError> {
    tokio::select! {
        biased;
        r = fut => r,
        () = clock.sleep(timeout) => Err(HypervisorError::Timeout { op, after: timeout }),
    }
}

/// On a retry, "already on" / "already added" mean an earlier attempt that
/// timed out did its work after all.
fn done_on_retry(r: Result<(), HypervisorError>, retry: bool) -> Result<(), HypervisorError> {
    match r {
        Err(HypervisorError::InvalidState { .. }) if retry => Ok(()),
        other => other,
    }
}

async fn attempt<H, C>(
    hv: &H,
    clock: &C,
    t: Duration,
    action: &Action,
    retry: bool,
) -> Result<(), HypervisorError>
where
    H: Hypervisor + ?Sized,
    C: Clock + ?Sized,
{
    match action {
        Action::PowerOn { vm, .. } => {
            done_on_retry(bounded(clock, t, "power_on", hv.power_on(vm)).await, retry)
        }
        Action::Reset { vm, .. } => bounded(clock, t, "reset", hv.reset(vm)).await,
        Action::RevertToSnapshot { vm, .. } => {
            bounded(clock, t, "revert_vm", hv.revert_vm(vm, None)).await?;
            done_on_retry(bounded(clock, t, "power_on", hv.power_on(vm)).await, true)
        }
        Action::RecoverHost { host, .. } => {
            bounded(clock, t, "recover_host", hv.recover_host(host)).await
        }
        Action::FenceHost { .. } => Err(HypervisorError::Unsupported {
            op: "fence_host (a fence is the fencer's, see executor::fence)",
        }),
        Action::Restore {
            vm, target, source, ..
        } => bounded(clock, t, "restore_vm", hv.restore_vm(vm, target, *source)).await,
        Action::AddHostThenRestore {
            vm, spare, source, ..
        } => {
            done_on_retry(
                bounded(clock, t, "add_host", hv.add_host(spare)).await,
                retry,
            )?;
            bounded(clock, t, "restore_vm", hv.restore_vm(vm, spare, *source)).await
        }
    }
}
