//! The monitored inventory: names ↔ dense indices, last known IPs, and the
//! engine's facts for every host and VM.
//!
//! Indices are only stable between two syncs; everything that outlives a
//! planning pass (in-flight actions, events) uses names.

use crate::events::{ControlEvent, EventSink, Subject};
use dr_core::engine::{
    cpu_demand, ledger, Fencing, HaFacts, HostFacts, HostIdx, HostLoad, HostVerdict, OffCause,
    VmFacts,
};
use dr_core::model::{HostInfo, HostLink, Inventory, PowerState, VmInfo};
use dr_core::{Decision, Policy, Timestamp};
use std::collections::HashMap;
use std::net::IpAddr;

/// One monitored host.
#[derive(Clone, Debug)]
pub struct HostEntry {
    /// Its name.
    pub name: String,
    /// Its management address, if known.
    pub ip: Option<IpAddr>,
    /// Last probe outcome (`None` before the first probe).
    pub reachable: Option<bool>,
    /// What is known of whether its VMs can be running, as last reported
    /// (`evidence` observation: its kind, and what is missing when it is
    /// unproven): `None` before the first report.
    pub evidence: Option<(&'static str, &'static str)>,
    /// Its fence device's last monitor (a status read between incidents):
    /// `Ok` with the power it read, or why it failed. `None`: not yet run,
    /// or no device.
    pub fence_device: Option<Result<dr_core::ports::FencePower, String>>,
}

impl HostEntry {
    /// Its `evidence` as events and the API spell it.
    pub fn evidence_text(&self) -> Option<String> {
        self.evidence.map(evidence_text)
    }
}

/// `kind`, or `kind: missing` when something is missing.
fn evidence_text((kind, missing): (&str, &str)) -> String {
    if missing.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {missing}")
    }
}

/// One monitored VM.
#[derive(Clone, Debug)]
pub struct VmEntry {
    /// Its name.
    pub name: String,
    /// Its IP: the current one, or the last one seen (a stopped guest does
    /// not report its IP, but it is still the address to watch). `None`:
    /// never seen with one (off, no guest tools): judged by the
    /// hypervisor's view alone until it reports one.
    pub ip: Option<IpAddr>,
    /// Last probe outcome.
    pub reachable: Option<bool>,
    /// Last decision reported.
    pub last_decision: Option<Decision>,
    /// The hypervisor's memory overhead for it, MiB, as last reported
    /// (vSphere reports it only while the VM runs, and a VM to restore is
    /// not running): it counts on a restore target beside its memory.
    pub memory_overhead_mb: u64,
}

/// What a sync changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncDiff {
    /// New hosts.
    pub added_hosts: Vec<String>,
    /// Gone hosts.
    pub removed_hosts: Vec<String>,
    /// New VMs.
    pub added_vms: Vec<String>,
    /// Gone VMs.
    pub removed_vms: Vec<String>,
}

impl SyncDiff {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added_hosts.is_empty()
            && self.removed_hosts.is_empty()
            && self.added_vms.is_empty()
            && self.removed_vms.is_empty()
    }
}

/// The monitored hosts and VMs and their facts, in parallel vectors.
#[derive(Debug, Default)]
pub struct Registry {
    /// Host facts, indexed like `host_entries`.
    pub hosts: Vec<HostFacts>,
    /// Host names and probe state.
    pub host_entries: Vec<HostEntry>,
    host_index: HashMap<String, usize>,
    /// VM facts, indexed like `vm_entries`.
    pub vms: Vec<VmFacts>,
    /// VM names, IPs and probe state.
    pub vm_entries: Vec<VmEntry>,
    vm_index: HashMap<String, usize>,
    sites: HashMap<String, u16>,
    /// Addresses known from before (a daemon's previous run): a VM seen
    /// without an IP (powered off, no guest tools yet) is still monitored
    /// at its last known address.
    remembered: HashMap<String, IpAddr>,
    /// No recovery of these VMs before these times (see [`Registry::hold`]).
    held: HashMap<String, Timestamp>,
    /// VMs being restored, by name, and the host each is coming up on:
    /// until one runs there, its memory and CPU are still counted as taken
    /// on that host (see [`Registry::arriving`]).
    arriving: HashMap<String, String>,
}

impl Registry {
    /// `vm` is being restored onto `host` (`None`: that ended): its
    /// memory and CPU count as taken there from now on, not only once it
    /// runs. Before, a restore still under way at the next pass had taken
    /// nothing, and that pass admitted more onto the same host than it
    /// could hold.
    pub fn arriving(&mut self, vm: &str, host: Option<&str>) {
        match host {
            Some(h) => self.arriving.insert(vm.to_owned(), h.to_owned()),
            None => self.arriving.remove(vm),
        };
    }

