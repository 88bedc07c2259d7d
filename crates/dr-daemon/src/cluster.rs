//! drd in a cluster (`[cluster]`): the section, the node's leadership on
//! etcd as the loop's `Authority`, and what a node does when it takes over.
//!
//! Without `[cluster]` nothing here runs: one daemon, its redb journal.

use dr_cluster::{ElectionConfig, Etcd, EtcdConfig, EtcdJournal, Leadership, Secret};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// The `[cluster]` section, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// How to reach etcd.
    pub etcd: EtcdConfig,
    /// This node's name (unique in the cluster).
    pub node: String,
    /// The keys' prefix: one cluster per prefix.
    pub prefix: String,
    /// The lease's TTL.
    pub lease_ttl: Duration,
    /// The URL other nodes forward commands to when this one leads;
    /// `None`: `http://` + the API's address once it is bound.
    pub advertise: Option<String>,
}

/// `[cluster]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    node: Spanned<String>,
    endpoints: Spanned<Vec<String>>,
    prefix: Option<String>,
    lease_ttl: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    user: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    advertise: Option<String>,
}

/// The `[cluster]` section, or the line and message of what is wrong.
pub(crate) fn config(
    raw: RawCluster,
    base: &Path,
    line_of: impl Fn(usize) -> usize,
) -> Result<ClusterConfig, (Option<usize>, String)> {
    let at = |span: std::ops::Range<usize>| Some(line_of(span.start));
    let node = raw.node.get_ref().trim().to_owned();
    if node.is_empty() || node.contains('/') {
        return Err((
            at(raw.node.span()),
            format!(
                "cluster.node = {:?}: a name without '/', unique in the cluster",
                raw.node.get_ref()
            ),
        ));
    }
    if raw.endpoints.get_ref().is_empty() {
        return Err((
            at(raw.endpoints.span()),
            "cluster.endpoints: at least one etcd client URL".into(),
        ));
    }
    let duration = |key: &str, v: &Option<Spanned<String>>, default: Duration| match v {
        None => Ok(default),
        Some(s) => dr_core::time::parse_duration(s.get_ref())
            .map_err(|e| (at(s.span()), format!("cluster.{key}: {e}"))),
    };
    let lease_ttl = duration("lease_ttl", &raw.lease_ttl, Duration::from_secs(5))?;
    if lease_ttl < Duration::from_secs(2) || lease_ttl.subsec_nanos() != 0 {
        return Err((
            raw.lease_ttl.as_ref().and_then(|s| at(s.span())),
            format!("cluster.lease_ttl = {lease_ttl:?}: whole seconds, at least 2 s"),
        ));
    }
    let request_timeout = duration(
        "request_timeout",
        &raw.request_timeout,
        (lease_ttl / 5).min(Duration::from_secs(2)),
    )?;
    if request_timeout * 3 > lease_ttl {
        return Err((
            raw.request_timeout.as_ref().and_then(|s| at(s.span())),
            format!(
                "cluster.request_timeout = {request_timeout:?}: at most a third of lease_ttl ({lease_ttl:?}), or a slow renewal outlives the lease"
            ),
        ));
    }
    let file = |f: &Option<String>| f.as_ref().map(|f| base.join(f));
    let client_cert = match (file(&raw.cert_file), file(&raw.key_file)) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err((None, "cluster: cert_file and key_file go together".into())),
    };
    let user = match (raw.user, file(&raw.password_file), raw.password_env) {
        (None, None, None) => None,
        (Some(u), Some(f), None) => Some((u, Secret::File(f))),
        (Some(u), None, Some(v)) => Some((u, Secret::Env(v))),
        (Some(_), None, None) => {
            return Err((
                None,
                "cluster.user: needs password_file or password_env".into(),
            ))
        }
        (None, _, _) => return Err((None, "cluster: a password needs cluster.user".into())),
        (Some(_), Some(_), Some(_)) => {
            return Err((
                None,
                "cluster: password_file or password_env, not both".into(),
            ))
        }
    };
    let etcd = EtcdConfig {
        endpoints: raw.endpoints.get_ref().clone(),
        ca_file: file(&raw.ca_file),
        client_cert,
        user,
        request_timeout,
    };
    // The URLs and the CA file are checked here, at load, not at start.
    Etcd::new(&etcd).map_err(|e| (at(raw.endpoints.span()), format!("cluster: {e}")))?;
    let prefix = raw.prefix.unwrap_or_else(|| "/vmdr".into());
    if !prefix.starts_with('/') {
        return Err((
            None,
            format!("cluster.prefix = {prefix:?}: starts with '/'"),
        ));
    }
    Ok(ClusterConfig {
        etcd,
        node,
        prefix: prefix.trim_end_matches('/').to_owned(),
        lease_ttl,
        advertise: raw.advertise,
    })
}

