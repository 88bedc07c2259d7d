//! The decision engine: the paper's decision tree (section V, scenarios 1–3),
//! made safe.
//!
//! Data flows in one direction:
//!
//! 1. the control loop folds observations (probe results, the hypervisor's
//!    view, power events, recovery outcomes) into compact per-VM
//!    [`VmFacts`] and per-host [`HostFacts`] with the transitions in
//!    [`ledger`] (hysteresis counters, back-off, stability windows);
//! 2. [`assess`] looks at one VM and its host and says what it needs;
//! 3. [`Engine::plan`] resolves what needs cluster knowledge (a restore
//!    target with capacity, a spare host, one recovery per host) and enforces
//!    the concurrency limits, giving exactly one [`Decision`] per VM.
//!
//! Every rule is listed in `docs/decision-table.md` and checked by the
//! property tests in `tests/engine_properties.rs`.

mod assess;
pub mod budget;
mod decision;
pub mod evidence;
mod facts;
pub mod ledger;
mod plan;
mod policy;

pub use assess::{assess, Need};
pub use budget::Fate;
pub use decision::{AlertReason, Decision, DownEvidence, Quiet, WaitReason};
pub use evidence::{host_verdict, proof_after_silence, HostVerdict, Missing};
pub use facts::{
    ClusterFacts, Fencing, HaFacts, HostFacts, HostIdx, HostLoad, HostRecovery, OffCause, VmFacts,
    DEFAULT_CPU_OVERCOMMIT,
};
pub use plan::{Engine, PlanScratch};
pub use policy::{cpu_demand, Policy, PolicyError, SitePolicy};
