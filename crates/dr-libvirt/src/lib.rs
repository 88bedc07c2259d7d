//! # dr-libvirt: the KVM backend
//!
//! The `Hypervisor` port over KVM hosts, one libvirt daemon each, spoken in
//! libvirt's own remote protocol (XDR messages over a unix socket, TCP, or
//! `ssh` to `virt-ssh-helper`), natively and asynchronously: no C library
//! at build or run time, no blocking call on the runtime's threads, every
//! call bounded by a timeout, events arriving on the connection that makes
//! the calls. The protocol is the one `virsh` speaks; its procedure numbers
//! and layouts never change meaning.
//!
//! - [`xdr`], [`wire`]: the encoding and the messages (bounded decoding:
//!   a hostile daemon gets an error, never a large allocation or a panic).
//! - [`conn`]: one connection, calls matched by serial, events to a
//!   callback, keepalive answered. [`uri`]: the URIs and their transports.
//! - [`remote`]: the typed procedures. [`domxml`]: domain and snapshot XML.
//! - [`host`]: one host's connection and read; [`events`]: the power event
//!   log and who caused each; [`store`]: what survives a restart.
//! - [`pull`]: point-in-time exports of a running domain's disks (a
//!   pull-mode backup with a checkpoint), read over NBD for replication;
//!   [`changes`]: that as `dr-replication`'s change source, checkpoint
//!   chain and all.
//! - [`Libvirt`] ([`backend`]): the port.
//!
//! ## What this crate must not know
//!
//! Decisions: it reports what the hosts say and does what it is asked. No
//! simulation, no prober, no daemon.
#![forbid(unsafe_code)]

pub mod backend;
pub mod changes;
pub mod config;
pub mod conn;
pub mod domxml;
pub mod error;
pub mod events;
pub mod host;
pub mod nbd_route;
pub mod pull;
pub mod remote;
pub mod store;
pub mod uri;
pub mod wire;
pub mod xdr;

pub use backend::Libvirt;
pub use config::{HostConfig, LibvirtConfig, LibvirtSection};
pub use error::LibvirtError;

/// The backend over `config`'s hosts, keeping its state in `state_dir`
/// (`None`: in memory). Hosts are connected on first use.
pub async fn connect(
    config: &LibvirtConfig,
    state_dir: Option<std::path::PathBuf>,
) -> Result<Libvirt, LibvirtError> {
    Libvirt::new(config.clone(), state_dir).await
}
