//! Scenario files: a datacenter, a policy and a timeline of faults, in TOML.
//! The format is documented in `docs/scenarios.md`.

use crate::agent::AgentSpec;
use crate::fault::{Fault, FaultKind, FaultTarget};
use crate::hypervisor::Latencies;
use crate::random;
use crate::rng::Rng;
use crate::world::{FenceSpec, HostSpec, VmSpec};
use dr_control::ControlConfig;
use dr_core::model::Reassurance;
use dr_core::time::parse_duration;
use dr_core::{Policy, Timestamp};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// A scenario that cannot run, with the line it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// A scenario ready to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Seed of every random draw (probe loss, random faults).
    pub seed: u64,
    /// Virtual time the run lasts.
    pub duration: Duration,
    /// The control loop's settings, policy included.
    pub control: ControlConfig,
    /// How long simulated operations take.
    pub latencies: Latencies,
    /// Hosts.
    pub hosts: Vec<HostSpec>,
    /// VMs.
    pub vms: Vec<VmSpec>,
    /// Faults, in time order.
    pub faults: Vec<Fault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    seed: Option<u64>,
    duration: Spanned<String>,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    latency: RawLatency,
    #[serde(default)]
    site: Vec<RawSite>,
    #[serde(default)]
    host: Vec<RawHost>,
    #[serde(default)]
    vm: Vec<RawVm>,
    #[serde(default)]
    fault: Vec<RawFault>,
    random: Option<RawRandom>,
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    read: Option<Spanned<String>>,
    power: Option<Spanned<String>>,
    revert: Option<Spanned<String>>,
    restore_snapshot: Option<Spanned<String>>,
    restore_replica: Option<Spanned<String>>,
    migrate: Option<Spanned<String>>,
    recover_host: Option<Spanned<String>>,
    add_host: Option<Spanned<String>>,
    snapshot: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Spanned<String>,
    site: Option<Spanned<String>>,
    ip: Option<Spanned<String>>,
    cpu_mhz: Option<u32>,
    memory_mb: Option<u64>,
    #[serde(default)]
    snapshot: bool,
    #[serde(default)]
    standby: bool,
    agent: Option<Spanned<RawAgent>>,
    fence: Option<Spanned<RawFence>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFence {
    delay: Option<Spanned<String>>,
    failures: Option<Spanned<RawCount>>,
    #[serde(default)]
    hangs: bool,
}

/// A count, or a word for "unbounded".
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCount {
    Count(u32),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    isolation_timeout: Option<Spanned<String>>,
    reassurance: Option<Spanned<String>>,
    storage_heartbeat: Option<bool>,
    watchdog: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Spanned<String>,
    ip: Spanned<String>,
    host: Spanned<String>,
    cpu_mhz: Option<u32>,
    cpu_reservation_mhz: Option<u32>,
    memory_mb: Option<u64>,
    #[serde(default)]
    memory_overhead_mb: u64,
    #[serde(default)]
    snapshot: bool,
    #[serde(default)]
    replica: bool,
    tools: Option<bool>,
    powered_on: Option<bool>,
    created_at: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: Spanned<String>,
    kind: Spanned<String>,
    vm: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    loss: Option<Spanned<f64>>,
    count: Option<u32>,
    period: Option<Spanned<String>>,
    recoverable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRandom {
    faults: u32,
    start: Option<Spanned<String>>,
    window: Spanned<String>,
}

/// Turns byte spans into line numbers.
struct Src<'a>(&'a str);

