//! # dr-control: the control loop of vmdr
//!
//! Owns the loop that turns observations into recoveries, generic over the
//! `dr-core` ports so that the simulation (`dr-sim`) and the daemon run the
//! very same code:
//!
//! * **inventory sync** ([`registry`]): hosts and VMs (name → IP) re-read on
//!   an interval; new ones are monitored, removed ones forgotten, state kept
//!   by name across syncs;
//! * **health monitoring** ([`ControlLoop`]): every probe interval, power
//!   events, the hypervisor's view and a probe of every VM and host, folded
//!   into the engine's facts with `dr_core::engine::ledger`;
//! * **decision**: `dr_core::Engine::plan` over the whole cluster;
//! * **recovery execution** ([`executor`]): each action in its own task,
//!   with a timeout per attempt and retries of transient errors; outcomes
//!   come back to the loop, which alone writes the facts.
//!
//! Everything it does is reported as [`ControlEvent`]s to an [`EventSink`].
//! With a [`RecoveryJournal`], every action is recorded durably before it
//! starts and marked when it ends; per-VM pause keeps automation's hands off
//! a VM an operator is working on.
//!
//! ## What this crate must not know
//!
//! No backend: not vSphere, not ICMP, not the simulation. It talks to the
//! world only through `Hypervisor`, `Prober` and `Clock`, and reads time only
//! from the `Clock` (so it runs unchanged on virtual time). The decision
//! rules are not here either: they are `dr-core`'s.
#![forbid(unsafe_code)]

pub mod clock;
mod control_loop;
pub mod events;
pub mod executor;
pub mod health;
pub mod journal;
pub mod registry;

pub use clock::TokioClock;
pub use control_loop::{ControlConfig, ControlLoop};
pub use events::{ControlEvent, EventSink, Subject};
pub use executor::Action;
pub use health::{StepFailure, ViewHealth};
pub use journal::RecoveryJournal;
