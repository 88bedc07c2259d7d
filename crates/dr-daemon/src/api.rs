//! The HTTP API (axum): status (also as a stream of changes), hosts and
//! VMs, a VM's detail, events, journal, metrics, health; pause and resume
//! of automation, planned failover (from a chosen checkpoint of the
//! replica, which the API lists) and drills per VM behind a bearer token;
//! and the operators' console (`crate::console`) at `/`.

use crate::state::Shared;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the API asks of the control loop.
#[derive(Debug)]
pub enum Command {
    /// Pause (`true`) or resume automation for a VM.
    Pause {
        /// The VM.
        vm: String,
        /// Pause or resume.
        paused: bool,
        /// Ok, or why not.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A planned failover of a VM (to a host, or one the daemon picks).
    Failover {
        /// The VM.
        vm: String,
        /// The target host.
        to: Option<String>,
        /// The replica's checkpoint to come back from (`None`: the newest).
        checkpoint: Option<u64>,
        /// What it did, or why not.
        reply: oneshot::Sender<Result<crate::failover::FailoverReport, String>>,
    },
    /// A recovery drill of a VM.
    Drill {
        /// The VM.
        vm: String,
        /// The host for the copy.
        to: Option<String>,
        /// What it did, or why not.
        reply: oneshot::Sender<Result<crate::drill::DrillReport, String>>,
    },
    /// A planned failover ended (sent by its task to the loop).
    FailoverDone {
        /// The VM.
        vm: String,
        /// Whether automation was paused before it began.
        was_paused: bool,
    },
}

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The daemon's shared state.
    pub shared: Arc<Shared>,
    /// To the control loop.
    pub commands: mpsc::Sender<Command>,
    /// The bearer token of mutating endpoints.
    pub token: Option<Arc<str>>,
    /// The recovery journal.
    pub journal: Arc<dyn dr_journal::Store>,
    /// The replicas this daemon receives, by protected VM.
    pub restores: crate::daemon::Restores,
    /// Turns true when the daemon stops (ends event streams, so the
    /// server's graceful shutdown does not wait on them).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// This node's leadership, in a cluster: commands go to the leader.
    pub cluster: Option<Arc<dr_cluster::Leadership>>,
    /// The client that forwards them (its connections kept).
    pub forward: reqwest::Client,
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(crate::console::index))
        .route("/console/{file}", get(crate::console::asset))
        .route("/api/v1/status", get(status))
        .route("/api/v1/status/stream", get(status_stream))
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/vms", get(vms))
        .route("/api/v1/vms/{vm}", get(vm_detail))
        .route("/api/v1/events", get(events))
        .route("/api/v1/events/stream", get(event_stream))
        .route("/api/v1/journal", get(journal))
        .route("/api/v1/replication", get(replication))
        .route("/api/v1/failure-budget", get(failure_budget))
        .route("/api/v1/vms/{vm}/pause", post(pause))
        .route("/api/v1/vms/{vm}/resume", post(resume))
        .route("/api/v1/vms/{vm}/checkpoints", get(checkpoints))
        .route("/api/v1/vms/{vm}/failover", post(failover))
        .route("/api/v1/vms/{vm}/drill", post(drill))
        .with_state(state)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn readyz(State(s): State<ApiState>) -> Response {
    match s.shared.readiness() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

async fn failure_budget(State(s): State<ApiState>) -> Response {
    Json(s.shared.budget()).into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let cluster = s
        .cluster
        .as_ref()
        .map(|l| crate::metrics::cluster(&l.status()))
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.shared.metrics.render()
            + &s.shared.replication.render()
            + &s.shared.budget().render()
            + &cluster,
    )
        .into_response()
}

/// The status; in a cluster with `cluster`: this node's role, the leader,
/// the nodes, the epoch and the lease left (the rest is this node's own
/// view, as fresh as its `view` says).
async fn status(State(s): State<ApiState>) -> Response {
    let status = s.shared.status();
    let Some(l) = &s.cluster else {
        return Json(status).into_response();
    };
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "cluster".into(),
            serde_json::to_value(l.status()).unwrap_or_default(),
        );
    }
    Json(v).into_response()
}

/// On a cluster node that does not lead, a command is the leader's: it is
/// sent there as it came (its token with it) and the leader's answer is
/// returned; with no leader, 503. `None`: this node handles it.
async fn forwarded(s: &ApiState, uri: &axum::http::Uri, headers: &HeaderMap) -> Option<Response> {
    let l = s.cluster.as_ref()?;
    let st = l.status();
    if st.role == dr_cluster::Role::Leader {
        return None;
    }
    let Some(leader) = st.leader.filter(|l| !l.api.is_empty()) else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no node leads the cluster now: try again in a few seconds",
        ));
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path}", leader.api.trim_end_matches('/'));
    let mut req = s.forward.post(&url);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth.as_bytes());
    }
    tracing::info!(leader = %leader.node, path, "command forwarded to the leader");
    let answer = async {
        let r = req.send().await?;
        let code = r.status().as_u16();
        Ok::<_, reqwest::Error>((code, r.bytes().await?))
    };
    Some(match answer.await {
        Ok((code, body)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::HeaderName::from_static("x-vmdr-leader"),
                    leader.node.clone(),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("the leader {} did not answer: {e}", leader.node),
        ),
    })
}

