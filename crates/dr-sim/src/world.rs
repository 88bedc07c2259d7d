//! The simulated datacenter's ground truth: which hosts are alive, where each
//! VM's copies actually execute, and the safety counters checked after every
//! change (double runs, actions on user-stopped VMs, outages).
//!
//! What the orchestrator *sees* (the hypervisor's view, probe answers) is
//! derived from this truth by [`crate::SimHypervisor`] and
//! [`crate::SimProber`], with the faults applied: a partitioned host is alive
//! here but silent to probes.

use crate::agent::{AgentSpec, AgentState, SimAgent};
use crate::rng::Rng;
use dr_core::model::{
    Actor, Heartbeat, HostInfo, HostLink, HostSignals, Inventory, PowerEvent, PowerEventKind,
    PowerState, RestoreSource, SnapshotInfo, SnapshotTarget, Vitals, VmInfo,
};
use dr_core::ports::HypervisorError;
use dr_core::Timestamp;
use std::collections::HashMap;
use std::net::IpAddr;

/// Whether a host is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostState {
    /// Running.
    Up,
    /// Crashed; its VMs died with it.
    Down,
    /// Powered off through the manager's out-of-band management: the
    /// manager reports it powered off.
    Off,
    /// Powered off by its fence device (vmdr fenced it): the manager only
    /// sees it not responding.
    DeviceOff,
    /// A spare in the inventory, not yet added.
    Standby,
}

/// A host to build the world with.
#[derive(Clone, Debug, PartialEq)]
pub struct HostSpec {
    /// Unique name.
    pub name: String,
    /// Site name.
    pub site: String,
    /// Management address.
    pub ip: Option<IpAddr>,
    /// CPU capacity, MHz.
    pub cpu_mhz: u32,
    /// Memory capacity, MiB.
    pub memory_mb: u64,
    /// Starts with a host snapshot.
    pub snapshot: bool,
    /// A spare: in the inventory but not added.
    pub standby: bool,
    /// It runs vmdr's host agent, set up so.
    pub agent: Option<AgentSpec>,
    /// It has a fence device vmdr can run, that behaves so.
    pub fence: Option<FenceSpec>,
}

/// How a host's fence device (its BMC, as `fence_ipmilan` drives it)
/// behaves. It acts out of band: whatever the host's network, manager or
/// agent are doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceSpec {
    /// How long an off (or a status read) takes.
    pub delay: std::time::Duration,
    /// This many offs fail (a refused login, a busy BMC) before they work;
    /// `u32::MAX`: it never works.
    pub failures: u32,
    /// Its failures never answer (the BMC is unreachable) rather than
    /// report an error.
    pub hangs: bool,
}

impl FenceSpec {
    /// A device that works: an off takes 3 s.
    pub const fn working() -> Self {
        FenceSpec {
            delay: std::time::Duration::from_secs(3),
            failures: 0,
            hangs: false,
        }
    }
}

/// A VM to build the world with.
#[derive(Clone, Debug, PartialEq)]
pub struct VmSpec {
    /// Unique name.
    pub name: String,
    /// Guest IP.
    pub ip: IpAddr,
    /// Host it starts on.
    pub host: String,
    /// CPU, MHz.
    pub cpu_mhz: u32,
    /// CPU reserved for it, MHz (0: none).
    pub cpu_reservation_mhz: u32,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Memory the hypervisor uses for it beside its own, MiB: a host must
    /// hold both to run it (reported, as vSphere does, while it runs).
    pub memory_overhead_mb: u64,
    /// Starts with a snapshot.
    pub snapshot: bool,
    /// Has a replica at another site.
    pub replica: bool,
    /// Guest tools installed (heartbeat and IP reporting).
    pub tools: bool,
    /// Starts powered on.
    pub powered_on: bool,
    /// Created while the run goes on, at this time (an operator adding a
    /// VM); `None`: there from the start.
    pub created_at: Option<dr_core::Timestamp>,
}

impl VmSpec {
    /// What it takes of a host's memory: its own and the hypervisor's
    /// overhead for it, MiB.
    pub fn footprint_mb(&self) -> u64 {
        self.memory_mb + self.memory_overhead_mb
    }
}

/// One simulated host.
#[derive(Clone, Debug)]
pub struct SimHost {
    /// Its spec.
    pub spec: HostSpec,
    /// Running or not.
    pub state: HostState,
    /// The orchestrator's probes cannot reach it or its VMs.
    pub partitioned: bool,
    /// The hypervisor manager cannot reach it (its VMs still run).
    pub mgmt_lost: bool,
    /// It cannot reach its isolation addresses (its gateway) either: its
    /// whole network is gone.
    pub gateway_lost: bool,
    /// It cannot write the shared storage its heartbeat file is on.
    pub storage_lost: bool,
    /// Since when vmdr, its gateway and its storage have been cut off
    /// from it (its agent's deadline runs from these).
    pub cut_since: Cuts,
    /// Its agent, if it runs one.
    pub agent: Option<SimAgent>,
    /// When a host its watchdog reset boots again.
    pub reboot_at: Option<Timestamp>,
    /// Probe loss rate for its address.
    pub loss: f64,
    /// Injected failures left for `recover_host` (`u32::MAX`: dead hardware).
    pub recover_failures: u32,
    /// Host snapshots.
    pub snapshots: Vec<SnapshotInfo>,
    /// Offs its fence device will still fail.
    pub fence_failures_left: u32,
}

