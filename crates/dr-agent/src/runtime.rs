//! The agent itself: heartbeats to drd, probes of its isolation addresses,
//! its storage heartbeat, and the rule ([`dr_core::isolation`]) that makes
//! it destroy its host's guests when it is cut off; its watchdog, petted
//! while that loop runs.
//!
//! Every channel runs as its own task, bounded by the interval, so a hung
//! drd, gateway or NFS mount never holds the loop up: the loop only reads
//! when each last worked. Times are the host's boot clock (`/proc/uptime`),
//! which a restart of the agent does not reset, so its last
//! acknowledgement survives the restart (`state_file`) and a restarted
//! agent keeps the promise its predecessor made.

use crate::config::{AgentConfig, DESTROY_BUDGET};
use crate::guests::Guests;
use crate::protocol::{self, Ack, AgentState, Heartbeat, StorageRecord};
use crate::watchdog::Watchdog;
use dr_core::isolation::{LastContact, Promise};
use dr_core::ports::{ProbeTarget, Prober};
use dr_core::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often the loop looks at its channels and its guests.
const TICK: Duration = Duration::from_millis(100);

/// How long one call to the host's libvirt may take.
const LIBVIRT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The host's boot clock cannot be read.
    #[error("cannot read the boot clock /proc/uptime: {0}")]
    Clock(String),
    /// The watchdog cannot be armed.
    #[error("cannot arm the watchdog {path}: {cause}")]
    Watchdog {
        /// The device.
        path: std::path::PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// Milliseconds since the host booted.
pub fn boot_clock() -> Result<Timestamp, AgentError> {
    let text =
        std::fs::read_to_string("/proc/uptime").map_err(|e| AgentError::Clock(e.to_string()))?;
    let secs: f64 = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| AgentError::Clock(format!("unexpected contents {text:?}")))?;
    Ok(Timestamp((secs * 1000.0) as u64))
}

/// The boot this is (a reboot makes every stored time meaningless).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// What a channel task reports: the moment its attempt began, if it worked.
enum Worked {
    Ack(Timestamp),
    Gateway(Timestamp),
    Storage(Timestamp),
}

/// The agent's run, until `shutdown` flips.
pub struct Agent {
    cfg: Arc<AgentConfig>,
    promise: Promise,
    last: LastContact,
    state: AgentState,
    /// When it last decided to fence (and so when an ack must be newer
    /// than, for it to resume).
    fenced_at: Timestamp,
    seq: u64,
    http: reqwest::Client,
    prober: Arc<dr_probe::NetProber>,
    guests: Guests,
    watchdog: Option<Watchdog>,
}