impl Src<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(&self, span: Range<usize>, message: impl Into<String>) -> Result<T, ScenarioError> {
        Err(ScenarioError {
            line: Some(self.line(span)),
            message: message.into(),
        })
    }

    fn duration(&self, field: &str, v: &Spanned<String>) -> Result<Duration, ScenarioError> {
        parse_duration(v.get_ref()).or_else(|e| self.err(v.span(), format!("{field}: {e}")))
    }

    fn opt_duration(
        &self,
        field: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ScenarioError> {
        v.as_ref().map_or(Ok(default), |v| self.duration(field, v))
    }

    fn ip(&self, field: &str, v: &Spanned<String>) -> Result<IpAddr, ScenarioError> {
        v.get_ref().parse().or_else(|_| {
            self.err(
                v.span(),
                format!("{field}: {:?} is not an IP address", v.get_ref()),
            )
        })
    }
}

impl Scenario {
    /// Parses and checks a scenario file's text. Every error names its line.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let src = Src(text);
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| src.line(s));
            // Quote the offending line: the parser's message alone often
            // does not name the key.
            let quoted = line
                .and_then(|l| text.lines().nth(l - 1))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map_or(String::new(), |l| format!(" (in `{l}`)"));
            ScenarioError {
                line,
                message: format!("{}{quoted}", e.message().trim()),
            }
        })?;
        raw.into_scenario(&src)
    }
}

