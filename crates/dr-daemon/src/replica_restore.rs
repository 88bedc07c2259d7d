//! Failover from replicas: a decorator over the hypervisor port. When a VM
//! protected by the replication manager is restored from its replica (by the
//! engine after a host loss, or by a planned failover), its disks are first
//! written from the newest complete checkpoint of the replica this daemon
//! receives, to image files here; then the hypervisor brings the VM up from
//! them (a vCenter copies them to a datastore of the target host first).
//! The inventory says which VMs have such a checkpoint, so the engine can
//! choose their replica. Every other call passes through unchanged.

use async_trait::async_trait;
use dr_core::model::{Inventory, PowerEvent, RestoreSource, SnapshotInfo, SnapshotTarget};
use dr_core::ports::{Capabilities, Hypervisor, HypervisorError};
use dr_core::Timestamp;
use dr_replication::Replica;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Where a protected VM's disks come back from.
#[derive(Clone)]
pub struct RestorePlan {
    /// The replica this daemon receives for the VM.
    pub replica: Arc<Mutex<Replica>>,
    /// Its replica directory (for messages).
    pub dir: PathBuf,
    /// Where each disk (0, 1, …) is written for the restored VM.
    pub images: Vec<PathBuf>,
}

/// The hypervisor, with restores from replicas backed by real checkpoints.
pub struct ReplicaRestore {
    inner: Arc<dyn Hypervisor>,
    plans: BTreeMap<String, RestorePlan>,
    /// Whether each planned VM's replica had a complete checkpoint when it
    /// was last looked at (a replica busy receiving is not waited for).
    available: Mutex<BTreeMap<String, bool>>,
}

