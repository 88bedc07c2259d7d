//! # dr-fence: fencing hosts through fence agents
//!
//! Owns vmdr's [`dr_core::ports::Fencer`] over the standard interface of
//! the `fence-agents` package, the one Pacemaker and medik8s use: one
//! program per kind of device (`fence_ipmilan` for a BMC over IPMI,
//! `fence_redfish`, `fence_virsh`, a PDU's agent, ...), its options given
//! as `key=value` lines on its standard input with `action=off` or
//! `action=status`, its answer in its exit code (status: 0 on, 2 off).
//!
//! - [`device`]: one host's device ([`DeviceConfig`]), checked when it is
//!   configured (the agent exists and is a program, its options are
//!   well-formed, its credentials come from a file or an environment
//!   variable and never from the options).
//! - [`agents`] ([`FenceAgents`]): runs them: credentials read at each
//!   run and given only on the agent's standard input (never in an
//!   argument, a log line, an error or a `Debug`), the agent killed if it
//!   outlives its time, its output quoted in errors with the secret
//!   masked.
//!
//! ## What this crate must not know
//!
//! When to fence (that is the engine's: `dr_core::engine::evidence`), how
//! to retry (the control loop's executor), any hypervisor or the daemon's
//! configuration file.
#![forbid(unsafe_code)]

pub mod agents;
pub mod device;

pub use agents::FenceAgents;
pub use device::{ConfigError, Credentials, DeviceConfig};
