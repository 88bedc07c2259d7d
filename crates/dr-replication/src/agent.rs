//! The jobs the operator commands run: shipping disks to receivers (scan,
//! checkpoint, ship, trim) and reading a replica's state.

use crate::capture::{capture, ChangeSource, HashScan};
use crate::error::ReplError;
use crate::log::{Log, LogConfig};
use crate::net::{self, Progress, ShipConfig};
use crate::replica::CheckpointInfo;
use crate::scan::ScanStats;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

/// A shipping job.
#[derive(Clone, Debug)]
pub struct ShipJob {
    /// The disk images, disk 0, 1, … in order.
    pub disks: Vec<PathBuf>,
    /// The log directory on the primary.
    pub log_dir: PathBuf,
    /// Receivers.
    pub targets: Vec<SocketAddr>,
    /// Shipping settings.
    pub ship: ShipConfig,
    /// `None`: one checkpoint, shipped to every receiver, then stop.
    /// `Some(d)`: a checkpoint every `d` until stopped.
    pub interval: Option<Duration>,
    /// With `interval == None`: give up after this long.
    pub timeout: Duration,
}

/// What one round did.
#[derive(Clone, Debug)]
pub struct Round {
    /// The checkpoint taken.
    pub checkpoint: u64,
    /// Its log sequence.
    pub seq: u64,
    /// What each disk's capture read and appended.
    pub scans: Vec<ScanStats>,
    /// Whether the point was a full copy (the first, or after the change
    /// tracking was lost), not only the changes.
    pub full: bool,
    /// Why a full point after the first was full.
    pub full_reason: Option<String>,
    /// Each receiver's progress when the round was reported.
    pub targets: Vec<(SocketAddr, Progress)>,
    /// Each receiver's lag then: log bytes it has not acknowledged.
    pub lag_bytes: Vec<u64>,
    /// Each receiver's RPO then, as the primary sees it: now minus the time
    /// of the newest checkpoint it acknowledged (`None` before the first).
    pub rpo_ms: Vec<Option<u64>>,
}

impl Round {
    fn new(
        (checkpoint, seq): (u64, u64),
        (scans, full, full_reason): (Vec<ScanStats>, bool, Option<String>),
        targets: Vec<(SocketAddr, Progress)>,
        log: &Log,
    ) -> Round {
        let now = now_ms();
        Round {
            checkpoint,
            seq,
            scans,
            full,
            full_reason,
            lag_bytes: targets
                .iter()
                .map(|(_, p)| log.bytes_after(p.acked_seq))
                .collect(),
            rpo_ms: targets
                .iter()
                .map(|(_, p)| p.checkpoint.map(|(_, t)| now.saturating_sub(t)))
                .collect(),
            targets,
        }
    }
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReplError> + Send + 'static,
) -> Result<T, ReplError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ReplError::Poisoned(format!("worker failed: {e}"))))
}

/// Runs `job` until it is done (`interval == None`) or `shutdown` turns
/// true; reports each round to `report`. Changes are found by the hash
/// scan of `job.disks`.
pub async fn ship(
    job: ShipJob,
    shutdown: watch::Receiver<bool>,
    report: impl FnMut(&Round),
) -> Result<(), ReplError> {
    let (disks, dir) = (job.disks.clone(), job.log_dir.clone());
    let source = blocking(move || HashScan::open(disks, &dir)).await?;
    ship_from(job, Box::new(source), shutdown, report).await
}

