//! # dr-sim: a simulated datacenter for vmdr
//!
//! Owns a deterministic, seeded model of a virtualized datacenter (hosts on
//! sites, VMs with snapshots and replicas, where each VM's copies really
//! run, and vmdr's host agents, which destroy their guests when cut off:
//! [`agent`]; fence devices that work, fail or hang) and implements the
//! `dr-core` ports over it: [`SimHypervisor`], [`SimProber`] and
//! [`SimFencer`], on the virtual clock of a paused tokio runtime.
//!
//! On top of that it owns the *simulation*: scenario files ([`Scenario`]),
//! fault injection ([`fault`]), seeded random faults and datacenters
//! ([`random`]), and the runner ([`run`]) that drives the real control loop
//! from `dr-control` through a scenario and checks safety after every step:
//! no VM ever runs twice, no user-stopped VM is touched, and every
//! recoverable VM runs again once the faults stop ([`report::Verdict`]).
//!
//! ## What this crate must not know
//!
//! The decision rules (those are `dr-core`'s: the simulation only reports
//! what the engine decided) and any real backend (vSphere, ICMP). It sends no
//! packet and touches no file (addresses in scenarios are labels), but for
//! [`remote`]: the datacenter served over HTTP on loopback as a process of
//! its own (`drctl sim-server`), its wire protocol and the backend that
//! drives it, and a restore's images checked to be whole.
#![forbid(unsafe_code)]

pub mod agent;
pub mod fault;
mod fencer;
mod hypervisor;
mod prober;
pub mod random;
pub mod remote;
pub mod report;
pub mod rng;
mod runner;
pub mod scenario;
pub mod world;

pub use fencer::SimFencer;
pub use hypervisor::{check_restore_images, Latencies, SimHypervisor};
pub use prober::SimProber;
pub use report::Report;
pub use runner::{run, RunError};
pub use scenario::{Scenario, ScenarioError};
pub use world::World;
