//! Faults: what can go wrong in the simulated datacenter, when, and to what.

use crate::world::{HostState, World};
use dr_core::ports::Clock;
use dr_core::Timestamp;
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "fault")]
pub enum FaultKind {
    /// The VM's guest crashes: powered off by the system.
    VmCrash,
    /// The guest OS hangs: still powered on, no heartbeat, no answers.
    VmHang,
    /// A user powers the VM off. vmdr must leave it off.
    #[serde(rename = "vm_user_poweroff")]
    VmUserPowerOff,
    /// A user powers the VM back on.
    #[serde(rename = "vm_user_poweron")]
    VmUserPowerOn,
    /// The host crashes; its VMs die. `recoverable == false`: its hardware
    /// is dead and recovering it from its snapshot fails.
    HostCrash {
        /// Whether `recover_host` can bring it back.
        recoverable: bool,
    },
    /// The host comes back by itself (rebooted, repaired); its VMs are off.
    HostRecover,
    /// The host is powered off through out-of-band management: the
    /// hypervisor reports it powered off (fenced).
    #[serde(rename = "host_poweroff")]
    HostPowerOff,
    /// The orchestrator's probes no longer reach the host or its VMs; the
    /// hypervisor still manages it and its VMs keep running.
    HostPartition,
    /// The hypervisor manager loses the host; it and its VMs keep running
    /// and answering probes.
    HostMgmtLoss,
    /// The host's whole network is gone: vmdr, the manager and its
    /// isolation addresses (gateway) are all cut off; its VMs run on
    /// until its agent (if any) destroys them.
    HostIsolation,
    /// Partition, management loss and isolation of the host end.
    HostHeal,
    /// The host can no longer write its storage heartbeat.
    StorageLoss,
    /// It can again.
    StorageHeal,
    /// The host's agent dies (with a watchdog, the host resets soon after).
    AgentCrash,
    /// The host's agent is started again.
    AgentRestart,
    /// Probes of the VM or host are lost at this rate (0 ends it).
    PacketLoss {
        /// Loss rate, 0–1.
        loss: f64,
    },
    /// The next `count` recovery operations on the VM fail.
    RestoreFails {
        /// How many.
        count: u32,
    },
    /// An operator creates the VM (declared with `created_at`): the next
    /// inventory sync must pick it up.
    VmCreated,
    /// The next `count` recoveries of the host from its snapshot fail.
    HostRecoveryFails {
        /// How many.
        count: u32,
    },
}

/// What a fault hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultTarget {
    /// A VM, by name.
    Vm(String),
    /// A host, by name.
    Host(String),
}

/// One fault on the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    /// When.
    #[serde(skip)]
    pub at: Timestamp,
    /// What.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// To what.
    pub target: FaultTarget,
}

impl Fault {
    /// Applies the fault to the world at `now`. Targets were validated when
    /// the scenario was built; an unknown one is ignored.
    pub fn apply(&self, w: &mut World, now: Timestamp) {
        w.advance(now);
        match &self.target {
            FaultTarget::Vm(name) if self.kind == FaultKind::VmCreated => {
                w.create_pending_vm(name, now)
            }
            FaultTarget::Vm(name) => {
                let Some(v) = w.vm_idx(name) else { return };
                match self.kind {
                    FaultKind::VmCrash => w.vm_crash(v, now),
                    FaultKind::VmHang => {
                        if !w.vms[v].instances.is_empty() {
                            w.vms[v].hung = true;
                        }
                        w.settle(now);
                    }
                    FaultKind::VmUserPowerOff => w.user_power_off(v, now, "alice"),
                    FaultKind::VmUserPowerOn => w.user_power_on(v, now, "alice"),
                    FaultKind::PacketLoss { loss } => w.vms[v].loss = loss,
                    FaultKind::RestoreFails { count } => w.vms[v].fail_next += count,
                    _ => {}
                }
            }
            FaultTarget::Host(name) => {
                let Some(h) = w.host_idx(name) else { return };
                match self.kind {
                    FaultKind::HostCrash { recoverable } if w.hosts[h].state == HostState::Up => {
                        if !recoverable {
                            w.hosts[h].recover_failures = u32::MAX;
                        }
                        w.host_goes_down(h, HostState::Down, now);
                    }
                    FaultKind::HostPowerOff
                        if matches!(w.hosts[h].state, HostState::Up | HostState::Down) =>
                    {
                        w.host_goes_down(h, HostState::Off, now);
                    }
                    FaultKind::HostRecover => {
                        if w.hosts[h].recover_failures == u32::MAX {
                            w.hosts[h].recover_failures = 0;
                        }
                        w.host_recovers(h, now);
                    }
                    FaultKind::HostPartition => w.set_channels(h, now, |h| h.partitioned = true),
                    FaultKind::HostMgmtLoss => w.set_channels(h, now, |h| h.mgmt_lost = true),
                    FaultKind::HostIsolation => w.set_channels(h, now, |h| {
                        h.partitioned = true;
                        h.mgmt_lost = true;
                        h.gateway_lost = true;
                    }),
                    FaultKind::HostHeal => w.set_channels(h, now, |h| {
                        h.partitioned = false;
                        h.mgmt_lost = false;
                        h.gateway_lost = false;
                    }),
                    FaultKind::StorageLoss => w.set_channels(h, now, |h| h.storage_lost = true),
                    FaultKind::StorageHeal => w.set_channels(h, now, |h| h.storage_lost = false),
                    FaultKind::AgentCrash => w.set_agent_crashed(h, now, true),
                    FaultKind::AgentRestart => w.set_agent_crashed(h, now, false),
                    FaultKind::PacketLoss { loss } => w.hosts[h].loss = loss,
                    FaultKind::HostRecoveryFails { count } => {
                        let f = &mut w.hosts[h].recover_failures;
                        *f = f.saturating_add(count);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Applies the simulation's fault schedule on its clock (real time: drd's
/// embedded datacenter, `drctl sim-server`) until it is done or `shutdown`
/// turns true.
pub async fn inject_in_real_time(
    world: Arc<Mutex<World>>,
    faults: Vec<Fault>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    for fault in faults {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = clock.sleep_until(fault.at) => {}
        }
        let now = clock.now();
        tracing::warn!(t = %now, fault = ?fault.kind, target = ?fault.target, "simulation: fault injected");
        fault.apply(
            &mut world.lock().unwrap_or_else(PoisonError::into_inner),
            now,
        );
    }
}