impl RawScenario {
    fn into_scenario(self, src: &Src<'_>) -> Result<Scenario, ScenarioError> {
        let duration = src.duration("duration", &self.duration)?;
        if duration.is_zero() {
            return src.err(self.duration.span(), "duration must be more than zero");
        }
        let d = ControlConfig::default();
        let c = &self.control;
        let control = ControlConfig {
            policy: self.policy,
            probe_interval: src.opt_duration(
                "probe_interval",
                &c.probe_interval,
                d.probe_interval,
            )?,
            probe_timeout: src.opt_duration("probe_timeout", &c.probe_timeout, d.probe_timeout)?,
            inventory_interval: src.opt_duration(
                "inventory_interval",
                &c.inventory_interval,
                d.inventory_interval,
            )?,
            action_timeout: src.opt_duration(
                "action_timeout",
                &c.action_timeout,
                Duration::from_secs(120),
            )?,
            fence_timeout: src.opt_duration("fence_timeout", &c.fence_timeout, d.fence_timeout)?,
            fence_monitor_interval: src.opt_duration(
                "fence_monitor_interval",
                &c.fence_monitor_interval,
                d.fence_monitor_interval,
            )?,
            action_retries: c.action_retries.unwrap_or(d.action_retries),
            retry_delay: src.opt_duration("retry_delay", &c.retry_delay, d.retry_delay)?,
            event_lookback: d.event_lookback,
        };
        if control.probe_interval.is_zero() {
            let span = c.probe_interval.as_ref().map_or(0..0, Spanned::span);
            return src.err(span, "probe_interval must be more than zero");
        }
        if let Err(e) = control.policy.validate() {
            return Err(ScenarioError {
                line: None,
                message: e.to_string(),
            });
        }
        let l = &self.latency;
        let dl = Latencies::default();
        let latencies = Latencies {
            read: src.opt_duration("read", &l.read, dl.read)?,
            power: src.opt_duration("power", &l.power, dl.power)?,
            revert: src.opt_duration("revert", &l.revert, dl.revert)?,
            restore_snapshot: src.opt_duration(
                "restore_snapshot",
                &l.restore_snapshot,
                dl.restore_snapshot,
            )?,
            restore_replica: src.opt_duration(
                "restore_replica",
                &l.restore_replica,
                dl.restore_replica,
            )?,
            migrate: src.opt_duration("migrate", &l.migrate, dl.migrate)?,
            recover_host: src.opt_duration("recover_host", &l.recover_host, dl.recover_host)?,
            add_host: src.opt_duration("add_host", &l.add_host, dl.add_host)?,
            snapshot: src.opt_duration("snapshot", &l.snapshot, dl.snapshot)?,
        };

        let mut sites = HashSet::new();
        for s in &self.site {
            if !sites.insert(s.name.get_ref().clone()) {
                return src.err(
                    s.name.span(),
                    format!("duplicate site {:?}", s.name.get_ref()),
                );
            }
        }
        if self.host.is_empty() {
            return Err(ScenarioError {
                line: None,
                message: "no [[host]]: a scenario needs at least one host".into(),
            });
        }
        let mut ips: HashMap<IpAddr, String> = HashMap::new();
        let mut claim_ip =
            |ip: IpAddr, owner: &str, span: Range<usize>| -> Result<(), ScenarioError> {
                if let Some(other) = ips.insert(ip, owner.to_owned()) {
                    return src.err(
                        span,
                        format!("address {ip} of {owner:?} is already used by {other:?}"),
                    );
                }
                Ok(())
            };
        let mut hosts: Vec<HostSpec> = Vec::new();
        let mut host_spans: HashMap<String, usize> = HashMap::new();
        for h in &self.host {
            let name = h.name.get_ref();
            if name.is_empty() {
                return src.err(h.name.span(), "host name is empty");
            }
            if host_spans.insert(name.clone(), hosts.len()).is_some() {
                return src.err(h.name.span(), format!("duplicate host {name:?}"));
            }
            let site = match &h.site {
                Some(s) if !sites.is_empty() && !sites.contains(s.get_ref()) => {
                    return src.err(
                        s.span(),
                        format!(
                            "host {name:?}: unknown site {:?} (declare it with [[site]])",
                            s.get_ref()
                        ),
                    );
                }
                Some(s) => s.get_ref().clone(),
                None => self
                    .site
                    .first()
                    .map_or_else(|| "primary".to_owned(), |s| s.name.get_ref().clone()),
            };
            let ip = match &h.ip {
                Some(ip) => {
                    let addr = src.ip("ip", ip)?;
                    claim_ip(addr, name, ip.span())?;
                    Some(addr)
                }
                None => None,
            };
            let agent = match &h.agent {
                Some(a) => Some(agent_spec(src, name, a)?),
                None => None,
            };
            let fence = match &h.fence {
                Some(f) => Some(fence_spec(src, name, f.get_ref())?),
                None => None,
            };
            hosts.push(HostSpec {
                name: name.clone(),
                site,
                ip,
                cpu_mhz: h.cpu_mhz.unwrap_or(40_000),
                memory_mb: h.memory_mb.unwrap_or(65_536),
                snapshot: h.snapshot,
                standby: h.standby,
                agent,
                fence,
            });
        }
        let mut vms: Vec<VmSpec> = Vec::new();
        let mut vm_names = HashSet::new();
        let mut used: HashMap<String, u64> = HashMap::new();
        for v in &self.vm {
            let name = v.name.get_ref();
            if name.is_empty() {
                return src.err(v.name.span(), "vm name is empty");
            }
            if !vm_names.insert(name.clone()) {
                return src.err(v.name.span(), format!("duplicate vm {name:?}"));
            }
            let Some(&hi) = host_spans.get(v.host.get_ref()) else {
                return src.err(
                    v.host.span(),
                    format!("vm {name:?}: unknown host {:?}", v.host.get_ref()),
                );
            };
            if hosts[hi].standby {
                return src.err(
                    v.host.span(),
                    format!(
                        "vm {name:?}: host {:?} is a standby host and runs nothing yet",
                        v.host.get_ref()
                    ),
                );
            }
            let ip = src.ip("ip", &v.ip)?;
            claim_ip(ip, name, v.ip.span())?;
            let spec = VmSpec {
                name: name.clone(),
                ip,
                host: v.host.get_ref().clone(),
                cpu_mhz: v.cpu_mhz.unwrap_or(2_000),
                cpu_reservation_mhz: v.cpu_reservation_mhz.unwrap_or(0),
                memory_mb: v.memory_mb.unwrap_or(4_096),
                memory_overhead_mb: v.memory_overhead_mb,
                snapshot: v.snapshot,
                replica: v.replica,
                tools: v.tools.unwrap_or(true),
                powered_on: v.powered_on.unwrap_or(true),
                created_at: match &v.created_at {
                    Some(c) => Some(Timestamp::ZERO.saturating_add(src.duration("created_at", c)?)),
                    None => None,
                },
            };
            if spec.powered_on {
                let u = used.entry(spec.host.clone()).or_default();
                *u += spec.memory_mb;
                if *u > hosts[hi].memory_mb {
                    return src.err(
                        v.name.span(),
                        format!(
                            "vm {name:?}: host {:?} has only {} MiB of memory for its running VMs",
                            spec.host, hosts[hi].memory_mb
                        ),
                    );
                }
            }
            vms.push(spec);
        }

        let end = Timestamp::ZERO.saturating_add(duration);
        let mut faults = Vec::new();
        for (spec, raw) in vms.iter().zip(&self.vm) {
            if let Some(at) = spec.created_at {
                if at > end {
                    let span = raw.created_at.as_ref().map_or(0..0, Spanned::span);
                    return src.err(
                        span,
                        format!(
                            "vm {:?} is created after the end of the scenario",
                            spec.name
                        ),
                    );
                }
                faults.push(Fault {
                    at,
                    kind: FaultKind::VmCreated,
                    target: FaultTarget::Vm(spec.name.clone()),
                });
            }
        }
        let agents: Vec<bool> = hosts.iter().map(|h| h.agent.is_some()).collect();
        for f in &self.fault {
            parse_fault(src, f, (&host_spans, &agents), &vm_names, end, &mut faults)?;
        }
        let seed = self.seed.unwrap_or(1);
        if let Some(r) = &self.random {
            let start = src.opt_duration("start", &r.start, Duration::from_secs(30))?;
            let window = src.duration("window", &r.window)?;
            if start + window > duration {
                return src.err(
                    r.window.span(),
                    "random faults: start + window is past the scenario's duration",
                );
            }
            let mut rng = Rng::new(seed ^ 0x5EED_FA17);
            faults.extend(random::faults(
                &mut rng, &hosts, &vms, start, window, r.faults,
            ));
        }
        faults.sort_by_key(|f| f.at);
        Ok(Scenario {
            name: self.name.unwrap_or_else(|| "scenario".to_owned()),
            seed,
            duration,
            control,
            latencies,
            hosts,
            vms,
            faults,
        })
    }
}