async fn hosts(State(s): State<ApiState>) -> Response {
    Json(s.shared.status().hosts).into_response()
}

async fn vms(State(s): State<ApiState>) -> Response {
    Json(s.shared.status().vms).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<u64>,
    limit: Option<usize>,
    /// The newest this many instead (oldest first).
    tail: Option<usize>,
}

async fn events(State(s): State<ApiState>, Query(q): Query<EventsQuery>) -> Response {
    if let Some(n) = q.tail {
        return Json(s.shared.events_tail(n.min(10_000))).into_response();
    }
    let limit = q.limit.unwrap_or(1000).min(10_000);
    Json(s.shared.events_since(q.since.unwrap_or(0), limit)).into_response()
}

#[derive(Deserialize)]
struct StreamQuery {
    since: Option<u64>,
}

async fn replication(State(s): State<ApiState>) -> Response {
    Json(s.shared.replication.all()).into_response()
}

/// One checkpoint a failover can start from.
#[derive(serde::Serialize)]
struct CheckpointView {
    id: u64,
    /// When the primary took it, ms since the Unix epoch.
    time_ms: u64,
    /// The disks it holds.
    disks: Vec<u32>,
}

/// The checkpoints of `vm`'s replica received here, oldest first: the
/// points a planned failover may choose (`?checkpoint=ID`).
async fn checkpoints(State(s): State<ApiState>, Path(vm): Path<String>) -> Response {
    let Some(plan) = s.restores.get(&vm) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("this daemon receives no replica to restore {vm:?} from"),
        );
    };
    let list: Vec<CheckpointView> = plan
        .checkpoints()
        .await
        .into_iter()
        .map(|(c, disks)| CheckpointView {
            id: c.id,
            time_ms: c.time_ms,
            disks,
        })
        .collect();
    Json(serde_json::json!({
        "vm": vm,
        "replica": plan.dir.display().to_string(),
        "checkpoints": list,
    }))
    .into_response()
}

/// Server-sent `events` until the daemon stops (so the server's graceful
/// shutdown does not wait on a stream), with keep-alives.
fn sse(
    events: impl futures_util::Stream<Item = axum::response::sse::Event> + Send + 'static,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Response {
    use axum::response::sse::{KeepAlive, Sse};
    let stopped = async move {
        while !*stopping.borrow_and_update() {
            if stopping.changed().await.is_err() {
                return;
            }
        }
    };
    let events = events
        .take_until(Box::pin(stopped))
        .map(Ok::<_, std::convert::Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// New events as server-sent events (`id:` is the event id, `data:` its
/// JSON); a client too slow to keep up gets a `lagged` event with how many
/// it missed (the `/api/v1/events?since=` list has them). A client that
/// reconnects with `Last-Event-ID` (or opens with `?since=`) first gets the
/// kept events after it.
async fn event_stream(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    use axum::response::sse::Event;
    use tokio::sync::broadcast::error::RecvError;
    let record = |ev: &crate::state::EventRecord| {
        Event::default()
            .id(ev.id.to_string())
            .data(serde_json::to_string(ev).unwrap_or_default())
    };
    // Subscribed before the replay is read: nothing falls between them.
    let rx = s.shared.subscribe();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.since);
    let replay = last.map_or_else(Vec::new, |id| s.shared.events_since(id, 10_000));
    let seen = replay.last().map_or(last.unwrap_or(0), |e| e.id);
    let replayed: Vec<Event> = replay.iter().map(record).collect();
    let live = futures_util::stream::unfold((rx, seen), move |(mut rx, mut seen)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(ev) if ev.id <= seen => continue,
                Ok(ev) => {
                    seen = ev.id;
                    record(&ev)
                }
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((event, (rx, seen)));
        }
    });
    sse(
        futures_util::stream::iter(replayed).chain(live),
        s.stopping.clone(),
    )
}

