//! What can go wrong talking to vCenter, and how it maps onto the port's
//! errors.

use crate::xml::XmlError;
use dr_core::ports::HypervisorError;

/// A vSphere backend error, with context.
#[derive(Debug, thiserror::Error)]
pub enum VsphereError {
    /// Bad configuration (URL, TLS settings, password source).
    #[error("vSphere configuration: {0}")]
    Config(String),
    /// The HTTP exchange failed (connect, TLS, timeout).
    #[error("vCenter request {method} failed: {source}")]
    Http {
        /// The SOAP method.
        method: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The vCenter's certificate was refused; says why and what to do.
    #[error("vCenter request {method}: TLS: {problem}")]
    Tls {
        /// The SOAP method.
        method: String,
        /// What is wrong with the certificate, and what to do.
        problem: String,
    },
    /// The answer is not a SOAP response (a proxy's HTML page, an empty or
    /// truncated body, an unexpected status).
    #[error("vCenter answered {method} with something that is not SOAP: {detail}")]
    NotSoap {
        /// The SOAP method.
        method: String,
        /// What came back.
        detail: String,
    },
    /// The XML could not be accepted.
    #[error("vCenter answer to {method}: {source}")]
    Xml {
        /// The SOAP method.
        method: String,
        /// Why.
        #[source]
        source: XmlError,
    },
    /// A SOAP fault.
    #[error("vCenter fault on {method}: {fault}: {message}")]
    Fault {
        /// The SOAP method.
        method: String,
        /// The VIM fault type (`NotAuthenticated`, `InvalidLogin`,
        /// `ManagedObjectNotFound`, `InvalidPowerState`, ...).
        fault: String,
        /// The fault string.
        message: String,
    },
    /// This backend cannot do it (see the declared capabilities).
    #[error("{op} is not supported by the vSphere backend")]
    Unsupported {
        /// The operation.
        op: &'static str,
    },
    /// The object is not in a state that allows the operation.
    #[error("invalid state for {name}: {detail}")]
    InvalidState {
        /// The object.
        name: String,
        /// Why.
        detail: String,
    },
    /// No VM or host of that name in the inventory.
    #[error("{kind} not found in vCenter: {name}")]
    NotFound {
        /// "vm" or "host".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A file could not be written to a datastore.
    #[error("upload to {path} failed: {detail}")]
    Upload {
        /// The datastore path (`[ds] dir/file`).
        path: String,
        /// Why.
        detail: String,
    },
    /// A well-formed answer missing something it must have.
    #[error("vCenter answer to {method} lacks {what}")]
    Missing {
        /// The SOAP method.
        method: String,
        /// What.
        what: String,
    },
}

impl VsphereError {
    /// The error of an HTTP exchange for `method`: [`VsphereError::Tls`],
    /// said plainly, when the vCenter's certificate was refused.
    pub fn http(method: &str, source: reqwest::Error) -> VsphereError {
        match crate::tls::explain(&source) {
            Some(problem) => VsphereError::Tls {
                method: method.to_owned(),
                problem,
            },
            None => VsphereError::Http {
                method: method.to_owned(),
                source,
            },
        }
    }

    /// The fault type, for SOAP faults.
    pub fn fault(&self) -> Option<&str> {
        match self {
            VsphereError::Fault { fault, .. } => Some(fault),
            _ => None,
        }
    }
}

impl From<VsphereError> for HypervisorError {
    fn from(e: VsphereError) -> Self {
        match &e {
            VsphereError::Fault { fault, message, .. } => match fault.as_str() {
                "InvalidLogin" | "NotAuthenticated" | "NoPermission" => {
                    HypervisorError::Auth(e.to_string())
                }
                "ManagedObjectNotFound" => HypervisorError::NotFound {
                    kind: "object",
                    name: message.clone(),
                },
                "InvalidPowerState" | "InvalidState" | "TaskInProgress" | "InvalidHostState"
                | "AlreadyExists" => HypervisorError::InvalidState {
                    name: String::new(),
                    detail: e.to_string(),
                },
                "HostNotConnected" | "HostNotReachable" | "HostCommunication" => {
                    HypervisorError::HostUnreachable {
                        host: message.clone(),
                    }
                }
                "InsufficientResourcesFault"
                | "InsufficientHostCapacityFault"
                | "InsufficientMemoryResourcesFault" => HypervisorError::InsufficientCapacity {
                    host: String::new(),
                    vm: message.clone(),
                },
                "Timeout" => HypervisorError::Timeout {
                    op: "vsphere task",
                    after: std::time::Duration::ZERO,
                },
                _ => HypervisorError::Failed {
                    op: "vsphere",
                    detail: e.to_string(),
                },
            },
            VsphereError::Http { source, .. } if source.is_timeout() => HypervisorError::Timeout {
                op: "vsphere request",
                after: std::time::Duration::ZERO,
            },
            VsphereError::Http { .. } => HypervisorError::HostUnreachable {
                host: "vCenter".into(),
            },
            // Not unreachable: it answered, and retrying cannot help until
            // the certificate or the configuration changes.
            VsphereError::Tls { problem, .. } => HypervisorError::Failed {
                op: "vsphere tls",
                detail: problem.clone(),
            },
            VsphereError::Unsupported { op } => HypervisorError::Unsupported { op },
            VsphereError::InvalidState { name, detail } => HypervisorError::InvalidState {
                name: name.clone(),
                detail: detail.clone(),
            },
            VsphereError::NotFound { kind, name } => HypervisorError::NotFound {
                kind,
                name: name.clone(),
            },
            VsphereError::Config(_) => HypervisorError::Failed {
                op: "vsphere",
                detail: e.to_string(),
            },
            VsphereError::Upload { .. } => HypervisorError::Failed {
                op: "datastore upload",
                detail: e.to_string(),
            },
            VsphereError::NotSoap { .. }
            | VsphereError::Xml { .. }
            | VsphereError::Missing { .. } => HypervisorError::Protocol(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: &str) -> HypervisorError {
        VsphereError::Fault {
            method: "M".into(),
            fault: kind.into(),
            message: "m".into(),
        }
        .into()
    }

    #[test]
    fn faults_map_onto_the_port() {
        assert!(matches!(fault("InvalidLogin"), HypervisorError::Auth(_)));
        assert!(matches!(
            fault("NotAuthenticated"),
            HypervisorError::Auth(_)
        ));
        assert!(matches!(
            fault("ManagedObjectNotFound"),
            HypervisorError::NotFound { .. }
        ));
        assert!(matches!(
            fault("InvalidPowerState"),
            HypervisorError::InvalidState { .. }
        ));
        assert!(matches!(
            fault("TaskInProgress"),
            HypervisorError::InvalidState { .. }
        ));
        assert!(matches!(
            fault("HostNotConnected"),
            HypervisorError::HostUnreachable { .. }
        ));
        assert!(matches!(
            fault("InsufficientResourcesFault"),
            HypervisorError::InsufficientCapacity { .. }
        ));
        assert!(matches!(fault("Timeout"), HypervisorError::Timeout { .. }));
        assert!(matches!(
            fault("SystemError"),
            HypervisorError::Failed { .. }
        ));
        let e: HypervisorError = VsphereError::NotSoap {
            method: "M".into(),
            detail: "html".into(),
        }
        .into();
        assert!(matches!(e, HypervisorError::Protocol(_)));
        let e: HypervisorError = VsphereError::Unsupported { op: "x" }.into();
        assert!(matches!(e, HypervisorError::Unsupported { .. }));
        assert!(HypervisorError::from(VsphereError::Fault {
            method: "M".into(),
            fault: "HostNotConnected".into(),
            message: "h".into()
        })
        .is_transient());
    }
}
