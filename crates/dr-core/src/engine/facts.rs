use crate::model::{AgentSignal, HaSignal, Heartbeat, HostLink, PowerState, StorageSignal};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Index of a host in the slice handed to [`crate::Engine::plan`].
pub type HostIdx = u32;

/// Why a VM is off, as far as the orchestrator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum OffCause {
    /// Not off, or no reason known.
    #[default]
    None,
    /// Off by intent: a user powered it off, or it was already off when vmdr
    /// first saw it. Never acted on.
    User,
    /// Off by a failure (a crash, its host dying) or by vmdr itself.
    System,
}

/// What is known about one VM: 48 bytes, so a million fit in 48 MB and a
/// decision pass streams through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFacts {
    /// No recovery before this time (back-off, or a just-recovered VM's grace).
    pub retry_at: Timestamp,
    /// A recovery is pending confirmation: if the VM goes down before this
    /// time, the recovery did not stick. `Timestamp::ZERO` when none pending.
    pub stable_at: Timestamp,
    /// Memory a restore target must have free, MiB: its configured memory
    /// plus the hypervisor's overhead for it, where the backend reports one.
    pub memory_mb: u32,
    /// Nominal CPU, MHz (its virtual CPUs at their speed). Without a
    /// reservation it costs a restore target this over the target's
    /// `cpu_overcommit` ([`crate::engine::cpu_demand`]).
    pub cpu_mhz: u32,
    /// CPU reserved for it, MHz (0: none): a restore target must have this
    /// much free, overcommit or not.
    pub cpu_reservation_mhz: u32,
    /// The host it is registered on.
    pub host: HostIdx,
    /// Consecutive failed probes (hysteresis counter).
    pub probe_failures: u16,
    /// Consecutive recoveries that failed or did not stick.
    pub failed_attempts: u8,
    /// Power state per the hypervisor.
    pub power: PowerState,
    /// Guest heartbeat per the hypervisor.
    pub heartbeat: Heartbeat,
    /// Why it is off.
    pub off_cause: OffCause,
    /// It has at least one snapshot (to revert to, or to restore from on
    /// its site).
    pub has_snapshot: bool,
    /// Its disks are on storage every host of its site reaches: another
    /// host of the site can start it from them, snapshot or not.
    pub shared_disks: bool,
    /// A replica of it is available at another site.
    pub has_replica: bool,
    /// A recovery of this VM is running now.
    pub in_flight: bool,
    /// An operator paused automation for it.
    pub paused: bool,
}

impl VmFacts {
    /// A healthy, running VM on `host`, with nothing pending.
    pub const fn running_on(host: HostIdx) -> Self {
        VmFacts {
            retry_at: Timestamp::ZERO,
            stable_at: Timestamp::ZERO,
            memory_mb: 1024,
            cpu_mhz: 1000,
            cpu_reservation_mhz: 0,
            host,
            probe_failures: 0,
            failed_attempts: 0,
            power: PowerState::On,
            heartbeat: Heartbeat::Ok,
            off_cause: OffCause::None,
            has_snapshot: false,
            shared_disks: false,
            has_replica: false,
            in_flight: false,
            paused: false,
        }
    }
}

/// Where a host's own recovery (from its snapshot) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum HostRecovery {
    /// Not tried since the host was last seen connected.
    #[default]
    NotTried,
    /// Running now.
    InFlight,
    /// Tried and failed: its VMs go elsewhere.
    Failed,
}

/// Where fencing a host through its own fence device (its BMC, its PDU,
/// run by vmdr) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Fencing {
    /// It has no fence device.
    #[default]
    NoDevice,
    /// It has one, not run since the host was last seen.
    Ready,
    /// Its fence (power off, then a status read) is running now.
    InFlight,
    /// Its device powered it off, and a status read back "off".
    Off,
    /// The last fence failed or timed out: never taken as success; tried
    /// again from `retry_at`.
    Failed {
        /// When it may be tried again.
        retry_at: Timestamp,
    },
}

