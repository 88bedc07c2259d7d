//! The daemon's configuration file (TOML): backend, control intervals,
//! engine policy, API, journal. Errors name the file, the key and the line.

use dr_control::ControlConfig;
use dr_core::Policy;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod replication;
pub use replication::image_in;

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Which hypervisor the daemon drives.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded simulated datacenter: a scenario file gives its hosts,
    /// VMs and fault schedule (real time from the daemon's start).
    Sim {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// A simulated datacenter running as its own process (`drctl
    /// sim-server`), which outlives the daemon as a real hypervisor does.
    SimServer {
        /// Its address, `http://HOST:PORT`.
        url: String,
    },
    /// KVM hosts, one libvirt daemon each.
    Libvirt {
        /// How to reach them.
        config: dr_libvirt::LibvirtConfig,
    },
    /// A vCenter.
    Vsphere {
        /// How to reach it.
        config: dr_vsphere::VsphereConfig,
        /// How often its whole inventory is read again.
        full_read_every: Duration,
    },
}

/// The HTTP API.
#[derive(Clone)]
pub struct ApiConfig {
    /// Where it listens (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// Bearer token required by mutating endpoints; `None`: they are refused.
    pub token: Option<String>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Everything the daemon runs with.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The backend.
    pub backend: Backend,
    /// The control loop's settings, policy included (reloadable).
    pub control: ControlConfig,
    /// The API (takes effect at start).
    pub api: ApiConfig,
    /// The recovery journal's file.
    pub journal: PathBuf,
    /// The snapshot schedulers (reloadable).
    pub snapshots: crate::snapshots::SnapshotConfig,
    /// The replication manager (takes effect at start); `None`: off.
    pub replication: Option<crate::replication::ReplicationConfig>,
    /// Where the hosts' vmdr agents report (takes effect at start); `None`:
    /// no agents.
    pub agents: Option<AgentsConfig>,
    /// The hosts' fence devices (`[[fence.device]]`, reloadable).
    pub fence: Vec<dr_fence::DeviceConfig>,
    /// This daemon as a node of a cluster on etcd (takes effect at start);
    /// `None`: a single daemon with its own journal file.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// The hosts' agents: the listener they heartbeat to, their token, and
/// where they write their storage heartbeats.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentsConfig {
    /// Where agents post their heartbeats.
    pub listen: SocketAddr,
    /// Their bearer token (never logged).
    pub token: String,
    /// The directory on the hosts' shared storage their records are in.
    pub storage_dir: Option<PathBuf>,
}

