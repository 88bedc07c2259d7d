//! Connecting and staying logged in: `RetrieveServiceContent`, `Login`
//! (password from a file or an environment variable, never argv, never
//! logged), transparent re-login on `NotAuthenticated`, `Logout`.

use crate::error::VsphereError;
use crate::soap::{MoRef, Soap};
use crate::tls::{self, TlsMode};
use crate::xml::{self, Element, Limits};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A password. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// An environment variable.
    Env(String),
    /// A file (its first line; a trailing newline is dropped).
    File(PathBuf),
}

impl PasswordSource {
    /// Reads the password.
    pub fn read(&self) -> Result<Secret, VsphereError> {
        let raw = match self {
            PasswordSource::Env(var) => std::env::var(var).map_err(|_| {
                VsphereError::Config(format!("password variable {var} is not set (or not UTF-8)"))
            })?,
            PasswordSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                VsphereError::Config(format!("password file {}: {e}", path.display()))
            })?,
        };
        let pw = raw.lines().next().unwrap_or("").to_owned();
        if pw.is_empty() {
            return Err(VsphereError::Config(format!(
                "password from {self:?} is empty"
            )));
        }
        Ok(Secret(pw))
    }
}

/// A spare ESXi host vmdr may add to a cluster when no connected host has
/// room (the paper's "add a new vHost that is in the inventory but not in
/// vCenter"). Until added it appears in the inventory as `Standby`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpareHost {
    /// Its address or DNS name, as vCenter will know it.
    pub name: String,
    /// The cluster to add it to.
    pub cluster: String,
    /// Its root (or admin) user.
    pub user: String,
    /// Its password.
    pub password: PasswordSource,
    /// Its SSL thumbprint (SHA-1, as `AddHost_Task` wants it), if known.
    pub ssl_thumbprint: Option<String>,
    /// CPU capacity, MHz (for placement before it is added).
    pub cpu_mhz: u32,
    /// Memory, MiB.
    pub memory_mb: u64,
}

/// How to reach vCenter.
#[derive(Clone, Debug)]
pub struct VsphereConfig {
    /// The SDK URL, e.g. `https://vcenter.example/sdk`.
    pub url: String,
    /// User name.
    pub user: String,
    /// Password source.
    pub password: PasswordSource,
    /// Certificate checking.
    pub tls: TlsMode,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Bounds on responses.
    pub limits: Limits,
    /// Spare hosts that may be added.
    pub spares: Vec<SpareHost>,
}

/// The service's entry points, from `RetrieveServiceContent`.
#[derive(Clone, Debug)]
pub struct ServiceContent {
    /// The inventory root.
    pub root_folder: MoRef,
    /// The property collector.
    pub property_collector: MoRef,
    /// The view manager.
    pub view_manager: MoRef,
    /// The session manager.
    pub session_manager: MoRef,
    /// The event manager, if any.
    pub event_manager: Option<MoRef>,
    /// The performance manager, if any.
    pub perf_manager: Option<MoRef>,
    /// The file manager (deletes datastore files), if any.
    pub file_manager: Option<MoRef>,
    /// "VMware vCenter Server 8.0.2 build-…".
    pub full_name: String,
    /// API version.
    pub api_version: String,
}

/// A logged-in vCenter connection.
pub struct Session {
    soap: Soap,
    content: ServiceContent,
    user: String,
    password: Secret,
    relogin: tokio::sync::Mutex<u64>,
    /// The configured per-request timeout.
    timeout: Duration,
}

/// What [`Session::upload`] writes.
#[derive(Clone, Copy, Debug)]
pub enum Upload<'a> {
    /// A file on this machine, streamed.
    File(&'a std::path::Path),
    /// Bytes in memory (a disk descriptor).
    Bytes(&'a [u8]),
}

/// Bytes read from a file at a time for an upload.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Uploads are given the configured timeout plus one second per this many
/// bytes: a slow link finishes, a stalled one does not hang for ever.
const UPLOAD_FLOOR_BYTES_PER_SEC: u64 = 8 << 20;

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("vcenter", &self.content.full_name)
            .finish_non_exhaustive()
    }
}

const SERVICE_INSTANCE: &str = r#"<_this type="ServiceInstance">ServiceInstance</_this>"#;

fn moref(e: &Element, name: &str, method: &str) -> Result<MoRef, VsphereError> {
    e.child(name)
        .and_then(MoRef::from_element)
        .ok_or_else(|| VsphereError::Missing {
            method: method.into(),
            what: name.into(),
        })
}

