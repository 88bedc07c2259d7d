use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// A host's power, as its fence device reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FencePower {
    /// Powered on.
    On,
    /// Powered off.
    Off,
}

/// Why a fence device operation failed. None of these is ever taken as the
/// host being off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// No fence device is configured for the host.
    #[error("no fence device for host {host}")]
    NoDevice {
        /// The host.
        host: String,
    },
    /// The device (or the agent that drives it) reported a failure.
    #[error("fencing {host} ({op}) failed: {detail}")]
    Failed {
        /// The host.
        host: String,
        /// `off` or `status`.
        op: &'static str,
        /// What the device or its agent said.
        detail: String,
    },
    /// The device did not answer in time. It may still act later.
    #[error("fencing {host} ({op}) timed out after {after:?}")]
    Timeout {
        /// The host.
        host: String,
        /// `off` or `status`.
        op: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// The device's credentials could not be read.
    #[error("the fence device of {host} has no usable credentials: {detail}")]
    Credentials {
        /// The host.
        host: String,
        /// Why (never the secret itself).
        detail: String,
    },
}

/// Out-of-band power control of hosts (a BMC through IPMI or Redfish, a
/// PDU, the power API of a cloud): what fencing a host needs. It acts on a
/// host whatever state its operating system, its network to vmdr or its
/// manager are in, which is the point: after an off that a status reads
/// back as off, nothing runs there.
#[async_trait]
pub trait Fencer: Send + Sync {
    /// The hosts that have a fence device.
    fn devices(&self) -> BTreeSet<String>;

    /// Powers `host` off through its device. Returns once the device (or
    /// its agent) reports the host off; the caller reads a status after.
    async fn power_off(&self, host: &str) -> Result<(), FenceError>;

    /// Reads `host`'s power through its device.
    async fn power_status(&self, host: &str) -> Result<FencePower, FenceError>;
}

/// Hosts have no fence devices: what a loop without a fencer uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFencer;

#[async_trait]
impl Fencer for NoFencer {
    fn devices(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }

    async fn power_off(&self, host: &str) -> Result<(), FenceError> {
        Err(FenceError::NoDevice { host: host.into() })
    }

    async fn power_status(&self, host: &str) -> Result<FencePower, FenceError> {
        Err(FenceError::NoDevice { host: host.into() })
    }
}
