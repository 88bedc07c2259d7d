//! Planned failover: an operator moves a VM to another host on purpose
//! (maintenance, an announced outage at its site). The VM is stopped first,
//! so it never runs twice; then it comes up on the target: by cold
//! migration on the same site (shared storage: nothing lost), or from its
//! replica on another site (the disaster-recovery path).

use dr_core::model::{Inventory, PowerState, RestoreSource};
use dr_core::ports::{Clock, Hypervisor, HypervisorError};
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

/// Why a planned failover did not happen (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
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

fn hv_err(step: &'static str) -> impl FnOnce(HypervisorError) -> FailoverError {
    move |source| FailoverError::Hypervisor { step, source }
}

/// Free memory per connected host, MB.
fn free_memory(inv: &Inventory, host: &str) -> u64 {
    let Some(h) = inv.hosts.iter().find(|h| h.name == host) else {
        return 0;
    };
    let used: u64 = inv
        .vms
        .iter()
        .filter(|v| v.host == host && v.power == PowerState::On)
        .map(|v| v.memory_mb)
        .sum();
    h.memory_mb.saturating_sub(used)
}

/// Picks the target and method: `to` if given, else the connected host with
/// the most free memory, on another site when the VM has a replica, else on
/// its own site (cold migration over shared storage).
pub fn plan(
    inv: &Inventory,
    vm: &str,
    to: Option<&str>,
) -> Result<(String, String, &'static str), FailoverError> {
    let v = inv
        .vms
        .iter()
        .find(|v| v.name == vm)
        .ok_or_else(|| FailoverError::Impossible(format!("no VM named {vm:?}")))?;
    let site_of = |h: &str| {
        inv.hosts
            .iter()
            .find(|x| x.name == h)
            .map(|x| x.site.clone())
    };
    let home = site_of(&v.host);
    let usable = |h: &&dr_core::model::HostInfo| {
        h.name != v.host && h.link.accepts_vms() && free_memory(inv, &h.name) >= v.memory_mb
    };
    let target = match to {
        Some(t) => {
            let h = inv
                .hosts
                .iter()
                .find(|h| h.name == t)
                .ok_or_else(|| FailoverError::Impossible(format!("no host named {t:?}")))?;
            if !usable(&h) {
                return Err(FailoverError::Impossible(format!(
                    "host {t} cannot take {vm}: it is its current host, not connected, or without room"
                )));
            }
            h.name.clone()
        }
        None => {
            let other_site = v.replica_available;
            inv.hosts
                .iter()
                .filter(usable)
                .filter(|h| (Some(&h.site) != home.as_ref()) == other_site)
                .max_by_key(|h| free_memory(inv, &h.name))
                .map(|h| h.name.clone())
                .ok_or_else(|| {
                    FailoverError::Impossible(format!(
                        "no connected host with room for {vm} on {}",
                        if other_site {
                            "another site"
                        } else {
                            "its site"
                        }
                    ))
                })?
        }
    };
    let method = if site_of(&target) == home {
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
