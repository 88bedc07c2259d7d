//! The [`Clock`] on tokio's timer.

use async_trait::async_trait;
use dr_core::ports::Clock;
use dr_core::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A [`Clock`] on tokio's time. In a normal runtime it is the wall clock
/// (timestamps are Unix milliseconds); in a runtime with paused time it is a
/// virtual clock that starts at zero and jumps to the next timer whenever
/// every task waits — which is how the simulation runs hours in milliseconds.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: Instant,
    origin: Timestamp,
}

impl TokioClock {
    /// A clock whose timestamps are Unix milliseconds.
    pub fn wall() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        TokioClock {
            start: Instant::now(),
            origin: Timestamp(dr_core::time::millis(unix)),
        }
    }

    /// A clock whose timeline starts at zero now (virtual runs).
    pub fn from_zero() -> Self {
        Self::starting_at(Timestamp::ZERO)
    }

    /// A clock that reads `origin` now and runs in real time from there
    /// (to follow another process's timeline, such as a simulated
    /// datacenter's).
    pub fn starting_at(origin: Timestamp) -> Self {
        TokioClock {
            start: Instant::now(),
            origin,
        }
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.origin.saturating_add(self.start.elapsed())
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn virtual_time_jumps() {
        let c = TokioClock::from_zero();
        assert_eq!(c.now(), Timestamp::ZERO);
        c.sleep(Duration::from_secs(3600)).await;
        assert_eq!(c.now(), Timestamp(3_600_000));
        c.sleep_until(Timestamp(3_600_500)).await;
        assert_eq!(c.now(), Timestamp(3_600_500));
    }
}
