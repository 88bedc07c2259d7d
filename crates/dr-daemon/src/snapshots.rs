//! The snapshot schedulers (the paper's snapshot creator): on an interval,
//! take a new snapshot of every running VM and every connected host, then
//! prune each to the newest `keep`. New first, so a failure never leaves a
//! target with no snapshot.

use crate::state::Shared;
use dr_core::model::{PowerState, SnapshotTarget};
use dr_core::ports::{Clock, Hypervisor, HypervisorError, HypervisorExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One scheduler's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Time between rounds; `None`: off.
    pub every: Option<Duration>,
    /// Snapshots kept per target (at least 1).
    pub keep: usize,
}

/// Both schedulers' settings (reloadable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// VMs (running ones).
    pub vms: Schedule,
    /// Hosts (connected ones): their configuration backups.
    pub hosts: Schedule,
    /// Snapshots taken at once.
    pub concurrency: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            vms: Schedule {
                every: None,
                keep: 3,
            },
            hosts: Schedule {
                every: None,
                keep: 2,
            },
            concurrency: 4,
        }
    }
}

/// Which kind of target a scheduler handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// VMs.
    Vm,
    /// Hosts.
    Host,
}

impl Kind {
    /// Its label in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Vm => "vm",
            Kind::Host => "host",
        }
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Snapshots taken.
    pub taken: usize,
    /// Snapshots removed by pruning.
    pub pruned: usize,
    /// Targets that failed.
    pub failed: usize,
}

/// One round over every eligible target of `kind`, `concurrency` at a time.
pub async fn round(
    hv: &Arc<dyn Hypervisor>,
    clock: &dyn Clock,
    kind: Kind,
    schedule: Schedule,
    concurrency: usize,
) -> Result<RoundStats, HypervisorError> {
    let inv = hv.inventory().await?;
    let mut targets: Vec<SnapshotTarget> = match kind {
        Kind::Vm => inv
            .vms
            .iter()
            .filter(|v| v.power == PowerState::On)
            .map(|v| SnapshotTarget::Vm(v.name.clone()))
            .collect(),
        Kind::Host => inv
            .hosts
            .iter()
            .filter(|h| h.link.accepts_vms())
            .map(|h| SnapshotTarget::Host(h.name.clone()))
            .collect(),
    };
    let name = format!("vmdr-{}", clock.now().0);
    let keep = schedule.keep.max(1);
    let mut stats = RoundStats::default();
    let mut running = tokio::task::JoinSet::new();
    let mut unsupported = None;
    loop {
        while running.len() < concurrency.max(1) {
            let Some(t) = targets.pop() else { break };
            let (hv, name) = (hv.clone(), name.clone());
            running.spawn(async move {
                let r = async {
                    hv.create_snapshot(&t, &name).await?;
                    hv.prune_snapshots(&t, keep).await
                }
                .await;
                (t, r)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done {
            Ok((_, Ok(pruned))) => {
                stats.taken += 1;
                stats.pruned += pruned;
            }
            Ok((_, Err(HypervisorError::Unsupported { op }))) => {
                // Not the target's fault: the backend has no such thing.
                unsupported = Some(op);
                targets.clear();
            }
            Ok((t, Err(e))) => {
                tracing::warn!(target = t.name(), kind = kind.label(), error = %e, "snapshot failed");
                stats.failed += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "snapshot task failed");
                stats.failed += 1;
            }
        }
    }
    match unsupported {
        Some(op) => Err(HypervisorError::Unsupported { op }),
        None => Ok(stats),
    }
}

/// Runs the scheduler of `kind` until `shutdown`, following `config`. With
/// an `authority` (a cluster node), a round runs only while it allows: a
/// node that does not lead skips its rounds.
pub async fn run(
    hv: Arc<dyn Hypervisor>,
    clock: Arc<dyn Clock>,
    kind: Kind,
    mut config: watch::Receiver<SnapshotConfig>,
    shared: Arc<Shared>,
    authority: Option<Arc<dyn dr_core::ports::Authority>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let cfg = *config.borrow_and_update();
        let schedule = match kind {
            Kind::Vm => cfg.vms,
            Kind::Host => cfg.hosts,
        };
        let Some(every) = schedule.every else {
            // Off: wait for a configuration that turns it on.
            tokio::select! {
                _ = shutdown.changed() => return,
                r = config.changed() => if r.is_err() { return } else { continue },
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            r = config.changed() => if r.is_err() { return } else { continue },
            () = clock.sleep(every) => {}
        }
        if let Some(Err(why)) = authority.as_ref().map(|a| a.may_act()) {
            tracing::debug!(kind = kind.label(), why = %why, "snapshot round skipped");
            continue;
        }
        let started = clock.now();
        let result = tokio::select! {
            _ = shutdown.changed() => return,
            r = round(&hv, &*clock, kind, schedule, cfg.concurrency) => r,
        };
        match result {
            Ok(stats) => {
                tracing::info!(
                    kind = kind.label(),
                    taken = stats.taken,
                    pruned = stats.pruned,
                    failed = stats.failed,
                    "snapshot round done"
                );
                shared.metrics.snapshots(
                    kind.label(),
                    stats.taken,
                    stats.pruned,
                    stats.failed,
                    started,
                );
            }
            Err(HypervisorError::Unsupported { op }) => {
                tracing::warn!(
                    kind = kind.label(),
                    op,
                    "this backend cannot take such snapshots: the scheduler stops"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(kind = kind.label(), error = %e, "snapshot round failed");
                shared.metrics.snapshots(kind.label(), 0, 0, 1, started);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_sim::Latencies;

    #[tokio::test(start_paused = true)]
    async fn rounds_take_new_snapshots_and_keep_the_newest() {
        let text = r#"
name = "snap"
duration = "1h"
[[host]]
name = "h1"
snapshot = true
[[vm]]
name = "on-1"
ip = "10.0.0.1"
host = "h1"
[[vm]]
name = "off-1"
ip = "10.0.0.2"
host = "h1"
powered_on = false
"#;
        let (hv, clock) = crate::test_support::sim_hypervisor(text, Latencies::default());
        let hv: Arc<dyn Hypervisor> = hv;
        let schedule = Schedule {
            every: Some(Duration::from_secs(60)),
            keep: 2,
        };
        let mut created = Vec::new();
        for i in 0..4 {
            clock.sleep(Duration::from_secs(60)).await;
            let stats = round(&hv, &*clock, Kind::Vm, schedule, 4)
                .await
                .expect("round");
            assert_eq!(stats.taken, 1, "only the running VM");
            assert_eq!(stats.failed, 0);
            let snaps = hv
                .list_snapshots(&SnapshotTarget::Vm("on-1".into()))
                .await
                .expect("list");
            created.push(snaps.last().expect("one").clone());
            assert!(snaps.len() <= 2, "round {i}: {snaps:?}");
            assert_eq!(snaps.last(), created.last(), "the newest stays");
        }
        assert!(hv
            .list_snapshots(&SnapshotTarget::Vm("off-1".into()))
            .await
            .expect("list")
            .is_empty());
        let hosts = round(&hv, &*clock, Kind::Host, schedule, 4)
            .await
            .expect("hosts");
        assert_eq!(hosts.taken, 1);
    }
}
