//! The agent's configuration file (TOML): which host it is, where drd is,
//! its promise, its reassurance, its storage heartbeat and its watchdog.
//!
//! ```toml
//! host = "kvm-a1"                            # as drd's inventory names it
//! drd = ["198.19.0.1:7171"]                  # drd's agent listeners, tried in turn
//! token_file = "/etc/vmdr/agent-token"       # the agents' bearer token
//! libvirt = "qemu:///system"                 # this host's own libvirt
//! isolation_timeout = "30s"                  # cut off this long: its guests go
//! interval = "1s"                            # heartbeats, probes, storage writes
//! isolation_addresses = ["198.19.0.1"]       # answering, it is not isolated
//! storage_dir = "/shared/vmdr-heartbeats"    # its storage heartbeat, shared with drd
//! state_file = "/run/vmdr-agent/state"       # its last acknowledgement, across restarts
//! watchdog = "/dev/watchdog"                 # resets the host if the agent hangs
//! ```

use dr_core::model::Reassurance;
use dr_core::time::parse_duration;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration that cannot work, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Not TOML, or not these keys.
    #[error("{path}: {cause}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// A key's value is wrong.
    #[error("{key}: {problem}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    host: String,
    drd: Vec<String>,
    token_file: PathBuf,
    libvirt: String,
    isolation_timeout: Option<String>,
    interval: Option<String>,
    #[serde(default)]
    isolation_addresses: Vec<String>,
    storage_dir: Option<PathBuf>,
    state_file: Option<PathBuf>,
    watchdog: Option<PathBuf>,
}

/// A checked configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The host's name in drd's inventory.
    pub host: String,
    /// drd's agent listeners.
    pub drd: Vec<SocketAddr>,
    /// The agents' bearer token (never logged, never in `Debug`).
    pub token: String,
    /// This host's libvirt.
    pub libvirt: String,
    /// Cut off this long (and unreassured), it destroys its guests.
    pub isolation_timeout: Duration,
    /// How often it heartbeats, probes and writes.
    pub interval: Duration,
    /// Its isolation addresses.
    pub isolation_addresses: Vec<IpAddr>,
    /// Where its storage heartbeat goes: `<dir>/<host>.json`.
    pub storage_dir: Option<PathBuf>,
    /// Where it keeps its last acknowledgement across its own restarts.
    pub state_file: Option<PathBuf>,
    /// Its watchdog device.
    pub watchdog: Option<PathBuf>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("host", &self.host)
            .field("drd", &self.drd)
            .field("token", &"<redacted>")
            .field("libvirt", &self.libvirt)
            .field("isolation_timeout", &self.isolation_timeout)
            .field("interval", &self.interval)
            .field("isolation_addresses", &self.isolation_addresses)
            .field("storage_dir", &self.storage_dir)
            .field("state_file", &self.state_file)
            .field("watchdog", &self.watchdog)
            .finish()
    }
}

/// The time the agent allows itself to destroy its guests once it decides
/// to: its promise to drd is its isolation timeout plus this. libvirt's
/// destroy of a TCG guest on a loaded lab machine took up to 2 s; a real
/// host's QEMU exits on its SIGTERM in milliseconds.
pub const DESTROY_BUDGET: Duration = Duration::from_secs(5);