impl Session {
    /// Connects and logs in.
    pub async fn connect(cfg: &VsphereConfig) -> Result<Session, VsphereError> {
        let url: reqwest::Url = cfg
            .url
            .parse()
            .map_err(|e| VsphereError::Config(format!("vCenter URL {:?}: {e}", cfg.url)))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(VsphereError::Config(format!(
                "vCenter URL {:?}: scheme must be https",
                cfg.url
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(VsphereError::Config(
                "vCenter URL must not carry credentials".into(),
            ));
        }
        if url.scheme() == "http" {
            tracing::warn!(url = %url, "vCenter over plain HTTP: the session is not protected");
        }
        let password = cfg.password.read()?;
        let soap = Soap::new(tls::http_client(&cfg.tls, cfg.timeout)?, url, cfg.limits);
        let r = soap
            .call("RetrieveServiceContent", SERVICE_INSTANCE)
            .await?;
        let m = "RetrieveServiceContent";
        let rv = r.child("returnval").ok_or_else(|| VsphereError::Missing {
            method: m.into(),
            what: "returnval".into(),
        })?;
        let content = ServiceContent {
            root_folder: moref(rv, "rootFolder", m)?,
            property_collector: moref(rv, "propertyCollector", m)?,
            view_manager: moref(rv, "viewManager", m)?,
            session_manager: moref(rv, "sessionManager", m)?,
            event_manager: rv.child("eventManager").and_then(MoRef::from_element),
            perf_manager: rv.child("perfManager").and_then(MoRef::from_element),
            file_manager: rv.child("fileManager").and_then(MoRef::from_element),
            full_name: rv
                .path(&["about", "fullName"])
                .map(|e| e.text.clone())
                .unwrap_or_default(),
            api_version: rv
                .path(&["about", "apiVersion"])
                .map(|e| e.text.clone())
                .unwrap_or_default(),
        };
        let session = Session {
            soap,
            content,
            user: cfg.user.clone(),
            password,
            relogin: tokio::sync::Mutex::new(0),
            timeout: cfg.timeout,
        };
        session.login().await?;
        tracing::info!(vcenter = %session.content.full_name, api = %session.content.api_version, user = %session.user, "logged in to vCenter");
        Ok(session)
    }

    /// The service's entry points.
    pub fn content(&self) -> &ServiceContent {
        &self.content
    }

    /// Times the session was re-established after vCenter dropped it.
    pub async fn relogins(&self) -> u64 {
        *self.relogin.lock().await
    }

    async fn login(&self) -> Result<(), VsphereError> {
        self.soap.clear_session();
        let body = format!(
            "{}<userName>{}</userName><password>{}</password>",
            self.content.session_manager.xml("_this"),
            xml::escape(&self.user),
            xml::escape(self.password.expose())
        );
        self.soap.call("Login", &body).await?;
        if !self.soap.has_session() {
            return Err(VsphereError::Missing {
                method: "Login".into(),
                what: "a session cookie".into(),
            });
        }
        Ok(())
    }

    /// Calls a method; if vCenter says the session is gone, logs in again
    /// once and repeats the call.
    pub async fn invoke(&self, method: &str, inner: &str) -> Result<Element, VsphereError> {
        let seen = *self.relogin.lock().await;
        match self.soap.call(method, inner).await {
            Err(e) if e.fault() == Some("NotAuthenticated") => {
                self.login_again(seen, method).await?;
                self.soap.call(method, inner).await
            }
            other => other,
        }
    }

    /// Logs in again after `what` found the session gone, unless another
    /// task did since the session counted `seen` re-logins.
    async fn login_again(&self, seen: u64, what: &str) -> Result<(), VsphereError> {
        let mut n = self.relogin.lock().await;
        if *n == seen {
            tracing::info!(what, "vCenter session expired: logging in again");
            self.login().await?;
            *n += 1;
        }
        Ok(())
    }

    /// Writes `what` to `path` on datastore `ds` of the datacenter at
    /// inventory path `dc`, through vCenter's `/folder` service (a file
    /// there is replaced). Logs in again once if the session is gone.
    pub async fn upload(
        &self,
        dc: &str,
        ds: &str,
        path: &str,
        what: Upload<'_>,
    ) -> Result<(), VsphereError> {
        let failed = |detail: String| VsphereError::Upload {
            path: format!("[{ds}] {path}"),
            detail,
        };
        let mut seen = *self.relogin.lock().await;
        for attempt in 0..2 {
            let (body, len) = match what {
                Upload::Bytes(b) => (reqwest::Body::from(b.to_vec()), b.len() as u64),
                Upload::File(f) => {
                    let file = tokio::fs::File::open(f)
                        .await
                        .map_err(|e| failed(format!("{}: {e}", f.display())))?;
                    let len = file
                        .metadata()
                        .await
                        .map_err(|e| failed(format!("{}: {e}", f.display())))?
                        .len();
                    // Large reads: each one is a trip to a blocking
                    // thread (reqwest's default stream reads 4 KiB).
                    let stream = tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK);
                    (reqwest::Body::wrap_stream(stream), len)
                }
            };
            let timeout = self.timeout + Duration::from_secs(len / UPLOAD_FLOOR_BYTES_PER_SEC);
            let status = self
                .soap
                .put_datastore_file((dc, ds, path), body, len, timeout)
                .await?;
            if status.is_success() {
                return Ok(());
            }
            if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.login_again(seen, "upload").await?;
                seen = *self.relogin.lock().await;
                continue;
            }
            return Err(failed(format!("HTTP {status}")));
        }
        Err(failed("HTTP 401 after logging in again".into()))
    }

    /// Ends the session (best effort: errors are logged).
    pub async fn logout(&self) {
        if let Err(e) = self
            .soap
            .call("Logout", &self.content.session_manager.xml("_this"))
            .await
        {
            tracing::warn!(error = %e, "vCenter logout failed");
        }
        self.soap.clear_session();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let cfg = VsphereConfig {
            url: "https://vc/sdk".into(),
            user: "u".into(),
            password: PasswordSource::Env("X".into()),
            tls: TlsMode::Verify,
            timeout: Duration::from_secs(1),
            limits: Limits::default(),
            spares: Vec::new(),
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn password_sources() {
        let dir = std::env::temp_dir().join(format!("dr-vsphere-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(
            PasswordSource::File(f.clone()).read().unwrap(),
            Secret::new("s3cret")
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(PasswordSource::File(f)
            .read()
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(PasswordSource::File(dir.join("none")).read().is_err());
        assert!(PasswordSource::Env("DR_VSPHERE_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err()
            .to_string()
            .contains("not set"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
