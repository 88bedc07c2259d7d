//! The domain model shared by every crate: what a datacenter looks like from
//! the orchestrator's seat, independent of which hypervisor reports it.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Power state of a VM as the hypervisor reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum PowerState {
    /// Running.
    On,
    /// Stopped (by a user, by a crash, or by the orchestrator).
    Off,
    /// Suspended to disk; only a person does that, so it is left alone.
    Suspended,
    /// The hypervisor does not know (typically: its host is not responding).
    #[default]
    Unknown,
}

/// How the hypervisor's management plane sees a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum HostLink {
    /// Managed and answering.
    Connected,
    /// Managed and answering, but in maintenance mode: runs nothing new.
    Maintenance,
    /// Managed but not answering (crashed, or cut off from the manager).
    #[default]
    NotResponding,
    /// Deliberately disconnected by an administrator.
    Disconnected,
    /// Confirmed powered off by the management plane (out-of-band power
    /// control). A powered-off host runs no VM: this is what *fenced* means.
    PoweredOff,
    /// Known to the inventory but not yet added to the manager: a spare that
    /// recovery may add when no connected host has room.
    Standby,
}

impl HostLink {
    /// The manager can place and run VMs on this host now.
    pub const fn accepts_vms(self) -> bool {
        matches!(self, HostLink::Connected)
    }

    /// The management plane itself vouches that nothing runs on this host.
    pub const fn is_fenced(self) -> bool {
        matches!(self, HostLink::PoweredOff)
    }

    /// The manager cannot see the host at all right now.
    pub const fn is_lost(self) -> bool {
        matches!(self, HostLink::NotResponding | HostLink::Disconnected)
    }
}

/// The guest-tools heartbeat of a VM (vSphere: `guestHeartbeatStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Heartbeat {
    /// Tools report in: the guest OS is alive.
    Ok,
    /// Tools installed but silent: the guest is hung or crashed inside.
    Missing,
    /// No information (no tools, VM off, or host not responding).
    #[default]
    Unknown,
}

/// Who caused a power event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Actor {
    /// A person, by user name. Their decisions are never overridden.
    User(String),
    /// The hypervisor itself (a crash, a host failure, HA).
    System,
    /// vmdr's own session.
    Orchestrator,
}

/// What happened to a VM's power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerEventKind {
    /// Powered on.
    PoweredOn,
    /// Powered off (cleanly or hard).
    PoweredOff,
    /// Reset (power-cycled in place).
    Reset,
    /// Stopped by a failure rather than a request.
    Crashed,
    /// Suspended.
    Suspended,
}

/// One entry of the hypervisor's event log about a VM's power.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerEvent {
    /// The VM's name.
    pub vm: String,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: PowerEventKind,
    /// Who did it.
    pub by: Actor,
}

/// Resource usage figures (the paper's "vitals": CPU, I/O, network, storage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vitals {
    /// CPU in use, MHz.
    pub cpu_mhz: u32,
    /// Memory in use, MiB.
    pub memory_mb: u64,
    /// Disk I/O, KiB/s (read + write).
    pub disk_kbps: u32,
    /// Network, KiB/s (rx + tx).
    pub net_kbps: u32,
    /// Storage committed, GiB.
    pub storage_gb: u32,
}

/// A host as the hypervisor reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Unique name (vSphere: the host's name in the inventory).
    pub name: String,
    /// Management address, probed by the orchestrator.
    pub ip: Option<IpAddr>,
    /// Site the host belongs to; hosts of one site share storage.
    pub site: String,
    /// Management-plane view.
    pub link: HostLink,
    /// CPU capacity, MHz.
    pub cpu_mhz: u32,
    /// Memory capacity, MiB.
    pub memory_mb: u64,
    /// Host-level snapshots (configuration backups) available to recover it.
    pub snapshot_count: u32,
    /// Current usage.
    pub vitals: Vitals,
    /// What the host says of itself beyond the manager's view: its vmdr
    /// agent and its storage heartbeat. Backends leave it empty; the
    /// daemon's agent registry (or the simulation) fills it.
    #[serde(default)]
    pub signals: HostSignals,
}

