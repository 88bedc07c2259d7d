//! One KVM host: its connection (opened on first use, opened again after it
//! breaks, lifecycle events registered each time), and one read of what it
//! runs.

use crate::config::HostConfig;
use crate::conn::Message;
use crate::domxml::DomainXml;
use crate::error::LibvirtError;
use crate::events::{self, EventLog, OwnActions};
use crate::remote::{self, Client, NodeInfo, StatsRecord};
use crate::wire::{self, Domain};
use dr_core::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `VIR_DOMAIN_STATS_*` read every tick: state, CPU, interfaces, block,
/// balloon.
const STATS: u32 = 1 | 2 | 4 | 16 | 32;
/// `VIR_DOMAIN_XML_SECURE | VIR_DOMAIN_XML_INACTIVE`: the persistent
/// definition, whole, as another host needs it.
pub const XML_FLAGS: u32 = 1 | 2;
/// The guest agent's own time limit, seconds.
const AGENT_TIMEOUT_S: i32 = 1;
/// How long a snapshot count is believed without reading it again.
const SNAPSHOT_COUNT_TTL: Duration = Duration::from_secs(30);

/// Locks a mutex, taking it over if a panic poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wall-clock time as the control loop's clock counts it.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// What every host's connection feeds: the event log, vmdr's own actions,
/// and the domains whose definition must be read again.
#[derive(Default)]
pub struct Shared {
    /// Power events, all hosts.
    pub log: Mutex<EventLog>,
    /// vmdr's actions under way.
    pub own: Mutex<OwnActions>,
    /// VMs with an event since their XML was read.
    pub dirty: Mutex<HashSet<String>>,
}

impl Shared {
    fn on_message(&self, host: &str, m: Message) {
        if m.program != wire::REMOTE_PROGRAM || m.procedure != remote::event::LIFECYCLE {
            return;
        }
        match remote::Lifecycle::decode(&m.payload) {
            Ok(ev) => {
                tracing::debug!(host, vm = %ev.domain.name, event = ev.event, detail = ev.detail, "libvirt lifecycle event");
                lock(&self.dirty).insert(ev.domain.name.clone());
                let meaning = events::meaning(ev.event, ev.detail);
                let mut own = lock(&self.own);
                lock(&self.log).record(&mut own, &ev.domain.name, host, meaning, now());
            }
            Err(e) => tracing::warn!(host, error = %e, "libvirt event cannot be decoded; ignored"),
        }
    }
}

/// What a domain's read found.
#[derive(Clone, Debug)]
pub struct DomainRead {
    /// The domain.
    pub domain: Domain,
    /// `virDomainState` and its reason.
    pub state: (i32, i32),
    /// Its statistics.
    pub stats: StatsRecord,
    /// Its definition.
    pub xml: Arc<(String, DomainXml)>,
    /// The guest agent answered a ping (None: no agent, or not running).
    pub agent: Option<bool>,
    /// An address the guest agent reports.
    pub agent_ip: Option<std::net::IpAddr>,
    /// How many snapshots it has.
    pub snapshots: u32,
}

/// What one read of a host found.
#[derive(Clone, Debug)]
pub struct HostRead {
    /// Its capacity.
    pub node: NodeInfo,
    /// Free memory, bytes.
    pub free: u64,
    /// Its domains.
    pub domains: Vec<DomainRead>,
}

#[derive(Default)]
struct Cache {
    node: Option<NodeInfo>,
    /// Definitions by VM name, with the domain id they were read for.
    xml: HashMap<String, (i32, Arc<(String, DomainXml)>)>,
    snapshots: HashMap<String, (Instant, u32)>,
    /// Guest agent addresses by VM, for the run (domain id) they came from.
    agent_ip: HashMap<String, (i32, std::net::IpAddr)>,
}

/// One host.
pub struct Host {
    /// Its configuration.
    pub cfg: HostConfig,
    timeout: Duration,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    shared: Arc<Shared>,
    cache: Mutex<Cache>,
    /// Whether its last read succeeded (a change is logged once).
    answering: std::sync::atomic::AtomicBool,
    /// A connection attempt runs in the background for reads.
    connecting: std::sync::atomic::AtomicBool,
}