    /// The name of site number `site`.
    pub fn site_name(&self, site: u16) -> Option<&str> {
        self.sites
            .iter()
            .find(|(_, &n)| n == site)
            .map(|(name, _)| name.as_str())
    }

    /// Some host of the inventory is on site `name`.
    pub fn has_site(&self, name: &str) -> bool {
        self.sites.contains_key(name)
    }

    /// Index of a host by name.
    pub fn host_idx(&self, name: &str) -> Option<usize> {
        self.host_index.get(name).copied()
    }

    /// Index of a VM by name.
    pub fn vm_idx(&self, name: &str) -> Option<usize> {
        self.vm_index.get(name).copied()
    }

    /// Name of a host by index.
    pub fn host_name(&self, idx: HostIdx) -> &str {
        self.host_entries
            .get(idx as usize)
            .map_or("?", |h| h.name.as_str())
    }

    fn site(&mut self, name: &str) -> u16 {
        let next = u16::try_from(self.sites.len()).unwrap_or(u16::MAX);
        *self.sites.entry(name.to_owned()).or_insert(next)
    }

    /// Remembers addresses from before (the paper's name → IP map, kept by
    /// the daemon across restarts), used for VMs seen without one.
    pub fn remember_ips(&mut self, ips: impl IntoIterator<Item = (String, IpAddr)>) {
        self.remembered.extend(ips);
    }

    /// No recovery of `vm` before `until`: a recovery of it that a previous
    /// run (or a cluster's previous leader) started may still be finishing
    /// in the hypervisor. Applies at once to a VM monitored now, else when
    /// it is first synced.
    pub fn hold(&mut self, vm: String, until: Timestamp) {
        if let Some(&i) = self.vm_index.get(&vm) {
            let f = &mut self.vms[i];
            f.retry_at = f.retry_at.max(until);
            return;
        }
        self.held.insert(vm, until);
    }

    /// Rebuilds the monitored set from `inv`, keeping every known object's
    /// facts by name. A VM never seen with an IP is monitored too, by the
    /// hypervisor's view: a VM found off after a crash (while no daemon
    /// ran, or during a recovery a killed daemon left) reports no address
    /// and must still come back.
    pub fn sync(&mut self, inv: &Inventory) -> SyncDiff {
        let mut diff = SyncDiff::default();
        let mut hosts = Vec::with_capacity(inv.hosts.len());
        let mut host_entries = Vec::with_capacity(inv.hosts.len());
        let mut host_index = HashMap::with_capacity(inv.hosts.len());
        for h in &inv.hosts {
            if host_index.contains_key(&h.name) {
                continue;
            }
            let site = self.site(&h.site);
            let (facts, entry) = match self.host_idx(&h.name) {
                Some(i) => (self.hosts[i], self.host_entries[i].clone()),
                None => {
                    diff.added_hosts.push(h.name.clone());
                    let mut f = HostFacts::connected(site, 0, 0);
                    f.link = h.link;
                    (
                        f,
                        HostEntry {
                            name: h.name.clone(),
                            ip: h.ip,
                            reachable: None,
                            evidence: None,
                            fence_device: None,
                        },
                    )
                }
            };
            host_index.insert(h.name.clone(), hosts.len());
            hosts.push(HostFacts { site, ..facts });
            host_entries.push(HostEntry {
                ip: h.ip.or(entry.ip),
                ..entry
            });
        }
        for e in &self.host_entries {
            if !host_index.contains_key(&e.name) {
                diff.removed_hosts.push(e.name.clone());
            }
        }

        let mut vms = Vec::with_capacity(inv.vms.len());
        let mut vm_entries = Vec::with_capacity(inv.vms.len());
        let mut vm_index = HashMap::with_capacity(inv.vms.len());
        for v in &inv.vms {
            if vm_index.contains_key(&v.name) {
                continue;
            }
            let Some(&host) = host_index.get(&v.host) else {
                continue;
            };
            // A drill's copy is ours, isolated and short-lived: watching it
            // could only lead to "recovering" it.
            if dr_core::model::is_drill_copy(&v.name) {
                continue;
            }
            let known = self.vm_idx(&v.name);
            let ip =
                v.ip.or(known.and_then(|i| self.vm_entries[i].ip))
                    .or_else(|| self.remembered.get(&v.name).copied());
            let (facts, entry) = match known {
                Some(i) => (self.vms[i], self.vm_entries[i].clone()),
                None => {
                    diff.added_vms.push(v.name.clone());
                    let mut f = VmFacts::running_on(0);
                    ledger::first_sight(&mut f, v.power);
                    f.heartbeat = v.heartbeat;
                    (
                        f,
                        VmEntry {
                            name: v.name.clone(),
                            ip,
                            reachable: None,
                            last_decision: None,
                            memory_overhead_mb: 0,
                        },
                    )
                }
            };
            let retry_at = match self.held.remove(&v.name) {
                Some(until) => facts.retry_at.max(until),
                None => facts.retry_at,
            };
            vm_index.insert(v.name.clone(), vms.len());
            vms.push(VmFacts {
                host: host as HostIdx,
                retry_at,
                ..facts
            });
            vm_entries.push(VmEntry { ip, ..entry });
        }
        for e in &self.vm_entries {
            if !vm_index.contains_key(&e.name) {
                diff.removed_vms.push(e.name.clone());
            }
        }
        self.hosts = hosts;
        self.host_entries = host_entries;
        self.host_index = host_index;
        self.vms = vms;
        self.vm_entries = vm_entries;
        self.vm_index = vm_index;
        diff
    }

