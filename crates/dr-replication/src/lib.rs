//! # dr-replication: asynchronous replication with checkpoint-consistent
//! replicas
//!
//! Owns the paper's replication mode. On the primary, every change to a
//! protected group of disks (image files or block devices) goes into a durable, checksummed, append-only
//! [`log`] (segment files of [`record`]s); a checkpoint marks a
//! crash-consistent point in time of all the group's disks and is fsynced
//! before it is reported. Each [`replica`] applies the stream and only ever
//! shows complete checkpoints, keeps the newest few apart for point-in-time
//! recovery, reports its RPO, and can write out a disk image at any kept
//! checkpoint for failover.
//!
//! Changes reach the log through a [`capture::ChangeSource`]: the
//! [`write_path`] (writes recorded as they happen), the hypervisor's change
//! tracking (a point in time of every disk, read by the backend that owns
//! it) or the block-hash [`scan`] (disks written by something else). Shipping runs over TCP ([`net`], [`wire`]): frames encrypted and
//! authenticated (AES-256-GCM under a per-connection key derived from a
//! pre-shared key), back-pressure, reconnect and resume, an optional
//! bandwidth cap. [`agent`] holds the jobs behind `drctl repl`.
//!
//! ## What this crate must not know
//!
//! Hypervisors, decisions, probes: it moves bytes and proves they arrived
//! whole.
#![forbid(unsafe_code)]

pub mod agent;
pub mod capture;
pub mod error;
pub mod log;
pub mod net;
pub mod record;
pub mod replica;
pub mod scan;
pub mod stream;
pub mod wire;
pub mod write_path;

pub use capture::{capture, ChangeSource, Consistency, HashScan};
pub use error::ReplError;
pub use log::{Log, LogConfig};
pub use record::{Record, Write};
pub use replica::{CheckpointInfo, Replica};
pub use stream::StreamId;
