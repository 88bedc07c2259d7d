//! The simulated datacenter behind the [`Hypervisor`] port.

use crate::world::{Op, World};
use async_trait::async_trait;
use dr_core::model::{Inventory, PowerEvent, RestoreSource, SnapshotInfo, SnapshotTarget};
use dr_core::ports::{Capabilities, Clock, Hypervisor, HypervisorError};
use dr_core::Timestamp;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long simulated operations take (virtual time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latencies {
    /// Reading the inventory or the event log.
    pub read: Duration,
    /// Power on, power off, reset.
    pub power: Duration,
    /// Revert to a snapshot.
    pub revert: Duration,
    /// Clone a VM from its snapshot onto a host.
    pub restore_snapshot: Duration,
    /// Bring a VM up from its replica.
    pub restore_replica: Duration,
    /// Cold migration.
    pub migrate: Duration,
    /// Recover a host from its snapshot (reimage and reboot).
    pub recover_host: Duration,
    /// Add a standby host.
    pub add_host: Duration,
    /// Create or remove a snapshot.
    pub snapshot: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            read: Duration::from_millis(20),
            power: Duration::from_secs(2),
            revert: Duration::from_secs(5),
            restore_snapshot: Duration::from_secs(20),
            restore_replica: Duration::from_secs(30),
            migrate: Duration::from_secs(10),
            recover_host: Duration::from_secs(60),
            add_host: Duration::from_secs(30),
            snapshot: Duration::from_secs(2),
        }
    }
}

/// Locks the world; a panic elsewhere while holding it cannot leave it half
/// written (every mutation completes under the lock), so poisoning is moot.
pub(crate) fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks disk images a replica wrote for a restore: each one a regular
/// file of whole 512-byte sectors. The simulated datacenter's VMs have no
/// disks of their own to write them to, so this is all a restore does with
/// them; a vCenter copies them to a datastore.
pub async fn check_restore_images(images: &[PathBuf]) -> Result<(), HypervisorError> {
    if images.is_empty() {
        return Err(HypervisorError::Failed {
            op: "restore from images",
            detail: "no disk images given".into(),
        });
    }
    let images = images.to_vec();
    tokio::task::spawn_blocking(move || {
        for image in &images {
            let m = std::fs::metadata(image).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => HypervisorError::NotFound {
                    kind: "disk image",
                    name: image.display().to_string(),
                },
                _ => HypervisorError::Failed {
                    op: "restore from images",
                    detail: format!("{}: {e}", image.display()),
                },
            })?;
            if !m.is_file() || m.len() % 512 != 0 {
                return Err(HypervisorError::Failed {
                    op: "restore from images",
                    detail: format!(
                        "{} is not a disk image (a file of whole 512-byte sectors)",
                        image.display()
                    ),
                });
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| HypervisorError::Failed {
        op: "restore from images",
        detail: e.to_string(),
    })?
}

/// The simulated hypervisor manager. Operations check their preconditions,
/// take their simulated time on the clock, then re-check and apply, so faults
/// that land mid-operation are seen as on a real manager.
pub struct SimHypervisor {
    world: Arc<Mutex<World>>,
    clock: Arc<dyn Clock>,
    lat: Latencies,
}

impl SimHypervisor {
    /// A manager over `world`, on `clock`.
    pub fn new(world: Arc<Mutex<World>>, clock: Arc<dyn Clock>, lat: Latencies) -> Self {
        SimHypervisor { world, clock, lat }
    }

    /// The world, brought up to now (agents' deadlines, watchdogs).
    fn world_now(&self) -> MutexGuard<'_, World> {
        let mut w = lock(&self.world);
        w.advance(self.clock.now());
        w
    }

    async fn run(&self, op: Op, latency: Duration) -> Result<(), HypervisorError> {
        lock(&self.world).op(&op, self.clock.now(), false)?;
        self.clock.sleep(latency).await;
        lock(&self.world).op(&op, self.clock.now(), true)
    }
}

