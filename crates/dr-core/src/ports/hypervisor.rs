use crate::model::{Inventory, PowerEvent, RestoreSource, SnapshotInfo, SnapshotTarget};
use crate::time::Timestamp;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a hypervisor operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HypervisorError {
    /// The named VM, host or snapshot does not exist.
    #[error("{kind} not found: {name}")]
    NotFound {
        /// "vm", "host" or "snapshot".
        kind: &'static str,
        /// What was looked for.
        name: String,
    },
    /// The object exists but cannot do this now (power on a running VM,
    /// migrate a running VM cold, add a host that is already added).
    #[error("invalid state for {name}: {detail}")]
    InvalidState {
        /// The object.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// The host the operation needs does not answer the manager.
    #[error("host unreachable: {host}")]
    HostUnreachable {
        /// The host.
        host: String,
    },
    /// The operation did not finish in time. It may still finish later.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// The target host has no room for the VM.
    #[error("host {host} has no capacity for {vm}")]
    InsufficientCapacity {
        /// The host.
        host: String,
        /// The VM.
        vm: String,
    },
    /// This backend cannot do this at all (see [`Capabilities`]).
    #[error("{op} is not supported by this backend")]
    Unsupported {
        /// The operation.
        op: &'static str,
    },
    /// Login failed or the session was rejected.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The operation ran and failed for a reason the backend reported.
    #[error("{op} failed: {detail}")]
    Failed {
        /// The operation.
        op: &'static str,
        /// The backend's reason.
        detail: String,
    },
    /// The backend's answer could not be understood.
    #[error("bad response from backend: {0}")]
    Protocol(String),
}

impl HypervisorError {
    /// Worth retrying the same operation: the condition may pass by itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HypervisorError::Timeout { .. } | HypervisorError::HostUnreachable { .. }
        )
    }
}

/// What a backend can do beyond the operations every backend has. The
/// conformance suite skips what a backend declares it cannot do, and fails
/// when a declared capability does not work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Host snapshots (configuration backups) and `recover_host`.
    pub host_recovery: bool,
    /// `add_host` of a standby host from the inventory.
    pub add_host: bool,
    /// `restore_vm` from [`RestoreSource::Replica`].
    pub replicas: bool,
    /// `start_drill_copy` and `remove_drill_copy` (recovery drills).
    #[serde(default)]
    pub drills: bool,
    /// `restore_vm_from_images` (and, with `drills`,
    /// `start_drill_copy_from_images`): a VM brought up from disk images a
    /// replica wrote on this machine.
    #[serde(default)]
    pub images: bool,
}