impl std::fmt::Debug for AgentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentsConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("storage_dir", &self.storage_dir)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    backend: Spanned<String>,
    sim: Option<RawSim>,
    vsphere: Option<dr_vsphere::config::VsphereSection>,
    libvirt: Option<dr_libvirt::LibvirtSection>,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    snapshots: RawSnapshots,
    replication: Option<replication::RawReplication>,
    agents: Option<RawAgents>,
    #[serde(default)]
    fence: RawFence,
    cluster: Option<crate::cluster::RawCluster>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFence {
    #[serde(default)]
    device: Vec<Spanned<dr_fence::device::DeviceSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    listen: Spanned<String>,
    token_file: String,
    storage_dir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSnapshots {
    vm_interval: Option<Spanned<String>>,
    vm_keep: Option<usize>,
    host_interval: Option<Spanned<String>>,
    host_keep: Option<usize>,
    concurrency: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    scenario: Option<String>,
    url: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    probe_interval: Option<Spanned<String>>,
    probe_timeout: Option<Spanned<String>>,
    inventory_interval: Option<Spanned<String>>,
    action_timeout: Option<Spanned<String>>,
    fence_timeout: Option<Spanned<String>>,
    fence_monitor_interval: Option<Spanned<String>>,
    action_retries: Option<u32>,
    retry_delay: Option<Spanned<String>>,
    event_lookback: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    token_file: Option<String>,
    token_env: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    path: Option<String>,
}

/// The `[agents]` section, or the line and message of what is wrong.
fn agents_config(
    a: RawAgents,
    base: &Path,
    text: &str,
) -> Result<AgentsConfig, (Option<usize>, String)> {
    let listen = a.listen.get_ref().parse().map_err(|e| {
        (
            Some(line_of(text, a.listen.span().start)),
            format!(
                "agents.listen = {:?}: {e} (expected ADDRESS:PORT)",
                a.listen.get_ref()
            ),
        )
    })?;
    let p = base.join(&a.token_file);
    let token = std::fs::read_to_string(&p)
        .map_err(|e| (None, format!("agents.token_file {}: {e}", p.display())))?
        .trim()
        .to_owned();
    if token.len() < 16 {
        return Err((
            None,
            "agents: the token must be at least 16 characters".into(),
        ));
    }
    Ok(AgentsConfig {
        listen,
        token,
        storage_dir: a.storage_dir.map(|d| base.join(d)),
    })
}

/// The key (`section.key`) on the line of `offset`, for an error the TOML
/// parser reports by position only.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let section = text[..start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl DaemonConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text`, the contents of `path` (relative paths in it are
    /// relative to the file's directory).
    pub fn parse(path: &Path, text: &str) -> Result<DaemonConfig, ConfigError> {
        let err = |line: Option<usize>, message: String| ConfigError {
            path: path.to_owned(),
            line,
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let mut message = e.message().trim().to_owned();
            if message.starts_with("invalid type: integer")
                && message.ends_with("expected a string")
            {
                // Durations are strings with a unit.
                message.push_str(" (a duration is written with its unit, as in \"5s\")");
            }
            match e.span().and_then(|s| key_at(text, s.start)) {
                Some(key) if !message.contains(&key) => err(line, format!("{key}: {message}")),
                _ => err(line, message),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let duration = |key: &str, v: &Option<Spanned<String>>, default: Duration| match v {
            None => Ok(default),
            Some(s) => dr_core::time::parse_duration(s.get_ref()).map_err(|e| {
                err(
                    Some(line_of(text, s.span().start)),
                    format!("control.{key}: {e}"),
                )
            }),
        };
        let d = ControlConfig::default();
        let control = ControlConfig {
            probe_interval: duration(
                "probe_interval",
                &raw.control.probe_interval,
                d.probe_interval,
            )?,
            probe_timeout: duration("probe_timeout", &raw.control.probe_timeout, d.probe_timeout)?,
            inventory_interval: duration(
                "inventory_interval",
                &raw.control.inventory_interval,
                d.inventory_interval,
            )?,
            action_timeout: duration(
                "action_timeout",
                &raw.control.action_timeout,
                d.action_timeout,
            )?,
            fence_timeout: duration("fence_timeout", &raw.control.fence_timeout, d.fence_timeout)?,
            fence_monitor_interval: duration(
                "fence_monitor_interval",
                &raw.control.fence_monitor_interval,
                d.fence_monitor_interval,
            )?,
            action_retries: raw.control.action_retries.unwrap_or(d.action_retries),
            retry_delay: duration("retry_delay", &raw.control.retry_delay, d.retry_delay)?,
            event_lookback: duration(
                "event_lookback",
                &raw.control.event_lookback,
                d.event_lookback,
            )?,
            policy: raw.policy,
        };
        let control_line =
            |v: &Option<Spanned<String>>| v.as_ref().map(|s| line_of(text, s.span().start));
        if control.probe_interval.is_zero() {
            return Err(err(
                control_line(&raw.control.probe_interval),
                "control.probe_interval must be above zero".into(),
            ));
        }
        if control.probe_timeout > control.probe_interval {
            return Err(err(
                control_line(&raw.control.probe_timeout),
                format!(
                    "control.probe_timeout ({:?}) must not exceed control.probe_interval ({:?})",
                    control.probe_timeout, control.probe_interval
                ),
            ));
        }
        dr_core::Engine::new(control.policy.clone())
            // Its errors name the key (`policy.KEY: …`).
            .map_err(|e| err(None, e.to_string()))?;

        let backend = match raw.backend.get_ref().as_str() {
            "sim" => {
                let sim = raw.sim.ok_or_else(|| {
                    err(
                        Some(line_of(text, raw.backend.span().start)),
                        "backend = \"sim\" needs a [sim] section with scenario = FILE".into(),
                    )
                })?;
                match (sim.scenario, sim.url) {
                    (Some(scenario), None) => Backend::Sim {
                        scenario: base.join(scenario),
                    },
                    (None, Some(url)) => {
                        let line = Some(line_of(text, url.span().start));
                        let url = url.into_inner();
                        if !url.starts_with("http://") {
                            return Err(err(
                                line,
                                format!("sim.url = {url:?}: expected http://HOST:PORT"),
                            ));
                        }
                        Backend::SimServer { url }
                    }
                    _ => {
                        return Err(err(
                            Some(line_of(text, raw.backend.span().start)),
                            "[sim] needs exactly one of scenario = FILE (embedded) or url = \"http://HOST:PORT\" (drctl sim-server)".into(),
                        ))
                    }
                }
            }
            "vsphere" => {
                let section = raw.vsphere.ok_or_else(|| {
                    err(
                        Some(line_of(text, raw.backend.span().start)),
                        "backend = \"vsphere\" needs a [vsphere] section".into(),
                    )
                })?;
                let full_read_every = section.full_read_every().map_err(|e| err(None, e))?;
                let mut v = section
                    .into_config()
                    .map_err(|e| err(None, format!("vsphere: {e}")))?;
                // Files named in the configuration are relative to it.
                if let dr_vsphere::PasswordSource::File(f) = &mut v.password {
                    *f = base.join(&*f);
                }
                if let dr_vsphere::TlsMode::CaFile(f) = &mut v.tls {
                    *f = base.join(&*f);
                }
                Backend::Vsphere {
                    config: v,
                    full_read_every,
                }
            }
            "libvirt" => {
                let section = raw.libvirt.ok_or_else(|| {
                    err(
                        Some(line_of(text, raw.backend.span().start)),
                        "backend = \"libvirt\" needs a [libvirt] section with at least one [[libvirt.host]]".into(),
                    )
                })?;
                Backend::Libvirt {
                    config: section
                        .into_config()
                        .map_err(|e| err(None, e.to_string()))?,
                }
            }
            other => {
                return Err(err(
                    Some(line_of(text, raw.backend.span().start)),
                    format!("backend = {other:?}: expected \"sim\", \"vsphere\" or \"libvirt\""),
                ))
            }
        };

        let listen = match &raw.api.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 7070)),
            Some(s) => s.get_ref().parse().map_err(|e| {
                err(
                    Some(line_of(text, s.span().start)),
                    format!(
                        "api.listen = {:?}: {e} (expected ADDRESS:PORT)",
                        s.get_ref()
                    ),
                )
            })?,
        };
        let token = match (&raw.api.token_file, &raw.api.token_env) {
            (Some(_), Some(_)) => {
                return Err(err(
                    None,
                    "api: give token_file or token_env, not both".into(),
                ))
            }
            (Some(f), None) => {
                let p = base.join(f);
                let t = std::fs::read_to_string(&p)
                    .map_err(|e| err(None, format!("api.token_file {}: {e}", p.display())))?;
                Some(t.trim().to_owned())
            }
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| err(None, format!("api.token_env: ${var} is not set")))?,
            ),
            (None, None) => None,
        };
        if token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(err(
                None,
                "api: the token must be at least 16 characters".into(),
            ));
        }
        let journal = base.join(
            raw.journal
                .path
                .unwrap_or_else(|| "drd-journal.redb".into()),
        );
        let every = |key: &str, v: &Option<Spanned<String>>| match v {
            None => Ok(None),
            Some(s) => dr_core::time::parse_duration(s.get_ref())
                .map_err(|e| {
                    err(
                        Some(line_of(text, s.span().start)),
                        format!("snapshots.{key}: {e}"),
                    )
                })
                .and_then(|d| {
                    if d < Duration::from_secs(1) {
                        Err(err(
                            Some(line_of(text, s.span().start)),
                            format!("snapshots.{key} must be at least 1s"),
                        ))
                    } else {
                        Ok(Some(d))
                    }
                }),
        };
        let d = crate::snapshots::SnapshotConfig::default();
        let keep = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(err(None, format!("snapshots.{key} must be at least 1"))),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let snapshots = crate::snapshots::SnapshotConfig {
            vms: crate::snapshots::Schedule {
                every: every("vm_interval", &raw.snapshots.vm_interval)?,
                keep: keep("vm_keep", raw.snapshots.vm_keep, d.vms.keep)?,
            },
            hosts: crate::snapshots::Schedule {
                every: every("host_interval", &raw.snapshots.host_interval)?,
                keep: keep("host_keep", raw.snapshots.host_keep, d.hosts.keep)?,
            },
            concurrency: keep("concurrency", raw.snapshots.concurrency, d.concurrency)?,
        };
        let replication = match raw.replication {
            None => None,
            Some(r) => {
                let ctx = replication::Ctx {
                    text,
                    path,
                    base,
                    backend: &backend,
                };
                Some(replication::parse(&ctx, r)?)
            }
        };
        let agents = match raw.agents {
            None => None,
            Some(a) => Some(agents_config(a, base, text).map_err(|(line, m)| err(line, m))?),
        };
        let mut fence = Vec::new();
        for d in raw.fence.device {
            let line = Some(line_of(text, d.span().start));
            let mut spec = d.into_inner();
            spec.password_file = spec.password_file.map(|f| base.join(f));
            let device = spec.resolve().map_err(|e| err(line, e.to_string()))?;
            if fence
                .iter()
                .any(|f: &dr_fence::DeviceConfig| f.host == device.host)
            {
                return Err(err(
                    line,
                    dr_fence::ConfigError::DuplicateHost(device.host).to_string(),
                ));
            }
            fence.push(device);
        }
        let cluster = match raw.cluster {
            None => None,
            Some(c) => Some(
                crate::cluster::config(c, base, |offset| line_of(text, offset))
                    .map_err(|(line, m)| err(line, m))?,
            ),
        };
        if cluster.is_some() {
            if let Backend::Sim { .. } = backend {
                return Err(err(
                    Some(line_of(text, raw.backend.span().start)),
                    "[cluster] with the embedded simulation: each node would have a datacenter of its own; run drctl sim-server and set sim.url".into(),
                ));
            }
            if replication.as_ref().is_some_and(|r| !r.vms.is_empty()) {
                return Err(err(
                    None,
                    "[cluster] with [[replication.vm]]: shipping a VM's disks from one node of a cluster is not supported yet (receiving replicas is)".into(),
                ));
            }
        }
        Ok(DaemonConfig {
            path: path.to_owned(),
            backend,
            control,
            api: ApiConfig { listen, token },
            journal,
            snapshots,
            replication,
            agents,
            fence,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::parse(Path::new("/etc/vmdr/drd.toml"), text)
    }

    #[test]
    fn a_minimal_sim_configuration_gets_defaults() {
        let c = parse("backend = \"sim\"\n[sim]\nscenario = \"dc.toml\"\n").expect("valid");
        assert!(
            matches!(c.backend, Backend::Sim { ref scenario } if scenario == Path::new("/etc/vmdr/dc.toml"))
        );
        assert_eq!(c.control, ControlConfig::default());
        assert_eq!(c.api.listen, SocketAddr::from(([127, 0, 0, 1], 7070)));
        assert_eq!(c.journal, Path::new("/etc/vmdr/drd-journal.redb"));
    }

    #[test]
    fn a_cluster_section_is_checked_and_names_its_line() {
        let base = "backend = \"sim\"\n[sim]\nurl = \"http://127.0.0.1:7080\"\n";
        let c = parse(&format!(
            "{base}[cluster]\nnode = \"a\"\nendpoints = [\"http://127.0.0.1:2379\"]\npassword_file = \"pw\"\nuser = \"drd\"\n"
        ))
        .expect("valid");
        let cl = c.cluster.expect("cluster");
        assert_eq!((cl.node.as_str(), cl.prefix.as_str()), ("a", "/vmdr"));
        assert_eq!(cl.lease_ttl, Duration::from_secs(5));
        assert_eq!(cl.etcd.request_timeout, Duration::from_secs(1));
        assert_eq!(
            cl.etcd.user,
            Some((
                "drd".into(),
                dr_cluster::Secret::File("/etc/vmdr/pw".into())
            ))
        );
        let e = parse(&format!(
            "{base}[cluster]\nnode = \"a\"\nendpoints = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"1500ms\"\n"
        ))
        .expect_err("a TTL under 2 s");
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.starts_with("cluster.lease_ttl"), "{e}");
        let e = parse(&format!(
            "{base}[cluster]\nnode = \"a\"\nendpoints = [\"etcd:2379\"]\n"
        ))
        .expect_err("not a URL");
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("etcd:2379"), "{e}");
        let e = parse(&format!(
            "{base}[cluster]\nnode = \"a\"\nendpoints = [\"http://e:2379\"]\nrequest_timeout = \"3s\"\n"
        ))
        .expect_err("a timeout the lease cannot outlive");
        assert!(e.message.starts_with("cluster.request_timeout"), "{e}");
        let e = parse("backend = \"sim\"\n[sim]\nscenario = \"dc.toml\"\n[cluster]\nnode = \"a\"\nendpoints = [\"http://e:2379\"]\n")
            .expect_err("the embedded simulation in a cluster");
        assert!(e.message.contains("sim-server"), "{e}");
        let e = parse(&format!(
            "{base}[cluster]\nnode = \"a\"\nendpoints = [\"http://e:2379\"]\npassword_env = \"X\"\n"
        ))
        .expect_err("a password without a user");
        assert!(e.message.contains("cluster.user"), "{e}");
    }

    #[test]
    fn the_rpo_target_is_three_intervals_unless_set_and_a_bad_one_is_named() {
        std::env::set_var("VMDR_TEST_RPO_KEY", "a-key-of-sixteen-bytes");
        let text = |extra: &str| {
            format!("backend = \"sim\"\n[sim]\nscenario = \"x\"\n[replication]\nkey_env = \"VMDR_TEST_RPO_KEY\"\ninterval = \"2s\"\n{extra}")
        };
        let c = parse(&text("")).expect("valid");
        let r = c.replication.expect("replication");
        assert_eq!(r.rpo_target, Duration::from_secs(6));
        let c = parse(&text("rpo_target = \"90s\"\n")).expect("valid");
        assert_eq!(
            c.replication.expect("replication").rpo_target,
            Duration::from_secs(90)
        );
        let e = parse(&text("rpo_target = \"soon\"\n")).expect_err("bad duration");
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.starts_with("replication.rpo_target: "), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = parse(
            "backend = \"sim\"\n[sim]\nscenario = \"x\"\n[control]\nprobe_interval = \"fast\"\n",
        )
        .expect_err("bad duration");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().contains("control.probe_interval"), "{e}");
        let e = parse(
            "backend = \"sim\"\n[sim]\nscenario = \"x\"\n[control]\nprobe_intervall = \"1s\"\n",
        )
        .expect_err("unknown key");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().contains("probe_intervall"), "{e}");
        let e =
            parse("backend = \"sim\"\n[sim]\nscenario = \"x\"\n[control]\nprobe_interval = 5\n")
                .expect_err("a number for a duration");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(
            e.message.starts_with("control.probe_interval: ") && e.message.contains("\"5s\""),
            "{e}"
        );
        let e =
            parse("backend = \"sim\"\n[sim]\nscenario = \"x\"\n[policy]\nfailure_threshold = 0\n")
                .expect_err("out of range");
        assert!(
            e.message.starts_with("policy.failure_threshold") && !e.message.contains("policy: "),
            "said once: {e}"
        );
        let e = parse(
            "backend = \"sim\"\n[sim]\nscenario = \"x\"\n[agents]\nlisten = \"gw:7171\"\ntoken_file = \"t\"\n",
        )
        .expect_err("bad agents.listen");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.starts_with("agents.listen = \"gw:7171\""), "{e}");
        let e = parse(
            "backend = \"sim\"\n[sim]\nscenario = \"x\"\n[agents]\nlisten = \"127.0.0.1:7171\"\ntoken_file = \"/nonexistent/t\"\n",
        )
        .expect_err("no token file");
        assert!(
            e.message.starts_with("agents.token_file /nonexistent/t"),
            "{e}"
        );
        let e = parse("backend = \"xen\"\n").expect_err("unknown backend");
        assert_eq!(e.line, Some(1));
        let e = parse("backend = \"sim\"\n").expect_err("no sim section");
        assert!(e.to_string().contains("[sim]"), "{e}");
        let e = parse("backend = \"sim\"\n[sim]\nscenario = \"x\"\n[control]\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\n")
            .expect_err("timeout over interval");
        assert_eq!(e.line, Some(6), "{e}");
        let e =
            parse("backend = \"sim\"\n[sim]\nscenario = \"x\"\n[api]\nlisten = \"localhost\"\n")
                .expect_err("bad listen");
        assert!(e.to_string().contains("api.listen"), "{e}");
    }

    #[test]
    fn fence_devices_are_checked_and_name_their_line() {
        let base = "backend = \"sim\"\n[sim]\nscenario = \"x\"\n";
        let c = parse(&format!(
            "{base}[[fence.device]]\nhost = \"h1\"\nagent = \"/bin/sh\"\noptions = {{ ip = \"127.0.0.1\" }}\npassword_env = \"BMC_PW\"\ntimeout = \"20s\"\n"
        ))
        .expect("valid");
        assert_eq!(c.fence.len(), 1);
        assert_eq!(c.fence[0].host, "h1");
        assert_eq!(c.fence[0].run_timeout, std::time::Duration::from_secs(20));
        let e = parse(&format!(
            "{base}[[fence.device]]\nhost = \"h1\"\nagent = \"fence_nothing_like_it\"\n"
        ))
        .expect_err("no such agent");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().contains("fence_nothing_like_it"), "{e}");
        let e = parse(&format!(
            "{base}[[fence.device]]\nhost = \"h1\"\nagent = \"/bin/sh\"\noptions = {{ password = \"hunter2\" }}\n"
        ))
        .expect_err("a password in the options");
        assert!(e.to_string().contains("reserved"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse(&format!(
            "{base}[[fence.device]]\nhost = \"h1\"\nagent = \"/bin/sh\"\n[[fence.device]]\nhost = \"h1\"\nagent = \"/bin/sh\"\n"
        ))
        .expect_err("two devices for one host");
        assert_eq!(e.line, Some(7), "{e}");
    }
}