/// [`ship`], with the changes of each point from `source` (the
/// hypervisor's change tracking, say); `job.disks` is not used.
pub async fn ship_from(
    job: ShipJob,
    source: Box<dyn ChangeSource>,
    mut shutdown: watch::Receiver<bool>,
    mut report: impl FnMut(&Round),
) -> Result<(), ReplError> {
    let dir = job.log_dir.clone();
    let log = Arc::new(Mutex::new(
        blocking(move || Log::open(&dir, LogConfig::default())).await?,
    ));
    let mut source = Some(source);
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let mut progress = Vec::new();
    for &addr in &job.targets {
        let (tx, rx) = watch::channel(Progress::default());
        tokio::spawn(net::ship(
            log.clone(),
            addr,
            job.ship.clone(),
            wake.clone(),
            tx,
            stopped.clone(),
        ));
        progress.push((addr, rx));
    }
    let started = tokio::time::Instant::now();
    let result = loop {
        let (l, mut src) = (log.clone(), source.take());
        let (src_back, captured) = blocking(move || {
            let captured = match src.as_deref_mut() {
                Some(s) => capture(s, &l, now_ms()),
                None => Err(ReplError::Poisoned("the change source was lost".into())),
            };
            Ok((src, captured))
        })
        .await?;
        source = src_back;
        let captured = captured?;
        let (id, seq) = captured.checkpoint;
        let point = (
            captured.disks,
            captured.point.full,
            captured.point.full_reason,
        );
        wake.notify_waiters();
        let snapshot = |p: &Vec<(SocketAddr, watch::Receiver<Progress>)>| {
            p.iter()
                .map(|(a, r)| (*a, r.borrow().clone()))
                .collect::<Vec<_>>()
        };
        let round_started = tokio::time::Instant::now();
        match job.interval {
            None => {
                let deadline = job.timeout.saturating_sub(started.elapsed());
                let done = tokio::select! {
                    biased;
                    _ = shutdown.changed() => false,
                    r = tokio::time::timeout(deadline, all_there(&mut progress, seq)) => r.is_ok(),
                };
                let targets = snapshot(&progress);
                report(&Round::new((id, seq), point, targets.clone(), &lock(&log)));
                break if done && targets.iter().all(|(_, p)| p.acked_seq >= seq) {
                    Ok(())
                } else {
                    Err(ReplError::NotShipped(not_shipped(
                        id,
                        seq,
                        &targets,
                        job.timeout,
                    )))
                };
            }
            Some(every) => {
                // The round is reported once every receiver has it (or when
                // the next is due), so what it shows is its outcome: lag 0
                // where the checkpoint arrived, not the moment it was taken.
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => {}
                    _ = tokio::time::timeout(every, all_there(&mut progress, seq)) => {}
                }
                report(&Round::new(
                    (id, seq),
                    point,
                    snapshot(&progress),
                    &lock(&log),
                ));
                let acked = progress
                    .iter()
                    .map(|(_, r)| r.borrow().acked_seq)
                    .min()
                    .unwrap_or(0);
                let l = log.clone();
                blocking(move || {
                    // The files go without the log's lock: the write path
                    // and the shippers go on meanwhile.
                    let detached = l
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .detach(acked);
                    detached.remove()
                })
                .await?;
                if *shutdown.borrow() {
                    break Ok(());
                }
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break Ok(()),
                    () = tokio::time::sleep_until(round_started + every) => {}
                }
            }
        }
    };
    let _ = stop.send(true);
    result
}

/// Waits until every receiver has everything up to `seq`, or one refused
/// the stream (retrying cannot help there).
async fn all_there(progress: &mut [(SocketAddr, watch::Receiver<Progress>)], seq: u64) {
    for (_, rx) in progress.iter_mut() {
        match rx.wait_for(|p| p.acked_seq >= seq || p.refused).await {
            Ok(p) if p.refused => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Why a one-off checkpoint did not reach every receiver, each one named
/// with its last error.
fn not_shipped(id: u64, seq: u64, targets: &[(SocketAddr, Progress)], timeout: Duration) -> String {
    let missing: Vec<String> = targets
        .iter()
        .filter(|(_, p)| p.acked_seq < seq)
        .map(|(addr, p)| match (&p.error, p.refused) {
            (Some(e), true) => format!("{addr}: {e}"),
            (Some(e), false) => {
                format!("{addr}: not acknowledged within {timeout:?} (last error: {e})")
            }
            (None, _) => format!("{addr}: not acknowledged within {timeout:?}"),
        })
        .collect();
    format!(
        "checkpoint {id} did not reach every receiver: {}",
        missing.join("; ")
    )
}

/// A replica directory's state, read without changing anything (safe while
/// a receiver runs on it).
#[derive(Clone, Debug, Default)]
pub struct ReplicaStatus {
    /// Checkpoints that can be restored, oldest first.
    pub checkpoints: Vec<CheckpointInfo>,
    /// Bytes of a checkpoint being received.
    pub receiving_bytes: u64,
    /// A merge into the base images under way (or cut off, to be finished
    /// at the next open), through this checkpoint.
    pub merging_through: Option<u64>,
}

/// Reads a replica directory's state.
pub fn inspect(dir: &Path) -> Result<ReplicaStatus, ReplError> {
    let mut st = ReplicaStatus::default();
    if let Ok(text) = std::fs::read_to_string(dir.join("meta")) {
        let f: Vec<u64> = text
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [id, seq, time_ms] = f.as_slice() {
            st.checkpoints.push(CheckpointInfo {
                id: *id,
                seq: *seq,
                time_ms: *time_ms,
            });
        }
    }
    let entries = std::fs::read_dir(dir).map_err(crate::error::io("list", dir))?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    let mut incoming = None;
    files.sort();
    for p in files {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "incoming.tmp" {
            incoming = Some(p.clone());
        } else if let Some(id) = name.strip_prefix("merging-").and_then(|x| x.parse().ok()) {
            st.merging_through = Some(id);
        } else if name.starts_with("cp-") && name.ends_with(".ckpt") {
            if let Ok(info) = crate::replica::read_checkpoint_info(&p) {
                if st.checkpoints.iter().all(|c| c.id != info.id) {
                    st.checkpoints.push(info);
                }
            }
        }
    }
    st.checkpoints.sort_by_key(|c| c.id);
    if let Some(path) = incoming {
        let next_seq = st.checkpoints.last().map_or(0, |c| c.seq) + 1;
        st.receiving_bytes = match crate::replica::received_bytes(&path, next_seq) {
            Ok(n) => n,
            // Completed and renamed meanwhile: nothing is being received.
            Err(ReplError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
    }
    Ok(st)
}

/// Now, in ms since the Unix epoch (for RPO).
pub fn now() -> u64 {
    now_ms()
}