/// A hypervisor manager (vCenter, or the simulated datacenter).
///
/// Every method names objects by their unique names, as the paper's
/// name → IP map does. Mutating operations return when the hypervisor reports
/// the operation finished (vSphere: the task completed), not when it was
/// accepted.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Every host (including standby spares) and VM with their states and vitals.
    async fn inventory(&self) -> Result<Inventory, HypervisorError>;

    /// Power events at or after `since`, oldest first, with who caused them.
    async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, HypervisorError>;

    /// Takes a snapshot.
    async fn create_snapshot(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<SnapshotInfo, HypervisorError>;

    /// Lists snapshots, oldest first.
    async fn list_snapshots(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Vec<SnapshotInfo>, HypervisorError>;

    /// Removes one snapshot.
    async fn remove_snapshot(
        &self,
        target: &SnapshotTarget,
        id: &str,
    ) -> Result<(), HypervisorError>;

    /// Reverts a VM to a snapshot (`None`: its newest). The VM is left
    /// powered off; the caller powers it on.
    async fn revert_vm(&self, vm: &str, snapshot: Option<&str>) -> Result<(), HypervisorError>;

    /// Powers a VM on. `InvalidState` if it is already on.
    async fn power_on(&self, vm: &str) -> Result<(), HypervisorError>;

    /// Powers a VM off (hard). `InvalidState` if it is already off.
    async fn power_off(&self, vm: &str) -> Result<(), HypervisorError>;

    /// Power-cycles a running VM in place (for a hung guest).
    async fn reset(&self, vm: &str) -> Result<(), HypervisorError>;

    /// Brings the VM up on `host` from `source` (a clone of its newest
    /// snapshot, or its replica) and powers it on there; the VM is then
    /// registered on `host`. Never call it while the original may still run;
    /// a backend that sees the original powered on refuses with
    /// `InvalidState` (checked again just before the new copy starts).
    async fn restore_vm(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
    ) -> Result<(), HypervisorError>;

    /// As `restore_vm` from [`RestoreSource::Replica`], from disk images on
    /// this machine that a replica's checkpoint was written to: one file
    /// per disk, in the VM's disk order (a backend whose VMs' disks live
    /// elsewhere carries them to its storage first). The same rule holds:
    /// never while the original may still run. Backends that cannot answer
    /// `Unsupported`.
    async fn restore_vm_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[std::path::PathBuf],
    ) -> Result<(), HypervisorError> {
        let _ = (vm, host, images);
        Err(HypervisorError::Unsupported {
            op: "restore_vm_from_images",
        })
    }

    /// Cold-migrates a powered-off VM to `host`.
    async fn migrate_vm(&self, vm: &str, host: &str) -> Result<(), HypervisorError>;

    /// Recovers a failed host from its newest host snapshot (reimage and
    /// reboot). Its VMs come back powered off.
    async fn recover_host(&self, host: &str) -> Result<(), HypervisorError>;

    /// Adds a standby host from the inventory to the manager.
    async fn add_host(&self, host: &str) -> Result<(), HypervisorError>;

    /// For a recovery drill: brings up an isolated copy of `vm`, named
    /// `copy`, on `host` from `source`, powered on with no network, so a
    /// recovery can be rehearsed and timed without touching the original
    /// (which keeps running). `InvalidState` if `copy` exists already.
    /// Backends without drills answer `Unsupported`.
    async fn start_drill_copy(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
        copy: &str,
    ) -> Result<(), HypervisorError> {
        let _ = (vm, host, source, copy);
        Err(HypervisorError::Unsupported {
            op: "start_drill_copy",
        })
    }

    /// As `start_drill_copy` from [`RestoreSource::Replica`], from disk
    /// images on this machine as for `restore_vm_from_images`. The
    /// original is not touched. Backends that cannot answer `Unsupported`.
    async fn start_drill_copy_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[std::path::PathBuf],
        copy: &str,
    ) -> Result<(), HypervisorError> {
        let _ = (vm, host, images, copy);
        Err(HypervisorError::Unsupported {
            op: "start_drill_copy_from_images",
        })
    }

    /// Powers off and deletes a drill copy. `NotFound` if there is none.
    async fn remove_drill_copy(&self, copy: &str) -> Result<(), HypervisorError> {
        let _ = copy;
        Err(HypervisorError::Unsupported {
            op: "remove_drill_copy",
        })
    }
}

/// Conveniences built only from [`Hypervisor`]'s methods, so every backend
/// behaves the same.
#[async_trait]
pub trait HypervisorExt: Hypervisor {
    /// Removes the oldest snapshots of `target` so that at most `keep` remain.
    /// Returns how many were removed.
    async fn prune_snapshots(
        &self,
        target: &SnapshotTarget,
        keep: usize,
    ) -> Result<usize, HypervisorError> {
        let mut snaps = self.list_snapshots(target).await?;
        if snaps.len() <= keep {
            return Ok(0);
        }
        snaps.sort_by_key(|s| s.created);
        let excess = snaps.len() - keep;
        for s in &snaps[..excess] {
            self.remove_snapshot(target, &s.id).await?;
        }
        Ok(excess)
    }

    /// Takes a new snapshot, then prunes to `keep` (the paper's snapshot
    /// creator: new first, so a failure never leaves zero snapshots).
    async fn rotate_snapshots(
        &self,
        target: &SnapshotTarget,
        name: &str,
        keep: usize,
    ) -> Result<SnapshotInfo, HypervisorError> {
        let snap = self.create_snapshot(target, name).await?;
        self.prune_snapshots(target, keep.max(1)).await?;
        Ok(snap)
    }
}

impl<T: Hypervisor + ?Sized> HypervisorExt for T {}
