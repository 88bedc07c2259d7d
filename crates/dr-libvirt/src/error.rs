//! What can go wrong talking to libvirt, and how it maps onto the port's
//! errors.

use crate::wire::code;
use crate::xdr::XdrError;
use dr_core::ports::HypervisorError;
use std::time::Duration;

/// A libvirt backend error, with context.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LibvirtError {
    /// Bad configuration (a URI, a host section).
    #[error("libvirt configuration: {0}")]
    Config(String),
    /// The daemon could not be reached.
    #[error("cannot connect to libvirt at {uri}: {detail}")]
    Connect {
        /// The URI.
        uri: String,
        /// Why.
        detail: String,
    },
    /// The connection is gone (the daemon closed it, or it broke).
    #[error("libvirt connection closed: {0}")]
    Closed(String),
    /// A call got no answer in time.
    #[error("libvirt call {call} got no answer within {after:?}")]
    Timeout {
        /// The procedure.
        call: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// The daemon answered with an error.
    #[error("libvirt {call} failed: {message} (error {code})")]
    Remote {
        /// The procedure.
        call: &'static str,
        /// `virErrorNumber`.
        code: i32,
        /// libvirt's message.
        message: String,
    },
    /// The daemon's bytes could not be understood.
    #[error("libvirt answer to {call} cannot be decoded: {source}")]
    Decode {
        /// The procedure.
        call: &'static str,
        /// Why.
        #[source]
        source: XdrError,
    },
    /// The daemon wants an authentication this client does not speak.
    #[error(
        "libvirt at {uri} asks for {method} authentication, which vmdr does not speak: {hint}"
    )]
    Auth {
        /// The URI.
        uri: String,
        /// The method (SASL).
        method: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A domain's XML could not be read or is missing what vmdr needs.
    #[error("domain XML of {vm}: {detail}")]
    Xml {
        /// The domain.
        vm: String,
        /// Why.
        detail: String,
    },
}

impl LibvirtError {
    /// The daemon's error code, when it answered with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            LibvirtError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Maps onto the port's error, naming the host and the object.
    pub fn into_port(self, host: &str, kind: &'static str, name: &str) -> HypervisorError {
        match &self {
            LibvirtError::Connect { .. } | LibvirtError::Closed(_) => {
                HypervisorError::HostUnreachable {
                    host: host.to_owned(),
                }
            }
            LibvirtError::Timeout { call, after } => HypervisorError::Timeout {
                op: call,
                after: *after,
            },
            LibvirtError::Remote { call, code: c, .. } => match *c {
                code::NO_DOMAIN | code::NO_DOMAIN_SNAPSHOT => HypervisorError::NotFound {
                    kind: if *c == code::NO_DOMAIN_SNAPSHOT {
                        "snapshot"
                    } else {
                        kind
                    },
                    name: name.to_owned(),
                },
                code::OPERATION_INVALID | code::DOM_EXIST => HypervisorError::InvalidState {
                    name: name.to_owned(),
                    detail: self.to_string(),
                },
                code::NO_SUPPORT | code::OPERATION_UNSUPPORTED => {
                    HypervisorError::Unsupported { op: call }
                }
                code::AUTH_FAILED => HypervisorError::Auth(self.to_string()),
                _ => HypervisorError::Failed {
                    op: call,
                    detail: self.to_string(),
                },
            },
            LibvirtError::Auth { .. } => HypervisorError::Auth(self.to_string()),
            LibvirtError::Decode { .. } | LibvirtError::Xml { .. } => {
                HypervisorError::Protocol(self.to_string())
            }
            LibvirtError::Config(_) => HypervisorError::Failed {
                op: "libvirt",
                detail: self.to_string(),
            },
        }
    }
}