/// A host's own signs of life and of self-fencing, beside ping and the
/// manager: the evidence that lets vmdr tell a dead host from one that is
/// only cut off (see `docs/decision-table.md`, "Evidence").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSignals {
    /// The host runs vmdr's host agent and it has been heard at least once.
    #[serde(default)]
    pub agent: Option<AgentSignal>,
    /// The host's agent writes a heartbeat file on storage the hosts share.
    #[serde(default)]
    pub storage: Option<StorageSignal>,
    /// vSphere HA watches the host (its cluster has HA with host
    /// monitoring on): what HA's master says of it, through vCenter.
    #[serde(default)]
    pub ha: Option<HaSignal>,
}

/// vSphere HA's view of a host, from its cluster's master (the host's
/// `runtime.dasHostState`) and the cluster's HA settings. The master sees
/// a host by its network heartbeats and by the heartbeat files it writes on
/// the cluster's datastores, so it can tell an isolated host from a
/// partitioned one when vmdr and vCenter see only silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaSignal {
    /// What the master says.
    pub state: HaHostState,
    /// HA restarts this host's VMs itself when it fails (the cluster's
    /// default restart priority is not `disabled`): then vmdr leaves them to
    /// HA, never two orchestrators restarting one VM.
    pub restarts: bool,
    /// How long after the host declares itself isolated its isolation
    /// response has its VMs off, ms: HA's isolation policy delay
    /// (`das.config.fdm.isolationPolicyDelaySec`), plus the shutdown
    /// timeout (`das.isolationShutdownTimeout`) when the response is a
    /// guest shutdown. `None`: the response leaves them running.
    pub response_after_ms: Option<u32>,
}

/// A host as vSphere HA's master sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaHostState {
    /// The master reaches it (it is the master, or connected to it): alive.
    Alive,
    /// In another network partition, its datastore heartbeats still
    /// written: alive, and running its VMs.
    Partitioned,
    /// It declared itself isolated (no master, no isolation address): its
    /// isolation response runs.
    Isolated,
    /// No network heartbeat and no datastore heartbeat: dead, or isolated
    /// and cut off from storage too.
    Dead,
    /// Anything else (HA being configured, its agent unreachable): says
    /// nothing.
    Unknown,
}

/// What keeps an isolated agent from destroying its guests: while one of
/// these holds, a host cut off from vmdr keeps its VMs running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reassurance {
    /// Nothing: without vmdr's acknowledgement for the isolation timeout,
    /// the agent destroys its guests (a pure lease).
    #[default]
    None,
    /// Its isolation addresses (the gateway) answering: a host that still
    /// reaches them keeps its guests even without vmdr. vmdr cannot see
    /// that, so such an agent's promise proves nothing by itself.
    Gateway,
    /// Its isolation addresses answering **and** its storage heartbeat
    /// being written. A host that keeps its guests therefore keeps its
    /// storage heartbeat moving, which vmdr reads.
    GatewayAndStorage,
}

/// The host agent as vmdr last heard it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSignal {
    /// When its last heartbeat reached vmdr (on the control loop's clock).
    pub last_heard: Timestamp,
    /// How often it heartbeats, ms: silent for three of these, it is no
    /// longer heard (0: unknown, `host_down_after` then).
    pub interval_ms: u32,
    /// Its promise: after this long without vmdr's acknowledgement (and
    /// without its [`Reassurance`]), it destroys its guests, ms.
    pub isolation_timeout_ms: u32,
    /// What keeps it from destroying them.
    pub reassurance: Reassurance,
    /// It armed a watchdog that resets the host if the agent itself hangs
    /// or dies, within the isolation timeout: its promise survives its
    /// own crash.
    pub watchdog: bool,
}