impl SimHost {
    /// The manager can reach it.
    pub fn managed(&self) -> bool {
        self.state == HostState::Up && !self.mgmt_lost
    }

    /// The link state the manager reports.
    pub fn link(&self) -> HostLink {
        match self.state {
            HostState::Standby => HostLink::Standby,
            HostState::Off => HostLink::PoweredOff,
            HostState::Down | HostState::DeviceOff => HostLink::NotResponding,
            HostState::Up if self.mgmt_lost => HostLink::NotResponding,
            HostState::Up => HostLink::Connected,
        }
    }
}

/// Since when each of a host's channels has been cut (`None`: it is not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cuts {
    /// From vmdr (its probes and its agent's heartbeats).
    pub drd: Option<Timestamp>,
    /// From its isolation addresses.
    pub gateway: Option<Timestamp>,
    /// From its heartbeat storage.
    pub storage: Option<Timestamp>,
}

/// How long a host its watchdog reset takes to boot again.
pub const REBOOT: std::time::Duration = std::time::Duration::from_secs(60);

/// One period during which a VM was meant to run and did not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// When it stopped serving.
    pub start: Timestamp,
    /// When it served again.
    pub end: Option<Timestamp>,
}

/// One simulated VM.
#[derive(Clone, Debug)]
pub struct SimVm {
    /// Its spec.
    pub spec: VmSpec,
    /// Host it is registered on (index).
    pub host: usize,
    /// Power state of the registered copy.
    pub power: PowerState,
    /// Hosts on which a copy of it executes right now. More than one is a
    /// double run: the split brain vmdr must never cause.
    pub instances: Vec<usize>,
    /// Guest OS hung (no heartbeat, no answers).
    pub hung: bool,
    /// A user powered it off: vmdr must leave it alone.
    pub user_stopped: bool,
    /// Probe loss rate for its address.
    pub loss: f64,
    /// Injected failures left for recovery operations on it.
    pub fail_next: u32,
    /// Snapshots.
    pub snapshots: Vec<SnapshotInfo>,
    /// Times a second copy started while one ran.
    pub double_runs: u32,
    /// More than one copy runs right now.
    pub running_twice: bool,
    /// Outages, oldest first.
    pub outages: Vec<Outage>,
}

impl SimVm {
    /// Answers its users: a copy runs and the guest is not hung.
    pub fn serving(&self) -> bool {
        !self.instances.is_empty() && !self.hung
    }
}

/// A mutating hypervisor operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Power on.
    PowerOn(String),
    /// Power off.
    PowerOff(String),
    /// Reset.
    Reset(String),
    /// Revert to a snapshot (`None`: newest).
    Revert(String, Option<String>),
    /// Restore onto a host.
    Restore(String, String, RestoreSource),
    /// Cold migration.
    Migrate(String, String),
    /// Recover a host from its snapshot.
    RecoverHost(String),
    /// Add a standby host.
    AddHost(String),
    /// Take a snapshot.
    CreateSnapshot(SnapshotTarget, String),
    /// Remove a snapshot.
    RemoveSnapshot(SnapshotTarget, String),
    /// Start an isolated drill copy: (VM, host, source, copy name).
    StartDrill(String, String, RestoreSource, String),
    /// Remove a drill copy.
    RemoveDrill(String),
}

/// An isolated copy of a VM brought up for a recovery drill: it runs on its
/// host (and takes room there) with no network, so it is neither the VM nor
/// a second copy of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrillCopy {
    /// The VM it copies (index).
    pub vm: usize,
    /// Where it runs (index).
    pub host: usize,
    /// When it started.
    pub started: Timestamp,
}

impl Op {
    /// The VM it acts on, for VM operations that recovery uses.
    fn recovery_vm(&self) -> Option<&str> {
        match self {
            Op::PowerOn(vm)
            | Op::Reset(vm)
            | Op::Revert(vm, _)
            | Op::Restore(vm, ..)
            | Op::Migrate(vm, _) => Some(vm),
            _ => None,
        }
    }

    /// Its name in errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::PowerOn(_) => "power_on",
            Op::PowerOff(_) => "power_off",
            Op::Reset(_) => "reset",
            Op::Revert(..) => "revert_vm",
            Op::Restore(..) => "restore_vm",
            Op::Migrate(..) => "migrate_vm",
            Op::RecoverHost(_) => "recover_host",
            Op::AddHost(_) => "add_host",
            Op::CreateSnapshot(..) => "create_snapshot",
            Op::RemoveSnapshot(..) => "remove_snapshot",
            Op::StartDrill(..) => "start_drill_copy",
            Op::RemoveDrill(..) => "remove_drill_copy",
        }
    }
}

/// A recorded breach of "never act on a VM a user stopped".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserStopViolation {
    /// The VM.
    pub vm: String,
    /// The operation.
    pub op: &'static str,
    /// When.
    pub at: Timestamp,
}