impl Agent {
    /// An agent over `cfg`: its watchdog armed, its last acknowledgement
    /// read back if this boot's.
    pub fn new(cfg: AgentConfig) -> Result<Agent, AgentError> {
        let watchdog = match &cfg.watchdog {
            Some(path) => Some(Watchdog::arm(path).map_err(|cause| AgentError::Watchdog {
                path: path.clone(),
                cause,
            })?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.interval)
            .build()
            .map_err(|e| AgentError::Http(e.to_string()))?;
        let last = LastContact {
            ack: cfg.state_file.as_deref().and_then(read_state),
            ..LastContact::default()
        };
        if let Some(ack) = last.ack {
            tracing::info!(
                last_ack_ms = ack.0,
                "the previous run's last acknowledgement holds"
            );
        }
        let promise = Promise {
            timeout: cfg.isolation_timeout,
            reassurance: cfg.reassurance(),
        };
        // A destroy returns once libvirt has cleaned up after QEMU, which
        // may be seconds after the guest stopped running: the call gets
        // long enough; the promise counts only until the guest is gone,
        // and a guest still running past it stops the watchdog's petting.
        let guests = Guests::new(&cfg.libvirt, LIBVIRT_TIMEOUT);
        Ok(Agent {
            cfg: Arc::new(cfg),
            promise,
            last,
            state: AgentState::Running,
            fenced_at: Timestamp::ZERO,
            seq: 0,
            http,
            prober: Arc::new(dr_probe::NetProber::new(dr_probe::ProbeConfig::default())),
            guests,
            watchdog,
        })
    }

    /// Runs until `shutdown` flips; then says goodbye to drd (its promise
    /// ends with it) and disarms the watchdog.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
        let (tx, mut rx) = mpsc::channel::<Worked>(64);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_round = Timestamp::ZERO;
        tracing::info!(host = %self.cfg.host, reassurance = ?self.cfg.reassurance(),
            isolation_timeout_ms = dr_core::time::millis(self.cfg.isolation_timeout),
            watchdog = self.watchdog.is_some(), "agent started");
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let now = boot_clock()?;
            while let Ok(w) = rx.try_recv() {
                self.worked(w);
            }
            if now >= next_round {
                next_round = now.saturating_add(self.cfg.interval);
                self.round(now, &tx);
            }
            self.watch_over_guests(now, &tx).await;
            if let Some(w) = &self.watchdog {
                // Petted while this loop runs and keeps its promise: a fence
                // it cannot finish in its budget lets the host reset.
                if self.state == AgentState::Fenced || !self.fence_overdue(now) {
                    w.pet();
                }
            }
        }
        self.goodbye().await;
        if let Some(w) = self.watchdog.take() {
            w.disarm();
        }
        Ok(())
    }

    fn worked(&mut self, w: Worked) {
        let later = |old: Option<Timestamp>, t: Timestamp| Some(old.map_or(t, |o| o.max(t)));
        match w {
            Worked::Ack(t) => {
                let first = self.last.ack.is_none();
                self.last.ack = later(self.last.ack, t);
                if first {
                    tracing::info!("drd acknowledged: the promise to fence holds from now");
                }
                if let Some(path) = self.cfg.state_file.clone() {
                    let ack = self.last.ack.unwrap_or(t);
                    tokio::task::spawn_blocking(move || write_state(&path, ack));
                }
            }
            Worked::Gateway(t) => self.last.gateway = later(self.last.gateway, t),
            Worked::Storage(t) => self.last.storage = later(self.last.storage, t),
        }
    }

    /// One interval's round: a heartbeat, a probe of the isolation
    /// addresses, a storage write, each its own task.
    fn round(&mut self, now: Timestamp, tx: &mpsc::Sender<Worked>) {
        self.seq += 1;
        let beat = Heartbeat {
            host: self.cfg.host.clone(),
            seq: self.seq,
            state: self.state,
            isolation_timeout_ms: promise_ms(&self.cfg),
            interval_ms: u32::try_from(self.cfg.interval.as_millis()).unwrap_or(u32::MAX),
            reassurance: self.cfg.reassurance(),
            watchdog: self.watchdog.is_some(),
        };
        tokio::spawn(send_heartbeat(
            self.http.clone(),
            self.cfg.clone(),
            beat,
            now,
            tx.clone(),
        ));
        if !self.cfg.isolation_addresses.is_empty() {
            let (prober, cfg, tx) = (self.prober.clone(), self.cfg.clone(), tx.clone());
            tokio::spawn(async move {
                let targets: Vec<ProbeTarget> = cfg
                    .isolation_addresses
                    .iter()
                    .map(|&a| ProbeTarget::icmp(a))
                    .collect();
                let wait = cfg.interval.min(Duration::from_secs(1));
                if let Ok(results) = prober.probe(&targets, wait).await {
                    if results.iter().any(|r| r.reachable) {
                        let _ = tx.send(Worked::Gateway(now)).await;
                    }
                }
            });
        }
        self.write_storage(now, tx);
    }

    fn write_storage(&self, now: Timestamp, tx: &mpsc::Sender<Worked>) {
        let Some(path) = self.cfg.storage_file() else {
            return;
        };
        let record = StorageRecord {
            host: self.cfg.host.clone(),
            seq: now.0,
            state: self.state,
            interval_ms: u32::try_from(self.cfg.interval.as_millis()).unwrap_or(u32::MAX),
        };
        let (tx, wait) = (tx.clone(), self.cfg.interval);
        tokio::spawn(async move {
            let write = tokio::task::spawn_blocking(move || write_record(&path, &record));
            match tokio::time::timeout(wait, write).await {
                Ok(Ok(Ok(()))) => {
                    let _ = tx.send(Worked::Storage(now)).await;
                }
                Ok(Ok(Err(e))) => tracing::debug!(error = %e, "storage heartbeat not written"),
                _ => tracing::debug!("storage heartbeat write did not finish in time"),
            }
        });
    }

    /// The fence was due and is still not done after its budget.
    fn fence_overdue(&self, now: Timestamp) -> bool {
        self.promise
            .fences_at(&self.last)
            .is_some_and(|t| now >= t.saturating_add(DESTROY_BUDGET))
    }

    /// Fences when the rule says so; keeps a fenced host empty; resumes
    /// once drd acknowledges again.
    async fn watch_over_guests(&mut self, now: Timestamp, tx: &mpsc::Sender<Worked>) {
        match self.state {
            AgentState::Running => {
                let Some(due) = self.promise.fences_at(&self.last) else {
                    return;
                };
                if now < due {
                    return;
                }
                let since_ack = |t: Timestamp| self.last.ack.map_or(0, |a| t.0.saturating_sub(a.0));
                tracing::warn!(due_ms_after_ack = since_ack(due), now_ms_after_ack = since_ack(now),
                    last_gateway_ms = ?self.last.gateway.map(|t| t.0),
                    last_storage_ms = ?self.last.storage.map(|t| t.0),
                    "isolated: destroying this host's guests");
                match self.guests.destroy_running().await {
                    Ok(destroyed) => {
                        let done = boot_clock().unwrap_or(now);
                        tracing::warn!(guests = ?destroyed, done_ms_after_ack = since_ack(done),
                            "fenced: guests destroyed; none runs here until drd answers");
                        self.state = AgentState::Fenced;
                        self.fenced_at = now;
                        self.write_storage(now, tx);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot destroy the guests; trying again")
                    }
                }
            }
            AgentState::Fenced => {
                if self.last.ack.is_some_and(|a| a > self.fenced_at) {
                    tracing::info!("drd answers again: resuming");
                    self.state = AgentState::Running;
                    return;
                }
                match self.guests.destroy_running().await {
                    Ok(destroyed) if !destroyed.is_empty() => {
                        tracing::warn!(guests = ?destroyed, "fenced: destroyed guests started here");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cannot check this host's guests"),
                }
            }
            AgentState::Leaving => {}
        }
    }

    /// Tells drd its promise ends (best effort: a drd that does not hear
    /// it keeps counting on a promise no one keeps; the log says so).
    async fn goodbye(&mut self) {
        self.seq += 1;
        let beat = Heartbeat {
            host: self.cfg.host.clone(),
            seq: self.seq,
            state: AgentState::Leaving,
            isolation_timeout_ms: promise_ms(&self.cfg),
            interval_ms: u32::try_from(self.cfg.interval.as_millis()).unwrap_or(u32::MAX),
            reassurance: self.cfg.reassurance(),
            watchdog: false,
        };
        let (tx, mut rx) = mpsc::channel(1);
        send_heartbeat(
            self.http.clone(),
            self.cfg.clone(),
            beat,
            Timestamp::ZERO,
            tx,
        )
        .await;
        if rx.try_recv().is_ok() {
            tracing::info!("stopped; drd knows this host no longer fences itself");
        } else {
            tracing::warn!("stopped without drd hearing it: drd counts on a promise to fence until it misses the heartbeats");
        }
    }
}

