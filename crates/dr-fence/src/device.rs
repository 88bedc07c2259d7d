//! One host's fence device, as configured, checked before it is used.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where fence-agents install their programs, searched before `PATH`.
const AGENT_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// Options a device's `options` may not set: the action is vmdr's to say,
/// and a secret belongs in a file or an environment variable, not in a
/// configuration that is read, copied and shown.
const RESERVED: &[&str] = &[
    "action",
    "password",
    "passwd",
    "password_script",
    "passwd_script",
    "identity_file",
];

/// Where a device's password comes from. Read at every fence, so a
/// rotated secret needs no reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// None (a device without a password: rare, a lab's).
    None,
    /// The first line of this file.
    File(PathBuf),
    /// This environment variable of vmdr's process (removed from the
    /// agent's environment).
    Env(String),
}

/// A host's fence device: the agent that drives it and its options.
/// Holds no secret, so its `Debug` shows none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The host it powers.
    pub host: String,
    /// The agent program (resolved to a path).
    pub agent: PathBuf,
    /// Its options, given on its standard input as `key=value` lines
    /// (`ip`, `username`, `lanplus`, `plug`, ...; see the agent's manual).
    pub options: BTreeMap<String, String>,
    /// Where its password comes from.
    pub credentials: Credentials,
    /// One run of the agent (one off, or one status) is killed after this.
    pub run_timeout: Duration,
}

/// A device as written in a configuration file (`[[fence.device]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// The host it powers.
    pub host: String,
    /// The agent: a name (`fence_ipmilan`), looked up in the fence-agents
    /// directories and `PATH`, or an absolute path.
    pub agent: String,
    /// Its options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// A file holding its password.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding its password.
    pub password_env: Option<String>,
    /// How long one run of the agent may take (`"30s"`; default 60 s).
    pub timeout: Option<String>,
}

/// A device configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The agent program is not there.
    #[error("fence device of {host}: no agent {agent:?} (looked in {searched}); install fence-agents or give its absolute path")]
    UnknownAgent {
        /// The host.
        host: String,
        /// As configured.
        agent: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The agent is there but cannot be run.
    #[error("fence device of {host}: agent {path:?} is not an executable file")]
    NotExecutable {
        /// The host.
        host: String,
        /// The path.
        path: PathBuf,
    },
    /// An option is malformed or reserved.
    #[error("fence device of {host}: option {key:?}: {problem}")]
    BadOption {
        /// The host.
        host: String,
        /// The option.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The credentials are configured wrongly.
    #[error("fence device of {host}: {problem}")]
    Credentials {
        /// The host.
        host: String,
        /// What is wrong.
        problem: String,
    },
    /// Two devices for one host.
    #[error("two fence devices for host {0}")]
    DuplicateHost(String),
    /// The timeout does not parse or is zero.
    #[error("fence device of {host}: timeout: {problem}")]
    BadTimeout {
        /// The host.
        host: String,
        /// What is wrong.
        problem: String,
    },
}

impl DeviceSpec {
    /// Checks it and resolves its agent.
    pub fn resolve(self) -> Result<DeviceConfig, ConfigError> {
        let host = self.host;
        let credentials = match (self.password_file, self.password_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Credentials {
                    host,
                    problem: "give password_file or password_env, not both".into(),
                })
            }
            (Some(f), None) => Credentials::File(f),
            (None, Some(e)) => Credentials::Env(e),
            (None, None) => Credentials::None,
        };
        let run_timeout = match &self.timeout {
            None => Duration::from_secs(60),
            Some(t) => match dr_core::time::parse_duration(t) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    return Err(ConfigError::BadTimeout {
                        host,
                        problem: "must be more than zero".into(),
                    })
                }
                Err(e) => {
                    return Err(ConfigError::BadTimeout {
                        host,
                        problem: e.to_string(),
                    })
                }
            },
        };
        DeviceConfig::new(host, &self.agent, self.options, credentials, run_timeout)
    }
}

impl DeviceConfig {
    /// A checked device: its agent found and executable, its options
    /// well-formed and none reserved, its credentials' source well-formed
    /// (whether the secret itself is readable shows at the first fence; a
    /// file's is checked here too).
    pub fn new(
        host: String,
        agent: &str,
        options: BTreeMap<String, String>,
        credentials: Credentials,
        run_timeout: Duration,
    ) -> Result<DeviceConfig, ConfigError> {
        for (key, value) in &options {
            let bad = |problem| ConfigError::BadOption {
                host: host.clone(),
                key: key.clone(),
                problem,
            };
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(bad(
                    "option names are lowercase letters, digits, '_' and '-'",
                ));
            }
            if RESERVED.contains(&key.as_str()) {
                return Err(bad(
                    "reserved: vmdr gives the action, and a secret goes in password_file or \
                     password_env",
                ));
            }
            if value.contains(['\n', '\r', '\0']) {
                return Err(bad("a value cannot hold a line break or a NUL"));
            }
        }
        match &credentials {
            Credentials::Env(name) if name.is_empty() || name.contains(['=', '\0']) => {
                return Err(ConfigError::Credentials {
                    host,
                    problem: format!("password_env {name:?} is not a variable name"),
                })
            }
            Credentials::File(path) if !path.is_file() => {
                return Err(ConfigError::Credentials {
                    host,
                    problem: format!("password_file {} is not a readable file", path.display()),
                })
            }
            _ => {}
        }
        let agent = resolve_agent(&host, agent)?;
        Ok(DeviceConfig {
            host,
            agent,
            options,
            credentials,
            run_timeout,
        })
    }
}