/// The whole simulated datacenter.
#[derive(Clone, Debug)]
pub struct World {
    /// Hosts.
    pub hosts: Vec<SimHost>,
    /// VMs.
    pub vms: Vec<SimVm>,
    host_by_name: HashMap<String, usize>,
    vm_by_name: HashMap<String, usize>,
    ip_owner: HashMap<IpAddr, Owner>,
    /// The manager's power event log.
    pub events: Vec<PowerEvent>,
    /// Randomness (probe loss).
    pub rng: Rng,
    /// Breaches of the user-stop rule.
    pub user_stop_violations: Vec<UserStopViolation>,
    /// Drill copies running, by name.
    pub drills: std::collections::BTreeMap<String, DrillCopy>,
    next_snapshot: u64,
    /// VMs not created yet, by name.
    pending: HashMap<String, VmSpec>,
    /// Creations that could not happen, with why.
    pub rejected_creations: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Owner {
    Host(usize),
    Vm(usize),
}

type R<T> = Result<T, HypervisorError>;

fn not_found(kind: &'static str, name: &str) -> HypervisorError {
    HypervisorError::NotFound {
        kind,
        name: name.to_owned(),
    }
}

fn invalid(name: &str, detail: impl Into<String>) -> HypervisorError {
    HypervisorError::InvalidState {
        name: name.to_owned(),
        detail: detail.into(),
    }
}

impl World {
    /// Builds a world. Errors name the first inconsistency.
    pub fn new(hosts: Vec<HostSpec>, vms: Vec<VmSpec>, seed: u64) -> Result<World, String> {
        let mut w = World {
            hosts: Vec::new(),
            vms: Vec::new(),
            host_by_name: HashMap::new(),
            vm_by_name: HashMap::new(),
            ip_owner: HashMap::new(),
            events: Vec::new(),
            rng: Rng::new(seed),
            user_stop_violations: Vec::new(),
            drills: Default::default(),
            next_snapshot: 1,
            pending: HashMap::new(),
            rejected_creations: Vec::new(),
        };
        for spec in hosts {
            if w.host_by_name
                .insert(spec.name.clone(), w.hosts.len())
                .is_some()
            {
                return Err(format!("duplicate host name {:?}", spec.name));
            }
            if let Some(ip) = spec.ip {
                if w.ip_owner.insert(ip, Owner::Host(w.hosts.len())).is_some() {
                    return Err(format!("duplicate address {ip} (host {:?})", spec.name));
                }
            }
            let snapshots = if spec.snapshot {
                vec![w.snapshot_info("initial", Timestamp::ZERO)]
            } else {
                Vec::new()
            };
            let spec_fence_failures = spec.fence.map_or(0, |f| f.failures);
            w.hosts.push(SimHost {
                state: if spec.standby {
                    HostState::Standby
                } else {
                    HostState::Up
                },
                agent: spec.agent.map(SimAgent::new),
                spec,
                partitioned: false,
                mgmt_lost: false,
                gateway_lost: false,
                storage_lost: false,
                cut_since: Cuts::default(),
                reboot_at: None,
                loss: 0.0,
                recover_failures: 0,
                snapshots,
                fence_failures_left: spec_fence_failures,
            });
        }
        for spec in vms {
            if spec.created_at.is_some() {
                if w.pending.contains_key(&spec.name) {
                    return Err(format!("duplicate vm name {:?}", spec.name));
                }
                w.pending.insert(spec.name.clone(), spec);
                continue;
            }
            w.add_vm(spec)?;
        }
        Ok(w)
    }

    /// A VM declared with `created_at` comes into existence (powered as its
    /// spec says). Unknown or already created: nothing happens.
    pub fn create_pending_vm(&mut self, name: &str, now: Timestamp) {
        if let Some(spec) = self.pending.remove(name) {
            if let Err(e) = self.add_vm(spec) {
                // Checked when the scenario was parsed; a clash here means
                // the world changed under it (e.g. the address was reused).
                self.rejected_creations.push(format!("{name}: {e}"));
            }
        }
        self.settle(now);
    }

    fn add_vm(&mut self, spec: VmSpec) -> Result<(), String> {
        let w = self;
        let Some(&host) = w.host_by_name.get(&spec.host) else {
            return Err(format!("vm {:?}: unknown host {:?}", spec.name, spec.host));
        };
        if w.hosts[host].state != HostState::Up {
            return Err(format!(
                "vm {:?}: host {:?} is a standby host",
                spec.name, spec.host
            ));
        }
        if w.vm_by_name
            .insert(spec.name.clone(), w.vms.len())
            .is_some()
        {
            return Err(format!("duplicate vm name {:?}", spec.name));
        }
        if w.ip_owner.insert(spec.ip, Owner::Vm(w.vms.len())).is_some() {
            return Err(format!(
                "duplicate address {} (vm {:?})",
                spec.ip, spec.name
            ));
        }
        let snapshots = if spec.snapshot {
            vec![w.snapshot_info("initial", Timestamp::ZERO)]
        } else {
            Vec::new()
        };
        let on = spec.powered_on;
        w.vms.push(SimVm {
            spec,
            host,
            power: if on { PowerState::On } else { PowerState::Off },
            instances: if on { vec![host] } else { Vec::new() },
            hung: false,
            user_stopped: !on,
            loss: 0.0,
            fail_next: 0,
            snapshots,
            double_runs: 0,
            running_twice: false,
            outages: Vec::new(),
        });
        Ok(())
    }

