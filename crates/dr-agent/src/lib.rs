//! # dr-agent: vmdr's host agent, and drd's side of it
//!
//! A host cut off from vmdr **and** from its manager while it runs its VMs
//! looks exactly like a dead one. The agent on each KVM host makes the two
//! tell apart: it heartbeats to drd and rewrites a record on the hosts'
//! shared storage; cut off from drd (and from its isolation addresses, or
//! its storage) for its isolation timeout, it destroys its host's guests
//! through the host's own libvirt, says so on storage, and keeps the host
//! empty until drd answers again; with a watchdog armed, an agent that
//! hangs or dies takes its host down. drd then knows, from the agent's
//! record or from its deadline, that those guests cannot be running, and
//! only then starts them elsewhere (`dr_core::engine::evidence`).
//!
//! - [`protocol`]: the heartbeat, its acknowledgement, the storage record.
//! - [`config`], [`runtime`] ([`Agent`]): the agent, `bins/vmdr-agent`.
//! - [`guests`], [`watchdog`]: what it acts on.
//! - [`receiver`] ([`Agents`]): drd's side: the heartbeats it receives,
//!   the records it reads, and each host's signals in the inventory
//!   (`dr_core::ports::Amended`).
//!
//! ## What this crate must not know
//!
//! Decisions: the rule an agent keeps is `dr_core::isolation`'s, and what
//! drd makes of its signals is the engine's. No simulation (its agents are
//! `dr_sim::agent`, on the same rule), no daemon configuration.
#![forbid(unsafe_code)]

pub mod config;
pub mod guests;
pub mod protocol;
pub mod receiver;
pub mod runtime;
pub mod watchdog;

pub use config::AgentConfig;
pub use receiver::Agents;
pub use runtime::{Agent, AgentError};