impl Host {
    /// A host, not connected yet.
    pub fn new(cfg: HostConfig, timeout: Duration, shared: Arc<Shared>) -> Host {
        Host {
            cfg,
            timeout,
            client: tokio::sync::Mutex::new(None),
            shared,
            cache: Mutex::new(Cache::default()),
            answering: std::sync::atomic::AtomicBool::new(true),
            connecting: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The open connection, opened (and its events registered) if needed.
    pub async fn client(&self) -> Result<Arc<Client>, LibvirtError> {
        let mut held = self.client.lock().await;
        if let Some(c) = held.as_ref() {
            if c.closed().is_none() {
                return Ok(c.clone());
            }
            tracing::warn!(host = %self.cfg.name, reason = ?c.closed(), "libvirt connection lost; reconnecting");
        }
        *held = None;
        let shared = self.shared.clone();
        let name = self.cfg.name.clone();
        let client = Client::open(
            &self.cfg.uri,
            self.timeout,
            Box::new(move |m| shared.on_message(&name, m)),
        )
        .await?;
        client.register_events(remote::event::ID_LIFECYCLE).await?;
        tracing::info!(host = %self.cfg.name, uri = %self.cfg.uri.text, "connected to libvirt");
        let client = Arc::new(client);
        *held = Some(client.clone());
        Ok(client)
    }

    /// The open connection for a read, which must not wait for a host
    /// known to be down: a host that answered last time gets a connection
    /// (within the timeout); one that did not gets an attempt in the
    /// background and this read fails at once.
    pub async fn client_now(self: &Arc<Self>) -> Result<Arc<Client>, LibvirtError> {
        if self.answering() {
            return self.client().await;
        }
        if let Ok(held) = self.client.try_lock() {
            if let Some(c) = held.as_ref().filter(|c| c.closed().is_none()) {
                return Ok(c.clone());
            }
        }
        if !self
            .connecting
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let me = self.clone();
            tokio::spawn(async move {
                let _ = me.client().await;
                me.connecting
                    .store(false, std::sync::atomic::Ordering::Release);
            });
        }
        Err(LibvirtError::Connect {
            uri: self.cfg.uri.text.clone(),
            detail: "not connected (connecting in the background)".into(),
        })
    }

    /// Drops the connection (after a call got no answer: the next use
    /// connects again rather than wait on a dead stream).
    /// Never waits: a connection attempt under way holds the lock, and
    /// then there is nothing to drop.
    pub fn forget(&self) {
        if let Ok(mut held) = self.client.try_lock() {
            *held = None;
        }
    }

    /// Whether the host's last read succeeded.
    pub fn answering(&self) -> bool {
        self.answering.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The capacity last read, if ever.
    pub fn last_node(&self) -> Option<NodeInfo> {
        lock(&self.cache).node
    }

    /// Marks a VM's snapshot count stale (after vmdr changed it).
    pub fn snapshots_changed(&self, vm: &str) {
        lock(&self.cache).snapshots.remove(vm);
    }

    /// Reads the host: capacity, free memory, every domain with its state,
    /// statistics, definition, guest agent and snapshot count. A host that
    /// stops (or starts again) answering is logged once.
    pub async fn read(self: &Arc<Self>) -> Result<HostRead, LibvirtError> {
        let r = self.read_once().await;
        let ok = r.is_ok();
        if self
            .answering
            .swap(ok, std::sync::atomic::Ordering::Relaxed)
            != ok
        {
            match &r {
                Ok(_) => tracing::info!(host = %self.cfg.name, "host answers again"),
                Err(e) => tracing::warn!(host = %self.cfg.name, error = %e, "host does not answer"),
            }
        }
        r
    }

    async fn read_once(self: &Arc<Self>) -> Result<HostRead, LibvirtError> {
        let c = self.client_now().await?;
        let node = match self.last_node() {
            Some(n) => n,
            None => {
                let n = c.node_info().await?;
                lock(&self.cache).node = Some(n);
                n
            }
        };
        let free = c.free_memory().await?;
        // The list is the truth about which domains exist; statistics can
        // leave out one that is starting (its job holds it).
        let listed = c.list_all_domains().await?;
        let mut stats: HashMap<String, StatsRecord> = c
            .all_domain_stats(STATS)
            .await?
            .into_iter()
            .map(|r| (r.domain.name.clone(), r))
            .collect();
        let mut domains = Vec::with_capacity(listed.len());
        for dom in listed {
            let rec = match stats.remove(&dom.name) {
                Some(r) => r,
                None => {
                    let (st, reason) = c.state(&dom).await?;
                    StatsRecord {
                        domain: dom,
                        params: vec![
                            ("state.state".into(), wire::Param::Int(st)),
                            ("state.reason".into(), wire::Param::Int(reason)),
                        ],
                    }
                }
            };
            let state = (
                rec.get("state.state").unwrap_or(0) as i32,
                rec.get("state.reason").unwrap_or(0) as i32,
            );
            let xml = self.definition(&c, &rec.domain).await?;
            let running = matches!(
                state.0,
                events::state::RUNNING | events::state::BLOCKED | events::state::SHUTDOWN
            );
            let (agent, agent_ip) = if running && xml.1.agent {
                self.agent(&c, &rec.domain, xml.1.ip.is_none()).await
            } else {
                (None, None)
            };
            let snapshots = self.snapshot_count(&c, &rec.domain).await?;
            domains.push(DomainRead {
                domain: rec.domain.clone(),
                state,
                stats: rec,
                xml,
                agent,
                agent_ip,
                snapshots,
            });
        }
        Ok(HostRead {
            node,
            free,
            domains,
        })
    }

    /// A domain's definition: read again when it is new, restarted, or had
    /// an event since.
    async fn definition(
        &self,
        c: &Client,
        dom: &Domain,
    ) -> Result<Arc<(String, DomainXml)>, LibvirtError> {
        let dirty = lock(&self.shared.dirty).remove(&dom.name);
        if !dirty {
            if let Some((id, x)) = lock(&self.cache).xml.get(&dom.name) {
                if *id == dom.id {
                    return Ok(x.clone());
                }
            }
        }
        let text = c.xml(dom, XML_FLAGS).await?;
        let parsed = DomainXml::parse(&text).map_err(|detail| LibvirtError::Xml {
            vm: dom.name.clone(),
            detail,
        })?;
        let x = Arc::new((text, parsed));
        lock(&self.cache)
            .xml
            .insert(dom.name.clone(), (dom.id, x.clone()));
        Ok(x)
    }

    /// Pings the guest agent; asks it for an address when `want_ip` and it
    /// gave none for this run yet.
    async fn agent(
        &self,
        c: &Client,
        dom: &Domain,
        want_ip: bool,
    ) -> (Option<bool>, Option<std::net::IpAddr>) {
        let ping = c
            .agent_command(dom, r#"{"execute":"guest-ping"}"#, AGENT_TIMEOUT_S)
            .await;
        let ok = ping.is_ok();
        let known = lock(&self.cache)
            .agent_ip
            .get(&dom.name)
            .filter(|(id, _)| *id == dom.id)
            .map(|(_, ip)| *ip);
        let ip = match known {
            Some(ip) => Some(ip),
            None if ok && want_ip => {
                let answer = c
                    .agent_command(
                        dom,
                        r#"{"execute":"guest-network-get-interfaces"}"#,
                        AGENT_TIMEOUT_S,
                    )
                    .await;
                let ip = answer.ok().flatten().and_then(|a| agent_address(&a));
                if let Some(ip) = ip {
                    lock(&self.cache)
                        .agent_ip
                        .insert(dom.name.clone(), (dom.id, ip));
                }
                ip
            }
            None => None,
        };
        (Some(ok), ip)
    }

    async fn snapshot_count(&self, c: &Client, dom: &Domain) -> Result<u32, LibvirtError> {
        if let Some((at, n)) = lock(&self.cache).snapshots.get(&dom.name) {
            if at.elapsed() < SNAPSHOT_COUNT_TTL {
                return Ok(*n);
            }
        }
        let n = c.snapshots(dom, 0).await?.len() as u32;
        lock(&self.cache)
            .snapshots
            .insert(dom.name.clone(), (Instant::now(), n));
        Ok(n)
    }
}

/// The first address of `guest-network-get-interfaces`' answer that is
/// not loopback or link-local: IPv4 first, then IPv6.
pub fn agent_address(answer: &str) -> Option<std::net::IpAddr> {
    let v: serde_json::Value = serde_json::from_str(answer).ok()?;
    let mut found: Vec<std::net::IpAddr> = Vec::new();
    for iface in v.get("return")?.as_array()? {
        for a in iface
            .get("ip-addresses")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(ip) = a
                .get("ip-address")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            {
                let usable = match ip {
                    std::net::IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
                    std::net::IpAddr::V6(v6) => {
                        !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80
                    }
                };
                if usable {
                    found.push(ip);
                }
            }
        }
    }
    found
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| found.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_address_skips_loopback_and_prefers_ipv4() {
        let a = r#"{"return":[{"name":"lo","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"127.0.0.1","prefix":8}]},
            {"name":"eth0","ip-addresses":[{"ip-address-type":"ipv6","ip-address":"fe80::1","prefix":64},
            {"ip-address-type":"ipv6","ip-address":"fd00::5","prefix":64},
            {"ip-address-type":"ipv4","ip-address":"198.19.0.101","prefix":24}]}]}"#;
        assert_eq!(agent_address(a), Some("198.19.0.101".parse().expect("ip")));
        assert_eq!(agent_address(r#"{"return":[]}"#), None);
        assert_eq!(agent_address("not json"), None);
    }
}