    fn snapshot_info(&mut self, name: &str, at: Timestamp) -> SnapshotInfo {
        let id = format!("snap-{}", self.next_snapshot);
        self.next_snapshot += 1;
        SnapshotInfo {
            id,
            name: name.to_owned(),
            created: at,
        }
    }

    /// Index of a host by name.
    pub fn host_idx(&self, name: &str) -> Option<usize> {
        self.host_by_name.get(name).copied()
    }

    /// Index of a VM by name.
    pub fn vm_idx(&self, name: &str) -> Option<usize> {
        self.vm_by_name.get(name).copied()
    }

    fn vm_r(&self, name: &str) -> R<usize> {
        self.vm_idx(name).ok_or_else(|| not_found("vm", name))
    }

    fn host_r(&self, name: &str) -> R<usize> {
        self.host_idx(name).ok_or_else(|| not_found("host", name))
    }

    /// The VM's registered host must be managed for an operation on it.
    fn vm_host_managed(&self, v: usize) -> R<()> {
        let h = &self.hosts[self.vms[v].host];
        if h.managed() {
            Ok(())
        } else {
            Err(HypervisorError::HostUnreachable {
                host: h.spec.name.clone(),
            })
        }
    }

    fn log(&mut self, vm: usize, at: Timestamp, kind: PowerEventKind, by: Actor) {
        let vm = self.vms[vm].spec.name.clone();
        self.events.push(PowerEvent { vm, at, kind, by });
    }

    /// Checks (`commit == false`) or performs (`commit == true`) an
    /// operation by the orchestrator. Hypervisor calls check first, take
    /// their simulated time, then commit, which re-checks: the world may
    /// have changed meanwhile.
    pub fn op(&mut self, op: &Op, now: Timestamp, commit: bool) -> R<()> {
        self.advance(now);
        if let Some(name) = op.recovery_vm() {
            let v = self.vm_r(name)?;
            if !commit && self.vms[v].user_stopped {
                self.user_stop_violations.push(UserStopViolation {
                    vm: name.to_owned(),
                    op: op.name(),
                    at: now,
                });
            }
            if commit && self.vms[v].fail_next > 0 {
                self.vms[v].fail_next -= 1;
                return Err(HypervisorError::Failed {
                    op: op.name(),
                    detail: "injected failure".into(),
                });
            }
        }
        let r = self.op_inner(op, now, commit);
        if commit {
            self.settle(now);
        }
        r
    }

