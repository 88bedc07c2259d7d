//! # dr-conformance: the contract every backend proves it keeps
//!
//! One shared suite per port, in the style of the `object_store` crate's
//! `integration` module: public async functions that take the backend as a
//! trait object (plus a small fixture naming objects the suite may use) and
//! panic with a message naming the broken rule. A backend's own test calls
//! [`hypervisor::run_all`] / [`prober::run_all`] / [`fencer::run_all`] / [`journal::run_all`] against a live instance of
//! itself; the simulated datacenter (`dr-sim`) does today, the vSphere
//! backend will against govmomi's vCenter simulator.
//!
//! Optional behaviour is gated by the backend's declared
//! [`dr_core::ports::Capabilities`]: what it declares, it must do; what it
//! does not declare is skipped.
//!
//! ## What this crate must not know
//!
//! Any backend. It sees only the `dr-core` ports (and the journal's
//! `dr_journal::Store`), and it brings no runtime:
//! the caller's test runs the futures.
#![forbid(unsafe_code)]

pub mod fencer;
pub mod hypervisor;
pub mod journal;
pub mod prober;
