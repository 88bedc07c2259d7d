//! The host agent's promise, as one rule: when an agent cut off from vmdr
//! destroys its host's guests. `vmdr-agent` keeps it; the simulation's
//! agents keep it; the engine's deadline (`engine::evidence`) relies on it.
//!
//! An agent counts from the last moment each channel worked: vmdr's
//! acknowledgement of a heartbeat (counted from when that heartbeat was
//! *sent*, so it is never later than vmdr's receipt), an isolation address
//! answering, its storage heartbeat written. It destroys its guests once
//! vmdr has been silent for the timeout **and** it is not reassured:
//! reassured means an isolation address answered within the timeout and,
//! where it is reassured by storage too, the storage heartbeat was written
//! within the timeout.

use crate::model::Reassurance;
use crate::time::Timestamp;
use std::time::Duration;

/// What an agent promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promise {
    /// Without vmdr (and its reassurance) this long, it destroys its guests.
    pub timeout: Duration,
    /// What keeps it from doing so.
    pub reassurance: Reassurance,
}

/// The last moment each channel worked, on the agent's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastContact {
    /// vmdr acknowledged a heartbeat sent then. `None`: not since the agent
    /// (or its host) started; then it makes no promise yet, and vmdr, which
    /// never heard it, relies on none.
    pub ack: Option<Timestamp>,
    /// An isolation address answered a probe sent then.
    pub gateway: Option<Timestamp>,
    /// Its storage heartbeat was written then.
    pub storage: Option<Timestamp>,
}

impl Promise {
    /// When the agent destroys its guests if no channel works again: the
    /// first instant vmdr has been silent for the timeout and the agent is
    /// unreassured. `None` while it has no promise to keep (never
    /// acknowledged).
    pub fn fences_at(&self, last: &LastContact) -> Option<Timestamp> {
        let t = self.timeout;
        let alone = last.ack?.saturating_add(t);
        // A channel that never worked reassures from the start of time,
        // that is, not at all.
        let lapse = |c: Option<Timestamp>| c.unwrap_or(Timestamp::ZERO).saturating_add(t);
        let unreassured = match self.reassurance {
            Reassurance::None => Timestamp::ZERO,
            Reassurance::Gateway => lapse(last.gateway),
            Reassurance::GatewayAndStorage => lapse(last.gateway).min(lapse(last.storage)),
        };
        Some(alone.max(unreassured))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Option<Timestamp> {
        Some(Timestamp(s * 1000))
    }

    #[test]
    fn an_agent_fences_when_vmdr_is_gone_and_nothing_reassures_it() {
        let p = Promise {
            timeout: Duration::from_secs(30),
            reassurance: Reassurance::GatewayAndStorage,
        };
        let last = LastContact {
            ack: at(10),
            gateway: at(20),
            storage: at(100),
        };
        // Its gateway lapses at 50 s, vmdr at 40 s: 50 s.
        assert_eq!(p.fences_at(&last), at(50));
        // Storage lost first.
        let last = LastContact {
            storage: at(0),
            ..last
        };
        assert_eq!(p.fences_at(&last), at(40));
        // Never acknowledged: no promise.
        assert_eq!(p.fences_at(&LastContact { ack: None, ..last }), None);
        let lease = Promise {
            reassurance: Reassurance::None,
            ..p
        };
        assert_eq!(
            lease.fences_at(&LastContact {
                ack: at(10),
                gateway: at(1000),
                storage: at(1000)
            }),
            at(40)
        );
        let gateway = Promise {
            reassurance: Reassurance::Gateway,
            ..p
        };
        assert_eq!(
            gateway.fences_at(&LastContact {
                ack: at(10),
                gateway: at(1000),
                storage: None
            }),
            at(1030)
        );
    }
}
