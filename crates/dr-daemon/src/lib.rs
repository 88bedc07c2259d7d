//! # dr-daemon: vmdr's daemon, as a library
//!
//! Owns what turns the control loop into a service (`bins/drd` is only its
//! argument parsing, logging and signals):
//!
//! * [`config`]: the daemon's TOML file (backend, control intervals, engine
//!   policy, API, journal), with errors that name the key and the line, and
//!   its reload while running (on change and on SIGHUP);
//! * [`backend`]: the embedded simulated datacenter with its fault schedule
//!   in real time, or vCenter with the real prober;
//! * [`daemon`]: the supervised loop: recovery journal (`dr-journal`)
//!   opened and left-open recoveries resolved before the first tick, the
//!   control loop ticking with API commands and reloads in between, a
//!   graceful shutdown that drains running recoveries;
//! * [`failover`]: planned failover of a VM (stopped first, then migrated
//!   on its site or restored from its replica on another);
//! * [`drill`]: recovery drills: an isolated copy brought up, timed (its
//!   RTO), checked and removed, production untouched;
//! * [`replication`]: the replication manager: protected VMs' disks shipped
//!   with `dr-replication` to their receivers, RPO and lag per receiver;
//!   this daemon can be a receiver too, and then [`replica_restore`] makes
//!   a failover from the replica write the VM's disks from its newest
//!   complete checkpoint first;
//! * [`snapshots`]: the snapshot schedulers for VMs and hosts (take new,
//!   prune old), on reloadable intervals;
//! * [`agents`]: the hosts' vmdr agents (`dr-agent`): their listener, and
//!   the inventory amended with their heartbeats and storage records;
//! * [`cluster`]: `[cluster]`, this daemon as a node of a cluster on etcd
//!   (`dr-cluster`): only the leader acts (the loop and the backends behind
//!   its authority), the journal in etcd, and the leader's takeover of what
//!   the previous one left under way;
//! * [`api`], [`state`], [`vm_state`], [`outages`], [`metrics`]: the HTTP
//!   API (axum), the status (each VM's state in one word), its changes and
//!   the events it serves, each VM's recent outages (on a follower,
//!   commands forwarded to the leader), and Prometheus metrics;
//! * [`console`]: the operators' web console at `/`, its files built into
//!   the binary, reading the same API.
//!
//! ## What this crate must not know
//!
//! Decision rules (`dr-core`'s), how a tick works (`dr-control`'s), how a
//! backend speaks to its hypervisor (`dr-sim`, `dr-vsphere`, `dr-probe`).
#![forbid(unsafe_code)]

pub mod agents;
pub mod api;
pub mod backend;
pub mod budget;
pub mod cluster;
pub mod config;
pub mod console;
pub mod daemon;
pub mod drill;
pub mod failover;
pub mod journal;
pub mod metrics;
pub mod outages;
pub mod placement;
pub mod preflight;
pub mod replica_restore;
pub mod replication;
pub mod snapshots;
pub mod state;
pub mod vm_state;

pub use config::{ConfigError, DaemonConfig};
pub use daemon::{run, DaemonError};

/// Fixtures the unit tests of several modules share.
#[cfg(test)]
pub(crate) mod test_support {
    use dr_core::ports::Clock;
    use dr_sim::{Latencies, SimHypervisor, World};
    use std::sync::{Arc, Mutex};

    /// A simulated hypervisor over the datacenter of scenario `text`, on
    /// tokio's clock from zero (paused in the tests that use it), and the
    /// clock.
    pub(crate) fn sim_hypervisor(
        text: &str,
        lat: Latencies,
    ) -> (Arc<SimHypervisor>, Arc<dyn Clock>) {
        let s = dr_sim::Scenario::parse(text).expect("scenario");
        let world = Arc::new(Mutex::new(
            World::new(s.hosts.clone(), s.vms.clone(), 1).expect("world"),
        ));
        let clock: Arc<dyn Clock> = Arc::new(dr_control::TokioClock::from_zero());
        (
            Arc::new(SimHypervisor::new(world, clock.clone(), lat)),
            clock,
        )
    }
}