#[async_trait]
impl Hypervisor for SimHypervisor {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            host_recovery: true,
            add_host: true,
            replicas: true,
            drills: true,
            images: true,
        }
    }

    async fn inventory(&self) -> Result<Inventory, HypervisorError> {
        self.clock.sleep(self.lat.read).await;
        Ok(self.world_now().inventory(self.clock.now()))
    }

    async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, HypervisorError> {
        self.clock.sleep(self.lat.read).await;
        let w = self.world_now();
        let start = w.events.partition_point(|e| e.at < since);
        Ok(w.events[start..].to_vec())
    }

    async fn create_snapshot(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<SnapshotInfo, HypervisorError> {
        self.run(
            Op::CreateSnapshot(target.clone(), name.to_owned()),
            self.lat.snapshot,
        )
        .await?;
        let snaps = self.world_now().snapshots(target)?;
        snaps
            .last()
            .cloned()
            .ok_or_else(|| HypervisorError::NotFound {
                kind: "snapshot",
                name: name.to_owned(),
            })
    }

    async fn list_snapshots(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Vec<SnapshotInfo>, HypervisorError> {
        self.clock.sleep(self.lat.read).await;
        self.world_now().snapshots(target)
    }

    async fn remove_snapshot(
        &self,
        target: &SnapshotTarget,
        id: &str,
    ) -> Result<(), HypervisorError> {
        self.run(
            Op::RemoveSnapshot(target.clone(), id.to_owned()),
            self.lat.snapshot,
        )
        .await
    }

    async fn revert_vm(&self, vm: &str, snapshot: Option<&str>) -> Result<(), HypervisorError> {
        self.run(
            Op::Revert(vm.to_owned(), snapshot.map(str::to_owned)),
            self.lat.revert,
        )
        .await
    }

    async fn power_on(&self, vm: &str) -> Result<(), HypervisorError> {
        self.run(Op::PowerOn(vm.to_owned()), self.lat.power).await
    }

    async fn power_off(&self, vm: &str) -> Result<(), HypervisorError> {
        self.run(Op::PowerOff(vm.to_owned()), self.lat.power).await
    }

    async fn reset(&self, vm: &str) -> Result<(), HypervisorError> {
        self.run(Op::Reset(vm.to_owned()), self.lat.power).await
    }

    async fn restore_vm(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
    ) -> Result<(), HypervisorError> {
        let latency = match source {
            RestoreSource::Snapshot => self.lat.restore_snapshot,
            RestoreSource::Replica => self.lat.restore_replica,
        };
        self.run(Op::Restore(vm.to_owned(), host.to_owned(), source), latency)
            .await
    }

    async fn restore_vm_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
    ) -> Result<(), HypervisorError> {
        check_restore_images(images).await?;
        self.restore_vm(vm, host, RestoreSource::Replica).await
    }

    async fn start_drill_copy_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
        copy: &str,
    ) -> Result<(), HypervisorError> {
        check_restore_images(images).await?;
        self.start_drill_copy(vm, host, RestoreSource::Replica, copy)
            .await
    }

    async fn migrate_vm(&self, vm: &str, host: &str) -> Result<(), HypervisorError> {
        self.run(
            Op::Migrate(vm.to_owned(), host.to_owned()),
            self.lat.migrate,
        )
        .await
    }

    async fn recover_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.run(Op::RecoverHost(host.to_owned()), self.lat.recover_host)
            .await
    }

    async fn add_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.run(Op::AddHost(host.to_owned()), self.lat.add_host)
            .await
    }

    async fn start_drill_copy(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
        copy: &str,
    ) -> Result<(), HypervisorError> {
        let latency = match source {
            RestoreSource::Snapshot => self.lat.restore_snapshot,
            RestoreSource::Replica => self.lat.restore_replica,
        };
        self.run(
            Op::StartDrill(vm.to_owned(), host.to_owned(), source, copy.to_owned()),
            latency,
        )
        .await
    }

    async fn remove_drill_copy(&self, copy: &str) -> Result<(), HypervisorError> {
        self.run(Op::RemoveDrill(copy.to_owned()), self.lat.power)
            .await
    }
}
