//! # dr-core: the domain model, the ports and the decision engine of vmdr
//!
//! This crate owns three things:
//!
//! * the **domain model** ([`model`]): hosts, VMs (name → IP), power and
//!   connection states, snapshots, replicas, power events and who caused them;
//! * the **ports** ([`ports`]): the async traits every backend implements
//!   ([`ports::Hypervisor`], [`ports::Prober`], [`ports::Clock`]) with typed
//!   errors;
//! * the host agent's promise ([`isolation`]): when an agent cut off from
//!   vmdr destroys its host's guests, the rule the engine's deadline rests on;
//! * the **decision engine** ([`engine`]): a pure, allocation-free per VM,
//!   deterministic function from what was observed about a VM, its host and the
//!   cluster to exactly one [`engine::Decision`].
//!
//! ## What this crate must not know
//!
//! No I/O, no sockets, no files, no async runtime: the engine is plain
//! synchronous code over plain data, so it can be property-tested over millions
//! of random clusters and benchmarked at tens of millions of decisions per
//! second. It knows nothing of vSphere, of ICMP, or of the simulation; those
//! live behind the ports in other crates. Time enters only as a
//! [`time::Timestamp`] argument.
#![forbid(unsafe_code)]

pub mod engine;
pub mod isolation;
pub mod model;
pub mod ports;
pub mod time;

pub use engine::{Decision, Engine, HostFacts, Policy, PolicyError, SitePolicy, VmFacts};
pub use time::Timestamp;
