//! Where an operator-triggered operation (planned failover, drill) puts a
//! VM, and the errors both share.

use dr_core::model::{HostInfo, Inventory, PowerState, VmInfo};
use dr_core::ports::HypervisorError;

/// Why an operation did not happen or failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
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

/// Maps a hypervisor error at `step`.
pub fn hv_err(step: &'static str) -> impl FnOnce(HypervisorError) -> OperationError {
    move |source| OperationError::Hypervisor { step, source }
}

/// Memory of a host not used by its running VMs, MB.
pub fn free_memory(inv: &Inventory, host: &str) -> u64 {
    let cap = inv
        .hosts
        .iter()
        .find(|h| h.name == host)
        .map_or(0, |h| h.memory_mb);
    let used: u64 = inv
        .vms
        .iter()
        .filter(|v| v.host == host && v.power == PowerState::On)
        .map(|v| v.memory_mb)
        .sum();
    cap.saturating_sub(used)
}

/// The site of a host.
pub fn site_of(inv: &Inventory, host: &str) -> Option<String> {
    inv.hosts
        .iter()
        .find(|h| h.name == host)
        .map(|h| h.site.clone())
}

/// The VM by name.
pub fn vm<'a>(inv: &'a Inventory, name: &str) -> Result<&'a VmInfo, OperationError> {
    inv.vms
        .iter()
        .find(|v| v.name == name)
        .ok_or_else(|| OperationError::Impossible(format!("no VM named {name:?}")))
}

/// The host for `v`: `to` if given and fit, else the connected host with the
/// most room, on another site when the VM has a replica there, on its own
/// site otherwise. `leave` excludes the VM's current host.
pub fn choose_host(
    inv: &Inventory,
    v: &VmInfo,
    to: Option<&str>,
    leave: bool,
) -> Result<String, OperationError> {
    let fits = |h: &&HostInfo| {
        !(leave && h.name == v.host)
            && h.link.accepts_vms()
            && free_memory(inv, &h.name) >= v.memory_mb
    };
    match to {
        Some(t) => inv
            .hosts
            .iter()
            .find(|h| h.name == t)
            .ok_or_else(|| OperationError::Impossible(format!("no host named {t:?}")))
            .and_then(|h| {
                if fits(&h) {
                    Ok(h.name.clone())
                } else {
                    Err(OperationError::Impossible(format!(
                        "host {t} cannot take {}: {}not connected, or without room",
                        v.name,
                        if leave {
                            "it is its current host, "
                        } else {
                            ""
                        }
                    )))
                }
            }),
        None => {
            let home = site_of(inv, &v.host);
            let other_site = v.replica_available;
            inv.hosts
                .iter()
                .filter(fits)
                .filter(|h| (Some(&h.site) != home.as_ref()) == other_site)
                .max_by_key(|h| free_memory(inv, &h.name))
                .map(|h| h.name.clone())
                .ok_or_else(|| {
                    OperationError::Impossible(format!(
                        "no connected host with room for {} on {}",
                        v.name,
                        if other_site {
                            "another site"
                        } else {
                            "its site"
                        }
                    ))
                })
        }
    }
}
