use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The knobs of the decision engine. Defaults are what a cautious operator
/// would pick; every one is documented in `docs/decision-table.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Consecutive failed probes before a VM or host counts as down
    /// (hysteresis). At least 1.
    pub failure_threshold: u16,
    /// How long a host must be unreachable by probe *and* by the hypervisor
    /// before its VMs may be brought up elsewhere.
    #[serde(with = "duration_ms")]
    pub host_down_after: Duration,
    /// At most this many recoveries charged to one host at once.
    pub max_in_flight_per_host: u16,
    /// At most this many recoveries in the whole cluster at once.
    pub max_in_flight_total: u32,
    /// Back-off after the first failed recovery of a VM; doubles per failure.
    #[serde(with = "duration_ms")]
    pub backoff_base: Duration,
    /// Back-off never exceeds this.
    #[serde(with = "duration_ms")]
    pub backoff_max: Duration,
    /// After this many consecutive failed recoveries, stop and alert.
    pub max_attempts: u8,
    /// A recovered VM must stay up this long for the recovery to count as a
    /// success; going down sooner counts as a failure (flapping).
    #[serde(with = "duration_ms")]
    pub stable_after: Duration,
    /// After a successful recovery action, wait this long for the guest to
    /// boot before judging it again.
    #[serde(with = "duration_ms")]
    pub boot_grace: Duration,
    /// Reset (power-cycle in place) a running VM whose guest heartbeat is
    /// missing and which does not answer probes. Off: only alert.
    pub reset_hung_guests: bool,
    /// Move VMs off an unreachable host only once it is fenced (its fence
    /// device read it off, or the hypervisor reports it powered off), never
    /// on its agent's promise to fence itself nor on unreachability alone.
    pub require_fencing: bool,
    /// After a fence that failed or timed out, try the host's fence device
    /// again this much later.
    #[serde(with = "duration_ms")]
    pub fence_retry: Duration,
    /// Added to a host agent's isolation timeout (beyond 0.2 % of it for
    /// the rate error of the two clocks) before its silence proves it
    /// destroyed its guests: the period of the agent's own check (100 ms
    /// for `vmdr-agent`), with room. (The
    /// agent counts from when it *sent* its last acknowledged heartbeat,
    /// so the heartbeat's travel needs no margin.)
    #[serde(with = "duration_ms")]
    pub self_fence_margin: Duration,
    /// An agent's promise to fence itself counts only if it armed a
    /// watchdog, which resets its host should the agent itself hang or die
    /// (otherwise an agent that crashed just before an isolation would
    /// leave its guests running while vmdr starts them elsewhere).
    pub agent_needs_watchdog: bool,
    /// Per-site overrides, by site name.
    pub sites: BTreeMap<String, SitePolicy>,
    /// When a VM has both, restore from its replica (newer data) rather than
    /// from its snapshot (same site, faster).
    pub prefer_replica: bool,
    /// CPU overcommit for restores: a VM without a CPU reservation costs a
    /// restore target its nominal CPU divided by this (memory is never
    /// overcommitted). 1 makes nominal CPU a hard reservation, which left
    /// VMs down for CPU that every hypervisor would have shared: down is
    /// worse than slow.
    pub cpu_overcommit: u16,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            failure_threshold: 3,
            host_down_after: Duration::from_secs(15),
            max_in_flight_per_host: 4,
            max_in_flight_total: 32,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            max_attempts: 8,
            stable_after: Duration::from_secs(60),
            boot_grace: Duration::from_secs(20),
            reset_hung_guests: true,
            require_fencing: false,
            fence_retry: Duration::from_secs(30),
            self_fence_margin: Duration::from_millis(500),
            agent_needs_watchdog: true,
            sites: BTreeMap::new(),
            prefer_replica: true,
            cpu_overcommit: super::facts::DEFAULT_CPU_OVERCOMMIT,
        }
    }
}