impl ReplicaRestore {
    /// Wraps `inner`; `plans` by VM name.
    pub fn new(inner: Arc<dyn Hypervisor>, plans: BTreeMap<String, RestorePlan>) -> Self {
        ReplicaRestore {
            inner,
            plans,
            available: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether `plan`'s replica holds a complete checkpoint. The replica's
    /// lock is only tried: while the receiver holds it (a merge takes a
    /// while) the last answer stands.
    fn has_checkpoint(&self, vm: &str, plan: &RestorePlan) -> bool {
        let mut known = self
            .available
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = match plan.replica.try_lock() {
            Ok(r) => Some(r.newest().is_some()),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner().newest().is_some()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        match now {
            Some(now) => {
                known.insert(vm.to_owned(), now);
                now
            }
            None => known.get(vm).copied().unwrap_or(false),
        }
    }

    /// Writes `vm`'s disks from the newest complete checkpoint to `images`
    /// (for `why`: a failover, a drill); returns its id and time. The
    /// replica's lock is held throughout, so the receiver neither applies
    /// nor merges meanwhile.
    async fn materialize(
        &self,
        vm: &str,
        plan: &RestorePlan,
        images: &[PathBuf],
        why: &'static str,
    ) -> Result<(u64, u64), HypervisorError> {
        let plan = plan.clone();
        let images = images.to_vec();
        let failed = |detail: String| HypervisorError::Failed {
            op: "restore from replica",
            detail,
        };
        tokio::task::spawn_blocking(move || {
            let replica = plan.replica.lock().unwrap_or_else(PoisonError::into_inner);
            let newest = replica.newest().ok_or_else(|| {
                failed(format!(
                    "the replica in {} has no complete checkpoint yet",
                    plan.dir.display()
                ))
            })?;
            for (disk, image) in images.iter().enumerate() {
                if let Some(parent) = image.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| failed(format!("{}: {e}", parent.display())))?;
                }
                replica
                    .restore(newest.id, disk as u32, image)
                    .map_err(|e| failed(e.to_string()))?;
            }
            Ok((newest.id, newest.time_ms))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .inspect(|(id, time)| {
            tracing::warn!(
                vm,
                checkpoint = id,
                checkpoint_time_ms = time,
                "{why}: disks written from the replica's newest complete checkpoint"
            );
        })
    }
}

#[async_trait]
impl Hypervisor for ReplicaRestore {
    fn capabilities(&self) -> Capabilities {
        let inner = self.inner.capabilities();
        Capabilities {
            // Planned VMs come back from images this decorator writes.
            replicas: inner.replicas || inner.images,
            ..inner
        }
    }

    async fn inventory(&self) -> Result<Inventory, HypervisorError> {
        let mut inv = self.inner.inventory().await?;
        for v in &mut inv.vms {
            if let Some(plan) = self.plans.get(&v.name) {
                v.replica_available |= self.has_checkpoint(&v.name, plan);
            }
        }
        Ok(inv)
    }

    async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, HypervisorError> {
        self.inner.power_events(since).await
    }

    async fn create_snapshot(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<SnapshotInfo, HypervisorError> {
        self.inner.create_snapshot(target, name).await
    }

    async fn list_snapshots(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Vec<SnapshotInfo>, HypervisorError> {
        self.inner.list_snapshots(target).await
    }

    async fn remove_snapshot(
        &self,
        target: &SnapshotTarget,
        id: &str,
    ) -> Result<(), HypervisorError> {
        self.inner.remove_snapshot(target, id).await
    }

    async fn revert_vm(&self, vm: &str, snapshot: Option<&str>) -> Result<(), HypervisorError> {
        self.inner.revert_vm(vm, snapshot).await
    }

    async fn power_on(&self, vm: &str) -> Result<(), HypervisorError> {
        self.inner.power_on(vm).await
    }

    async fn power_off(&self, vm: &str) -> Result<(), HypervisorError> {
        self.inner.power_off(vm).await
    }

    async fn reset(&self, vm: &str) -> Result<(), HypervisorError> {
        self.inner.reset(vm).await
    }

    async fn restore_vm(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
    ) -> Result<(), HypervisorError> {
        if source == RestoreSource::Replica {
            if let Some(plan) = self.plans.get(vm) {
                self.materialize(vm, plan, &plan.images, "failover").await?;
                return self
                    .inner
                    .restore_vm_from_images(vm, host, &plan.images)
                    .await;
            }
        }
        self.inner.restore_vm(vm, host, source).await
    }

    async fn restore_vm_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
    ) -> Result<(), HypervisorError> {
        self.inner.restore_vm_from_images(vm, host, images).await
    }

    async fn migrate_vm(&self, vm: &str, host: &str) -> Result<(), HypervisorError> {
        self.inner.migrate_vm(vm, host).await
    }

    async fn recover_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.inner.recover_host(host).await
    }

    async fn add_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.inner.add_host(host).await
    }

    async fn start_drill_copy(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
        copy: &str,
    ) -> Result<(), HypervisorError> {
        let Some(plan) = self
            .plans
            .get(vm)
            .filter(|_| source == RestoreSource::Replica)
        else {
            return self.inner.start_drill_copy(vm, host, source, copy).await;
        };
        // Images of its own, beside the failover's: a drill never writes
        // over what a failover may be reading.
        let images: Vec<PathBuf> = plan
            .images
            .iter()
            .map(|i| {
                let mut name = i.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".{copy}"));
                i.with_file_name(name)
            })
            .collect();
        let result = async {
            self.materialize(vm, plan, &images, "drill").await?;
            self.inner
                .start_drill_copy_from_images(vm, host, &images, copy)
                .await
        }
        .await;
        // The copy runs from what the backend made of them (vCenter: its
        // upload; the simulation only checks them).
        for i in &images {
            let _ = tokio::fs::remove_file(i).await;
        }
        result
    }

    async fn start_drill_copy_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
        copy: &str,
    ) -> Result<(), HypervisorError> {
        self.inner
            .start_drill_copy_from_images(vm, host, images, copy)
            .await
    }

    async fn remove_drill_copy(&self, copy: &str) -> Result<(), HypervisorError> {
        self.inner.remove_drill_copy(copy).await
    }
}
