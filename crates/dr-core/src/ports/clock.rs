use crate::time::Timestamp;
use async_trait::async_trait;
use std::time::Duration;

/// Where time comes from. The daemon uses the wall clock; the simulation runs
/// the same control loop on a virtual clock that jumps ahead when every task
/// is waiting, so an hour of datacenter time takes milliseconds.
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time on this clock's timeline. Monotonic.
    fn now(&self) -> Timestamp;

    /// Waits for `d` of this clock's time.
    async fn sleep(&self, d: Duration);

    /// Waits until `at` (returns at once if it is past).
    async fn sleep_until(&self, at: Timestamp) {
        let now = self.now();
        if at > now {
            self.sleep(at.since(now)).await;
        }
    }
}
