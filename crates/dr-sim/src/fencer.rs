//! The simulated hosts' fence devices behind the [`Fencer`] port: out of
//! band, they power a host off whatever its network, manager or agent are
//! doing, and they can fail or hang as their [`FenceSpec`] says.

use crate::hypervisor::lock;
use crate::world::{FenceSpec, HostState, World};
use async_trait::async_trait;
use dr_core::ports::{Clock, FenceError, FencePower, Fencer};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A status read takes this long (an off takes its device's `delay`).
const STATUS: Duration = Duration::from_millis(200);

/// The fence devices of the world's hosts that have one.
pub struct SimFencer {
    world: Arc<Mutex<World>>,
    clock: Arc<dyn Clock>,
}

impl SimFencer {
    /// The devices of `world`, on `clock`.
    pub fn new(world: Arc<Mutex<World>>, clock: Arc<dyn Clock>) -> Self {
        SimFencer { world, clock }
    }

    /// `host`'s index and device, and whether this call fails (an off uses
    /// up one of its failures).
    fn device(&self, host: &str, off: bool) -> Result<(usize, FenceSpec, bool), FenceError> {
        let mut w = lock(&self.world);
        w.advance(self.clock.now());
        let no_device = || FenceError::NoDevice { host: host.into() };
        let h = w.host_idx(host).ok_or_else(no_device)?;
        let spec = w.hosts[h].spec.fence.ok_or_else(no_device)?;
        let left = &mut w.hosts[h].fence_failures_left;
        let fails = *left > 0;
        if fails && off && *left != u32::MAX {
            *left -= 1;
        }
        Ok((h, spec, fails))
    }

    async fn failing(&self, host: &str, op: &'static str, spec: FenceSpec) -> FenceError {
        if spec.hangs {
            // The BMC never answers: the caller's timeout ends the wait.
            std::future::pending::<()>().await;
        }
        self.clock.sleep(spec.delay).await;
        FenceError::Failed {
            host: host.into(),
            op,
            detail: "the device refused (simulated failure)".into(),
        }
    }
}

#[async_trait]
impl Fencer for SimFencer {
    fn devices(&self) -> BTreeSet<String> {
        lock(&self.world)
            .hosts
            .iter()
            .filter(|h| h.spec.fence.is_some())
            .map(|h| h.spec.name.clone())
            .collect()
    }

    async fn power_off(&self, host: &str) -> Result<(), FenceError> {
        let (h, spec, fails) = self.device(host, true)?;
        if fails {
            return Err(self.failing(host, "off", spec).await);
        }
        self.clock.sleep(spec.delay).await;
        let mut w = lock(&self.world);
        let now = self.clock.now();
        w.advance(now);
        w.device_power_off(h, now);
        Ok(())
    }

    async fn power_status(&self, host: &str) -> Result<FencePower, FenceError> {
        let (h, spec, fails) = self.device(host, false)?;
        // A device that hangs, or never works (a dead BMC, a wrong
        // password), fails its status reads as well.
        let broken = spec.failures == u32::MAX;
        if fails && (spec.hangs || broken) {
            return Err(self.failing(host, "status", spec).await);
        }
        self.clock.sleep(STATUS).await;
        let mut w = lock(&self.world);
        w.advance(self.clock.now());
        Ok(match w.hosts[h].state {
            HostState::Off | HostState::DeviceOff => FencePower::Off,
            HostState::Up | HostState::Down | HostState::Standby => FencePower::On,
        })
    }
}
