//! Decorator backends that act only while an [`Authority`] allows: every
//! call that changes anything (power, restores, snapshots, hosts, fences)
//! asks it first, reads pass through. A cluster of daemons wraps its
//! backends in them, so that a node that no longer leads (or whose lease
//! renewal is overdue) cannot start anything, whichever of its tasks would:
//! the control loop's actions and their retries, snapshot schedules,
//! failovers, drills.

use super::fencer::{FenceError, FencePower, Fencer};
use super::hypervisor::{Capabilities, Hypervisor, HypervisorError};
use crate::model::{Inventory, PowerEvent, RestoreSource, SnapshotInfo, SnapshotTarget};
use crate::time::Timestamp;
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// Whether this process may change anything now, asked right before each
/// change: cheap and synchronous (a cluster leader's lease deadline on the
/// monotonic clock).
pub trait Authority: Send + Sync {
    /// `Err` says why not.
    fn may_act(&self) -> Result<(), String>;
}

/// `inner`, each change first allowed by `authority`.
pub struct Authorized {
    inner: Arc<dyn Hypervisor>,
    authority: Arc<dyn Authority>,
}

impl Authorized {
    /// The decorator.
    pub fn new(inner: Arc<dyn Hypervisor>, authority: Arc<dyn Authority>) -> Self {
        Authorized { inner, authority }
    }

    fn allow(&self, op: &'static str) -> Result<(), HypervisorError> {
        self.authority
            .may_act()
            .map_err(|why| HypervisorError::Failed {
                op,
                detail: format!("not started: {why}"),
            })
    }
}

#[async_trait]
impl Hypervisor for Authorized {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn inventory(&self) -> Result<Inventory, HypervisorError> {
        self.inner.inventory().await
    }

    async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, HypervisorError> {
        self.inner.power_events(since).await
    }

    async fn create_snapshot(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<SnapshotInfo, HypervisorError> {
        self.allow("create_snapshot")?;
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
        self.allow("remove_snapshot")?;
        self.inner.remove_snapshot(target, id).await
    }

    async fn revert_vm(&self, vm: &str, snapshot: Option<&str>) -> Result<(), HypervisorError> {
        self.allow("revert_vm")?;
        self.inner.revert_vm(vm, snapshot).await
    }

    async fn power_on(&self, vm: &str) -> Result<(), HypervisorError> {
        self.allow("power_on")?;
        self.inner.power_on(vm).await
    }

    async fn power_off(&self, vm: &str) -> Result<(), HypervisorError> {
        self.allow("power_off")?;
        self.inner.power_off(vm).await
    }

    async fn reset(&self, vm: &str) -> Result<(), HypervisorError> {
        self.allow("reset")?;
        self.inner.reset(vm).await
    }

    async fn restore_vm(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
    ) -> Result<(), HypervisorError> {
        self.allow("restore_vm")?;
        self.inner.restore_vm(vm, host, source).await
    }

    async fn restore_vm_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
    ) -> Result<(), HypervisorError> {
        self.allow("restore_vm_from_images")?;
        self.inner.restore_vm_from_images(vm, host, images).await
    }

    async fn migrate_vm(&self, vm: &str, host: &str) -> Result<(), HypervisorError> {
        self.allow("migrate_vm")?;
        self.inner.migrate_vm(vm, host).await
    }

    async fn recover_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.allow("recover_host")?;
        self.inner.recover_host(host).await
    }

    async fn add_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.allow("add_host")?;
        self.inner.add_host(host).await
    }

    async fn start_drill_copy(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
        copy: &str,
    ) -> Result<(), HypervisorError> {
        self.allow("start_drill_copy")?;
        self.inner.start_drill_copy(vm, host, source, copy).await
    }

    async fn start_drill_copy_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
        copy: &str,
    ) -> Result<(), HypervisorError> {
        self.allow("start_drill_copy_from_images")?;
        self.inner
            .start_drill_copy_from_images(vm, host, images, copy)
            .await
    }

    async fn remove_drill_copy(&self, copy: &str) -> Result<(), HypervisorError> {
        self.allow("remove_drill_copy")?;
        self.inner.remove_drill_copy(copy).await
    }
}

/// A fencer whose offs `authority` allows first (status reads pass).
pub struct AuthorizedFencer {
    inner: Arc<dyn Fencer>,
    authority: Arc<dyn Authority>,
}

impl AuthorizedFencer {
    /// The decorator.
    pub fn new(inner: Arc<dyn Fencer>, authority: Arc<dyn Authority>) -> Self {
        AuthorizedFencer { inner, authority }
    }
}

#[async_trait]
impl Fencer for AuthorizedFencer {
    fn devices(&self) -> BTreeSet<String> {
        self.inner.devices()
    }

    async fn power_off(&self, host: &str) -> Result<(), FenceError> {
        self.authority.may_act().map_err(|why| FenceError::Failed {
            host: host.to_owned(),
            op: "off",
            detail: format!("not started: {why}"),
        })?;
        self.inner.power_off(host).await
    }

    async fn power_status(&self, host: &str) -> Result<FencePower, FenceError> {
        self.inner.power_status(host).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Switch(AtomicBool);

    impl Authority for Switch {
        fn may_act(&self) -> Result<(), String> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("this node does not lead".into())
            }
        }
    }

    struct Off;

    #[async_trait]
    impl Fencer for Off {
        fn devices(&self) -> BTreeSet<String> {
            BTreeSet::from(["h1".to_string()])
        }
        async fn power_off(&self, _: &str) -> Result<(), FenceError> {
            Ok(())
        }
        async fn power_status(&self, _: &str) -> Result<FencePower, FenceError> {
            Ok(FencePower::On)
        }
    }

    #[test]
    fn an_off_waits_for_the_authority_and_a_status_read_does_not() {
        let switch = Arc::new(Switch(AtomicBool::new(false)));
        let f = AuthorizedFencer::new(Arc::new(Off), switch.clone());
        poll_once(async {
            let refused = f.power_off("h1").await.expect_err("refused");
            assert!(refused.to_string().contains("does not lead"), "{refused}");
            assert_eq!(f.power_status("h1").await.expect("read"), FencePower::On);
            switch.0.store(true, Ordering::SeqCst);
            f.power_off("h1").await.expect("allowed");
        });
    }

    /// Runs a future that never waits (the fakes answer at once) to its end.
    fn poll_once(fut: impl std::future::Future<Output = ()>) {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            fut.as_mut().poll(&mut cx).is_ready(),
            "the fakes never wait"
        );
    }
}
