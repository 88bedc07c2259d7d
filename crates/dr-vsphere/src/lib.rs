//! # dr-vsphere: the VMware vCenter backend
//!
//! Speaks the vSphere Web Services (VIM) API — SOAP over HTTPS at `/sdk` —
//! with `reqwest` and a bounded XML reader (`quick-xml`): the API every
//! vCenter since 6.x speaks, and govmomi's vCenter simulator too.
//!
//! Built so far: the wire ([`soap`], [`xml`]: envelopes, typed faults,
//! response size caps, no DTDs), TLS ([`tls`]: verified, CA file, pinned
//! SHA-256 thumbprint, or explicitly insecure), the session ([`session`]:
//! login with a password from a file or environment variable, redacted
//! `Debug`, transparent re-login on `NotAuthenticated`, logout), the
//! inventory in few round trips ([`inventory`]), power events with their
//! users ([`events`]), tasks ([`task`]) and the VM power operations
//! ([`Vsphere`]): snapshots, restore, cold migration, adding spare hosts,
//! maintenance mode, vitals from `QueryPerf` ([`perf`]) and the incremental
//! inventory (`WaitForUpdatesEx`, [`watch`]). [`Vsphere`] implements the
//! `Hypervisor` port and passes the shared conformance suite against
//! govmomi's vCenter simulator.
//!
//! ## What this crate must not know
//!
//! Decisions: it reports what vCenter says and does what it is asked. No
//! simulation, no prober.
#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod error;
pub mod events;
pub mod ha;
pub mod inventory;
pub mod pending;
pub mod perf;
pub mod session;
pub mod soap;
pub mod task;
pub mod time;
pub mod tls;
pub mod watch;
pub mod xml;

pub use backend::Vsphere;
pub use error::VsphereError;
pub use session::{PasswordSource, Secret, Session, SpareHost, VsphereConfig};
pub use tls::TlsMode;
