//! How fresh the loop's view of the datacenter is. A tick that cannot read
//! the prober or the hypervisor skips its decisions (deciding on a stale
//! view is how split brains start), and what the loop shows stays as the
//! last good tick left it: without this, a status read then showed every
//! host connected and every VM on, as current, with the backend gone.

use dr_core::Timestamp;
use serde::Serialize;
use std::time::Duration;

/// A step of the tick that fails now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepFailure {
    /// "probe", "inventory" or "power_events".
    pub step: &'static str,
    /// Its last error.
    pub error: String,
    /// Failing since (the first failure in a row).
    pub since: Timestamp,
}

/// The view's freshness.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ViewHealth {
    /// When a tick last read the probes and the hypervisor and decided;
    /// `None` before the first.
    pub fresh_at: Option<Timestamp>,
    /// The step the latest tick failed at.
    pub failing: Option<StepFailure>,
}

impl ViewHealth {
    /// A tick read everything and decided at `now`.
    pub(crate) fn fresh(&mut self, now: Timestamp) {
        self.fresh_at = Some(now);
        self.failing = None;
    }

    /// A tick stopped at `step` at `now`.
    pub(crate) fn failed(&mut self, step: &'static str, error: String, now: Timestamp) {
        let since = match &self.failing {
            Some(f) if f.step == step => f.since,
            _ => now,
        };
        self.failing = Some(StepFailure { step, error, since });
    }

    /// How old the view is at `now`; `None` before the first good tick.
    pub fn age(&self, now: Timestamp) -> Option<Duration> {
        self.fresh_at.map(|t| now.since(t))
    }

    /// Whether the view is too old to trust at `now`: never fresh, or not
    /// fresh for more than `limit`.
    pub fn stale(&self, now: Timestamp, limit: Duration) -> bool {
        self.age(now).is_none_or(|a| a > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_step_keeps_its_first_time_and_a_good_tick_clears_it() {
        let mut h = ViewHealth::default();
        assert!(h.stale(Timestamp(0), Duration::from_secs(1)));
        h.fresh(Timestamp(1_000));
        assert!(!h.stale(Timestamp(1_500), Duration::from_secs(1)));
        h.failed("inventory", "gone".into(), Timestamp(2_000));
        h.failed("inventory", "still gone".into(), Timestamp(3_000));
        let f = h.failing.clone().expect("failing");
        assert_eq!(
            (f.step, f.since, f.error.as_str()),
            ("inventory", Timestamp(2_000), "still gone")
        );
        h.failed("probe", "prober".into(), Timestamp(4_000));
        assert_eq!(h.failing.as_ref().map(|f| f.since), Some(Timestamp(4_000)));
        assert_eq!(h.age(Timestamp(4_000)), Some(Duration::from_secs(3)));
        assert!(h.stale(Timestamp(4_000), Duration::from_secs(2)));
        h.fresh(Timestamp(5_000));
        assert_eq!(h.failing, None);
    }
}
