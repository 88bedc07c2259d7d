//! TLS for vCenter: verified by default; or a pinned SHA-256 certificate
//! thumbprint, or an extra CA file, for vCenters with self-signed
//! certificates; or, explicitly and loudly, not verified at all.

use crate::error::VsphereError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

/// How the server's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Against the public web PKI roots.
    #[default]
    Verify,
    /// Against the roots plus the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// The server's certificate must have this SHA-256 thumbprint (hex,
    /// colons optional, as vCenter and `openssl x509 -fingerprint` print it).
    Pinned(String),
    /// Not checked at all. Logs a warning on every connection.
    Insecure,
}

/// Parses a thumbprint into its 32 bytes.
pub fn parse_thumbprint(text: &str) -> Result<[u8; 32], VsphereError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bad = || VsphereError::Config(format!("thumbprint {text:?} is not 32 hex bytes (SHA-256)"));
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// The server presented another certificate than the pinned one.
#[derive(Debug)]
struct PinMismatch {
    presented: [u8; 32],
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: Vec<String> = self.presented.iter().map(|b| format!("{b:02X}")).collect();
        write!(
            f,
            "the vCenter's certificate is not the pinned one (it presented SHA-256 {}): if \
             its certificate was replaced on purpose, pin the new thumbprint (vsphere.thumbprint); \
             otherwise this may not be your vCenter",
            hex.join(":")
        )
    }
}

impl std::error::Error for PinMismatch {}

/// The TLS failure inside an HTTP error, if it is one.
fn rustls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // An `io::Error`'s `source` skips the error it wraps (hyper wraps
        // rustls' in two of them): go into it instead.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// What an operator should read when the vCenter's certificate is refused:
/// what is wrong with it and what to do, instead of rustls' variant name
/// (`invalid peer certificate: BadSignature`). `None` when `e` is not a
/// certificate failure.
pub fn explain(e: &reqwest::Error) -> Option<String> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = rustls_error(e)? else {
        return None;
    };
    Some(match c {
        // webpki refuses RSA keys under 2048 bits, and the signature made
        // with one then does not verify.
        C::BadSignature => {
            "the server's signature does not verify with its certificate's key: most \
             often that key is too weak for a current TLS stack (an RSA key under 2048 bits, as in \
             govmomi's simulator's built-in certificate); replace the vCenter's certificate with \
             one of a 2048-bit (or larger) RSA key or an ECDSA key"
                .into()
        }
        C::Expired | C::ExpiredContext { .. } => "the vCenter's certificate has expired: renew it \
             (vCenter: Certificate Management), or check this machine's clock"
            .into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "the vCenter's certificate is not valid \
             yet: check this machine's clock and the vCenter's"
            .into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            let url = e.url().and_then(|u| u.host_str().map(str::to_owned));
            format!(
                "the vCenter's certificate is not for the address connected to ({}): use \
                 a name the certificate holds in vsphere.url, or reissue the certificate for \
                 this name",
                url.as_deref().unwrap_or("vsphere.url")
            )
        }
        C::UnknownIssuer => "the vCenter's certificate is signed by a CA this machine does not \
             trust (a self-signed vCenter): give its CA in vsphere.ca_file (PEM), or pin its \
             certificate with vsphere.thumbprint"
            .into(),
        C::Revoked => "the vCenter's certificate has been revoked: replace it".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "the vCenter's certificate is not \
             for TLS servers (its extended key usage): reissue it for server authentication"
            .into(),
        C::Other(other) => match other.0.downcast_ref::<PinMismatch>() {
            Some(pin) => pin.to_string(),
            None => format!("the vCenter's certificate was refused: {other}"),
        },
        other => format!("the vCenter's certificate was refused: {other}"),
    })
}

/// Accepts exactly the certificate with the pinned thumbprint; signatures
/// are still verified with the certificate's key.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    presented: got,
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// An HTTP client for `mode`.
pub fn http_client(
    mode: &TlsMode,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, VsphereError> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(4);
    let builder = match mode {
        TlsMode::Verify => builder,
        TlsMode::CaFile(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| VsphereError::Config(format!("CA file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| VsphereError::Config(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(VsphereError::Config(format!(
                    "CA file {}: no certificate in it",
                    path.display()
                )));
            }
            certs
                .into_iter()
                .fold(builder, reqwest::ClientBuilder::add_root_certificate)
        }
        TlsMode::Pinned(thumb) => {
            let provider = rustls::crypto::ring::default_provider();
            let algs = provider.signature_verification_algorithms;
            let verifier = Arc::new(Pinned {
                sha256: parse_thumbprint(thumb)?,
                algs,
            });
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| VsphereError::Config(format!("TLS: {e}")))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            builder.use_preconfigured_tls(config)
        }
        TlsMode::Insecure => {
            tracing::warn!("vCenter TLS certificate NOT verified (tls = insecure): anyone on the path can impersonate vCenter");
            builder.danger_accept_invalid_certs(true)
        }
    };
    builder
        .build()
        .map_err(|e| VsphereError::Config(format!("HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_with_or_without_colons() {
        let colons = "44:8F:62:8A:8A:65:AA:18:56:0E:53:A8:0C:53:AC:B3:8C:51:B4:27:DF:03:34:08:23:49:14:11:47:DC:9B:F6";
        let a = parse_thumbprint(colons).unwrap();
        assert_eq!(a[0], 0x44);
        assert_eq!(
            a,
            parse_thumbprint(&colons.replace(':', "").to_lowercase()).unwrap()
        );
        assert!(parse_thumbprint("44:8F").is_err());
        assert!(parse_thumbprint(&"zz".repeat(32)).is_err());
    }
}
