//! Recovery drills (test failover): an isolated copy of a VM brought up the
//! way a real recovery would bring it up, timed, checked, and removed. The
//! VM itself keeps running untouched; the drill reports the RTO it achieved.

use dr_core::model::{Inventory, PowerState, RestoreSource};
use dr_core::ports::{Clock, Hypervisor, HypervisorError};
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

/// Why a drill did not happen or failed.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// Nothing to do it with.
    #[error("{0}")]
    Impossible(String),
    /// The hypervisor refused or failed.
    #[error("{step}: {source}")]
    Hypervisor {
        /// The step.
        step: &'static str,
        /// The error.
        source: HypervisorError,
    },
}

fn hv_err(step: &'static str) -> impl FnOnce(HypervisorError) -> DrillError {
    move |source| DrillError::Hypervisor { step, source }
}

/// The drill's host and source: the replica on another site when the VM
/// has one (the disaster-recovery path), else its newest snapshot on its own
/// site; the connected host with the most room, or `to`.
fn plan(
    inv: &Inventory,
    vm: &str,
    to: Option<&str>,
) -> Result<(String, RestoreSource), DrillError> {
    let v = inv
        .vms
        .iter()
        .find(|v| v.name == vm)
        .ok_or_else(|| DrillError::Impossible(format!("no VM named {vm:?}")))?;
    let site_of = |h: &str| {
        inv.hosts
            .iter()
            .find(|x| x.name == h)
            .map(|x| x.site.clone())
    };
    let home = site_of(&v.host);
    let free = |h: &str| {
        let cap = inv
            .hosts
            .iter()
            .find(|x| x.name == h)
            .map_or(0, |x| x.memory_mb);
        let used: u64 = inv
            .vms
            .iter()
            .filter(|x| x.host == h && x.power == PowerState::On)
            .map(|x| x.memory_mb)
            .sum();
        cap.saturating_sub(used)
    };
    let fits = |h: &dr_core::model::HostInfo| h.link.accepts_vms() && free(&h.name) >= v.memory_mb;
    let host = match to {
        Some(t) => inv
            .hosts
            .iter()
            .find(|h| h.name == t)
            .filter(|h| fits(h))
            .map(|h| h.name.clone())
            .ok_or_else(|| {
                DrillError::Impossible(format!(
                    "host {t:?} is unknown, not connected or without room"
                ))
            })?,
        None => {
            let other_site = v.replica_available;
            inv.hosts
                .iter()
                .filter(|h| fits(h))
                .filter(|h| (Some(&h.site) != home.as_ref()) == other_site)
                .max_by_key(|h| free(&h.name))
                .map(|h| h.name.clone())
                .ok_or_else(|| {
                    DrillError::Impossible(format!(
                        "no connected host with room for a copy of {vm}"
                    ))
                })?
        }
    };
    let source = if site_of(&host) != home {
        if !v.replica_available {
            return Err(DrillError::Impossible(format!(
                "{host} is on another site and {vm} has no replica there"
            )));
        }
        RestoreSource::Replica
    } else if v.snapshot_count > 0 {
        RestoreSource::Snapshot
    } else if v.replica_available {
        RestoreSource::Replica
    } else {
        return Err(DrillError::Impossible(format!(
            "{vm} has neither a snapshot nor a replica to drill from"
        )));
    };
    Ok((host, source))
}

/// Runs a drill of `vm` (on `to`, or a host [`plan`] picks).
pub async fn run(
    hv: &dyn Hypervisor,
    clock: &dyn Clock,
    vm: &str,
    to: Option<&str>,
) -> Result<DrillReport, DrillError> {
    let before = hv.inventory().await.map_err(hv_err("inventory"))?;
    let (host, source) = plan(&before, vm, to)?;
    let copy = format!("{vm}-vmdr-drill-{}", clock.now().0);
    let started = clock.now();
    hv.start_drill_copy(vm, &host, source, &copy)
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
    Ok(DrillReport {
        vm: vm.to_owned(),
        copy,
        host,
        source: match source {
            RestoreSource::Snapshot => "snapshot",
            RestoreSource::Replica => "replica",
        },
        rto_ms,
        production_untouched: state(&before) == state(&after),
    })
}
