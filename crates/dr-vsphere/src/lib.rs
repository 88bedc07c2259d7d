//! # dr-vsphere: the VMware vCenter backend
//!
//! Speaks the vSphere Web Services (VIM) API — SOAP over HTTPS at `/sdk` —
//! with `reqwest` and a bounded XML reader (`quick-xml`): the API every
//! vCenter since 6.x speaks, and govmomi's vCenter simulator too.
//!
//! Built so far: the wire ([`soap`], [`xml`]: envelopes, typed faults,
//! response size caps, no DTDs), TLS ([`tls`]: verified, CA file, pinned
//! SHA-256 thumbprint, or explicitly insecure), and the session
//! ([`session`]: login with a password from a file or environment variable,
//! redacted `Debug`, transparent re-login on `NotAuthenticated`, logout).
//! The `Hypervisor` port implementation (inventory, events, tasks) builds on
//! these; see issue 5 and `docs/ARCHITECTURE.md`.
//!
//! ## What this crate must not know
//!
//! Decisions: it reports what vCenter says and does what it is asked. No
//! simulation, no prober.
#![forbid(unsafe_code)]

pub mod error;
pub mod inventory;
pub mod session;
pub mod soap;
pub mod tls;
pub mod xml;

pub use error::VsphereError;
pub use session::{PasswordSource, Secret, Session, VsphereConfig};
pub use tls::TlsMode;
