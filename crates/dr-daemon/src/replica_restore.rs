//! Failover from replicas: a decorator over the hypervisor port. When a VM
//! protected by the replication manager is restored from its replica (by the
//! engine after a host loss, or by a planned failover), its disks are first
//! written from the newest complete checkpoint of the replica this daemon
//! receives (or, for a planned failover, an older one the operator chose:
//! [`write_checkpoint`]), to image files here; then the hypervisor brings the VM
//! up from them (a vCenter copies them to a datastore of the target host
//! first).
//! The inventory says which VMs have such a checkpoint, so the engine can
//! choose their replica. Every other call passes through unchanged.

use async_trait::async_trait;
use dr_core::model::{Inventory, PowerEvent, RestoreSource, SnapshotInfo, SnapshotTarget};
use dr_core::ports::{Capabilities, Hypervisor, HypervisorError};
use dr_core::Timestamp;
use dr_replication::{CheckpointInfo, Replica};
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
    /// Where the disks (0, 1, …) are written for the restored VM.
    pub images: crate::replication::RestoreImages,
}

impl RestorePlan {
    /// The checkpoint a restore starts from: `at` if the replica holds it
    /// whole, else an error saying what it holds; the newest when `None`.
    fn pick(&self, replica: &Replica, at: Option<u64>) -> Result<CheckpointInfo, HypervisorError> {
        let failed = |detail: String| HypervisorError::Failed {
            op: "restore from replica",
            detail,
        };
        let held = replica.checkpoints();
        match at {
            None => replica.newest().ok_or_else(|| {
                failed(format!(
                    "the replica in {} has no complete checkpoint yet",
                    self.dir.display()
                ))
            }),
            Some(id) => held.iter().find(|c| c.id == id).copied().ok_or_else(|| {
                failed(match (held.first(), held.last()) {
                    (Some(first), Some(last)) => format!(
                        "checkpoint {id} is not one of the {} complete checkpoints the replica in {} \
                         holds ({} to {})",
                        held.len(),
                        self.dir.display(),
                        first.id,
                        last.id
                    ),
                    _ => format!(
                        "the replica in {} has no complete checkpoint yet",
                        self.dir.display()
                    ),
                })
            }),
        }
    }

    /// The image of each disk of the checkpoint a restore starts from
    /// (named, or one per disk it holds in a directory).
    fn paths(&self, vm: &str, at: Option<u64>) -> Result<Vec<PathBuf>, HypervisorError> {
        use crate::replication::RestoreImages;
        match &self.images {
            RestoreImages::Files(f) => Ok(f.clone()),
            RestoreImages::Dir(dir) => {
                let replica = self.replica.lock().unwrap_or_else(PoisonError::into_inner);
                let c = self.pick(&replica, at)?;
                Ok(replica
                    .disks_at(c.id)
                    .into_iter()
                    .map(|d| crate::config::image_in(dir, vm, d))
                    .collect())
            }
        }
    }