/// A host's `agent = { ... }`: every field optional, the standard agent
/// (`AgentSpec::standard`) otherwise.
fn agent_spec(
    src: &Src<'_>,
    host: &str,
    raw: &Spanned<RawAgent>,
) -> Result<AgentSpec, ScenarioError> {
    let a = raw.get_ref();
    let mut spec = AgentSpec::standard();
    if let Some(t) = &a.isolation_timeout {
        spec.isolation_timeout = src.duration("isolation_timeout", t)?;
        if spec.isolation_timeout.is_zero() {
            return src.err(
                t.span(),
                format!("host {host:?}: isolation_timeout must be more than zero"),
            );
        }
    }
    if let Some(r) = &a.reassurance {
        spec.reassurance = match r.get_ref().as_str() {
            "none" => Reassurance::None,
            "gateway" => Reassurance::Gateway,
            "gateway_and_storage" => Reassurance::GatewayAndStorage,
            other => {
                return src.err(
                    r.span(),
                    format!(
                        "host {host:?}: unknown reassurance {other:?}; known: none, gateway, \
                         gateway_and_storage"
                    ),
                )
            }
        };
    }
    spec.storage_heartbeat = a
        .storage_heartbeat
        .unwrap_or(spec.reassurance == Reassurance::GatewayAndStorage);
    if spec.reassurance == Reassurance::GatewayAndStorage && !spec.storage_heartbeat {
        return src.err(
            raw.span(),
            format!(
                "host {host:?}: reassurance \"gateway_and_storage\" needs storage_heartbeat = true"
            ),
        );
    }
    spec.watchdog = a.watchdog.unwrap_or(spec.watchdog);
    Ok(spec)
}