    fn op_inner(&mut self, op: &Op, now: Timestamp, commit: bool) -> R<()> {
        match op {
            Op::PowerOn(name) => {
                let v = self.vm_r(name)?;
                self.vm_host_managed(v)?;
                let host = self.vms[v].host;
                if self.vms[v].power == PowerState::On {
                    return Err(invalid(name, "already powered on"));
                }
                if commit {
                    let vm = &mut self.vms[v];
                    vm.power = PowerState::On;
                    vm.hung = false;
                    vm.instances.push(host);
                    self.log(v, now, PowerEventKind::PoweredOn, Actor::Orchestrator);
                }
            }
            Op::PowerOff(name) => {
                let v = self.vm_r(name)?;
                self.vm_host_managed(v)?;
                if self.vms[v].power != PowerState::On {
                    return Err(invalid(name, "not powered on"));
                }
                if commit {
                    let host = self.vms[v].host;
                    let vm = &mut self.vms[v];
                    vm.power = PowerState::Off;
                    vm.instances.retain(|&h| h != host);
                    self.log(v, now, PowerEventKind::PoweredOff, Actor::Orchestrator);
                }
            }
            Op::Reset(name) => {
                let v = self.vm_r(name)?;
                self.vm_host_managed(v)?;
                if self.vms[v].power != PowerState::On {
                    return Err(invalid(name, "not powered on"));
                }
                if commit {
                    self.vms[v].hung = false;
                    self.log(v, now, PowerEventKind::Reset, Actor::Orchestrator);
                }
            }
            Op::Revert(name, id) => {
                let v = self.vm_r(name)?;
                self.vm_host_managed(v)?;
                let vm = &self.vms[v];
                let found = match id {
                    Some(id) => vm.snapshots.iter().any(|s| &s.id == id),
                    None => !vm.snapshots.is_empty(),
                };
                if !found {
                    return Err(not_found("snapshot", id.as_deref().unwrap_or(name)));
                }
                if commit {
                    let host = vm.host;
                    let was_on = vm.power == PowerState::On;
                    let vm = &mut self.vms[v];
                    vm.power = PowerState::Off;
                    vm.hung = false;
                    vm.instances.retain(|&h| h != host);
                    if was_on {
                        self.log(v, now, PowerEventKind::PoweredOff, Actor::Orchestrator);
                    }
                }
            }
            Op::Restore(name, target, source) => {
                let v = self.vm_r(name)?;
                let t = self.host_r(target)?;
                if !self.hosts[t].managed() {
                    return Err(HypervisorError::HostUnreachable {
                        host: target.clone(),
                    });
                }
                let vm = &self.vms[v];
                if vm.power == PowerState::On && self.hosts[vm.host].managed() {
                    // The manager sees the original running: a restore now
                    // would start a second copy.
                    return Err(invalid(
                        name,
                        format!("is running on {}", self.hosts[vm.host].spec.name),
                    ));
                }
                self.can_bring_up(v, t, source, name)?;
                if commit {
                    // The copy on the old host is not touched: if it still
                    // runs, this is a double run, and it is counted.
                    let vm = &mut self.vms[v];
                    vm.host = t;
                    vm.power = PowerState::On;
                    vm.hung = false;
                    if !vm.instances.contains(&t) {
                        vm.instances.push(t);
                    }
                    self.log(v, now, PowerEventKind::PoweredOn, Actor::Orchestrator);
                }
            }
            Op::StartDrill(name, target, source, copy) => {
                let v = self.vm_r(name)?;
                let t = self.host_r(target)?;
                if !self.hosts[t].managed() {
                    return Err(HypervisorError::HostUnreachable {
                        host: target.clone(),
                    });
                }
                if self.drills.contains_key(copy) || self.vm_idx(copy).is_some() {
                    return Err(invalid(copy, "exists already"));
                }
                self.can_bring_up(v, t, source, copy)?;
                if commit {
                    self.drills.insert(
                        copy.clone(),
                        DrillCopy {
                            vm: v,
                            host: t,
                            started: now,
                        },
                    );
                }
            }
            Op::RemoveDrill(copy) => {
                if !self.drills.contains_key(copy) {
                    return Err(not_found("drill copy", copy));
                }
                if commit {
                    self.drills.remove(copy);
                }
            }
            Op::Migrate(name, target) => {
                let v = self.vm_r(name)?;
                let t = self.host_r(target)?;
                self.vm_host_managed(v)?;
                if !self.hosts[t].managed() {
                    return Err(HypervisorError::HostUnreachable {
                        host: target.clone(),
                    });
                }
                if self.vms[v].power == PowerState::On {
                    return Err(invalid(name, "cold migration needs the VM powered off"));
                }
                if commit {
                    self.vms[v].host = t;
                }
            }
            Op::RecoverHost(name) => {
                let h = self.host_r(name)?;
                let host = &self.hosts[h];
                if host.snapshots.is_empty() {
                    return Err(not_found("snapshot", name));
                }
                if host.state == HostState::Standby || host.managed() {
                    return Err(invalid(name, "host is not failed"));
                }
                if commit {
                    let host = &mut self.hosts[h];
                    if host.recover_failures > 0 {
                        if host.recover_failures != u32::MAX {
                            host.recover_failures -= 1;
                        }
                        return Err(HypervisorError::Failed {
                            op: "recover_host",
                            detail: "host did not come back from its snapshot".into(),
                        });
                    }
                    self.host_comes_back(h);
                }
            }
            Op::AddHost(name) => {
                let h = self.host_r(name)?;
                if self.hosts[h].state != HostState::Standby {
                    return Err(invalid(name, "host is already added"));
                }
                if commit {
                    self.hosts[h].state = HostState::Up;
                }
            }
            Op::CreateSnapshot(target, snap_name) => {
                let info = match target {
                    SnapshotTarget::Vm(name) => {
                        let v = self.vm_r(name)?;
                        self.vm_host_managed(v)?;
                        commit
                            .then(|| self.snapshot_info(snap_name, now))
                            .map(|s| self.vms[v].snapshots.push(s))
                    }
                    SnapshotTarget::Host(name) => {
                        let h = self.host_r(name)?;
                        if !self.hosts[h].managed() {
                            return Err(HypervisorError::HostUnreachable { host: name.clone() });
                        }
                        commit
                            .then(|| self.snapshot_info(snap_name, now))
                            .map(|s| self.hosts[h].snapshots.push(s))
                    }
                };
                let _ = info;
            }
            Op::RemoveSnapshot(target, id) => {
                let list = self.snapshots_mut(target)?;
                let pos = list
                    .iter()
                    .position(|s| &s.id == id)
                    .ok_or_else(|| not_found("snapshot", id))?;
                if commit {
                    list.remove(pos);
                }
            }
        }
        Ok(())
    }

    fn snapshots_mut(&mut self, target: &SnapshotTarget) -> R<&mut Vec<SnapshotInfo>> {
        match target {
            SnapshotTarget::Vm(n) => {
                let v = self.vm_r(n)?;
                Ok(&mut self.vms[v].snapshots)
            }
            SnapshotTarget::Host(n) => {
                let h = self.host_r(n)?;
                Ok(&mut self.hosts[h].snapshots)
            }
        }
    }

    /// Snapshots of a target, oldest first.
    pub fn snapshots(&self, target: &SnapshotTarget) -> R<Vec<SnapshotInfo>> {
        Ok(match target {
            SnapshotTarget::Vm(n) => self.vms[self.vm_r(n)?].snapshots.clone(),
            SnapshotTarget::Host(n) => self.hosts[self.host_r(n)?].snapshots.clone(),
        })
    }