    /// Applies the hypervisor's current view to the monitored objects:
    /// power, heartbeat, placement, capacity, load, protection. Reports
    /// changes.
    ///
    /// CPU is counted as restores admit it (`cpu_demand` at the host's
    /// site's overcommit: the reservation, or nominal CPU over the
    /// overcommit), on the VMs running on a host and for each VM alike;
    /// memory as configured, plus the hypervisor's overhead where the
    /// backend reports one.
    pub fn refresh(
        &mut self,
        inv: &Inventory,
        policy: &Policy,
        now: Timestamp,
        sink: &dyn EventSink,
    ) {
        let overcommit: Vec<u16> = (0..self.hosts.len())
            .map(|h| {
                inv.host(&self.host_entries[h].name)
                    .map_or(policy.cpu_overcommit, |i| policy.cpu_overcommit_of(&i.site))
            })
            .collect();
        let mut used_mem = vec![0u64; self.hosts.len()];
        let mut used_cpu = vec![0u64; self.hosts.len()];
        // What is on its way to a host and not yet in its usage figures.
        let mut arriving_mem = vec![0u64; self.hosts.len()];
        let mut arriving_cpu = vec![0u64; self.hosts.len()];
        for v in &inv.vms {
            let memory = v.memory_mb + self.overhead_of(v);
            let running = (v.power == PowerState::On).then_some(v.host.as_str());
            // A VM on its way to a host takes its room there already (once
            // it runs there, it is counted as running, once).
            let coming = self
                .arriving
                .get(&v.name)
                .map(String::as_str)
                .filter(|&t| running != Some(t));
            for host in [running, coming].into_iter().flatten() {
                if let Some(h) = self.host_idx(host) {
                    let cpu = cpu_demand(v.cpu_mhz, v.cpu_reservation_mhz, overcommit[h]);
                    used_mem[h] += memory;
                    used_cpu[h] += u64::from(cpu);
                    if Some(host) == coming {
                        arriving_mem[h] += memory;
                        arriving_cpu[h] += u64::from(cpu);
                    }
                }
            }
        }
        for h in &inv.hosts {
            let Some(i) = self.host_idx(&h.name) else {
                continue;
            };
            let f = &mut self.hosts[i];
            f.free_memory_mb = h.memory_mb.saturating_sub(used_mem[i]);
            f.free_cpu_mhz =
                u32::try_from(u64::from(h.cpu_mhz).saturating_sub(used_cpu[i])).unwrap_or(u32::MAX);
            f.cpu_overcommit = overcommit[i];
            f.load = load_of(
                h,
                used_cpu[i],
                used_mem[i],
                arriving_cpu[i],
                arriving_mem[i],
            );
            f.has_snapshot = h.snapshot_count > 0;
            f.agent = h.signals.agent;
            f.storage = h.signals.storage;
            // Since when HA has said what it says now.
            f.ha = h.signals.ha.map(|signal| HaFacts {
                signal,
                since: match f.ha {
                    Some(was) if was.signal.state == signal.state => was.since,
                    _ => now,
                },
            });
            f.trust_unreachable = policy.trusts_unreachable(&h.site);
            if h.ip.is_some() {
                self.host_entries[i].ip = h.ip;
            }
            // `link` itself is applied with the host's probe in
            // `observe_host`, so both views move together.
        }
        for v in &inv.vms {
            let Some(i) = self.vm_idx(&v.name) else {
                continue;
            };
            let name = &self.vm_entries[i].name;
            let f = &mut self.vms[i];
            if let Some(h) = self.host_index.get(&v.host) {
                let h = *h as HostIdx;
                if f.host != h {
                    emit_change(
                        sink,
                        now,
                        Subject::Vm(name.clone()),
                        "host",
                        self.host_entries
                            .get(f.host as usize)
                            .map_or("?", |e| &e.name),
                        &v.host,
                    );
                    f.host = h;
                }
            }
            if f.power != v.power {
                emit_change(
                    sink,
                    now,
                    Subject::Vm(name.clone()),
                    "power",
                    lower(&f.power),
                    lower(&v.power),
                );
            }
            if f.heartbeat != v.heartbeat {
                emit_change(
                    sink,
                    now,
                    Subject::Vm(name.clone()),
                    "heartbeat",
                    lower(&f.heartbeat),
                    lower(&v.heartbeat),
                );
            }
            ledger::observe_vm_state(f, v.power, v.heartbeat);
            if v.memory_overhead_mb > 0 {
                self.vm_entries[i].memory_overhead_mb = v.memory_overhead_mb;
            }
            let memory = v.memory_mb + self.vm_entries[i].memory_overhead_mb;
            let f = &mut self.vms[i];
            f.memory_mb = u32::try_from(memory).unwrap_or(u32::MAX);
            f.cpu_mhz = v.cpu_mhz;
            f.cpu_reservation_mhz = v.cpu_reservation_mhz;
            f.has_snapshot = v.snapshot_count > 0;
            f.shared_disks = v.shared_disks;
            f.has_replica = v.replica_available;
            if let Some(ip) = v.ip {
                self.vm_entries[i].ip = Some(ip);
            }
        }
    }

