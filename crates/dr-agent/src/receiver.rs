//! drd's side: the heartbeats its agents post, the storage heartbeats they
//! write, and the signals both give the engine ([`AmendInventory`]: each
//! host's `HostInfo::signals`, read with the inventory).

use crate::protocol::{self, Ack, AgentState, Heartbeat, StorageRecord};
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use dr_core::model::{AgentSignal, HostSignals, Inventory, StorageSignal};
use dr_core::ports::{AmendInventory, Clock};
use dr_core::Timestamp;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A storage read that takes longer than this counts as the storage being
/// unreadable (a hung NFS mount must not hold the inventory up).
const STORAGE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The last heartbeat of one host's agent.
#[derive(Clone, Debug)]
struct Heard {
    beat: Heartbeat,
    at: Timestamp,
}

/// What drd knows of one host's storage record.
#[derive(Clone, Copy, Debug)]
struct Seen {
    seq: u64,
    moved: Timestamp,
    fenced: bool,
    interval_ms: u32,
}

/// The agents drd has heard, and their storage heartbeats.
pub struct Agents {
    clock: Arc<dyn Clock>,
    heard: Mutex<HashMap<String, Heard>>,
    storage_dir: Option<PathBuf>,
    seen: Mutex<HashMap<String, Seen>>,
    /// Whether the last storage read succeeded.
    readable: AtomicBool,
    /// A storage read is running (one at a time: a hung one is not piled on).
    reading: Arc<AtomicBool>,
}

/// A heartbeat drd refuses.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Not a heartbeat.
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    /// A heartbeat that makes no sense.
    #[error("heartbeat of {host:?}: {problem}")]
    Invalid {
        /// Its host.
        host: String,
        /// What is wrong.
        problem: &'static str,
    },
}