/// What one site changes of the policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SitePolicy {
    /// A host of this site lost to probes and to the manager for
    /// `host_down_after` counts as down without further evidence (no fence,
    /// no agent). A host that is only cut off then gets its VMs started a
    /// second time: only for sites where that cannot happen (a single
    /// network for everything) or where disk locks refuse a second copy.
    pub trust_unreachable: bool,
    /// This site's CPU overcommit for restores, instead of the policy's
    /// (vSphere HA's admission is per cluster: a cluster of latency-bound
    /// VMs may want 1, a cluster of idle desktops 8).
    pub cpu_overcommit: Option<u16>,
}

/// What a VM costs a host in CPU, MHz, at the host's `overcommit`: its
/// reservation, or its nominal CPU over the overcommit, whichever is more.
pub fn cpu_demand(nominal_mhz: u32, reservation_mhz: u32, overcommit: u16) -> u32 {
    reservation_mhz.max(nominal_mhz.div_ceil(u32::from(overcommit.max(1))))
}

/// A policy that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A knob is out of range.
    #[error("policy.{key}: {problem}")]
    OutOfRange {
        /// The knob.
        key: &'static str,
        /// Why.
        problem: &'static str,
    },
}

impl Policy {
    /// Checks the knobs make sense together.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |key, problem| Err(PolicyError::OutOfRange { key, problem });
        if self.failure_threshold == 0 {
            return bad("failure_threshold", "must be at least 1");
        }
        if self.max_in_flight_per_host == 0 {
            return bad("max_in_flight_per_host", "must be at least 1");
        }
        if self.max_in_flight_total == 0 {
            return bad("max_in_flight_total", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.backoff_base > self.backoff_max {
            return bad("backoff_base", "must not exceed backoff_max");
        }
        if self.cpu_overcommit == 0 {
            return bad("cpu_overcommit", "must be at least 1 (1: no overcommit)");
        }
        if self.sites.values().any(|s| s.cpu_overcommit == Some(0)) {
            return bad(
                "sites.<site>.cpu_overcommit",
                "must be at least 1 (1: no overcommit)",
            );
        }
        Ok(())
    }

    /// Whether hosts of `site` are trusted down on unreachability alone.
    pub fn trusts_unreachable(&self, site: &str) -> bool {
        self.sites.get(site).is_some_and(|s| s.trust_unreachable)
    }

    /// The CPU overcommit of hosts of `site`: the site's own, else the
    /// policy's.
    pub fn cpu_overcommit_of(&self, site: &str) -> u16 {
        self.sites
            .get(site)
            .and_then(|s| s.cpu_overcommit)
            .unwrap_or(self.cpu_overcommit)
    }

    /// The back-off after `failures` consecutive failures (1 → base).
    pub fn backoff(&self, failures: u8) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32
            .checked_shl(u32::from(failures - 1))
            .unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// Durations serialize as integer milliseconds and deserialize from either
/// that or a human string (`"15s"`, see [`crate::time::parse_duration`]).
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(crate::time::millis(*d))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Millis(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Millis(ms) => Ok(Duration::from_millis(ms)),
            Repr::Text(t) => crate::time::parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = Policy {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(60),
            ..Policy::default()
        };
        assert_eq!(p.backoff(0), Duration::ZERO);
        assert_eq!(p.backoff(1), Duration::from_secs(10));
        assert_eq!(p.backoff(2), Duration::from_secs(20));
        assert_eq!(p.backoff(3), Duration::from_secs(40));
        assert_eq!(p.backoff(4), Duration::from_secs(60));
        assert_eq!(p.backoff(255), Duration::from_secs(60));
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(Policy::default().validate().is_ok());
        let p = Policy {
            failure_threshold: 0,
            ..Policy::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "policy.failure_threshold: must be at least 1"
        );
        let p = Policy {
            backoff_base: Duration::from_secs(9),
            backoff_max: Duration::from_secs(1),
            ..Policy::default()
        };
        assert!(p.validate().is_err());
    }
}
