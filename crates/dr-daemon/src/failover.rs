//! Planned failover: an operator moves a VM to another host on purpose
//! (maintenance, an announced outage at its site). The VM is stopped first,
//! so it never runs twice; then it comes up on the target: by cold
//! migration on the same site (shared storage: nothing lost), or from its
//! replica on another site (the disaster-recovery path): its newest complete
//! checkpoint, or an older one the operator chose (a point before a
//! corruption), which also rolls it back on its own site.

use crate::placement::{self, hv_err, OperationError as FailoverError};
use crate::replica_restore::RestorePlan;
use dr_core::model::{Inventory, PowerState, RestoreSource};
use dr_core::ports::{Clock, Hypervisor};
use serde::Serialize;

/// What a planned failover did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailoverReport {
    /// The VM.
    pub vm: String,
    /// Its host before.
    pub from: String,
    /// Its host now.
    pub to: String,
    /// How it got there: "migrate" or "replica".
    pub method: &'static str,
    /// From the stop to running on the target, ms.
    pub downtime_ms: u64,
    /// The replica's checkpoint it came back from, when one was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
}

/// Picks the target and method: see [`crate::placement::choose_host`]; the
/// method is cold migration on the VM's site, its replica on another, or
/// its replica wherever it goes when `from_replica` (a checkpoint chosen).
pub fn plan(
    inv: &Inventory,
    vm: &str,
    to: Option<&str>,
    from_replica: bool,
) -> Result<(String, String, &'static str), FailoverError> {
    let v = placement::vm(inv, vm)?;
    let target = placement::choose_host(inv, v, to, true)?;
    let method = if from_replica {
        if !v.replica_available {
            return Err(FailoverError::Impossible(format!(
                "{vm} has no complete checkpoint in its replica yet"
            )));
        }
        "replica"
    } else if placement::site_of(inv, &target) == placement::site_of(inv, &v.host) {
        "migrate"
    } else if v.replica_available {
        "replica"
    } else {
        return Err(FailoverError::Impossible(format!(
            "{target} is on another site and {vm} has no replica there"
        )));
    };
    Ok((v.host.clone(), target, method))
}

/// A planned failover decided and not yet begun: what the journal records
/// before anything is touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The VM.
    pub vm: String,
    /// Its host now.
    pub from: String,
    /// The target.
    pub to: String,
    /// "migrate" or "replica".
    pub method: &'static str,
    /// The replica's checkpoint to come back from (`None`: the newest).
    pub checkpoint: Option<u64>,
    running: bool,
}

/// Decides a planned failover of `vm` (to `to`, or a host chosen by
/// [`plan`]; from the replica's `checkpoint` if one is chosen) from the
/// hypervisor's inventory now.
pub async fn prepare(
    hv: &dyn Hypervisor,
    vm: &str,
    to: Option<&str>,
    checkpoint: Option<u64>,
) -> Result<Planned, FailoverError> {
    let inv = hv.inventory().await.map_err(hv_err("inventory"))?;
    let (from, target, method) = plan(&inv, vm, to, checkpoint.is_some())?;
    let running = inv
        .vms
        .iter()
        .any(|v| v.name == vm && v.power == PowerState::On);
    Ok(Planned {
        vm: vm.to_owned(),
        from,
        to: target,
        method,
        checkpoint,
        running,
    })
}

/// Carries out a [`prepare`]d failover: stop, then migrate or restore from
/// the replica (a chosen checkpoint from `replica`, the one this daemon
/// receives). The caller keeps automation off the VM meanwhile.
pub async fn execute(
    hv: &dyn Hypervisor,
    clock: &dyn Clock,
    p: Planned,
    replica: Option<&RestorePlan>,
) -> Result<FailoverReport, FailoverError> {
    // Before anything stops: a chosen checkpoint's disks are written (one
    // the replica does not hold is refused, and nothing stopped).
    let chosen = match (p.checkpoint, replica) {
        (None, _) => None,
        (Some(id), Some(plan)) => Some(
            crate::replica_restore::write_checkpoint(plan, &p.vm, id)
                .await
                .map_err(hv_err("restore from replica"))?,
        ),
        (Some(_), None) => {
            return Err(FailoverError::Impossible(format!(
                "{}'s replica is not received by this daemon: no checkpoint to choose from",
                p.vm
            )))
        }
    };
    let stopped_at = clock.now();
    if p.running {
        hv.power_off(&p.vm).await.map_err(hv_err("power off"))?;
    }
    match p.method {
        "migrate" => {
            hv.migrate_vm(&p.vm, &p.to)
                .await
                .map_err(hv_err("migrate"))?;
            hv.power_on(&p.vm).await.map_err(hv_err("power on"))?;
        }
        _ => match chosen {
            Some(images) => hv
                .restore_vm_from_images(&p.vm, &p.to, &images)
                .await
                .map_err(hv_err("restore from replica"))?,
            None => hv
                .restore_vm(&p.vm, &p.to, RestoreSource::Replica)
                .await
                .map_err(hv_err("restore from replica"))?,
        },
    }
    Ok(FailoverReport {
        vm: p.vm,
        from: p.from,
        to: p.to,
        method: p.method,
        checkpoint: p.checkpoint,
        downtime_ms: clock
            .now()
            .since(stopped_at)
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX),
    })
}