/// The status as a stream: a `snapshot` event (`wall_ms`, `status`,
/// `replication`) first, then a `delta` event per published change (see
/// [`crate::state::StatusDelta`]); a client too slow to keep up gets a new
/// `snapshot` in place of what it missed.
async fn status_stream(State(s): State<ApiState>) -> Response {
    use axum::response::sse::Event;
    use tokio::sync::broadcast::error::RecvError;
    let (snapshot, rx) = s.shared.status_stream();
    let first = Event::default().event("snapshot").data(snapshot);
    let shared = s.shared.clone();
    let rest = futures_util::stream::unfold(rx, move |mut rx| {
        let shared = shared.clone();
        async move {
            let event = match rx.recv().await {
                Ok(delta) => Event::default().event("delta").data(&*delta),
                Err(RecvError::Lagged(_)) => {
                    let (snapshot, fresh) = shared.status_stream();
                    rx = fresh;
                    Event::default().event("snapshot").data(snapshot)
                }
                Err(RecvError::Closed) => return None,
            };
            Some((event, rx))
        }
    });
    sse(
        futures_util::stream::once(async { first }).chain(rest),
        s.stopping.clone(),
    )
}

/// One VM: its status, its timeline (the newest 200 kept events about it),
/// its recent outages, its replication.
async fn vm_detail(State(s): State<ApiState>, Path(vm): Path<String>) -> Response {
    let Some(status) = s.shared.vm(&vm) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no VM named {vm:?} is monitored"),
        );
    };
    let replication = s.shared.replication.all().into_iter().find(|r| r.vm == vm);
    Json(serde_json::json!({
        "vm": status,
        "timeline": s.shared.events_of(&vm, 200),
        "outages": s.shared.outages(&vm),
        "replication": replication,
        // Its checkpoints can be listed here (`/checkpoints`): this daemon
        // receives a replica it can fail the VM over from.
        "receives_replica": s.restores.contains_key(&vm),
    }))
    .into_response()
}

async fn journal(State(s): State<ApiState>) -> Response {
    let j = s.journal.clone();
    match tokio::task::spawn_blocking(move || j.recent(100)).await {
        Ok(Ok(entries)) => Json(entries).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte
/// from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` when the request carries the token, else the refusal.
fn refusal(s: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &s.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: no api token is configured",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
        )),
    }
}

async fn set_paused(
    s: ApiState,
    uri: axum::http::Uri,
    headers: HeaderMap,
    vm: String,
    paused: bool,
) -> Response {
    if let Some(r) = refusal(&s, &headers) {
        return r;
    }
    if let Some(r) = forwarded(&s, &uri, &headers).await {
        return r;
    }
    let (reply, answer) = oneshot::channel();
    let cmd = Command::Pause {
        vm: vm.clone(),
        paused,
        reply,
    };
    if s.commands.send(cmd).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop is stopping",
        );
    }
    match answer.await {
        Ok(Ok(())) => {
            // Stored too: a pause outlives a restart, and a leader.
            let (j, name) = (s.journal.clone(), vm.clone());
            match tokio::task::spawn_blocking(move || j.set_paused(&name, paused)).await {
                Ok(Ok(())) => {
                    Json(serde_json::json!({ "vm": vm, "paused": paused })).into_response()
                }
                Ok(Err(e)) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "{} now, but not stored (lost at a restart or takeover): {e}",
                        if paused { "paused" } else { "resumed" }
                    ),
                ),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, e),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop is stopping",
        ),
    }
}

async fn pause(
    State(s): State<ApiState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Path(vm): Path<String>,
) -> Response {
    set_paused(s, uri, headers, vm, true).await
}

async fn resume(
    State(s): State<ApiState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Path(vm): Path<String>,
) -> Response {
    set_paused(s, uri, headers, vm, false).await
}

#[derive(Deserialize)]
struct FailoverQuery {
    to: Option<String>,
    checkpoint: Option<u64>,
}

/// Sends the command `make` builds (with its reply channel) to the loop and
/// answers with its report: 200 with the report, 409 with why not.
async fn ask<T: serde::Serialize>(
    s: ApiState,
    uri: axum::http::Uri,
    headers: HeaderMap,
    make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
) -> Response {
    if let Some(r) = refusal(&s, &headers) {
        return r;
    }
    if let Some(r) = forwarded(&s, &uri, &headers).await {
        return r;
    }
    let stopping = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop is stopping",
        )
    };
    let (reply, answer) = oneshot::channel();
    if s.commands.send(make(reply)).await.is_err() {
        return stopping();
    }
    match answer.await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e),
        Err(_) => stopping(),
    }
}

async fn failover(
    State(s): State<ApiState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Path(vm): Path<String>,
    Query(q): Query<FailoverQuery>,
) -> Response {
    ask(s, uri, headers, |reply| Command::Failover {
        vm,
        to: q.to,
        checkpoint: q.checkpoint,
        reply,
    })
    .await
}

async fn drill(
    State(s): State<ApiState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Path(vm): Path<String>,
    Query(q): Query<FailoverQuery>,
) -> Response {
    ask(s, uri, headers, |reply| Command::Drill {
        vm,
        to: q.to,
        reply,
    })
    .await
}