    /// The hypervisor's memory overhead for `v`: as reported now, else as
    /// last reported.
    fn overhead_of(&self, v: &VmInfo) -> u64 {
        self.vm_idx(&v.name)
            .map_or(0, |i| self.vm_entries[i].memory_overhead_mb)
            .max(v.memory_overhead_mb)
    }

    /// Applies one probe outcome to a VM. Reports reachability changes and
    /// the moment the VM crosses the failure threshold.
    pub fn observe_vm_probe(
        &mut self,
        policy: &Policy,
        now: Timestamp,
        i: usize,
        reachable: bool,
        sink: &dyn EventSink,
    ) {
        let e = &mut self.vm_entries[i];
        if e.reachable != Some(reachable) {
            let from = e.reachable.map_or("unknown", yes_no);
            emit_change(
                sink,
                now,
                Subject::Vm(e.name.clone()),
                "reachable",
                from,
                yes_no(reachable),
            );
            e.reachable = Some(reachable);
        }
        let f = &mut self.vms[i];
        if ledger::observe_vm_probe(policy, now, f, reachable) && f.off_cause != OffCause::User {
            emit_change(sink, now, Subject::Vm(e.name.clone()), "down", "no", "yes");
        }
    }

    /// Which hosts have a fence device (`dr_core::ports::Fencer::devices`):
    /// a host that gained one is ready to be fenced, one that lost it has
    /// none (a fence running for it reports back to nothing).
    pub fn set_fence_devices(&mut self, devices: &std::collections::BTreeSet<String>) {
        for (f, e) in self.hosts.iter_mut().zip(&mut self.host_entries) {
            match (devices.contains(&e.name), f.fence) {
                (false, _) => {
                    f.fence = Fencing::NoDevice;
                    e.fence_device = None;
                }
                (true, Fencing::NoDevice) => f.fence = Fencing::Ready,
                (true, _) => {}
            }
        }
    }

    /// A fence device's monitor read `result` for `host`: reported (as the
    /// host's `fence_device` observation) when it turns good or bad.
    pub fn observe_fence_monitor(
        &mut self,
        now: Timestamp,
        host: &str,
        result: Result<dr_core::ports::FencePower, String>,
        sink: &dyn EventSink,
    ) {
        let Some(i) = self.host_idx(host) else { return };
        let e = &mut self.host_entries[i];
        let text = |r: &Option<Result<dr_core::ports::FencePower, String>>| match r {
            None => "unknown".to_owned(),
            Some(Ok(_)) => "ok".to_owned(),
            Some(Err(why)) => format!("failing: {why}"),
        };
        let was_ok = e.fence_device.as_ref().map(Result::is_ok);
        let new = Some(result);
        if was_ok != new.as_ref().map(Result::is_ok) {
            if new.as_ref().is_some_and(Result::is_err) {
                tracing::warn!(host, error = %text(&new), "fence device failing its monitor");
            }
            emit_change(
                sink,
                now,
                Subject::Host(host.to_owned()),
                "fence_device",
                text(&e.fence_device),
                text(&new),
            );
        }
        e.fence_device = new;
    }

