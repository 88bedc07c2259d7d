//! Recovery drills (test failover): an isolated copy of a VM brought up the
//! way a real recovery would bring it up, timed, checked, and removed. The
//! VM itself keeps running untouched; the drill reports the RTO it achieved.

use crate::placement::{self, hv_err, OperationError as DrillError};
use dr_core::model::{Inventory, RestoreSource};
use dr_core::ports::{Clock, Hypervisor};
use serde::Serialize;

/// What a drill did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrillReport {
    /// The VM.
    pub vm: String,
    /// The copy's name.
    pub copy: String,
    /// Where the copy ran.
    pub host: String,
    /// What it was brought up from: "snapshot" or "replica".
    pub source: &'static str,
    /// From the start to the copy running, ms: the RTO this recovery path
    /// achieves now.
    pub rto_ms: u64,
    /// The VM was on the same host and in the same power state after the
    /// drill as before.
    pub production_untouched: bool,
}

/// The drill's host and source: see [`crate::placement::choose_host`] (the
/// VM's own host allowed); the replica when the host is on another site or
/// the VM has no snapshot, else its newest snapshot.
fn plan(
    inv: &Inventory,
    vm: &str,
    to: Option<&str>,
) -> Result<(String, RestoreSource), DrillError> {
    let v = placement::vm(inv, vm)?;
    let host = placement::choose_host(inv, v, to, false)?;
    let source = if placement::site_of(inv, &host) != placement::site_of(inv, &v.host) {
        if !v.replica_available {
            return Err(DrillError::Impossible(format!(
                "{host} is on another site and {vm} has no replica there"
            )));
        }
        RestoreSource::Replica
    } else if v.snapshot_count > 0 || v.shared_disks {
        // Its snapshot, or its disks on the site's shared storage (copied
        // at one instant by the backend).
        RestoreSource::Snapshot
    } else if v.replica_available {
        RestoreSource::Replica
    } else {
        return Err(DrillError::Impossible(format!(
            "{vm} has no snapshot, no disks on shared storage and no replica to drill from"
        )));
    };
    Ok((host, source))
}

/// A drill decided and not yet begun: what the journal records before
/// anything is touched.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The VM.
    pub vm: String,
    /// Its host.
    pub from: String,
    /// Where the copy runs.
    pub host: String,
    /// What the copy comes from.
    pub source: RestoreSource,
    before: Inventory,
}

/// Decides a drill of `vm` (on `to`, or a host [`plan`] picks) from the
/// hypervisor's inventory now.
pub async fn prepare(
    hv: &dyn Hypervisor,
    vm: &str,
    to: Option<&str>,
) -> Result<Planned, DrillError> {
    let before = hv.inventory().await.map_err(hv_err("inventory"))?;
    let (host, source) = plan(&before, vm, to)?;
    let from = placement::vm(&before, vm)?.host.clone();
    Ok(Planned {
        vm: vm.to_owned(),
        from,
        host,
        source,
        before,
    })
}

/// Carries out a [`prepare`]d drill: the copy up, timed, the VM checked
/// untouched, the copy removed.
pub async fn execute(
    hv: &dyn Hypervisor,
    clock: &dyn Clock,
    p: Planned,
) -> Result<DrillReport, DrillError> {
    let Planned {
        vm,
        host,
        source,
        before,
        ..
    } = p;
    let copy = dr_core::model::drill_copy_name(&vm, clock.now().0);
    let started = clock.now();
    hv.start_drill_copy(&vm, &host, source, &copy)
        .await
        .map_err(hv_err("start the drill copy"))?;
    let rto_ms = clock
        .now()
        .since(started)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX);
    let after = hv.inventory().await;
    let removed = hv.remove_drill_copy(&copy).await;
    let state = |inv: &Inventory| {
        inv.vms
            .iter()
            .find(|v| v.name == vm)
            .map(|v| (v.host.clone(), v.power))
    };
    let after = after.map_err(hv_err("inventory"))?;
    removed.map_err(hv_err("remove the drill copy"))?;
    let production_untouched = state(&before) == state(&after);
    Ok(DrillReport {
        vm,
        copy,
        host,
        source: match source {
            RestoreSource::Snapshot => "snapshot",
            RestoreSource::Replica => "replica",
        },
        rto_ms,
        production_untouched,
    })
}