/// What the agent promises drd, ms: its guests are gone this long after
/// it is cut off.
fn promise_ms(cfg: &AgentConfig) -> u32 {
    u32::try_from((cfg.isolation_timeout + DESTROY_BUDGET).as_millis()).unwrap_or(u32::MAX)
}

/// Posts `beat` to each drd address in turn until one acknowledges it;
/// reports the moment it was sent.
async fn send_heartbeat(
    http: reqwest::Client,
    cfg: Arc<AgentConfig>,
    beat: Heartbeat,
    sent: Timestamp,
    tx: mpsc::Sender<Worked>,
) {
    for addr in &cfg.drd {
        let url = format!("http://{addr}{}", protocol::HEARTBEAT_PATH);
        let reply = http
            .post(&url)
            .bearer_auth(&cfg.token)
            .json(&beat)
            .send()
            .await;
        let body = match reply {
            Ok(r) if r.status().is_success() => r.bytes().await,
            Ok(r) => {
                tracing::debug!(drd = %addr, status = %r.status(), "heartbeat refused");
                continue;
            }
            Err(e) => {
                tracing::debug!(drd = %addr, error = %e, "heartbeat not delivered");
                continue;
            }
        };
        match body.map(|b| protocol::parse::<Ack>("acknowledgement", &b)) {
            Ok(Ok(ack)) if ack.seq == beat.seq => {
                let _ = tx.send(Worked::Ack(sent)).await;
                return;
            }
            _ => tracing::debug!(drd = %addr, "heartbeat not acknowledged"),
        }
    }
}

/// Writes `record` where drd reads it: a temporary file, flushed, then
/// renamed over the last (a reader never sees half a record).
fn write_record(path: &std::path::Path, record: &StorageRecord) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// The previous run's last acknowledgement, if it was this boot's.
fn read_state(path: &std::path::Path) -> Option<Timestamp> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if v["boot_id"].as_str()? != boot_id() {
        return None;
    }
    v["last_ack_ms"].as_u64().map(Timestamp)
}

fn write_state(path: &std::path::Path, ack: Timestamp) {
    let text = serde_json::json!({ "boot_id": boot_id(), "last_ack_ms": ack.0 }).to_string();
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "cannot keep the last acknowledgement");
    }
}
