//! A decorator backend: any [`Hypervisor`] whose inventory something else
//! adds to (the hosts' own signals from their agents, for one), every
//! other call passed through unchanged.

use super::hypervisor::{Capabilities, Hypervisor, HypervisorError};
use crate::model::{Inventory, PowerEvent, RestoreSource, SnapshotInfo, SnapshotTarget};
use crate::time::Timestamp;
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;

/// What adds to an inventory after the backend read it. It must not remove
/// or rename anything: the rest of the backend's calls still see the
/// backend's own objects.
#[async_trait]
pub trait AmendInventory: Send + Sync {
    /// Adds to `inv`. Not reading what it adds is not an error of the
    /// inventory: it leaves that out.
    async fn amend(&self, inv: &mut Inventory);
}

/// `inner`, its inventory amended by `amend`.
pub struct Amended {
    inner: Arc<dyn Hypervisor>,
    amend: Arc<dyn AmendInventory>,
}

impl Amended {
    /// The decorator.
    pub fn new(inner: Arc<dyn Hypervisor>, amend: Arc<dyn AmendInventory>) -> Self {
        Amended { inner, amend }
    }
}

#[async_trait]
impl Hypervisor for Amended {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn inventory(&self) -> Result<Inventory, HypervisorError> {
        let mut inv = self.inner.inventory().await?;
        self.amend.amend(&mut inv).await;
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
        self.inner.start_drill_copy(vm, host, source, copy).await
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