    /// The checkpoints a failover can start from, oldest first, with the
    /// disks each holds. Off the async threads: a merge holds the replica
    /// a while.
    pub async fn checkpoints(&self) -> Vec<(CheckpointInfo, Vec<u32>)> {
        let replica = self.replica.clone();
        tokio::task::spawn_blocking(move || {
            let r = replica.lock().unwrap_or_else(PoisonError::into_inner);
            r.checkpoints()
                .into_iter()
                .map(|c| (c, r.disks_at(c.id).into_iter().collect()))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Writes `vm`'s disks from the checkpoint `at` (the newest: `None`) to
    /// `images` (for `why`: a failover, a drill); returns its id and time.
    /// The replica's lock is held throughout, so the receiver neither
    /// applies nor merges meanwhile.
    async fn materialize(
        &self,
        vm: &str,
        images: &[PathBuf],
        at: Option<u64>,
        why: &'static str,
    ) -> Result<(u64, u64), HypervisorError> {
        let plan = self.clone();
        let images = images.to_vec();
        let failed = |detail: String| HypervisorError::Failed {
            op: "restore from replica",
            detail,
        };
        tokio::task::spawn_blocking(move || {
            let replica = plan.replica.lock().unwrap_or_else(PoisonError::into_inner);
            let c = plan.pick(&replica, at)?;
            for (disk, image) in images.iter().enumerate() {
                if let Some(parent) = image.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| failed(format!("{}: {e}", parent.display())))?;
                }
                replica
                    .restore(c.id, disk as u32, image)
                    .map_err(|e| failed(e.to_string()))?;
            }
            Ok((c.id, c.time_ms))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .inspect(|(id, time)| match at {
            None => tracing::warn!(
                vm,
                checkpoint = id,
                checkpoint_time_ms = time,
                "{why}: disks written from the replica's newest complete checkpoint"
            ),
            Some(_) => tracing::warn!(
                vm,
                checkpoint = id,
                checkpoint_time_ms = time,
                "{why}: disks written from the replica's checkpoint the operator chose"
            ),
        })
    }
}

/// Writes `vm`'s disks from checkpoint `id` of its replica (a planned
/// failover to a point in time the operator chose, one before a corruption
/// say) and returns their images, for `restore_vm_from_images`. Done while
/// the VM still runs: the point is history, so nothing it does changes it,
/// and once written no merge of the replica can take it away before the
/// restore.
pub async fn write_checkpoint(
    plan: &RestorePlan,
    vm: &str,
    id: u64,
) -> Result<Vec<PathBuf>, HypervisorError> {
    let images = plan.paths(vm, Some(id))?;
    plan.materialize(vm, &images, Some(id), "failover").await?;
    Ok(images)
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
}

/// Files removed when this is dropped, however the operation that made
/// them ends; off the async threads (a whole disk's blocks are freed).
struct RemoveOnDrop(Vec<PathBuf>);

impl RemoveOnDrop {
    /// Removes them now, and waits for it.
    async fn now(&mut self) {
        let files = std::mem::take(&mut self.0);
        let _ = tokio::task::spawn_blocking(move || remove_files(&files)).await;
    }
}

fn remove_files(files: &[PathBuf]) {
    for f in files {
        if let Err(e) = std::fs::remove_file(f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %f.display(), error = %e, "cannot remove a drill's disk image");
            }
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let files = std::mem::take(&mut self.0);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || remove_files(&files))),
            Err(_) => remove_files(&files),
        }
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
                let images = plan.paths(vm, None)?;
                plan.materialize(vm, &images, None, "failover").await?;
                return self.inner.restore_vm_from_images(vm, host, &images).await;
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
            .paths(vm, None)?
            .iter()
            .map(|i| {
                let mut name = i.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".{copy}"));
                i.with_file_name(name)
            })
            .collect();
        // The copy runs from what the backend made of them (vCenter: its
        // upload; the simulation only checks them): they go when the drill
        // has started, or failed, or was cut off by its timeout.
        let mut remove = RemoveOnDrop(images.clone());
        let result = async {
            plan.materialize(vm, &images, None, "drill").await?;
            self.inner
                .start_drill_copy_from_images(vm, host, &images, copy)
                .await
        }
        .await;
        remove.now().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use dr_replication::record::{Record, Write};
    use dr_sim::Latencies;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_drill_cut_off_by_its_timeout_leaves_no_images() {
        let text = r#"
name = "drill"
duration = "1h"
[[host]]
name = "h1"
[[host]]
name = "h2"
[[vm]]
name = "app-1"
ip = "10.0.0.1"
host = "h1"
replica = true
"#;
        let lat = Latencies {
            restore_replica: Duration::from_secs(600),
            ..Latencies::default()
        };
        let (hv, _) = crate::test_support::sim_hypervisor(text, lat);
        let dir = std::env::temp_dir().join(format!("dr-daemon-drill-cut-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut replica = Replica::open(&dir.join("replica"), 2).expect("replica");
        replica
            .apply(&Record::Write {
                seq: 1,
                write: Write {
                    disk: 0,
                    offset: 0,
                    data: vec![7; 4096],
                },
            })
            .expect("write");
        replica
            .apply(&Record::Checkpoint {
                seq: 2,
                id: 1,
                time_ms: 1,
            })
            .expect("checkpoint");
        let images = dir.join("images");
        let plan = RestorePlan {
            replica: Arc::new(Mutex::new(replica)),
            dir: dir.join("replica"),
            images: crate::replication::RestoreImages::Files(vec![images.join("app-1.img")]),
        };
        let rr = ReplicaRestore::new(hv, BTreeMap::from([("app-1".to_owned(), plan)]));
        let drill = rr.start_drill_copy("app-1", "h2", RestoreSource::Replica, "app-1-drill");
        // The images are written, then the simulated copy takes 10 minutes:
        // the action timeout drops the drill in between.
        let cut = tokio::time::timeout(Duration::from_secs(60), drill).await;
        assert!(cut.is_err(), "the drill ended before its timeout: {cut:?}");
        // Their removal runs off the async threads: wait for it.
        let mut left = Vec::new();
        for _ in 0..200 {
            left = std::fs::read_dir(&images)
                .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(left.is_empty(), "a cut-off drill left images: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
