//! The ports: async traits that backends implement and the control loop uses.
//!
//! One small trait per concern, in the style of `object_store`: the required
//! methods are the primitive operations a backend must provide; conveniences
//! built from them live on extension traits (see [`HypervisorExt`]) so every
//! backend gets them for free and they behave the same everywhere; a
//! decorator backend ([`Amended`]) adds to any backend's inventory. Fencing
//! is a port of its own ([`Fencer`]): out-of-band power control is never
//! the manager's.

mod amended;
mod authorized;
mod clock;
mod fencer;
mod hypervisor;
mod prober;

pub use amended::{AmendInventory, Amended};
pub use authorized::{Authority, Authorized, AuthorizedFencer};
pub use clock::Clock;
pub use fencer::{FenceError, FencePower, Fencer, NoFencer};
pub use hypervisor::{Capabilities, Hypervisor, HypervisorError, HypervisorExt};
pub use prober::{ProbeError, ProbeKind, ProbeResult, ProbeTarget, Prober};