    /// Reports each host's verdict (`dr_core::engine::host_verdict`) when
    /// it changes: `evidence` goes from `not_down` to `awaiting_deadline`
    /// or `fencing`,
    /// to the evidence a relocation rests on (`fenced`, `self_fenced`,
    /// `deadline`, `trusted`), or to `unproven: ` and what is missing.
    pub fn observe_evidence(&mut self, policy: &Policy, now: Timestamp, sink: &dyn EventSink) {
        for (f, e) in self.hosts.iter().zip(&mut self.host_entries) {
            let now_is = match dr_core::engine::host_verdict(policy, now, f) {
                HostVerdict::NotDown => ("not_down", ""),
                HostVerdict::AwaitingDeadline { .. } => ("awaiting_deadline", ""),
                HostVerdict::LeftToHa => ("left_to_ha", ""),
                HostVerdict::Fence | HostVerdict::Fencing => ("fencing", ""),
                HostVerdict::Down { evidence } => (evidence.as_str(), ""),
                HostVerdict::Unproven { missing } => ("unproven", missing.explain()),
            };
            if e.evidence == Some(now_is) {
                continue;
            }
            // The first report of a host nothing is wrong with says nothing.
            if e.evidence.is_some() || now_is.0 != "not_down" {
                let from = e
                    .evidence
                    .map_or_else(|| "unknown".to_owned(), evidence_text);
                emit_change(
                    sink,
                    now,
                    Subject::Host(e.name.clone()),
                    "evidence",
                    from,
                    evidence_text(now_is),
                );
            }
            e.evidence = Some(now_is);
        }
    }

    /// Applies one probe outcome and the hypervisor's link state to a host.
    pub fn observe_host(
        &mut self,
        policy: &Policy,
        now: Timestamp,
        i: usize,
        reachable: bool,
        link: HostLink,
        sink: &dyn EventSink,
    ) {
        let e = &mut self.host_entries[i];
        let f = &mut self.hosts[i];
        if f.link != link {
            emit_change(
                sink,
                now,
                Subject::Host(e.name.clone()),
                "link",
                lower(&f.link),
                lower(&link),
            );
        }
        if e.reachable != Some(reachable) {
            let from = e.reachable.map_or("unknown", yes_no);
            emit_change(
                sink,
                now,
                Subject::Host(e.name.clone()),
                "reachable",
                from,
                yes_no(reachable),
            );
            e.reachable = Some(reachable);
        }
        let was_confirmed = f.unreachable_since.is_some();
        ledger::observe_host(policy, now, f, reachable, link);
        if !was_confirmed && f.unreachable_since.is_some() {
            emit_change(
                sink,
                now,
                Subject::Host(e.name.clone()),
                "down",
                "no",
                "suspected",
            );
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `snake_case` name of a fieldless enum value (`NotResponding` →
/// `not_responding`), matching how the enums serialize.
fn lower<T: std::fmt::Debug>(v: &T) -> String {
    let mut s = String::new();
    for c in format!("{v:?}").chars() {
        if c.is_ascii_uppercase() {
            if !s.is_empty() {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn emit_change(
    sink: &dyn EventSink,
    now: Timestamp,
    subject: Subject,
    field: &'static str,
    from: impl Into<String>,
    to: impl Into<String>,
) {
    sink.emit(
        now,
        ControlEvent::Observation {
            subject,
            field,
            from: from.into(),
            to: to.into(),
        },
    );
}

/// A host's load for spreading restores: the backend's usage figures where
/// it reports them (what is still on its way to the host added, as no
/// figure shows it yet), else what is committed to it.
fn load_of(
    h: &HostInfo,
    committed_cpu: u64,
    committed_mem: u64,
    arriving_cpu: u64,
    arriving_mem: u64,
) -> HostLoad {
    let cpu_used = if h.vitals.cpu_mhz > 0 {
        u64::from(h.vitals.cpu_mhz) + arriving_cpu
    } else {
        committed_cpu
    };
    let memory_used = if h.vitals.memory_mb > 0 {
        h.vitals.memory_mb + arriving_mem
    } else {
        committed_mem
    };
    HostLoad {
        cpu_mhz: h.cpu_mhz,
        cpu_used_mhz: u32::try_from(cpu_used).unwrap_or(u32::MAX),
        memory_mb: h.memory_mb,
        memory_used_mb: memory_used,
    }
}
