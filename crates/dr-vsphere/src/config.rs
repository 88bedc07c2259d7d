//! The `[vsphere]` section of vmdr's configuration file (TOML), shared by
//! `drctl inventory` and the daemon:
//!
//! ```toml
//! [vsphere]
//! url = "https://vcenter.example/sdk"
//! user = "vmdr@vsphere.local"
//! password_file = "/etc/vmdr/vcenter.pw"   # or password_env = "VMDR_VC_PASSWORD"
//! thumbprint = "AB:CD:…"                    # or ca_file = "…", or insecure = true
//! timeout = "30s"
//!
//! [[vsphere.spare]]                         # hosts vmdr may add to a cluster
//! name = "esx-spare.example"
//! cluster = "Prod"
//! user = "root"
//! password_file = "/etc/vmdr/esx.pw"
//! memory_mb = 262144
//! cpu_mhz = 64000
//! ```

use crate::session::{PasswordSource, SpareHost, VsphereConfig};
use crate::tls::TlsMode;
use crate::xml::Limits;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The `[vsphere]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsphereSection {
    url: String,
    user: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    thumbprint: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    timeout: Option<String>,
    full_read_interval: Option<String>,
    #[serde(default)]
    spare: Vec<SpareSection>,
}

/// One `[[vsphere.spare]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpareSection {
    name: String,
    cluster: String,
    user: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ssl_thumbprint: Option<String>,
    cpu_mhz: u32,
    memory_mb: u64,
}

fn password(
    what: &str,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<PasswordSource, String> {
    match (file, env) {
        (Some(f), None) => Ok(PasswordSource::File(f)),
        (None, Some(e)) => Ok(PasswordSource::Env(e)),
        (Some(_), Some(_)) => Err(format!(
            "{what}: give password_file or password_env, not both"
        )),
        (None, None) => Err(format!(
            "{what}: password_file or password_env is required (never the password itself)"
        )),
    }
}

impl VsphereSection {
    /// Checks the section and turns it into a connection configuration.
    /// How often the whole inventory is read again even though incremental
    /// updates come in (`full_read_interval`, default 5 minutes): a safety
    /// net for updates a server's views miss.
    pub fn full_read_every(&self) -> Result<Duration, String> {
        match &self.full_read_interval {
            None => Ok(Duration::from_secs(300)),
            Some(t) => dr_core::time::parse_duration(t)
                .map_err(|e| format!("vsphere.full_read_interval: {e}"))
                .and_then(|d| {
                    if d.is_zero() {
                        Err("vsphere.full_read_interval must be more than zero".into())
                    } else {
                        Ok(d)
                    }
                }),
        }
    }

    /// Errors name the key.
    pub fn into_config(self) -> Result<VsphereConfig, String> {
        let tls = match (self.thumbprint, self.ca_file, self.insecure) {
            (None, None, false) => TlsMode::Verify,
            (Some(t), None, false) => {
                crate::tls::parse_thumbprint(&t).map_err(|e| format!("vsphere.thumbprint: {e}"))?;
                TlsMode::Pinned(t)
            }
            (None, Some(f), false) => TlsMode::CaFile(f),
            (None, None, true) => TlsMode::Insecure,
            _ => return Err("vsphere: thumbprint, ca_file and insecure exclude each other".into()),
        };
        let timeout = match &self.timeout {
            Some(t) => {
                dr_core::time::parse_duration(t).map_err(|e| format!("vsphere.timeout: {e}"))?
            }
            None => Duration::from_secs(60),
        };
        if timeout.is_zero() {
            return Err("vsphere.timeout must be more than zero".into());
        }
        let mut spares = Vec::new();
        for s in self.spare {
            let what = format!("vsphere.spare {:?}", s.name);
            spares.push(SpareHost {
                password: password(&what, s.password_file, s.password_env)?,
                name: s.name,
                cluster: s.cluster,
                user: s.user,
                ssl_thumbprint: s.ssl_thumbprint,
                cpu_mhz: s.cpu_mhz,
                memory_mb: s.memory_mb,
            });
        }
        Ok(VsphereConfig {
            password: password("vsphere", self.password_file, self.password_env)?,
            url: self.url,
            user: self.user,
            tls,
            timeout,
            limits: Limits::default(),
            spares,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VsphereConfig, String> {
        toml::from_str::<VsphereSection>(text)
            .map_err(|e| e.to_string())?
            .into_config()
    }

    #[test]
    fn a_full_section() {
        let c = parse(
            "url = \"https://vc/sdk\"\nuser = \"u\"\npassword_env = \"PW\"\nthumbprint = \"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\"\ntimeout = \"5s\"\n[[spare]]\nname = \"s\"\ncluster = \"c\"\nuser = \"root\"\npassword_file = \"/p\"\ncpu_mhz = 1\nmemory_mb = 2\n",
        )
        .unwrap();
        assert!(matches!(c.tls, TlsMode::Pinned(_)));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.spares.len(), 1);
    }

    #[test]
    fn mistakes_are_named() {
        let base = "url = \"https://vc/sdk\"\nuser = \"u\"\n";
        assert!(parse(base)
            .unwrap_err()
            .contains("password_file or password_env is required"));
        assert!(parse(&format!("{base}password = \"x\"\n"))
            .unwrap_err()
            .contains("unknown field `password`"));
        assert!(parse(&format!(
            "{base}password_env = \"P\"\ninsecure = true\nca_file = \"/x\"\n"
        ))
        .unwrap_err()
        .contains("exclude each other"));
        assert!(parse(&format!(
            "{base}password_env = \"P\"\nthumbprint = \"AB\"\n"
        ))
        .unwrap_err()
        .contains("vsphere.thumbprint"));
        assert!(
            parse(&format!("{base}password_env = \"P\"\ntimeout = \"soon\"\n"))
                .unwrap_err()
                .contains("vsphere.timeout")
        );
    }
}