impl Agents {
    /// Heartbeats are stamped on `clock` (the control loop's); storage
    /// records are read from `storage_dir`, if any.
    pub fn new(clock: Arc<dyn Clock>, storage_dir: Option<PathBuf>) -> Arc<Agents> {
        Arc::new(Agents {
            clock,
            heard: Mutex::new(HashMap::new()),
            storage_dir,
            seen: Mutex::new(HashMap::new()),
            readable: AtomicBool::new(false),
            reading: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Takes one heartbeat: stamps it now and acknowledges it.
    pub fn heartbeat(&self, beat: Heartbeat) -> Result<Ack, ReceiveError> {
        let bad = |problem| ReceiveError::Invalid {
            host: beat.host.clone(),
            problem,
        };
        if !protocol::safe_host_name(&beat.host) {
            return Err(bad("host is not a plain name (letters, digits, . - _)"));
        }
        if beat.interval_ms == 0 || beat.isolation_timeout_ms == 0 {
            return Err(bad(
                "interval_ms and isolation_timeout_ms must be more than 0",
            ));
        }
        let ack = Ack { seq: beat.seq };
        let at = self.clock.now();
        let mut heard = self.heard.lock().unwrap_or_else(PoisonError::into_inner);
        if beat.state == AgentState::Leaving {
            // Its promise ends: the host is one without an agent now.
            tracing::warn!(host = %beat.host, "agent stopping: its host no longer fences itself");
            heard.remove(&beat.host);
            return Ok(ack);
        }
        if heard
            .get(&beat.host)
            .is_none_or(|h| h.beat.state != beat.state)
        {
            tracing::info!(host = %beat.host, state = ?beat.state, "agent heard");
        }
        heard.insert(beat.host.clone(), Heard { beat, at });
        Ok(ack)
    }

    /// The agent listener's routes: `POST /agent/v1/heartbeat` behind the
    /// agents' bearer token.
    pub fn router(self: &Arc<Self>, token: Arc<str>) -> Router {
        Router::new()
            .route(protocol::HEARTBEAT_PATH, post(receive))
            .with_state(Receiver {
                agents: self.clone(),
                token,
            })
    }

    /// Reads every known host's storage record once, off the async
    /// threads, within [`STORAGE_READ_TIMEOUT`].
    async fn read_storage(&self, hosts: Vec<String>) {
        let Some(dir) = self.storage_dir.clone() else {
            return;
        };
        if self.reading.swap(true, Ordering::AcqRel) {
            // The last read has not come back: the storage is not readable.
            self.readable.store(false, Ordering::Release);
            return;
        }
        let reading = self.reading.clone();
        let task = tokio::task::spawn_blocking(move || {
            let records = read_records(&dir, &hosts);
            reading.store(false, Ordering::Release);
            records
        });
        let now = self.clock.now();
        match tokio::time::timeout(STORAGE_READ_TIMEOUT, task).await {
            Ok(Ok(Ok(records))) => {
                self.readable.store(true, Ordering::Release);
                let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                for r in records {
                    let moved = seen.get(&r.host).is_none_or(|s| s.seq != r.seq);
                    let entry = seen.entry(r.host.clone()).or_insert(Seen {
                        seq: r.seq,
                        moved: now,
                        fenced: false,
                        interval_ms: r.interval_ms,
                    });
                    if moved {
                        entry.moved = now;
                    }
                    entry.seq = r.seq;
                    entry.fenced = r.state == AgentState::Fenced;
                    entry.interval_ms = r.interval_ms;
                }
            }
            Ok(Ok(Err(e))) => {
                if self.readable.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "cannot read the agents' storage heartbeats");
                }
            }
            Ok(Err(_)) | Err(_) => {
                if self.readable.swap(false, Ordering::AcqRel) {
                    tracing::warn!("reading the agents' storage heartbeats did not finish in time");
                }
            }
        }
    }

    /// What drd knows of `host`'s agent and storage heartbeat.
    fn signals(&self, host: &str) -> HostSignals {
        let heard = self.heard.lock().unwrap_or_else(PoisonError::into_inner);
        let agent = heard.get(host).map(|h| AgentSignal {
            last_heard: h.at,
            interval_ms: h.beat.interval_ms,
            isolation_timeout_ms: h.beat.isolation_timeout_ms,
            reassurance: h.beat.reassurance,
            watchdog: h.beat.watchdog,
        });
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let record = seen.get(host).copied();
        // A storage signal where there is a record, or where its agent says
        // it writes one (not there yet: it has not moved since ever).
        let expects = heard
            .get(host)
            .is_some_and(|h| h.beat.reassurance == dr_core::model::Reassurance::GatewayAndStorage);
        let storage =
            (self.storage_dir.is_some() && (record.is_some() || expects)).then(|| StorageSignal {
                readable: self.readable.load(Ordering::Acquire),
                last_moved: record.map_or(Timestamp::ZERO, |r| r.moved),
                interval_ms: record.map_or(0, |r| r.interval_ms),
                fenced: record.is_some_and(|r| r.fenced),
            });
        HostSignals {
            agent,
            storage,
            ha: None,
        }
    }
}

/// Reads `<dir>/<host>.json` for each host; a missing one is no record. An
/// unreadable directory is an error; an unreadable or invalid record is
/// logged and skipped.
fn read_records(dir: &std::path::Path, hosts: &[String]) -> std::io::Result<Vec<StorageRecord>> {
    std::fs::read_dir(dir)?;
    let mut out = Vec::new();
    for host in hosts.iter().filter(|h| protocol::safe_host_name(h)) {
        let path = dir.join(format!("{host}.json"));
        match std::fs::read(&path) {
            Ok(bytes) => match protocol::parse::<StorageRecord>("storage record", &bytes) {
                Ok(r) if &r.host == host => out.push(r),
                Ok(r) => {
                    tracing::warn!(file = %path.display(), names = %r.host, "storage record names another host")
                }
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "bad storage record"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read a storage record")
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl AmendInventory for Agents {
    async fn amend(&self, inv: &mut Inventory) {
        self.read_storage(inv.hosts.iter().map(|h| h.name.clone()).collect())
            .await;
        for h in &mut inv.hosts {
            // Adds to what the backend knows (the simulation's own agents),
            // never takes it away.
            let s = self.signals(&h.name);
            h.signals.agent = s.agent.or(h.signals.agent);
            h.signals.storage = s.storage.or(h.signals.storage);
        }
    }
}

#[derive(Clone)]
struct Receiver {
    agents: Arc<Agents>,
    token: Arc<str>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(&*r.token) {
        return (StatusCode::UNAUTHORIZED, "agent token missing or wrong\n").into_response();
    }
    let beat = match protocol::parse::<Heartbeat>("heartbeat", &body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match r.agents.heartbeat(beat) {
        Ok(ack) => Json(ack).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}
