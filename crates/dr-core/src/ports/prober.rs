use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// How a target is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind", content = "port")]
pub enum ProbeKind {
    /// ICMP echo.
    #[default]
    Icmp,
    /// A TCP connect to this port (for targets that drop ICMP): accepted
    /// or refused, the host answered, so it is up.
    Tcp(u16),
    /// A TCP connect to this port that must be accepted: a listener there
    /// (a service check; refused counts as down).
    TcpOpen(u16),
}

/// One address to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProbeTarget {
    /// The address.
    pub addr: IpAddr,
    /// The probe to send.
    pub kind: ProbeKind,
}

impl ProbeTarget {
    /// An ICMP echo target.
    pub const fn icmp(addr: IpAddr) -> Self {
        ProbeTarget {
            addr,
            kind: ProbeKind::Icmp,
        }
    }
}

/// The outcome of probing one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The target, as given.
    pub target: ProbeTarget,
    /// It answered within the timeout.
    pub reachable: bool,
    /// Round-trip time of the answer, when it answered.
    pub rtt: Option<Duration>,
}

/// Why a whole probe batch could not be run. A target that does not answer is
/// not an error: it is a result with `reachable == false`.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The prober cannot send at all (no socket, no permission).
    #[error("prober cannot send: {0}")]
    Unavailable(String),
    /// A target the prober cannot handle (for example an address family the
    /// host has no route for).
    #[error("invalid probe target {target}: {reason}")]
    InvalidTarget {
        /// The target.
        target: IpAddr,
        /// Why.
        reason: String,
    },
}

/// Answers "does it answer?" for many addresses at once.
///
/// Contract (checked by `dr-conformance`): exactly one result per target, in
/// the order given, even when targets repeat; an empty batch returns an empty
/// result at once; a target that does not answer within `timeout` is
/// unreachable, never an error.
#[async_trait]
pub trait Prober: Send + Sync {
    /// Probes every target once, concurrently, waiting at most `timeout`.
    async fn probe(
        &self,
        targets: &[ProbeTarget],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, ProbeError>;
}
