//! # dr-nbd: an NBD client for point-in-time disk exports
//!
//! Owns the client side of the Network Block Device protocol as far as
//! reading a hypervisor's export needs it: the fixed newstyle handshake
//! (`NBD_OPT_GO` with block size constraints), structured replies, metadata
//! contexts (`base:allocation`, `qemu:dirty-bitmap:…`), `NBD_CMD_READ` and
//! `NBD_CMD_BLOCK_STATUS`. The wire format is in [`proto`] (pure encoders
//! and the reply parser, fuzzed and property-tested); [`client`] drives a
//! connection over any byte stream (TCP or a Unix socket).
//!
//! Everything the server sends is checked before it is used: a chunk
//! outside the request, overlapping content, a length that does not fit,
//! an unknown reply type, all end the connection with an error naming what
//! was wrong. Nothing the server says can make the client allocate more
//! than the request it sent allows.
//!
//! ## What this crate must not know
//!
//! Hypervisors, replication, libvirt: it reads blocks and their status from
//! whoever exports them.
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod proto;

pub use client::{Client, Export};
pub use error::NbdError;
pub use proto::Extent;
