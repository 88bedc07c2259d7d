//! Leader election among drd nodes on etcd, and the leader's right to act.
//!
//! Each node holds a lease (TTL `lease_ttl`) and renews it every third of
//! the TTL. The leader is the node whose lease holds `{prefix}/leader`,
//! won by a transaction that creates the key only if it does not exist.
//! Its **epoch** is that key's creation revision: every journal write of
//! the leader compares it, so once another node has won (the key deleted
//! with the lease and created again), a deposed leader's late writes fail.
//!
//! The leader also keeps its own **deadline** on the monotonic clock: the
//! moment it sent its last renewal that etcd acknowledged, plus the TTL,
//! minus a quarter of it. etcd cannot expire the lease before that moment
//! plus the TTL (it counts from when it received the renewal, after it was
//! sent), so a leader that stops starting actions at its deadline stops
//! before any other node can win; a leader frozen (SIGSTOP) past it finds
//! the deadline gone when it wakes, before anything else runs.

use crate::etcd::{Etcd, EtcdError};
use crate::wire::{Compare, PutRequest, RangeRequest, RequestOp, Target, TxnRequest};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// This node in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Its name, unique in the cluster.
    pub node: String,
    /// Where its API answers (followers forward commands there when it
    /// leads).
    pub api: String,
    /// The keys' prefix (`/vmdr`): one cluster per prefix.
    pub prefix: String,
    /// The lease's TTL, whole seconds.
    pub lease_ttl: Duration,
}

/// What a node publishes about itself (`{prefix}/nodes/{node}`, and the
/// leader key's value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name.
    pub node: String,
    /// Its API.
    pub api: String,
}

/// The leader as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaderInfo {
    /// Its name.
    pub node: String,
    /// Its API.
    pub api: String,
    /// Its epoch: the leader key's creation revision.
    pub epoch: i64,
}

/// This node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// It has not reached etcd (yet, or any more), or its lease renewal is
    /// overdue: it acts on nothing.
    Unreachable,
    /// Another node leads, or none does.
    Follower,
    /// It leads.
    Leader,
}

/// The cluster as this node sees it: what the API and metrics show.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// This node.
    pub node: String,
    /// Its role.
    pub role: Role,
    /// The leader, if any is known.
    pub leader: Option<LeaderInfo>,
    /// The nodes holding a lease now.
    pub nodes: Vec<NodeInfo>,
    /// When leading: milliseconds left before this node stops starting
    /// actions unless a renewal succeeds.
    pub lease_left_ms: Option<u64>,
    /// The last failure talking to etcd, while it lasts.
    pub etcd_error: Option<String>,
    /// Changes of leader this node has seen.
    pub leader_changes: u64,
    /// The last renewal's round trip, in ms.
    pub renew_ms: Option<f64>,
    /// Milliseconds this node has seen no leader, since it started.
    pub leaderless_ms: u64,
}

/// The leadership this node holds.
#[derive(Clone, Copy, Debug)]
struct Lead {
    epoch: i64,
    deadline: Instant,
}

struct Inner {
    lead: Option<Lead>,
    /// The epoch last held, until this node knows another one: what an
    /// action already running writes its end under.
    last_epoch: Option<i64>,
    status: ClusterStatus,
    /// When the last renewal (or grant) etcd acknowledged was sent.
    last_renewal: Option<Instant>,
    /// Since when no leader has been seen.
    leaderless_since: Option<Instant>,
    leaderless_before: Duration,
}

/// Leader election for one node: run [`Leadership::campaign`] as a task;
/// ask [`Leadership::may_act`] before starting anything.
pub struct Leadership {
    etcd: Arc<Etcd>,
    cfg: ElectionConfig,
    inner: Mutex<Inner>,
    changes: watch::Sender<ClusterStatus>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("node", &self.cfg.node)
            .finish_non_exhaustive()
    }
}

/// Why this node may not act now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotLeader {
    /// Another node leads, or none.
    #[error("this node does not lead the cluster (leader: {})", leader.as_deref().unwrap_or("none"))]
    Follower {
        /// The leader, if known.
        leader: Option<String>,
    },
    /// It led, but its last renewal is too old: it may have lost its lease.
    #[error("this node's lease renewal is overdue by {overdue_ms} ms: it starts nothing until a renewal succeeds")]
    Overdue {
        /// Past its deadline by.
        overdue_ms: u64,
    },
}

