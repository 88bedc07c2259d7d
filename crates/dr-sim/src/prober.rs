//! The simulated network behind the [`Prober`] port.

use crate::hypervisor::lock;
use crate::world::World;
use async_trait::async_trait;
use dr_core::ports::{Clock, ProbeError, ProbeResult, ProbeTarget, Prober};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers probes from the world's truth, with the faults applied:
/// partitioned hosts and their VMs are silent, loss rates drop answers.
pub struct SimProber {
    world: Arc<Mutex<World>>,
    clock: Arc<dyn Clock>,
    rtt: Duration,
}

impl SimProber {
    /// A prober over `world`; answered probes take `rtt`.
    pub fn new(world: Arc<Mutex<World>>, clock: Arc<dyn Clock>, rtt: Duration) -> Self {
        SimProber { world, clock, rtt }
    }
}

#[async_trait]
impl Prober for SimProber {
    async fn probe(
        &self,
        targets: &[ProbeTarget],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, ProbeError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let answered: Vec<bool> = {
            let mut w = lock(&self.world);
            w.advance(self.clock.now());
            targets.iter().map(|t| w.answers(t.addr)).collect()
        };
        // Like a real batch: done when the last answer is in, or at the
        // timeout if any target is silent.
        let rtt = self.rtt.min(timeout);
        let wait = if answered.iter().all(|&a| a) {
            rtt
        } else {
            timeout
        };
        self.clock.sleep(wait).await;
        Ok(targets
            .iter()
            .zip(answered)
            .map(|(&target, reachable)| ProbeResult {
                target,
                reachable,
                rtt: reachable.then_some(rtt),
            })
            .collect())
    }
}
