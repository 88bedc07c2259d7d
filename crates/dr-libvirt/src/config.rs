//! The `[libvirt]` section of vmdr's configuration file (TOML), shared by
//! `drctl inventory` and the daemon:
//!
//! ```toml
//! backend = "libvirt"
//!
//! [libvirt]
//! timeout = "10s"          # one call to a daemon (a host that does not
//!                          # answer in time counts as not responding)
//! action_timeout = "5m"    # a start, snapshot or revert
//!
//! [[libvirt.host]]
//! name = "kvm-a1"
//! uri = "qemu+ssh://root@kvm-a1/system"
//! ip = "10.0.1.1"          # management address, probed
//! site = "primary"         # hosts of a site may share storage
//! shared = ["/srv/vm"]     # directories this host shares with its site
//! standby = false          # a spare vmdr may add (add_host)
//! ```

use crate::error::LibvirtError;
use crate::uri::Uri;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// One KVM host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Its name in vmdr (the inventory's host name).
    pub name: String,
    /// How to reach its libvirt daemon.
    pub uri: Uri,
    /// Its management address, probed.
    pub ip: Option<IpAddr>,
    /// Its site.
    pub site: String,
    /// Directories on storage the host shares with the rest of its site.
    pub shared: Vec<String>,
    /// A spare: not used until `add_host`.
    pub standby: bool,
}

/// How to reach every host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibvirtConfig {
    /// The hosts.
    pub hosts: Vec<HostConfig>,
    /// One call's time limit.
    pub timeout: Duration,
    /// A start's, snapshot's or revert's time limit.
    pub action_timeout: Duration,
}

/// The `[libvirt]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtSection {
    timeout: Option<String>,
    action_timeout: Option<String>,
    #[serde(default)]
    host: Vec<HostSection>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSection {
    name: String,
    uri: String,
    ip: Option<String>,
    site: Option<String>,
    #[serde(default)]
    shared: Vec<String>,
    #[serde(default)]
    standby: bool,
}

fn duration(key: &str, v: Option<&str>, default: Duration) -> Result<Duration, LibvirtError> {
    match v {
        None => Ok(default),
        Some(s) => dr_core::time::parse_duration(s)
            .map_err(|e| LibvirtError::Config(format!("libvirt.{key} = {s:?}: {e}"))),
    }
}

impl LibvirtSection {
    /// Checks the section; the error names the key.
    pub fn into_config(self) -> Result<LibvirtConfig, LibvirtError> {
        let timeout = duration("timeout", self.timeout.as_deref(), Duration::from_secs(10))?;
        let action_timeout = duration(
            "action_timeout",
            self.action_timeout.as_deref(),
            Duration::from_secs(300),
        )?;
        if timeout.is_zero() || action_timeout.is_zero() {
            return Err(LibvirtError::Config(
                "libvirt.timeout and libvirt.action_timeout must be more than 0".into(),
            ));
        }
        if self.host.is_empty() {
            return Err(LibvirtError::Config(
                "[libvirt] needs at least one [[libvirt.host]]".into(),
            ));
        }
        let mut hosts: Vec<HostConfig> = Vec::new();
        for (i, h) in self.host.into_iter().enumerate() {
            let at = format!("libvirt.host[{i}] ({})", h.name);
            if h.name.trim().is_empty() {
                return Err(LibvirtError::Config(format!(
                    "libvirt.host[{i}]: name is empty"
                )));
            }
            if hosts.iter().any(|o| o.name == h.name) {
                return Err(LibvirtError::Config(format!(
                    "{at}: another host has the name {:?}",
                    h.name
                )));
            }
            let uri = Uri::parse(&h.uri).map_err(|e| LibvirtError::Config(format!("{at}: {e}")))?;
            let ip = match h.ip {
                None => None,
                Some(s) => Some(s.parse::<IpAddr>().map_err(|_| {
                    LibvirtError::Config(format!("{at}: ip = {s:?} is not an address"))
                })?),
            };
            for d in &h.shared {
                if !d.starts_with('/') {
                    return Err(LibvirtError::Config(format!(
                        "{at}: shared = {d:?} is not an absolute path"
                    )));
                }
            }
            hosts.push(HostConfig {
                name: h.name,
                uri,
                ip,
                site: h.site.unwrap_or_else(|| "default".into()),
                shared: h
                    .shared
                    .into_iter()
                    .map(|d| d.trim_end_matches('/').to_owned())
                    .collect(),
                standby: h.standby,
            });
        }
        Ok(LibvirtConfig {
            hosts,
            timeout,
            action_timeout,
        })
    }
}

impl LibvirtConfig {
    /// Whether `path` lies in a directory that every host of `site` shares.
    pub fn shared_on_site(&self, site: &str, path: &str) -> bool {
        let mut hosts = self.hosts.iter().filter(|h| h.site == site).peekable();
        hosts.peek().is_some()
            && hosts.all(|h| {
                h.shared.iter().any(|d| {
                    path.strip_prefix(d.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LibvirtConfig, LibvirtError> {
        #[derive(Deserialize)]
        struct File {
            libvirt: LibvirtSection,
        }
        let f: File = toml::from_str(text).map_err(|e| LibvirtError::Config(e.to_string()))?;
        f.libvirt.into_config()
    }

    #[test]
    fn a_site_of_two_hosts_with_shared_storage() {
        let c = parse(
            r#"[libvirt]
timeout = "3s"
[[libvirt.host]]
name = "a1"
uri = "qemu+tcp://198.19.0.11/system"
ip = "198.19.0.11"
site = "primary"
shared = ["/srv/vm/"]
[[libvirt.host]]
name = "a2"
uri = "qemu+tcp://198.19.0.12/system"
site = "primary"
shared = ["/srv/vm", "/other"]
"#,
        )
        .expect("valid");
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.hosts[0].ip, Some("198.19.0.11".parse().expect("ip")));
        assert!(c.shared_on_site("primary", "/srv/vm/g1.qcow2"));
        assert!(!c.shared_on_site("primary", "/srv/vmx/g1.qcow2"));
        assert!(!c.shared_on_site("primary", "/other/g1.qcow2"));
        assert!(!c.shared_on_site("secondary", "/srv/vm/g1.qcow2"));
    }

    #[test]
    fn bad_sections_name_the_key() {
        let host = "[[libvirt.host]]\nname = \"a1\"\nuri = \"qemu+tcp://h/system\"\n";
        for (text, says) in [
            ("[libvirt]\n".to_owned(), "at least one"),
            (
                format!("[libvirt]\ntimeout = \"soon\"\n{host}"),
                "libvirt.timeout",
            ),
            (format!("[libvirt]\n{host}{host}"), "another host"),
            (
                "[libvirt]\n[[libvirt.host]]\nname = \"a1\"\nuri = \"qemu+tls://h/system\"\n"
                    .into(),
                "qemu+tls",
            ),
            (format!("[libvirt]\n{host}ip = \"h\"\n"), "not an address"),
            (format!("[libvirt]\n{host}shared = [\"srv\"]\n"), "absolute"),
            (format!("[libvirt]\n{host}colour = \"red\"\n"), "colour"),
        ] {
            let e = parse(&text).expect_err(&text).to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