/// A host's `fence = { ... }`: a device that works (`FenceSpec::working`)
/// unless it says otherwise; `failures` is a count or `"always"`.
fn fence_spec(src: &Src<'_>, host: &str, f: &RawFence) -> Result<FenceSpec, ScenarioError> {
    let mut spec = FenceSpec::working();
    if let Some(d) = &f.delay {
        spec.delay = src.duration("delay", d)?;
    }
    if let Some(n) = &f.failures {
        spec.failures = match n.get_ref() {
            RawCount::Count(c) if *c < u32::MAX => *c,
            RawCount::Word(w) if w == "always" => u32::MAX,
            RawCount::Count(c) => {
                return src.err(
                    n.span(),
                    format!("host {host:?}: fence failures {c} is too many"),
                )
            }
            RawCount::Word(w) => {
                return src.err(
                    n.span(),
                    format!(
                        "host {host:?}: fence failures must be a count or \"always\", not {w:?}"
                    ),
                )
            }
        };
    }
    spec.hangs = f.hangs;
    Ok(spec)
}

const VM_FAULTS: &[&str] = &[
    "vm_crash",
    "vm_hang",
    "vm_user_poweroff",
    "vm_user_poweron",
    "restore_fails",
    "flap",
];
const HOST_FAULTS: &[&str] = &[
    "host_crash",
    "host_recover",
    "host_poweroff",
    "host_partition",
    "host_mgmt_loss",
    "host_heal",
    "host_isolation",
    "host_recovery_fails",
    "storage_loss",
    "storage_heal",
    "agent_crash",
    "agent_restart",
];

