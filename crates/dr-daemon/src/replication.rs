//! The replication manager: each protected VM's disks shipped with
//! `dr-replication` to its receivers (two, in the paper) on an interval,
//! each receiver's RPO, lag and newest checkpoint kept for the API and the
//! metrics. A job that fails (a disk gone, the log's disk full) is logged
//! and restarted after a pause; the receivers keep their whole checkpoints.

use dr_replication::agent::{self, ShipJob};
use dr_replication::net::ShipConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// Where a protected VM's changes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskSource {
    /// Its disk images, disk 0, 1, … in order, read whole each point and
    /// compared block by block (`source = "scan"`).
    Scan(Vec<PathBuf>),
    /// The hypervisor's change tracking: one instant of every disk of the
    /// VM per point, only what changed read (`source = "libvirt"`).
    Libvirt(dr_libvirt::changes::Tracking),
}

/// Where a failover writes a protected VM's disks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreImages {
    /// One image per disk, named.
    Files(Vec<PathBuf>),
    /// A directory: `<vm>-disk<N>.img` for each disk the replica holds.
    Dir(PathBuf),
}

/// One protected VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protected {
    /// The VM.
    pub vm: String,
    /// Where its changes come from.
    pub source: DiskSource,
    /// Its receivers.
    pub targets: Vec<SocketAddr>,
    /// Its log directory on this side.
    pub log_dir: PathBuf,
    /// Time between its checkpoints.
    pub interval: Duration,
    /// Failover from a replica this daemon receives: that replica's
    /// directory, and where the disks are written for the restored VM.
    pub restore: Option<(PathBuf, RestoreImages)>,
}

/// A replica this daemon receives (it is the DR site's receiver too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receive {
    /// Where shippers connect.
    pub listen: SocketAddr,
    /// The replica directory.
    pub dir: PathBuf,
    /// Past checkpoints kept apart (point-in-time recovery).
    pub keep: usize,
}

/// The manager's settings (its `Debug` hides the key).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// The pre-shared key of the receivers.
    pub key: Vec<u8>,
    /// Time between checkpoints (a VM may set its own).
    pub interval: Duration,
    /// The RPO above which a VM's replication is behind (`rpo_target`;
    /// three intervals unless set).
    pub rpo_target: Duration,
    /// Bandwidth cap per receiver, bytes per second.
    pub bandwidth: Option<u64>,
    /// The protected VMs.
    pub vms: Vec<Protected>,
    /// The replicas this daemon receives.
    pub receive: Vec<Receive>,
}

/// One receiver of one VM, as last reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TargetStatus {
    /// The receiver.
    pub target: String,
    /// Its newest acknowledged checkpoint.
    pub checkpoint: Option<u64>,
    /// RPO as this side sees it, ms.
    pub rpo_ms: Option<u64>,
    /// Log bytes it has not acknowledged.
    pub lag_bytes: u64,
    /// Connections to it that failed.
    pub failures: u64,
    /// Why the last connection to it failed, while it has not got through
    /// again (a refusal — wrong key, another stream — stays until fixed).
    pub error: Option<String>,
}

/// One protected VM, as last reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VmReplication {
    /// The VM.
    pub vm: String,
    /// The RPO above which it is behind, ms.
    pub rpo_target_ms: u64,
    /// The newest checkpoint taken here.
    pub checkpoint: u64,
    /// Where its changes come from: `scan` or `libvirt`.
    pub source: &'static str,
    /// Whether each point is one instant of every disk
    /// (`point_in_time`), or blocks read while the disks may be written
    /// (`fuzzy`, the scan's).
    pub consistency: &'static str,
    /// 4 KiB blocks found changed by the last point.
    pub changed_blocks: u64,
    /// Points that sent every allocated block (the first, and any after
    /// the change tracking was lost).
    pub full_points: u64,
    /// Why the last full point after the first was full.
    pub full_reason: Option<String>,
    /// Jobs that failed and were restarted.
    pub restarts: u64,
    /// The last error, if the job is failing.
    pub error: Option<String>,
    /// Its receivers.
    pub targets: Vec<TargetStatus>,
}

/// What the manager reports, by VM.
#[derive(Default)]
pub struct ReplicationState(Mutex<BTreeMap<String, VmReplication>>);

impl ReplicationState {
    fn update(&self, vm: &str, f: impl FnOnce(&mut VmReplication)) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let e = all.entry(vm.to_owned()).or_insert_with(|| VmReplication {
            vm: vm.to_owned(),
            ..VmReplication::default()
        });
        f(e);
    }

    /// Every protected VM.
    pub fn all(&self) -> Vec<VmReplication> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// Ships `p` until `shutdown`, restarting after failures.