/// The host's heartbeat file on shared storage, as vmdr reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSignal {
    /// vmdr can read the heartbeat storage now: a stale file then means
    /// the host is not writing, not that vmdr cannot see.
    pub readable: bool,
    /// When vmdr last saw the file change (on the control loop's clock).
    pub last_moved: Timestamp,
    /// How often the agent rewrites it, ms: unchanged for three of these,
    /// it no longer moves (0: unknown, `host_down_after` then).
    pub interval_ms: u32,
    /// The file's last word is that the agent destroyed its guests
    /// (isolation) and stopped.
    pub fenced: bool,
}

/// A VM as the hypervisor reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Unique name: the key of the paper's name → IP map.
    pub name: String,
    /// Guest IP, when the hypervisor knows it. VMs never seen with an IP are
    /// not monitored (the paper's rule).
    pub ip: Option<IpAddr>,
    /// Name of the host the VM is registered on.
    pub host: String,
    /// Power state.
    pub power: PowerState,
    /// Guest heartbeat.
    pub heartbeat: Heartbeat,
    /// Configured CPU, MHz (its virtual CPUs at their nominal speed).
    pub cpu_mhz: u32,
    /// CPU reserved for it, MHz (vSphere's `cpuAllocation.reservation`); 0:
    /// none. A restore target must have this much free; without a
    /// reservation the VM costs its nominal CPU over the policy's
    /// `cpu_overcommit`, as every hypervisor overcommits CPU.
    #[serde(default)]
    pub cpu_reservation_mhz: u32,
    /// Configured memory, MiB (its reservation on a restore target).
    pub memory_mb: u64,
    /// Memory the hypervisor itself uses for it, MiB, where the backend
    /// reports it (vSphere's `consumedOverheadMemory`); 0: not reported. A
    /// restore target must hold it beside the VM's memory.
    #[serde(default)]
    pub memory_overhead_mb: u64,
    /// Snapshots of this VM that a revert or a restore may use.
    pub snapshot_count: u32,
    /// A replica of the VM's data is available at another site.
    pub replica_available: bool,
    /// Every disk of the VM is on storage that every host of its site
    /// reaches: another host of the site can start it from its disks as
    /// they are (vSphere HA's restart), snapshot or not.
    #[serde(default)]
    pub shared_disks: bool,
    /// Current usage.
    pub vitals: Vitals,
}

/// Everything the hypervisor knows, read in one go.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// All hosts, including standby spares.
    pub hosts: Vec<HostInfo>,
    /// All VMs.
    pub vms: Vec<VmInfo>,
}

impl Inventory {
    /// Looks a host up by name.
    pub fn host(&self, name: &str) -> Option<&HostInfo> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Looks a VM up by name.
    pub fn vm(&self, name: &str) -> Option<&VmInfo> {
        self.vms.iter().find(|v| v.name == name)
    }
}

/// What a snapshot is of.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum SnapshotTarget {
    /// A VM, by name.
    Vm(String),
    /// A host, by name (its configuration backup).
    Host(String),
}

impl SnapshotTarget {
    /// The name of the VM or host.
    pub fn name(&self) -> &str {
        match self {
            SnapshotTarget::Vm(n) | SnapshotTarget::Host(n) => n,
        }
    }
}

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Backend identifier, unique per target.
    pub id: String,
    /// Human name given at creation.
    pub name: String,
    /// When it was taken.
    pub created: Timestamp,
}

/// Where a restored VM's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreSource {
    /// From the site's shared storage: the VM's newest snapshot, or, where
    /// the site's hosts share the VM's disks (`VmInfo::shared_disks`), its
    /// disks as its host left them.
    Snapshot,
    /// The newest complete checkpoint of the VM's replica at another site.
    Replica,
}

/// What the name of a recovery drill's copy holds (`{vm}-vmdr-drill-{time}`):
/// such a VM is vmdr's own short-lived test object, never protected.
pub const DRILL_COPY_MARK: &str = "-vmdr-drill-";

/// The name of `vm`'s drill copy started at `at_ms`.
pub fn drill_copy_name(vm: &str, at_ms: u64) -> String {
    format!("{vm}{DRILL_COPY_MARK}{at_ms}")
}

/// Whether `name` is a drill copy's.
pub fn is_drill_copy(name: &str) -> bool {
    name.contains(DRILL_COPY_MARK)
}
