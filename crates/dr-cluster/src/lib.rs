//! # dr-cluster: several drd as one, coordinated through etcd
//!
//! Owns what it takes for two or three drd on different machines to act as
//! one orchestrator, never two at once:
//!
//! - [`etcd`]: a client of etcd's v3 API through its JSON gateway (no
//!   gRPC, so no code generator at build time), over all endpoints, with
//!   TLS and user/password authentication;
//! - [`election`]: leader election on a lease, the leader's **epoch** (the
//!   leader key's creation revision) and its **deadline** on the monotonic
//!   clock, after which it starts nothing until a renewal succeeds;
//! - [`journal`]: the recovery journal (`dr_journal::Store`) in etcd, every
//!   write fenced by the epoch.
//!
//! Must not know: decision rules, hypervisors, the control loop, the
//! daemon's API or configuration file. It answers "may this node act now,
//! under which epoch" and stores what it is given.

pub mod election;
pub mod etcd;
pub mod journal;
pub mod wire;

pub use election::{
    ClusterStatus, ElectionConfig, LeaderInfo, Leadership, NodeInfo, NotLeader, Role,
};
pub use etcd::{Etcd, EtcdConfig, EtcdError, Secret};
pub use journal::EtcdJournal;