pub async fn protect(
    p: Protected,
    cfg: Arc<ReplicationConfig>,
    state: Arc<ReplicationState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let target = cfg.rpo_target.as_millis().try_into().unwrap_or(u64::MAX);
    let (source, consistency) = match &p.source {
        DiskSource::Scan(_) => ("scan", "fuzzy"),
        DiskSource::Libvirt(_) => ("libvirt", "point_in_time"),
    };
    state.update(&p.vm, |r| {
        r.rpo_target_ms = target;
        r.source = source;
        r.consistency = consistency;
    });
    loop {
        let result = ship_once(&p, &cfg, &state, shutdown.clone()).await;
        if *shutdown.borrow() {
            return;
        }
        let error = match result {
            Ok(()) => "the shipping job ended".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(vm = %p.vm, %error, "replication failed; restarting it in 5 s");
        state.update(&p.vm, |e| {
            e.restarts += 1;
            e.error = Some(error);
        });
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// One shipping job of `p`, until it fails or `shutdown`.
async fn ship_once(
    p: &Protected,
    cfg: &ReplicationConfig,
    state: &Arc<ReplicationState>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), dr_replication::ReplError> {
    let job = ShipJob {
        disks: match &p.source {
            DiskSource::Scan(d) => d.clone(),
            DiskSource::Libvirt(_) => Vec::new(),
        },
        log_dir: p.log_dir.clone(),
        targets: p.targets.clone(),
        ship: ShipConfig {
            bandwidth: cfg.bandwidth,
            ..ShipConfig::new(cfg.key.clone())
        },
        interval: Some(p.interval),
        timeout: Duration::from_secs(3600),
    };
    let st = state.clone();
    let vm = p.vm.clone();
    let report = move |round: &agent::Round| {
        st.update(&vm, |e| {
            e.checkpoint = round.checkpoint;
            e.changed_blocks = round.scans.iter().map(|s| s.changed).sum();
            if round.full {
                e.full_points += 1;
                if round.full_reason.is_some() {
                    e.full_reason.clone_from(&round.full_reason);
                }
            }
            e.error = None;
            e.targets = round
                .targets
                .iter()
                .zip(round.lag_bytes.iter().zip(&round.rpo_ms))
                .map(|((addr, progress), (lag, rpo))| TargetStatus {
                    target: addr.to_string(),
                    checkpoint: progress.checkpoint.map(|c| c.0),
                    rpo_ms: *rpo,
                    lag_bytes: *lag,
                    failures: progress.failures,
                    error: progress.error.as_deref().map(str::to_owned),
                })
                .collect();
        });
    };
    match &p.source {
        DiskSource::Scan(_) => agent::ship(job, shutdown, report).await,
        DiskSource::Libvirt(t) => {
            std::fs::create_dir_all(&p.log_dir).map_err(|cause| dr_replication::ReplError::Io {
                op: "create",
                path: p.log_dir.clone(),
                cause,
            })?;
            let source = dr_libvirt::changes::LibvirtChanges::open(t.clone())?;
            agent::ship_from(job, Box::new(source), shutdown, report).await
        }
    }
}

impl std::fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("key", &"<redacted>")
            .field("interval", &self.interval)
            .field("rpo_target", &self.rpo_target)
            .field("bandwidth", &self.bandwidth)
            .field("vms", &self.vms)
            .field("receive", &self.receive)
            .finish()
    }
}

impl ReplicationState {
    /// The Prometheus text of every protected VM's receivers.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let all = self.all();
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(
            &mut out,
            "vmdr_replication_rpo_seconds",
            "gauge",
            "Now minus the time of the newest checkpoint the receiver acknowledged.",
        );
        for v in &all {
            for t in &v.targets {
                if let Some(rpo) = t.rpo_ms {
                    let _ = writeln!(
                        out,
                        "vmdr_replication_rpo_seconds{{vm=\"{}\",target=\"{}\"}} {}",
                        v.vm,
                        t.target,
                        rpo as f64 / 1000.0
                    );
                }
            }
        }
        header(
            &mut out,
            "vmdr_replication_lag_bytes",
            "gauge",
            "Log bytes the receiver has not acknowledged.",
        );
        for v in &all {
            for t in &v.targets {
                let _ = writeln!(
                    out,
                    "vmdr_replication_lag_bytes{{vm=\"{}\",target=\"{}\"}} {}",
                    v.vm, t.target, t.lag_bytes
                );
            }
        }
        header(
            &mut out,
            "vmdr_replication_checkpoint",
            "gauge",
            "The newest checkpoint the receiver acknowledged.",
        );
        for v in &all {
            for t in &v.targets {
                if let Some(c) = t.checkpoint {
                    let _ = writeln!(
                        out,
                        "vmdr_replication_checkpoint{{vm=\"{}\",target=\"{}\"}} {c}",
                        v.vm, t.target
                    );
                }
            }
        }
        header(
            &mut out,
            "vmdr_replication_restarts_total",
            "counter",
            "Shipping jobs that failed and were restarted.",
        );
        for v in &all {
            let _ = writeln!(
                out,
                "vmdr_replication_restarts_total{{vm=\"{}\"}} {}",
                v.vm, v.restarts
            );
        }
        out
    }
}
