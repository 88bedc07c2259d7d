//! vmdr's host agent, simulated: what it promises, what it hears, and when
//! it destroys its host's guests.
//!
//! It keeps the rule the real agent keeps (`vmdr-agent`): without an
//! acknowledgement from vmdr for `isolation_timeout`, and without its
//! reassurance for as long (its isolation addresses answering; and, where
//! it has one, its storage heartbeat being written), it destroys the
//! host's guests, writes "fenced" to its storage heartbeat if it can, and
//! stops heartbeating until vmdr hears it again. With a watchdog, an agent
//! that dies takes its host down with it within its isolation timeout.
//!
//! The world tracks since when each channel has been cut; the deadline
//! follows from those, so an agent fences at exactly the instant the rule
//! says, whenever the world next looks.

use dr_core::isolation::{LastContact, Promise};
use dr_core::model::{AgentSignal, Reassurance, StorageSignal};
use dr_core::Timestamp;
use std::time::Duration;

/// How often an agent heartbeats to vmdr and rewrites its storage file, ms
/// (the simulation delivers every beat; the world sees it at each look).
pub const BEAT_MS: u32 = 1_000;

/// How a host's agent is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    /// After this long without vmdr (and without its reassurance), it
    /// destroys its guests.
    pub isolation_timeout: Duration,
    /// What keeps it from doing so.
    pub reassurance: Reassurance,
    /// It writes a heartbeat file on the hosts' shared storage.
    pub storage_heartbeat: bool,
    /// It armed a watchdog: if the agent dies, the host resets.
    pub watchdog: bool,
}

impl AgentSpec {
    /// The usual agent: 30 s, reassured by its gateway and its storage
    /// heartbeat, with a watchdog.
    pub fn standard() -> AgentSpec {
        AgentSpec {
            isolation_timeout: Duration::from_secs(30),
            reassurance: Reassurance::GatewayAndStorage,
            storage_heartbeat: true,
            watchdog: true,
        }
    }

    /// How long a dead agent's watchdog takes to reset the host: within
    /// the isolation timeout, as the agent promises.
    pub fn watchdog_timeout(&self) -> Duration {
        self.isolation_timeout / 2
    }
}

/// Where the agent's process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// Heartbeating, watching for isolation.
    Running,
    /// Dead (crashed, killed) since then.
    Crashed {
        /// Since when.
        at: Timestamp,
    },
    /// It destroyed the host's guests then, and waits for vmdr.
    Fenced {
        /// When.
        at: Timestamp,
    },
}

/// One host's agent.
#[derive(Clone, Debug, PartialEq)]
pub struct SimAgent {
    /// Its setup.
    pub spec: AgentSpec,
    /// Its process.
    pub state: AgentState,
    /// When vmdr last heard it.
    pub heard_at: Timestamp,
    /// When its storage heartbeat last changed.
    pub written_at: Timestamp,
    /// The heartbeat file says it fenced.
    pub file_says_fenced: bool,
    /// Times it destroyed its host's guests.
    pub fences: u32,
}

impl SimAgent {
    /// A running agent, heard at the start.
    pub fn new(spec: AgentSpec) -> SimAgent {
        SimAgent {
            spec,
            state: AgentState::Running,
            heard_at: Timestamp::ZERO,
            written_at: Timestamp::ZERO,
            file_says_fenced: false,
            fences: 0,
        }
    }

    /// When a running agent with these channels cut (since the given
    /// times; `None`: not cut) destroys its guests, if ever while they
    /// stay so: the rule of [`dr_core::isolation`], a channel that is not
    /// cut working at every instant.
    pub fn fence_time(
        &self,
        drd_cut: Option<Timestamp>,
        gateway_cut: Option<Timestamp>,
        storage_cut: Option<Timestamp>,
    ) -> Option<Timestamp> {
        let drd_cut = drd_cut?;
        let promise = Promise {
            timeout: self.spec.isolation_timeout,
            reassurance: self.spec.reassurance,
        };
        let storage_cut = storage_cut.filter(|_| self.spec.storage_heartbeat);
        // Uncut channels work right up to the end of time.
        let working = |cut: Option<Timestamp>| Some(cut.unwrap_or(Timestamp(u64::MAX / 2)));
        promise
            .fences_at(&LastContact {
                ack: Some(drd_cut),
                gateway: working(gateway_cut),
                storage: if self.spec.storage_heartbeat {
                    working(storage_cut)
                } else {
                    None
                },
            })
            .filter(|&t| t < Timestamp(u64::MAX / 4))
    }

    /// What vmdr sees of it now: `heard` and `writing` say whether its
    /// heartbeats get through at this instant.
    pub fn signals(
        &self,
        now: Timestamp,
        heard: bool,
        writing: bool,
    ) -> (Option<AgentSignal>, Option<StorageSignal>) {
        let agent = AgentSignal {
            last_heard: if heard { now } else { self.heard_at },
            interval_ms: BEAT_MS,
            isolation_timeout_ms: u32::try_from(self.spec.isolation_timeout.as_millis())
                .unwrap_or(u32::MAX),
            reassurance: self.spec.reassurance,
            watchdog: self.spec.watchdog,
        };
        let storage = self.spec.storage_heartbeat.then_some(StorageSignal {
            readable: true,
            last_moved: if writing { now } else { self.written_at },
            interval_ms: BEAT_MS,
            fenced: self.file_says_fenced && !writing,
        });
        (Some(agent), storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp(s * 1000)
    }

    #[test]
    fn the_agent_fences_only_when_cut_from_vmdr_and_unreassured() {
        let mut a = SimAgent::new(AgentSpec::standard());
        // Cut from vmdr alone: its gateway and storage reassure it.
        assert_eq!(a.fence_time(Some(at(10)), None, None), None);
        // And from its gateway since 20 s: 30 s after that.
        assert_eq!(a.fence_time(Some(at(10)), Some(at(20)), None), Some(at(50)));
        // Storage lost first: the earlier of the two.
        assert_eq!(
            a.fence_time(Some(at(10)), Some(at(20)), Some(at(0))),
            Some(at(40))
        );
        a.spec.reassurance = Reassurance::None;
        assert_eq!(a.fence_time(Some(at(10)), None, None), Some(at(40)));
        a.spec.reassurance = Reassurance::Gateway;
        assert_eq!(a.fence_time(Some(at(10)), None, Some(at(0))), None);
        assert_eq!(a.fence_time(None, Some(at(0)), Some(at(0))), None);
    }
}
