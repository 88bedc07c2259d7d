//! Planned failover: an operator moves a VM to another host on purpose
//! (maintenance, an announced outage at its site). The VM is stopped first,
//! so it never runs twice; then it comes up on the target: by cold
//! migration on the same site (shared storage: nothing lost), or from its
//! replica on another site (the disaster-recovery path).

use crate::placement::{self, hv_err, OperationError as FailoverError};
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
}

/// Picks the target and method: see [`crate::placement::choose_host`]; the
/// method is cold migration on the VM's site, its replica on another.
pub fn plan(
    inv: &Inventory,
    vm: &str,
    to: Option<&str>,
) -> Result<(String, String, &'static str), FailoverError> {
    let v = placement::vm(inv, vm)?;
    let target = placement::choose_host(inv, v, to, true)?;
    let method = if placement::site_of(inv, &target) == placement::site_of(inv, &v.host) {
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

/// Runs a planned failover of `vm` (to `to`, or a host chosen by [`plan`]).
/// The caller keeps automation off the VM meanwhile.
pub async fn run(
    hv: &dyn Hypervisor,
    clock: &dyn Clock,
    vm: &str,
    to: Option<&str>,
) -> Result<FailoverReport, FailoverError> {
    let inv = hv.inventory().await.map_err(hv_err("inventory"))?;
    let (from, target, method) = plan(&inv, vm, to)?;
    let running = inv
        .vms
        .iter()
        .any(|v| v.name == vm && v.power == PowerState::On);
    let stopped_at = clock.now();
    if running {
        hv.power_off(vm).await.map_err(hv_err("power off"))?;
    }
    match method {
        "migrate" => {
            hv.migrate_vm(vm, &target)
                .await
                .map_err(hv_err("migrate"))?;
            hv.power_on(vm).await.map_err(hv_err("power on"))?;
        }
        _ => hv
            .restore_vm(vm, &target, RestoreSource::Replica)
            .await
            .map_err(hv_err("restore from replica"))?,
    }
    Ok(FailoverReport {
        vm: vm.to_owned(),
        from,
        to: target,
        method,
        downtime_ms: clock
            .now()
            .since(stopped_at)
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX),
    })
}