/// An agent's path: absolute as given, or a fence-agents name found in
/// their directories or on `PATH`.
fn resolve_agent(host: &str, agent: &str) -> Result<PathBuf, ConfigError> {
    let check = |path: PathBuf| -> Result<PathBuf, ConfigError> {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path),
            _ => Err(ConfigError::NotExecutable {
                host: host.to_owned(),
                path,
            }),
        }
    };
    if agent.contains('/') {
        let path = Path::new(agent);
        if !path.is_absolute() {
            return Err(ConfigError::UnknownAgent {
                host: host.to_owned(),
                agent: agent.to_owned(),
                searched: "nowhere: a path must be absolute".into(),
            });
        }
        if !path.exists() {
            return Err(ConfigError::UnknownAgent {
                host: host.to_owned(),
                agent: agent.to_owned(),
                searched: "that path".into(),
            });
        }
        return check(path.to_path_buf());
    }
    let named_well = agent.starts_with("fence_")
        && agent.len() > "fence_".len()
        && agent
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !named_well {
        return Err(ConfigError::UnknownAgent {
            host: host.to_owned(),
            agent: agent.to_owned(),
            searched: "nowhere: an agent's name is fence_ and lowercase letters, digits or '_'"
                .into(),
        });
    }
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = AGENT_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path_dirs))
        .collect();
    match dirs.iter().map(|d| d.join(agent)).find(|p| p.exists()) {
        Some(p) => check(p),
        None => Err(ConfigError::UnknownAgent {
            host: host.to_owned(),
            agent: agent.to_owned(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(agent: &str) -> DeviceSpec {
        DeviceSpec {
            host: "kvm-a1".into(),
            agent: agent.into(),
            options: BTreeMap::new(),
            password_file: None,
            password_env: None,
            timeout: None,
        }
    }

    #[test]
    fn bad_devices_are_refused_with_what_is_wrong() {
        let e = spec("fence_no_such_agent").resolve().unwrap_err();
        assert!(matches!(e, ConfigError::UnknownAgent { .. }), "{e}");
        assert!(e.to_string().contains("fence_no_such_agent"), "{e}");
        let e = spec("../fence_x").resolve().unwrap_err();
        assert!(e.to_string().contains("must be absolute"), "{e}");
        let e = spec("ipmitool").resolve().unwrap_err();
        assert!(e.to_string().contains("an agent's name is fence_"), "{e}");
        // A file that is not a program.
        let e = spec("/etc/passwd").resolve().unwrap_err();
        assert!(matches!(e, ConfigError::NotExecutable { .. }), "{e}");
        let mut s = spec("/bin/sh");
        s.options.insert("password".into(), "hunter2".into());
        let e = s.resolve().unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let mut s = spec("/bin/sh");
        s.options.insert("ip".into(), "10.0.0.1\naction=on".into());
        assert!(s.resolve().unwrap_err().to_string().contains("line break"));
        let mut s = spec("/bin/sh");
        s.options.insert("IP".into(), "x".into());
        assert!(s.resolve().is_err());
        let mut s = spec("/bin/sh");
        s.password_file = Some("/nonexistent/secret".into());
        assert!(s
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("password_file"));
        let mut s = spec("/bin/sh");
        s.password_file = Some("/etc/passwd".into());
        s.password_env = Some("X".into());
        assert!(s.resolve().unwrap_err().to_string().contains("not both"));
        let mut s = spec("/bin/sh");
        s.timeout = Some("0s".into());
        assert!(s.resolve().is_err());
        let mut s = spec("/bin/sh");
        s.timeout = Some("soon".into());
        assert!(matches!(s.resolve(), Err(ConfigError::BadTimeout { .. })));
    }

    #[test]
    fn a_good_device_resolves() {
        let mut s = spec("/bin/sh");
        s.options.insert("ip".into(), "127.0.0.1".into());
        s.password_env = Some("VMDR_BMC_PASSWORD".into());
        s.timeout = Some("20s".into());
        let d = s.resolve().expect("resolves");
        assert_eq!(d.agent, PathBuf::from("/bin/sh"));
        assert_eq!(d.run_timeout, Duration::from_secs(20));
        assert_eq!(d.credentials, Credentials::Env("VMDR_BMC_PASSWORD".into()));
    }
}