/// What is known about one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Since when the host has been unreachable both by probe and by the
    /// hypervisor, continuously. `None` while either still reaches it.
    pub unreachable_since: Option<Timestamp>,
    /// Memory not committed to VMs, MiB.
    pub free_memory_mb: u64,
    /// CPU not committed to VMs, MHz, counted as restores count it (each
    /// running VM's [`crate::engine::cpu_demand`] at this host's overcommit).
    pub free_cpu_mhz: u32,
    /// How far a VM's nominal CPU is overcommitted here: its site's
    /// `cpu_overcommit` (the policy's, unless the site has its own).
    pub cpu_overcommit: u16,
    /// How busy the host is by the backend's own figures: restores go to
    /// the least loaded host that has room.
    pub load: HostLoad,
    /// Consecutive failed probes of the host's management address.
    pub probe_failures: u16,
    /// Recoveries running now that are charged to this host (as the VM's
    /// host, as a restore target, or the host's own recovery).
    pub in_flight: u16,
    /// Site number; hosts of one site share storage (and so VM snapshots).
    pub site: u16,
    /// The hypervisor's view.
    pub link: HostLink,
    /// It has a host snapshot to recover from.
    pub has_snapshot: bool,
    /// Its own recovery.
    pub recovery: HostRecovery,
    /// Its site takes unreachability alone as proof it is down (the policy's
    /// `sites.<site>.trust_unreachable`): the behaviour before evidence was
    /// required, for those who accept its risk.
    pub trust_unreachable: bool,
    /// Its vmdr agent, as last heard (`None`: never heard).
    pub agent: Option<AgentSignal>,
    /// Its storage heartbeat, as last read (`None`: it has none).
    pub storage: Option<StorageSignal>,
    /// Its fence device, if it has one, and where fencing it stands.
    pub fence: Fencing,
    /// vSphere HA's view of it, where its cluster has HA (`None`: none).
    pub ha: Option<HaFacts>,
}

/// vSphere HA's view of a host as vmdr keeps it: what HA's master says,
/// and since when vmdr has seen it say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaFacts {
    /// The last report.
    pub signal: HaSignal,
    /// When vmdr first saw its `state` (on the control loop's clock): a
    /// host reported isolated declared itself so no later, so its isolation
    /// response is done by then plus its `response_after_ms`.
    pub since: Timestamp,
}

/// A host's size and what of it is in use, by the backend's own usage
/// figures (vSphere's quick stats, libvirt's domain stats; what is committed
/// where a backend reports no usage), with the VMs on their way to it.
/// Only the order of restore targets depends on it, never whether a VM fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLoad {
    /// CPU capacity, MHz (0: unknown, CPU then does not weigh).
    pub cpu_mhz: u32,
    /// CPU in use, MHz.
    pub cpu_used_mhz: u32,
    /// Memory capacity, MiB (0: unknown, memory then does not weigh).
    pub memory_mb: u64,
    /// Memory in use, MiB.
    pub memory_used_mb: u64,
}

impl HostLoad {
    /// How loaded the host would be with `cpu_mhz` and `memory_mb` more in
    /// use, in millionths of its busier resource (CPU or memory): what
    /// spreading compares.
    pub fn after(&self, cpu_mhz: u64, memory_mb: u64) -> u64 {
        // An unknown capacity (0) does not weigh.
        let share =
            |used: u64, cap: u64| used.saturating_mul(1_000_000).checked_div(cap).unwrap_or(0);
        share(
            u64::from(self.cpu_used_mhz) + cpu_mhz,
            u64::from(self.cpu_mhz),
        )
        .max(share(self.memory_used_mb + memory_mb, self.memory_mb))
    }
}

/// The policy's default `cpu_overcommit`.
pub const DEFAULT_CPU_OVERCOMMIT: u16 = 4;

impl HostFacts {
    /// A connected, reachable host with the given free capacity (and as
    /// big as that, nothing in use).
    pub const fn connected(site: u16, free_memory_mb: u64, free_cpu_mhz: u32) -> Self {
        HostFacts {
            unreachable_since: None,
            free_memory_mb,
            free_cpu_mhz,
            cpu_overcommit: DEFAULT_CPU_OVERCOMMIT,
            load: HostLoad {
                cpu_mhz: free_cpu_mhz,
                cpu_used_mhz: 0,
                memory_mb: free_memory_mb,
                memory_used_mb: 0,
            },
            probe_failures: 0,
            in_flight: 0,
            site,
            link: HostLink::Connected,
            has_snapshot: false,
            recovery: HostRecovery::NotTried,
            trust_unreachable: false,
            agent: None,
            storage: None,
            fence: Fencing::NoDevice,
            ha: None,
        }
    }
}

/// Cluster-wide counters the control loop keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// Recoveries (of VMs and of hosts) running now.
    pub in_flight: u32,
}