impl AgentConfig {
    /// Reads and checks `path`; relative paths in it are relative to it.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let raw: Raw = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            cause: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let token_path = base.join(&raw.token_file);
        let token = std::fs::read_to_string(&token_path)
            .map_err(|cause| ConfigError::Read {
                path: token_path.clone(),
                cause,
            })?
            .trim()
            .to_owned();
        Self::check(raw, token, base)
    }

    fn check(raw: Raw, token: String, base: &Path) -> Result<AgentConfig, ConfigError> {
        let bad = |key, problem: String| ConfigError::Value { key, problem };
        if !crate::protocol::safe_host_name(&raw.host) {
            return Err(bad(
                "host",
                format!("{:?} is not a plain host name", raw.host),
            ));
        }
        if token.is_empty() {
            return Err(bad("token_file", "the token is empty".into()));
        }
        if raw.drd.is_empty() {
            return Err(bad("drd", "give at least one HOST:PORT".into()));
        }
        let drd = raw
            .drd
            .iter()
            .map(|a| a.parse().map_err(|e| bad("drd", format!("{a:?}: {e}"))))
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        let duration = |key, v: &Option<String>, default| match v {
            None => Ok(default),
            Some(t) => parse_duration(t).map_err(|e| bad(key, e.to_string())),
        };
        let interval = duration("interval", &raw.interval, Duration::from_secs(1))?;
        let isolation_timeout = duration(
            "isolation_timeout",
            &raw.isolation_timeout,
            Duration::from_secs(30),
        )?;
        if interval < Duration::from_millis(100) {
            return Err(bad("interval", "must be at least 100ms".into()));
        }
        if isolation_timeout < interval * 3 {
            return Err(bad(
                "isolation_timeout",
                "must be at least three intervals (one lost heartbeat must not destroy guests)"
                    .into(),
            ));
        }
        let isolation_addresses = raw
            .isolation_addresses
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| bad("isolation_addresses", format!("{a:?}: {e}")))
            })
            .collect::<Result<Vec<IpAddr>, _>>()?;
        dr_libvirt::uri::Uri::parse(&raw.libvirt).map_err(|e| bad("libvirt", e.to_string()))?;
        Ok(AgentConfig {
            host: raw.host,
            drd,
            token,
            libvirt: raw.libvirt,
            isolation_timeout,
            interval,
            isolation_addresses,
            storage_dir: raw.storage_dir.map(|d| base.join(d)),
            state_file: raw.state_file.map(|d| base.join(d)),
            watchdog: raw.watchdog,
        })
    }

    /// What keeps it from destroying its guests when cut off from drd.
    pub fn reassurance(&self) -> Reassurance {
        match (
            self.isolation_addresses.is_empty(),
            self.storage_dir.is_some(),
        ) {
            (true, _) => Reassurance::None,
            (false, false) => Reassurance::Gateway,
            (false, true) => Reassurance::GatewayAndStorage,
        }
    }

    /// Its storage heartbeat's file.
    pub fn storage_file(&self) -> Option<PathBuf> {
        self.storage_dir
            .as_ref()
            .map(|d| d.join(format!("{}.json", self.host)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(extra: &str) -> Result<AgentConfig, ConfigError> {
        let text = format!(
            "host = \"kvm-a1\"\ndrd = [\"198.19.0.1:7171\"]\ntoken_file = \"t\"\nlibvirt = \"qemu:///system\"\n{extra}"
        );
        let raw: Raw = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: "x".into(),
            cause: e.to_string(),
        })?;
        AgentConfig::check(raw, "secret".into(), Path::new("/etc/vmdr"))
    }

    #[test]
    fn a_configuration_says_what_keeps_its_guests_and_redacts_its_token() {
        let c = raw("").expect("valid");
        assert_eq!(c.reassurance(), Reassurance::None);
        assert_eq!(c.isolation_timeout, Duration::from_secs(30));
        assert!(!format!("{c:?}").contains("secret"));
        let c = raw("isolation_addresses = [\"198.19.0.1\"]\nstorage_dir = \"hb\"").expect("valid");
        assert_eq!(c.reassurance(), Reassurance::GatewayAndStorage);
        assert_eq!(
            c.storage_file(),
            Some(PathBuf::from("/etc/vmdr/hb/kvm-a1.json"))
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, starts) in [
            (
                "isolation_timeout = \"2s\"",
                "isolation_timeout: must be at least three",
            ),
            ("interval = \"10ms\"", "interval: must be at least 100ms"),
            (
                "isolation_addresses = [\"gw\"]",
                "isolation_addresses: \"gw\"",
            ),
            ("interval = \"soon\"", "interval:"),
        ] {
            let e = raw(extra).unwrap_err().to_string();
            assert!(e.starts_with(starts), "{extra}: {e}");
        }
        let e = raw("colour = 1").unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }
}