    /// Whether VM `v` can be brought up on host `t` from `source` (its
    /// data is reachable from there, and there is room): shared by restores
    /// and drill copies. `name` is what errors about room name.
    fn can_bring_up(&self, v: usize, t: usize, source: &RestoreSource, name: &str) -> R<()> {
        let vm = &self.vms[v];
        let vm_name = &vm.spec.name;
        match source {
            RestoreSource::Snapshot => {
                if vm.snapshots.is_empty() {
                    return Err(not_found("snapshot", vm_name));
                }
                // Snapshots live on the site's shared storage.
                if self.hosts[t].spec.site != self.hosts[vm.host].spec.site {
                    return Err(invalid(
                        vm_name,
                        format!(
                            "its snapshots are not on the storage of site {}",
                            self.hosts[t].spec.site
                        ),
                    ));
                }
            }
            RestoreSource::Replica => {
                if !vm.spec.replica {
                    return Err(not_found("replica", vm_name));
                }
            }
        }
        if self.free_memory(t) < vm.spec.footprint_mb() {
            return Err(HypervisorError::InsufficientCapacity {
                host: self.hosts[t].spec.name.clone(),
                vm: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Memory of a host not used by running copies (and drill copies).
    pub fn free_memory(&self, h: usize) -> u64 {
        let used: u64 = self
            .vms
            .iter()
            .map(|v| v.spec.footprint_mb() * v.instances.iter().filter(|&&i| i == h).count() as u64)
            .sum();
        let drills: u64 = self
            .drills
            .values()
            .filter(|d| d.host == h)
            .map(|d| self.vms[d.vm].spec.footprint_mb())
            .sum();
        self.hosts[h].spec.memory_mb.saturating_sub(used + drills)
    }

    /// A host boots again: its VMs' copies there are gone (they died when it
    /// went down, or, on a host reimaged while it still ran, in the
    /// reimage) and its registered VMs are off.
    fn host_comes_back(&mut self, h: usize) {
        self.drills.retain(|_, d| d.host != h);
        for vm in &mut self.vms {
            vm.instances.retain(|&i| i != h);
        }
        let host = &mut self.hosts[h];
        host.state = HostState::Up;
        host.partitioned = false;
        host.mgmt_lost = false;
        host.gateway_lost = false;
        host.storage_lost = false;
        host.cut_since = Cuts::default();
        host.reboot_at = None;
        if let Some(a) = &mut host.agent {
            // It starts with the host and writes "alive" at once.
            a.state = AgentState::Running;
            a.file_says_fenced = false;
        }
        for vm in &mut self.vms {
            if vm.host == h {
                vm.power = PowerState::Off;
                vm.hung = false;
            }
        }
    }

    /// A host goes down (crash or power-off): every copy on it dies.
    pub fn host_goes_down(&mut self, h: usize, state: HostState, now: Timestamp) {
        self.hosts[h].state = state;
        // Drill copies there die with it.
        self.drills.retain(|_, d| d.host != h);
        for vm in &mut self.vms {
            vm.instances.retain(|&i| i != h);
            if vm.host == h {
                vm.power = PowerState::Off;
            }
        }
        self.settle(now);
    }

    /// Its fence device powers a host off: a running or crashed host goes
    /// dark (the manager sees it not responding), its VMs and its agent die
    /// with it; it stays off until it is recovered.
    pub fn device_power_off(&mut self, h: usize, now: Timestamp) {
        if matches!(self.hosts[h].state, HostState::Up | HostState::Down) {
            self.hosts[h].reboot_at = None;
            self.host_goes_down(h, HostState::DeviceOff, now);
        }
    }

    /// A host comes back by itself (repaired, rebooted).
    pub fn host_recovers(&mut self, h: usize, now: Timestamp) {
        if matches!(
            self.hosts[h].state,
            HostState::Down | HostState::Off | HostState::DeviceOff
        ) {
            self.host_comes_back(h);
        }
        self.settle(now);
    }

    /// The registered copy of a VM crashes.
    pub fn vm_crash(&mut self, v: usize, now: Timestamp) {
        let host = self.vms[v].host;
        if self.vms[v].power == PowerState::On && self.hosts[host].state == HostState::Up {
            let vm = &mut self.vms[v];
            vm.power = PowerState::Off;
            vm.instances.retain(|&h| h != host);
            self.log(v, now, PowerEventKind::Crashed, Actor::System);
        }
        self.settle(now);
    }

    /// A user powers a VM off (from now on it must be left alone).
    pub fn user_power_off(&mut self, v: usize, now: Timestamp, user: &str) {
        let host = self.vms[v].host;
        if self.vms[v].power == PowerState::On && self.hosts[host].managed() {
            let vm = &mut self.vms[v];
            vm.power = PowerState::Off;
            vm.user_stopped = true;
            vm.instances.retain(|&h| h != host);
            self.log(
                v,
                now,
                PowerEventKind::PoweredOff,
                Actor::User(user.to_owned()),
            );
        }
        self.settle(now);
    }

    /// A user powers a VM on again.
    pub fn user_power_on(&mut self, v: usize, now: Timestamp, user: &str) {
        let host = self.vms[v].host;
        if self.vms[v].power != PowerState::On && self.hosts[host].managed() {
            let vm = &mut self.vms[v];
            vm.power = PowerState::On;
            vm.user_stopped = false;
            vm.hung = false;
            if !vm.instances.contains(&host) {
                vm.instances.push(host);
            }
            self.log(
                v,
                now,
                PowerEventKind::PoweredOn,
                Actor::User(user.to_owned()),
            );
        }
        self.settle(now);
    }

    /// Updates the safety counters and outage records after a change.
    pub fn settle(&mut self, now: Timestamp) {
        for vm in &mut self.vms {
            // Counted once each time a VM goes from one copy to several.
            let double = vm.instances.len() > 1;
            if double && !vm.running_twice {
                vm.double_runs += 1;
            }
            vm.running_twice = double;
            let serving = vm.serving();
            let open = vm.outages.last().is_some_and(|o| o.end.is_none());
            if serving && open {
                if let Some(o) = vm.outages.last_mut() {
                    o.end = Some(now);
                }
            } else if !serving && !open && !vm.user_stopped {
                vm.outages.push(Outage {
                    start: now,
                    end: None,
                });
            }
        }
    }

    /// Brings the hosts' agents up to `now`: an agent cut off for its
    /// isolation timeout destroys its guests at the instant its rule says;
    /// a dead agent's watchdog resets its host; a reset host boots again;
    /// a fenced agent vmdr reaches again resumes. Called before anything
    /// looks at or changes the world, so nothing sees a deadline missed.
    pub fn advance(&mut self, now: Timestamp) {
        for h in 0..self.hosts.len() {
            if let Some(at) = self.hosts[h].reboot_at.filter(|&t| t <= now) {
                if self.hosts[h].state == HostState::Down {
                    self.host_comes_back(h);
                    self.settle(at);
                }
                self.hosts[h].reboot_at = None;
            }
            let host = &self.hosts[h];
            if host.state != HostState::Up {
                continue;
            }
            let Some(agent) = &host.agent else { continue };
            match agent.state {
                AgentState::Running => {
                    let c = host.cut_since;
                    if let Some(t) = agent
                        .fence_time(c.drd, c.gateway, c.storage)
                        .filter(|&t| t <= now)
                    {
                        self.agent_fences(h, t);
                    }
                }
                AgentState::Crashed { at } if agent.spec.watchdog => {
                    let t = at.saturating_add(agent.spec.watchdog_timeout());
                    if t <= now {
                        self.host_goes_down(h, HostState::Down, t);
                        self.hosts[h].reboot_at = Some(t.saturating_add(REBOOT));
                    }
                }
                // vmdr reaches it again: it resumes.
                AgentState::Fenced { .. } if !host.partitioned => {
                    if let Some(a) = &mut self.hosts[h].agent {
                        a.state = AgentState::Running;
                    }
                }
                // Until then nothing runs here: a guest started on it
                // (through its manager) is destroyed, so its "fenced" stays
                // true.
                AgentState::Fenced { .. } if self.vms.iter().any(|v| v.instances.contains(&h)) => {
                    self.agent_fences(h, now);
                }
                _ => {}
            }
            let (heard, writing) = self.channels_open(h);
            if let Some(a) = &mut self.hosts[h].agent {
                if heard {
                    a.heard_at = now;
                }
                if writing {
                    a.written_at = now;
                    a.file_says_fenced = false;
                }
            }
        }
    }

    /// Whether host `h`'s agent is heard by vmdr, and writes its storage
    /// heartbeat, at this instant.
    fn channels_open(&self, h: usize) -> (bool, bool) {
        let host = &self.hosts[h];
        let running = host.state == HostState::Up
            && host
                .agent
                .as_ref()
                .is_some_and(|a| a.state == AgentState::Running);
        (running && !host.partitioned, running && !host.storage_lost)
    }

    /// Host `h`'s agent destroys its guests at `at` (isolation), writes
    /// "fenced" to its storage heartbeat if it can, and stops.
    fn agent_fences(&mut self, h: usize, at: Timestamp) {
        self.drills.retain(|_, d| d.host != h);
        let mut stopped = Vec::new();
        for (i, vm) in self.vms.iter_mut().enumerate() {
            vm.instances.retain(|&x| x != h);
            if vm.host == h && vm.power == PowerState::On {
                vm.power = PowerState::Off;
                vm.hung = false;
                stopped.push(i);
            }
        }
        for v in stopped {
            self.log(v, at, PowerEventKind::PoweredOff, Actor::System);
        }
        let storage_ok = !self.hosts[h].storage_lost;
        if let Some(a) = &mut self.hosts[h].agent {
            if a.state == AgentState::Running {
                a.fences += 1;
            }
            a.state = AgentState::Fenced { at };
            if storage_ok && a.spec.storage_heartbeat {
                a.written_at = at;
                a.file_says_fenced = true;
            }
        }
        self.settle(at);
    }

    /// Changes host `h`'s network and storage at `now` (after bringing the
    /// world up to `now`), keeping since when each channel is cut.
    pub fn set_channels(&mut self, h: usize, now: Timestamp, change: impl FnOnce(&mut SimHost)) {
        self.advance(now);
        let host = &mut self.hosts[h];
        change(host);
        let since = |cut: bool, was: Option<Timestamp>| cut.then(|| was.unwrap_or(now));
        host.cut_since = Cuts {
            drd: since(host.partitioned, host.cut_since.drd),
            gateway: since(host.gateway_lost, host.cut_since.gateway),
            storage: since(host.storage_lost, host.cut_since.storage),
        };
        self.advance(now);
    }

    /// Host `h`'s agent dies (`true`) or is started again (`false`).
    pub fn set_agent_crashed(&mut self, h: usize, now: Timestamp, crashed: bool) {
        self.advance(now);
        if let Some(a) = &mut self.hosts[h].agent {
            match (crashed, a.state) {
                (true, AgentState::Running | AgentState::Fenced { .. }) => {
                    a.state = AgentState::Crashed { at: now }
                }
                (false, AgentState::Crashed { .. }) => a.state = AgentState::Running,
                _ => {}
            }
        }
        self.advance(now);
    }

    /// What vmdr receives from host `h`'s agent and storage heartbeat now.
    fn signals(&self, h: usize, now: Timestamp) -> HostSignals {
        let Some(agent) = &self.hosts[h].agent else {
            return HostSignals::default();
        };
        let (heard, writing) = self.channels_open(h);
        let (agent, storage) = agent.signals(now, heard, writing);
        HostSignals {
            agent,
            storage,
            ha: None,
        }
    }

    /// Whether a probe of `ip` is answered now (draws from the RNG for loss).
    pub fn answers(&mut self, ip: IpAddr) -> bool {
        let (alive, loss) = match self.ip_owner.get(&ip) {
            None => return false,
            Some(Owner::Host(h)) => {
                let host = &self.hosts[*h];
                (host.state == HostState::Up && !host.partitioned, host.loss)
            }
            Some(Owner::Vm(v)) => {
                let vm = &self.vms[*v];
                let reachable_copy = vm.instances.iter().any(|&h| !self.hosts[h].partitioned);
                (reachable_copy && !vm.hung, vm.loss)
            }
        };
        alive && !(loss > 0.0 && self.rng.chance(loss))
    }

    /// The manager's view of everything, and each host's own signals
    /// (its agent, its storage heartbeat) as vmdr receives them at `now`.
    pub fn inventory(&self, now: Timestamp) -> Inventory {
        // A host's CPU in use: its running VMs' (as the manager's quick
        // stats add them up).
        let mut used_cpu = vec![0u32; self.hosts.len()];
        for vm in &self.vms {
            if vm.power == PowerState::On && self.hosts[vm.host].managed() {
                used_cpu[vm.host] = used_cpu[vm.host]
                    .saturating_add(vm.spec.cpu_mhz * vitals_load(&vm.spec.name) / 100);
            }
        }
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let used_mem = h.spec.memory_mb - self.free_memory(i);
                HostInfo {
                    name: h.spec.name.clone(),
                    ip: h.spec.ip,
                    site: h.spec.site.clone(),
                    link: h.link(),
                    cpu_mhz: h.spec.cpu_mhz,
                    memory_mb: h.spec.memory_mb,
                    snapshot_count: h.snapshots.len() as u32,
                    vitals: Vitals {
                        cpu_mhz: used_cpu[i],
                        memory_mb: used_mem,
                        ..Vitals::default()
                    },
                    signals: self.signals(i, now),
                }
            })
            .collect();
        let vms = self
            .vms
            .iter()
            .map(|vm| {
                let host = &self.hosts[vm.host];
                let managed = host.managed();
                let on = managed && vm.power == PowerState::On;
                let heartbeat = match (on, vm.spec.tools, vm.hung) {
                    (true, true, false) => Heartbeat::Ok,
                    (true, true, true) => Heartbeat::Missing,
                    _ => Heartbeat::Unknown,
                };
                let load = vitals_load(&vm.spec.name);
                VmInfo {
                    name: vm.spec.name.clone(),
                    ip: (on && vm.spec.tools && !vm.hung).then_some(vm.spec.ip),
                    host: host.spec.name.clone(),
                    power: if managed {
                        vm.power
                    } else {
                        PowerState::Unknown
                    },
                    heartbeat,
                    cpu_mhz: vm.spec.cpu_mhz,
                    cpu_reservation_mhz: vm.spec.cpu_reservation_mhz,
                    memory_mb: vm.spec.memory_mb,
                    memory_overhead_mb: if on { vm.spec.memory_overhead_mb } else { 0 },
                    snapshot_count: vm.snapshots.len() as u32,
                    replica_available: vm.spec.replica,
                    shared_disks: false,
                    vitals: if on {
                        Vitals {
                            cpu_mhz: vm.spec.cpu_mhz * load / 100,
                            memory_mb: vm.spec.memory_mb * u64::from(load) / 100,
                            disk_kbps: load * 40,
                            net_kbps: load * 25,
                            storage_gb: 40,
                        }
                    } else {
                        Vitals::default()
                    },
                }
            })
            .collect();
        Inventory { hosts, vms }
    }
}

/// A VM's steady load, 10–79 %, from its name (no RNG draw, so vitals never
/// change a run's fault sequence).
fn vitals_load(name: &str) -> u32 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    10 + (h % 70) as u32
}
