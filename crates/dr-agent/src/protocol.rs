//! What the agent and drd say to each other: the heartbeat the agent posts
//! (and drd's acknowledgement), and the record it keeps rewriting on the
//! hosts' shared storage. JSON, small, bounded: a peer that sends more, or
//! nonsense, gets an error naming the problem.

use dr_core::model::Reassurance;
use serde::{Deserialize, Serialize};

/// Where the agent posts its heartbeats on drd's agent listener.
pub const HEARTBEAT_PATH: &str = "/agent/v1/heartbeat";

/// At most this many bytes in a heartbeat or a storage record.
pub const MAX_MESSAGE: usize = 4096;

/// Whether the agent is watching over running guests, or has destroyed
/// them (isolation) and keeps its host empty until vmdr reaches it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Heartbeating; its guests run.
    Running,
    /// It destroyed its guests and destroys any that starts.
    Fenced,
    /// It is stopping: from now on it keeps no promise.
    Leaving,
}

/// One heartbeat, agent → drd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The host, as drd's inventory names it.
    pub host: String,
    /// Increases with every heartbeat of this agent's run; drd echoes it.
    pub seq: u64,
    /// Its state.
    pub state: AgentState,
    /// Its promise: without drd (and its reassurance) this long, its
    /// guests are gone, ms (its isolation timeout plus the time it allows
    /// itself to destroy them).
    pub isolation_timeout_ms: u32,
    /// How often it heartbeats, ms.
    pub interval_ms: u32,
    /// What keeps a cut-off agent from destroying its guests.
    pub reassurance: Reassurance,
    /// It armed a watchdog.
    pub watchdog: bool,
}

/// drd's answer to a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The heartbeat's `seq`.
    pub seq: u64,
}

/// The record an agent rewrites on shared storage every interval, at
/// `<storage_dir>/<host>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageRecord {
    /// The host.
    pub host: String,
    /// Increases with every write of this agent's run (a change is what
    /// drd watches for).
    pub seq: u64,
    /// `running`, or `fenced`: it destroyed its guests.
    pub state: AgentState,
    /// How often it is rewritten, ms.
    pub interval_ms: u32,
}

/// A message that cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Longer than [`MAX_MESSAGE`].
    #[error("{what} is {len} bytes, more than {MAX_MESSAGE}")]
    TooLong {
        /// What it was.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// Not the message.
    #[error("{what} is not valid: {cause}")]
    Invalid {
        /// What it was.
        what: &'static str,
        /// Why.
        cause: String,
    },
}

/// Parses a bounded JSON message.
pub fn parse<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ProtocolError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtocolError::TooLong {
            what,
            len: bytes.len(),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| ProtocolError::Invalid {
        what,
        cause: e.to_string(),
    })
}

/// A host name that is safe as a file name: what drd and the agent name
/// storage records by. Letters, digits, `.`, `-`, `_`; not `.` or `..`.
pub fn safe_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host != "."
        && host != ".."
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_messages_are_named() {
        let e = parse::<Heartbeat>("heartbeat", b"{\"host\": 1}").unwrap_err();
        assert!(e.to_string().starts_with("heartbeat is not valid:"), "{e}");
        let e = parse::<Heartbeat>("heartbeat", &[b' '; 5000]).unwrap_err();
        assert_eq!(e.to_string(), "heartbeat is 5000 bytes, more than 4096");
        let r = StorageRecord {
            host: "kvm-a1".into(),
            seq: 3,
            state: AgentState::Fenced,
            interval_ms: 1000,
        };
        let text = serde_json::to_vec(&r).expect("json");
        assert_eq!(parse::<StorageRecord>("record", &text).expect("parses"), r);
    }

    #[test]
    fn host_names_that_could_escape_a_directory_are_not_file_names() {
        assert!(safe_host_name("kvm-a1.example_1"));
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
            assert!(!safe_host_name(bad), "{bad:?}");
        }
    }
}