fn parse_fault(
    src: &Src<'_>,
    f: &RawFault,
    (hosts, agents): (&HashMap<String, usize>, &[bool]),
    vms: &HashSet<String>,
    end: Timestamp,
    out: &mut Vec<Fault>,
) -> Result<(), ScenarioError> {
    let kind = f.kind.get_ref().as_str();
    let at = Timestamp::ZERO.saturating_add(src.duration("at", &f.at)?);
    if at > end {
        return src.err(
            f.at.span(),
            format!("fault at {at} is after the end of the scenario ({end})"),
        );
    }
    let target = if kind == "packet_loss" {
        match (&f.vm, &f.host) {
            (Some(_), Some(h)) => {
                return src.err(h.span(), "packet_loss: give vm or host, not both")
            }
            (Some(v), None) => FaultTarget::Vm(v.get_ref().clone()),
            (None, Some(h)) => FaultTarget::Host(h.get_ref().clone()),
            (None, None) => {
                return src.err(
                    f.kind.span(),
                    "packet_loss needs vm = \"...\" or host = \"...\"",
                )
            }
        }
    } else if VM_FAULTS.contains(&kind) {
        match &f.vm {
            Some(v) => FaultTarget::Vm(v.get_ref().clone()),
            None => return src.err(f.kind.span(), format!("{kind} needs vm = \"...\"")),
        }
    } else if HOST_FAULTS.contains(&kind) {
        match &f.host {
            Some(h) => FaultTarget::Host(h.get_ref().clone()),
            None => return src.err(f.kind.span(), format!("{kind} needs host = \"...\"")),
        }
    } else {
        let all: Vec<&str> = VM_FAULTS
            .iter()
            .chain(HOST_FAULTS)
            .copied()
            .chain(["packet_loss"])
            .collect();
        return src.err(
            f.kind.span(),
            format!("unknown fault kind {kind:?}; known: {}", all.join(", ")),
        );
    };
    match &target {
        FaultTarget::Vm(name) if !vms.contains(name) => {
            let span = f.vm.as_ref().map_or(0..0, Spanned::span);
            return src.err(span, format!("{kind}: unknown vm {name:?}"));
        }
        FaultTarget::Host(name) if !hosts.contains_key(name) => {
            let span = f.host.as_ref().map_or(0..0, Spanned::span);
            return src.err(span, format!("{kind}: unknown host {name:?}"));
        }
        _ => {}
    }
    let lasting = |end_kind: FaultKind, out: &mut Vec<Fault>| -> Result<(), ScenarioError> {
        if let Some(d) = &f.duration {
            let d = src.duration("duration", d)?;
            out.push(Fault {
                at: at.saturating_add(d),
                kind: end_kind,
                target: target.clone(),
            });
        }
        Ok(())
    };
    let count = || -> Result<u32, ScenarioError> {
        match f.count {
            Some(0) | None => src.err(
                f.kind.span(),
                format!("{kind} needs count = N (at least 1)"),
            ),
            Some(n) => Ok(n),
        }
    };
    let fk = match kind {
        "vm_crash" => FaultKind::VmCrash,
        "vm_hang" => FaultKind::VmHang,
        "vm_user_poweroff" => FaultKind::VmUserPowerOff,
        "vm_user_poweron" => FaultKind::VmUserPowerOn,
        "restore_fails" => FaultKind::RestoreFails { count: count()? },
        "host_recovery_fails" => FaultKind::HostRecoveryFails { count: count()? },
        "host_crash" => FaultKind::HostCrash {
            recoverable: f.recoverable.unwrap_or(true),
        },
        "host_recover" => FaultKind::HostRecover,
        "host_poweroff" => FaultKind::HostPowerOff,
        "host_heal" => FaultKind::HostHeal,
        "host_partition" => {
            lasting(FaultKind::HostHeal, out)?;
            FaultKind::HostPartition
        }
        "host_mgmt_loss" => {
            lasting(FaultKind::HostHeal, out)?;
            FaultKind::HostMgmtLoss
        }
        "host_isolation" => {
            lasting(FaultKind::HostHeal, out)?;
            FaultKind::HostIsolation
        }
        "storage_loss" => {
            lasting(FaultKind::StorageHeal, out)?;
            FaultKind::StorageLoss
        }
        "storage_heal" => FaultKind::StorageHeal,
        "agent_crash" | "agent_restart" => {
            let h = match &target {
                FaultTarget::Host(h) => hosts.get(h).copied(),
                FaultTarget::Vm(_) => None,
            };
            if h.is_some_and(|h| !agents[h]) {
                return src.err(
                    f.kind.span(),
                    format!(
                        "{kind}: host {:?} runs no agent (give it agent = {{}})",
                        f.host.as_ref().map_or("", |h| h.get_ref().as_str())
                    ),
                );
            }
            if kind == "agent_restart" {
                FaultKind::AgentRestart
            } else {
                lasting(FaultKind::AgentRestart, out)?;
                FaultKind::AgentCrash
            }
        }
        "packet_loss" => {
            let Some(loss) = &f.loss else {
                return src.err(f.kind.span(), "packet_loss needs loss = 0.0..1.0");
            };
            if !(0.0..=1.0).contains(loss.get_ref()) {
                return src.err(
                    loss.span(),
                    format!("loss {} is not between 0 and 1", loss.get_ref()),
                );
            }
            lasting(FaultKind::PacketLoss { loss: 0.0 }, out)?;
            FaultKind::PacketLoss {
                loss: *loss.get_ref(),
            }
        }
        "flap" => {
            let Some(p) = &f.period else {
                return src.err(f.kind.span(), "flap needs period = \"30s\" and count = N");
            };
            let period = src.duration("period", p)?;
            if period.is_zero() {
                return src.err(p.span(), "period must be more than zero");
            }
            let n = count()?;
            for i in 1..n {
                out.push(Fault {
                    at: at.saturating_add(period * i),
                    kind: FaultKind::VmCrash,
                    target: target.clone(),
                });
            }
            FaultKind::VmCrash
        }
        _ => unreachable!("kinds were checked above"),
    };
    out.push(Fault {
        at,
        kind: fk,
        target,
    });
    Ok(())
}