/// The node in the cluster while drd runs.
pub struct Node {
    /// Its leadership (the campaign runs as a task).
    pub leadership: Arc<Leadership>,
    /// The journal in etcd.
    pub journal: Arc<EtcdJournal>,
    /// The loop's and the backends' authority.
    pub authority: Arc<NodeAuthority>,
}

/// Starts this node's campaign (it ends, revoking the lease, when
/// `stopped` turns true). `api` is the API's bound address, advertised to
/// the other nodes unless `advertise` says otherwise.
pub fn start(
    cfg: &ClusterConfig,
    api: std::net::SocketAddr,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<Node, dr_cluster::EtcdError> {
    let etcd = Arc::new(Etcd::new(&cfg.etcd)?);
    let api = cfg
        .advertise
        .clone()
        .unwrap_or_else(|| format!("http://{api}"));
    let leadership = Leadership::new(
        etcd.clone(),
        ElectionConfig {
            node: cfg.node.clone(),
            api,
            prefix: cfg.prefix.clone(),
            lease_ttl: cfg.lease_ttl,
        },
    );
    tracing::info!(node = %cfg.node, endpoints = ?cfg.etcd.endpoints, prefix = %cfg.prefix, "joining the cluster");
    tokio::spawn(leadership.clone().campaign(stopped));
    let journal = Arc::new(EtcdJournal::new(
        etcd,
        leadership.clone(),
        &cfg.prefix,
        tokio::runtime::Handle::current(),
    ));
    Ok(Node {
        authority: Arc::new(NodeAuthority {
            leadership: leadership.clone(),
            taken_over: AtomicI64::new(0),
        }),
        leadership,
        journal,
    })
}

/// What may act: the leader, once it has taken over (the previous
/// leader's open recoveries read and their VMs held) under its epoch.
pub struct NodeAuthority {
    leadership: Arc<Leadership>,
    /// The epoch the takeover was done for; 0: none yet.
    taken_over: AtomicI64,
}

impl NodeAuthority {
    /// The epoch this node leads under and has not taken over yet: the
    /// daemon does the takeover, then [`NodeAuthority::taken_over`].
    pub fn takeover_due(&self) -> Option<i64> {
        let epoch = self.leadership.may_act().ok()?;
        (self.taken_over.load(Ordering::SeqCst) != epoch).then_some(epoch)
    }

    /// The takeover for `epoch` is done: this node may act under it.
    pub fn taken_over(&self, epoch: i64) {
        self.taken_over.store(epoch, Ordering::SeqCst);
    }
}

impl dr_core::ports::Authority for NodeAuthority {
    fn may_act(&self) -> Result<(), String> {
        let epoch = self.leadership.may_act().map_err(|e| e.to_string())?;
        if self.taken_over.load(Ordering::SeqCst) == epoch {
            Ok(())
        } else {
            Err(format!(
                "this node leads (epoch {epoch}) but has not yet read what the previous leader left under way"
            ))
        }
    }
}

/// The files `[cluster]` names, for the preflight check.
pub fn files(cfg: &ClusterConfig) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    if let Some(ca) = &cfg.etcd.ca_file {
        out.push(("cluster.ca_file", ca.clone()));
    }
    if let Some((c, k)) = &cfg.etcd.client_cert {
        out.push(("cluster.cert_file", c.clone()));
        out.push(("cluster.key_file", k.clone()));
    }
    if let Some((_, Secret::File(f))) = &cfg.etcd.user {
        out.push(("cluster.password_file", f.clone()));
    }
    out
}