impl Leadership {
    /// Leadership for `cfg.node` over `etcd`. Nothing happens until
    /// [`Leadership::campaign`] runs.
    pub fn new(etcd: Arc<Etcd>, cfg: ElectionConfig) -> Arc<Leadership> {
        let status = ClusterStatus {
            node: cfg.node.clone(),
            role: Role::Unreachable,
            leader: None,
            nodes: Vec::new(),
            lease_left_ms: None,
            etcd_error: None,
            leader_changes: 0,
            renew_ms: None,
            leaderless_ms: 0,
        };
        let (changes, _) = watch::channel(status.clone());
        Arc::new(Leadership {
            etcd,
            cfg,
            inner: Mutex::new(Inner {
                lead: None,
                last_epoch: None,
                status,
                last_renewal: None,
                leaderless_since: Some(Instant::now()),
                leaderless_before: Duration::ZERO,
            }),
            changes,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leader key.
    pub fn leader_key(&self) -> Vec<u8> {
        key(&self.cfg.prefix, "leader")
    }

    /// The configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.cfg
    }

    /// The epoch under which this node may start an action now, or why it
    /// may not. Checked before every start: cheap (a lock and a clock
    /// read).
    pub fn may_act(&self) -> Result<i64, NotLeader> {
        let inner = self.inner();
        match inner.lead {
            Some(l) => {
                let now = Instant::now();
                if now < l.deadline {
                    Ok(l.epoch)
                } else {
                    Err(NotLeader::Overdue {
                        overdue_ms: ms(now - l.deadline),
                    })
                }
            }
            None => Err(NotLeader::Follower {
                leader: inner.status.leader.as_ref().map(|l| l.node.clone()),
            }),
        }
    }

    /// The epoch this node last led under, while no other is known: writes
    /// that finish what it started carry it (and fail once another node
    /// leads).
    pub fn epoch(&self) -> Option<i64> {
        self.inner().last_epoch
    }

    /// The cluster as this node sees it now.
    pub fn status(&self) -> ClusterStatus {
        let inner = self.inner();
        let mut s = inner.status.clone();
        let now = Instant::now();
        s.lease_left_ms = inner
            .lead
            .map(|l| ms(l.deadline.saturating_duration_since(now)));
        if inner.lead.is_some_and(|l| now >= l.deadline) {
            // Its renewals are not getting through: it leads on paper
            // and may not act, so it does not say it leads.
            s.role = Role::Unreachable;
        }
        s.leaderless_ms =
            ms(inner.leaderless_before
                + inner.leaderless_since.map_or(Duration::ZERO, |t| now - t));
        s
    }

    /// Role changes (and leader changes), as they happen.
    pub fn watch(&self) -> watch::Receiver<ClusterStatus> {
        self.changes.subscribe()
    }

    /// How long before the lease can expire this node stops acting.
    fn guard(&self) -> Duration {
        (self.cfg.lease_ttl / 4).max(Duration::from_millis(250))
    }

    /// How often a follower looks for a vacant leader key.
    fn poll_interval(&self) -> Duration {
        (self.cfg.lease_ttl / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
    }

    /// Takes part in the election until `shutdown` turns true, then gives
    /// the leadership up at once (its lease revoked: a follower takes over
    /// without waiting for the TTL).
    pub async fn campaign(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let ttl = self.cfg.lease_ttl;
        let renew_every = ttl / 3;
        let mut lease: Option<i64> = None;
        let mut next_renew = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            // The lease: granted, or renewed when due.
            let Some(id) = lease else {
                match self.new_lease().await {
                    Ok(id) => {
                        lease = Some(id);
                        next_renew = Instant::now() + renew_every;
                        continue;
                    }
                    Err(e) => {
                        self.unreachable(&e);
                        if sleep_or_stop(&mut shutdown, self.poll_interval() * 2).await {
                            break;
                        }
                        continue;
                    }
                }
            };
            // The node list is read with each renewal, not each poll.
            let mut renewed_now = false;
            if now >= next_renew {
                let sent = Instant::now();
                match self.etcd.keep_alive(id).await {
                    Ok(left) if left > 0 => {
                        self.renewed(sent);
                        next_renew = sent + renew_every;
                        renewed_now = true;
                    }
                    Ok(_) => {
                        tracing::warn!(node = %self.cfg.node, "the lease expired; joining the election again");
                        self.lose("its lease expired");
                        lease = None;
                        continue;
                    }
                    Err(e) => {
                        self.renew_failed(&e);
                        // Past the deadline the lease may be gone: this
                        // node stops leading. It keeps renewing the same
                        // lease: etcd's answer, once it comes, says whether
                        // the lease (and so the key) is still there (lead
                        // again under the same epoch: nobody else could
                        // have won) or gone (a new lease, a follower).
                        if self
                            .inner()
                            .lead
                            .is_some_and(|l| Instant::now() >= l.deadline)
                        {
                            self.lose("its lease could not be renewed in time");
                        }
                        next_renew = Instant::now() + self.poll_interval();
                    }
                }
            }
            if let Err(e) = self.look(id, renewed_now).await {
                self.unreachable(&e);
            }
            let wait = next_renew
                .saturating_duration_since(Instant::now())
                .min(self.poll_interval());
            if sleep_or_stop(&mut shutdown, wait).await {
                break;
            }
        }
        if let Some(id) = lease {
            self.lose("it is shutting down");
            if let Err(e) = self.etcd.revoke(id).await {
                tracing::warn!(error = %e, "cannot revoke the lease at shutdown; it expires by itself");
            }
        }
    }

    /// A new lease, and this node registered under it.
    async fn new_lease(&self) -> Result<i64, EtcdError> {
        let sent = Instant::now();
        let ttl = i64::try_from(self.cfg.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let (id, _) = self.etcd.grant(ttl).await?;
        self.renewed(sent);
        let info = serde_json::to_vec(&NodeInfo {
            node: self.cfg.node.clone(),
            api: self.cfg.api.clone(),
        })
        .unwrap_or_default();
        self.etcd
            .txn(&TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Put(PutRequest {
                    key: key(&self.cfg.prefix, &format!("nodes/{}", self.cfg.node)),
                    value: info,
                    lease: id,
                })],
                failure: vec![],
            })
            .await?;
        tracing::info!(node = %self.cfg.node, lease = id, "joined the cluster");
        Ok(id)
    }

    /// Reads the leader key (a read, not a write: etcd's linearizable read
    /// needs no log entry), and takes it only when it is vacant.
    async fn look(&self, lease: i64, with_nodes: bool) -> Result<(), EtcdError> {
        let leader_key = self.leader_key();
        let kv = self.etcd.get(&leader_key).await?;
        let nodes = if with_nodes {
            self.nodes().await.ok()
        } else {
            None
        };
        let kv = match kv {
            Some(kv) => Some(kv),
            None => match self.take(lease).await? {
                Ok(epoch) => {
                    self.won(epoch, nodes);
                    return Ok(());
                }
                Err(kv) => kv,
            },
        };
        let Some(kv) = kv else {
            // Deleted between the compare and the read: next time.
            self.follow(None, nodes);
            return Ok(());
        };
        if kv.lease == lease {
            self.won(kv.create_revision, nodes);
            return Ok(());
        }
        let info: Option<NodeInfo> = serde_json::from_slice(&kv.value).ok();
        let leader = LeaderInfo {
            node: info.as_ref().map_or_else(|| "?".into(), |i| i.node.clone()),
            api: info.map(|i| i.api).unwrap_or_default(),
            epoch: kv.create_revision,
        };
        self.follow(Some(leader), nodes);
        Ok(())
    }

    /// The campaign's one write: creates the leader key under `lease` if no
    /// key exists. `Ok(epoch)` when won, else the key as it is.
    async fn take(
        &self,
        lease: i64,
    ) -> Result<Result<i64, Option<crate::wire::KeyValue>>, EtcdError> {
        let leader_key = self.leader_key();
        let me = serde_json::to_vec(&NodeInfo {
            node: self.cfg.node.clone(),
            api: self.cfg.api.clone(),
        })
        .unwrap_or_default();
        let r = self
            .etcd
            .txn(&TxnRequest {
                compare: vec![Compare::equal(leader_key.clone(), Target::Create(0))],
                success: vec![RequestOp::Put(PutRequest {
                    key: leader_key.clone(),
                    value: me,
                    lease,
                })],
                failure: vec![RequestOp::Range(RangeRequest {
                    key: leader_key,
                    ..RangeRequest::default()
                })],
            })
            .await?;
        if r.succeeded {
            // The put is the transaction: its revision is the key's
            // creation revision.
            return Ok(Ok(r.header.revision));
        }
        Ok(Err(r
            .responses
            .into_iter()
            .next()
            .and_then(|op| op.response_range)
            .and_then(|range| range.kvs.into_iter().next())))
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, EtcdError> {
        let kvs = self
            .etcd
            .list(&key(&self.cfg.prefix, "nodes/"), 0, false)
            .await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    fn publish(&self, inner: &Inner) {
        let status = inner.status.clone();
        self.changes.send_if_modified(|s| {
            let changed =
                s.role != status.role || s.leader != status.leader || s.nodes != status.nodes;
            if changed {
                *s = status;
            }
            changed
        });
    }

    fn renewed(&self, sent: Instant) {
        let mut inner = self.inner();
        let deadline = sent + self.cfg.lease_ttl - self.guard();
        inner.last_renewal = Some(sent);
        if let Some(l) = &mut inner.lead {
            l.deadline = deadline;
        }
        inner.status.renew_ms = Some(sent.elapsed().as_secs_f64() * 1e3);
        inner.status.etcd_error = None;
    }

    fn renew_failed(&self, e: &EtcdError) {
        let mut inner = self.inner();
        // Said once per outage, not at every retry.
        if inner.status.etcd_error.is_none() {
            tracing::warn!(node = %self.cfg.node, error = %e, "cannot renew the cluster lease");
        } else {
            tracing::debug!(node = %self.cfg.node, error = %e, "cannot renew the cluster lease");
        }
        inner.status.etcd_error = Some(e.to_string());
    }

    fn unreachable(&self, e: &EtcdError) {
        let mut inner = self.inner();
        if inner.status.etcd_error.is_none() {
            tracing::warn!(node = %self.cfg.node, error = %e, "etcd does not answer; this node acts on nothing until it does");
        }
        inner.status.etcd_error = Some(e.to_string());
        if inner.lead.is_none() && inner.status.role != Role::Unreachable {
            inner.status.role = Role::Unreachable;
            self.publish(&inner);
        }
    }

    fn set_leader(&self, inner: &mut Inner, leader: Option<LeaderInfo>) {
        let before = inner.status.leader.as_ref().map(|l| l.epoch);
        let after = leader.as_ref().map(|l| l.epoch);
        if before != after {
            if after.is_some() {
                inner.status.leader_changes += 1;
            }
            if after.is_some_and(|e| Some(e) != inner.lead.map(|l| l.epoch)) {
                // Another node's epoch: what this one led under is over.
                inner.last_epoch = None;
            }
        }
        let now = Instant::now();
        match (&leader, inner.leaderless_since) {
            (Some(_), Some(t)) => {
                inner.leaderless_before += now - t;
                inner.leaderless_since = None;
            }
            (None, None) => inner.leaderless_since = Some(now),
            _ => {}
        }
        inner.status.leader = leader;
    }

    fn won(&self, epoch: i64, nodes: Option<Vec<NodeInfo>>) {
        let mut inner = self.inner();
        if let Some(n) = nodes {
            inner.status.nodes = n;
        }
        inner.status.etcd_error = None;
        if inner.lead.is_some_and(|l| l.epoch == epoch) {
            self.publish(&inner);
            return;
        }
        // The deadline counts from the last acknowledged renewal (or the
        // grant) of the lease that holds the key.
        let Some(renewed) = inner.last_renewal else {
            return;
        };
        let deadline = renewed + self.cfg.lease_ttl - self.guard();
        inner.lead = Some(Lead { epoch, deadline });
        inner.last_epoch = Some(epoch);
        inner.status.role = Role::Leader;
        let leader = LeaderInfo {
            node: self.cfg.node.clone(),
            api: self.cfg.api.clone(),
            epoch,
        };
        self.set_leader(&mut inner, Some(leader));
        tracing::info!(node = %self.cfg.node, epoch, "leads the cluster");
        self.publish(&inner);
    }

    fn follow(&self, leader: Option<LeaderInfo>, nodes: Option<Vec<NodeInfo>>) {
        let mut inner = self.inner();
        if let Some(n) = nodes {
            inner.status.nodes = n;
        }
        inner.status.etcd_error = None;
        if let Some(l) = inner.lead.take() {
            tracing::warn!(node = %self.cfg.node, epoch = l.epoch, leader = ?leader.as_ref().map(|l| &l.node), "deposed: another node leads");
        }
        if inner.status.leader != leader {
            if let Some(l) = &leader {
                tracing::info!(node = %self.cfg.node, leader = %l.node, epoch = l.epoch, "follows the leader");
            }
        }
        inner.status.role = Role::Follower;
        self.set_leader(&mut inner, leader);
        self.publish(&inner);
    }

    fn lose(&self, why: &str) {
        let mut inner = self.inner();
        if let Some(l) = inner.lead.take() {
            tracing::warn!(node = %self.cfg.node, epoch = l.epoch, why, "stops leading");
            inner.status.role = Role::Follower;
            self.set_leader(&mut inner, None);
            self.publish(&inner);
        }
    }
}

/// `{prefix}/{name}` as a key.
pub fn key(prefix: &str, name: &str) -> Vec<u8> {
    format!("{}/{name}", prefix.trim_end_matches('/')).into_bytes()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sleeps `d`; true when `shutdown` turned true meanwhile.
async fn sleep_or_stop(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
    }
}
