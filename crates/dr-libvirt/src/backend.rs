//! [`Libvirt`]: the `Hypervisor` port over a set of KVM hosts, one libvirt
//! daemon each.
//!
//! The inventory is one read per host (in parallel): capacity, free
//! memory, every domain's state and statistics in one call, definitions
//! read again only when a domain changed. A host that does not answer is
//! `NotResponding`; its VMs' power is `Unknown`. A VM is known by its name
//! across hosts; a stale definition left on a host vmdr moved the VM away
//! from (it was dead at the time) is removed when the host is back.
//!
//! Moves (cold migration, restore) define the VM on the target from its
//! persistent definition, carry its snapshots' metadata, then undefine it
//! on the source; a restore off a dead host uses the definition read last
//! (kept on disk) and starts the VM from its disks on the storage the
//! site shares, as the dead host left them.

use crate::config::{HostConfig, LibvirtConfig};
use crate::domxml::{DomainXml, SnapshotXml};
use crate::error::LibvirtError;
use crate::events::{self, state};
use crate::host::{self, lock, Host, HostRead, Shared};
use crate::remote::Client;
use crate::store::{Placements, Store};
use crate::wire::{Domain, Snapshot};
use async_trait::async_trait;
use dr_core::model::{
    Heartbeat, HostInfo, HostLink, Inventory, PowerEvent, PowerEventKind, PowerState,
    RestoreSource, SnapshotInfo, SnapshotTarget, Vitals, VmInfo,
};
use dr_core::ports::{Capabilities, Hypervisor, HypervisorError};
use dr_core::Timestamp;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
/// | VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA`: the definition goes, the
/// disks, their snapshots and NVRAM stay. Its change tracking's checkpoints
/// go with the definition: libvirt refuses to undefine a domain that has
/// any (a point taken just before a failover stopped it left one), and on
/// the host it moves to they would name nothing (the change source starts
/// a new chain with a full point when its base is gone).
const UNDEFINE_MOVE: u32 = 2 | 8 | 16;
/// `VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE`.
const SNAPSHOT_REDEFINE: u32 = 1;
/// `VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL`: parents before children.
const SNAPSHOT_LIST_TOPOLOGICAL: u32 = 1024;
/// `VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED`: never let the reverted guest run.
const REVERT_PAUSED: u32 = 2;

/// What the last inventory said about a VM.
#[derive(Clone, Debug)]
struct Seen {
    host: String,
    power: PowerState,
    id: i32,
    /// The domain id its guest agent last answered for.
    agent_ok_id: Option<i32>,
    /// Counters for rates: when, CPU ns, disk bytes, network bytes.
    counters: Option<(Instant, u64, u64, u64)>,
}

#[derive(Default)]
struct State {
    seen: HashMap<String, Seen>,
    placements: Placements,
    /// The definitions last kept on disk, by VM: written again only when
    /// a host's read brought a new one.
    saved: HashMap<String, Arc<(String, DomainXml)>>,
}

/// The KVM backend.
pub struct Libvirt {
    cfg: LibvirtConfig,
    hosts: Vec<Arc<Host>>,
    shared: Arc<Shared>,
    state: Mutex<State>,
    store: Store,
    serial: AtomicU64,
}

fn is_running(st: i32) -> bool {
    matches!(st, state::RUNNING | state::BLOCKED | state::SHUTDOWN)
}

fn is_active(st: i32) -> bool {
    !matches!(st, state::SHUTOFF | state::CRASHED | 0)
}

fn power_of(st: i32, reason: i32) -> PowerState {
    match st {
        state::RUNNING | state::BLOCKED | state::SHUTDOWN => PowerState::On,
        // Paused by a person, or suspended to memory: left alone. Other
        // pauses (an I/O error, a migration's end) keep the guest's state
        // in memory: on.
        state::PAUSED if reason == state::PAUSED_USER => PowerState::Suspended,
        state::PAUSED => PowerState::On,
        state::PMSUSPENDED => PowerState::Suspended,
        state::SHUTOFF | state::CRASHED => PowerState::Off,
        _ => PowerState::Unknown,
    }
}

impl Libvirt {
    /// The backend over `cfg`'s hosts; `state_dir` keeps definitions and
    /// placements across restarts (`None`: memory only). Connects to no
    /// host yet: each is connected on first use, and a host that is down
    /// now is only `NotResponding`.
    pub async fn new(
        cfg: LibvirtConfig,
        state_dir: Option<PathBuf>,
    ) -> Result<Libvirt, LibvirtError> {
        let store = Store::new(state_dir);
        let placements = store
            .placements()
            .await
            .map_err(|e| LibvirtError::Config(format!("the backend's saved state: {e}")))?;
        let shared = Arc::new(Shared::default());
        let hosts = cfg
            .hosts
            .iter()
            .map(|h| Arc::new(Host::new(h.clone(), cfg.timeout, shared.clone())))
            .collect();
        Ok(Libvirt {
            cfg,
            hosts,
            shared,
            state: Mutex::new(State {
                placements,
                ..State::default()
            }),
            store,
            serial: AtomicU64::new(0),
        })
    }

    fn host(&self, name: &str) -> Result<&Arc<Host>, HypervisorError> {
        self.hosts
            .iter()
            .find(|h| h.cfg.name == name)
            .ok_or_else(|| HypervisorError::NotFound {
                kind: "host",
                name: name.to_owned(),
            })
    }

    fn in_use(&self, h: &HostConfig) -> bool {
        !h.standby || lock(&self.state).placements.added.contains(&h.name)
    }

    /// A host vmdr may place VMs on: configured, not an unadded spare,
    /// answering.
    async fn target(&self, name: &str) -> Result<(Arc<Host>, Arc<Client>), HypervisorError> {
        let h = self.host(name)?.clone();
        if !self.in_use(&h.cfg) {
            return Err(HypervisorError::InvalidState {
                name: name.to_owned(),
                detail: "a standby host that has not been added".into(),
            });
        }
        let c = h
            .client()
            .await
            .map_err(|e| e.into_port(name, "host", name))?;
        Ok((h, c))
    }

    /// The host a VM is on (the last inventory's, else a search), its
    /// connection and its domain.
    async fn locate(&self, vm: &str) -> Result<(Arc<Host>, Arc<Client>, Domain), HypervisorError> {
        let known = lock(&self.state).seen.get(vm).map(|s| s.host.clone());
        let mut order: Vec<&Arc<Host>> = self.hosts.iter().collect();
        if let Some(k) = &known {
            order.sort_by_key(|h| h.cfg.name != *k);
        }
        let mut unreachable_home = None;
        for h in order {
            if !self.in_use(&h.cfg) {
                continue;
            }
            // A host whose last read failed is not waited for: a restore
            // off a dead host must not first sit out a connect timeout.
            let c = if h.answering() {
                h.client().await
            } else {
                h.client_now().await
            };
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    if known.as_deref() == Some(h.cfg.name.as_str()) {
                        unreachable_home = Some(e.into_port(&h.cfg.name, "vm", vm));
                    }
                    continue;
                }
            };
            match c.lookup(vm).await {
                Ok(d) => return Ok((h.clone(), c, d)),
                Err(e) if e.code() == Some(crate::wire::code::NO_DOMAIN) => continue,
                Err(e) => return Err(e.into_port(&h.cfg.name, "vm", vm)),
            }
        }
        Err(
            unreachable_home.unwrap_or_else(|| HypervisorError::NotFound {
                kind: "vm",
                name: vm.to_owned(),
            }),
        )
    }

    async fn dom_state(
        &self,
        h: &Host,
        c: &Client,
        d: &Domain,
    ) -> Result<(i32, i32), HypervisorError> {
        c.state(d)
            .await
            .map_err(|e| e.into_port(&h.cfg.name, "vm", &d.name))
    }

    /// Runs `f` as one of vmdr's own actions of `kind` on `vm`, so its
    /// events are the orchestrator's.
    async fn own<T>(
        &self,
        vm: &str,
        kinds: &[PowerEventKind],
        f: impl std::future::Future<Output = T>,
    ) -> T {
        for k in kinds {
            lock(&self.shared.own).begin(vm, *k);
        }
        let r = f.await;
        for k in kinds {
            lock(&self.shared.own).end(vm, *k);
        }
        r
    }

    async fn save_placement(&self, vm: &str, host: &str) -> Result<(), HypervisorError> {
        let p = {
            let mut st = lock(&self.state);
            st.placements.vms.insert(vm.to_owned(), host.to_owned());
            st.placements.clone()
        };
        self.store
            .save_placements(&p)
            .await
            .map_err(|e| HypervisorError::Failed {
                op: "record placement",
                detail: e.to_string(),
            })
    }

    /// The persistent definition of `vm`: read from its host when it
    /// answers, else the one kept from the last read.
    async fn definition_of(&self, vm: &str) -> Result<String, HypervisorError> {
        match self.store.definition(vm).await {
            Ok(Some(x)) => Ok(x),
            Ok(None) => Err(HypervisorError::NotFound {
                kind: "vm",
                name: vm.to_owned(),
            }),
            Err(e) => Err(HypervisorError::Failed {
                op: "read saved definition",
                detail: e.to_string(),
            }),
        }
    }

    /// Defines `vm` on `dst` from `xml` with its snapshots' metadata, and
    /// records it there before anything else changes.
    async fn define_on(
        &self,
        vm: &str,
        dst: &Host,
        dc: &Client,
        xml: &str,
        snapshots: &[String],
    ) -> Result<Domain, HypervisorError> {
        self.save_placement(vm, &dst.cfg.name).await?;
        let port = |e: LibvirtError| e.into_port(&dst.cfg.name, "vm", vm);
        let d = dc.define(xml).await.map_err(port)?;
        for s in snapshots {
            if let Err(e) = dc
                .snapshot_create(&d, s, SNAPSHOT_REDEFINE, self.cfg.action_timeout)
                .await
            {
                let _ = dc.undefine(&d, UNDEFINE_MOVE).await;
                return Err(port(e));
            }
        }
        dst.snapshots_changed(vm);
        lock(&self.shared.dirty).insert(vm.to_owned());
        Ok(d)
    }

    /// Moves the definition of a stopped `vm` from `src` to `dst`.
    async fn move_definition(
        &self,
        vm: &str,
        src: &Host,
        sc: &Client,
        d: &Domain,
        dst: &Host,
        dc: &Client,
    ) -> Result<Domain, HypervisorError> {
        let sport = |e: LibvirtError| e.into_port(&src.cfg.name, "vm", vm);
        let xml = sc.xml(d, host::XML_FLAGS).await.map_err(sport)?;
        let _ = self.store.save_definition(vm, &xml).await;
        let mut snaps = Vec::new();
        for s in sc
            .snapshots(d, SNAPSHOT_LIST_TOPOLOGICAL)
            .await
            .map_err(sport)?
        {
            snaps.push(sc.snapshot_xml(&s).await.map_err(sport)?);
        }
        let nd = self.define_on(vm, dst, dc, &xml, &snaps).await?;
        sc.undefine(d, UNDEFINE_MOVE).await.map_err(sport)?;
        src.snapshots_changed(vm);
        if let Some(s) = lock(&self.state).seen.get_mut(vm) {
            s.host = dst.cfg.name.clone();
        }
        Ok(nd)
    }

    async fn start(&self, h: &Host, c: &Client, d: &Domain) -> Result<(), HypervisorError> {
        self.own(
            &d.name,
            &[PowerEventKind::PoweredOn],
            c.create(d, self.cfg.action_timeout),
        )
        .await
        .map(drop)
        .map_err(|e| e.into_port(&h.cfg.name, "vm", &d.name))
    }

    async fn vm_snapshot(
        &self,
        vm: &str,
        id: Option<&str>,
    ) -> Result<(Arc<Host>, Arc<Client>, Domain, Snapshot), HypervisorError> {
        let (h, c, d) = self.locate(vm).await?;
        let port = |e: LibvirtError| e.into_port(&h.cfg.name, "vm", vm);
        let snap = match id {
            Some(id) => c.snapshot_lookup(&d, id).await.map_err(port)?,
            None => {
                let list = self.snapshot_infos(&c, &d).await.map_err(port)?;
                let newest = list.last().ok_or_else(|| HypervisorError::NotFound {
                    kind: "snapshot",
                    name: format!("{vm}: it has none"),
                })?;
                c.snapshot_lookup(&d, &newest.id).await.map_err(port)?
            }
        };
        Ok((h, c, d, snap))
    }

    /// A domain's snapshots, oldest first.
    async fn snapshot_infos(
        &self,
        c: &Client,
        d: &Domain,
    ) -> Result<Vec<SnapshotInfo>, LibvirtError> {
        let mut out = Vec::new();
        for (i, s) in c
            .snapshots(d, SNAPSHOT_LIST_TOPOLOGICAL)
            .await?
            .into_iter()
            .enumerate()
        {
            let x = c.snapshot_xml(&s).await?;
            let p = SnapshotXml::parse(&x).map_err(|detail| LibvirtError::Xml {
                vm: d.name.clone(),
                detail: format!("snapshot {}: {detail}", s.name),
            })?;
            out.push((
                i,
                SnapshotInfo {
                    id: s.name,
                    name: p.description.unwrap_or(p.name),
                    created: Timestamp(p.created_s.saturating_mul(1000)),
                },
            ));
        }
        out.sort_by_key(|(i, s)| (s.created, *i));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Reads every host in parallel.
    async fn read_hosts(&self) -> Vec<(Arc<Host>, Result<HostRead, LibvirtError>)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let h = h.clone();
            set.spawn(async move {
                let r = h.read().await;
                // A call that got no answer: the stream may be dead (a cut
                // link never closes it); the next read connects anew.
                if let Err(LibvirtError::Timeout { .. }) = &r {
                    h.forget();
                }
                (i, r)
            });
        }
        let mut out: Vec<Option<Result<HostRead, LibvirtError>>> =
            (0..self.hosts.len()).map(|_| None).collect();
        while let Some(j) = set.join_next().await {
            if let Ok((i, r)) = j {
                out[i] = Some(r);
            }
        }
        self.hosts
            .iter()
            .cloned()
            .zip(out)
            .map(|(h, r)| {
                let r = r.unwrap_or_else(|| Err(LibvirtError::Closed("read task failed".into())));
                (h, r)
            })
            .collect()
    }

    fn host_info(&self, h: &Host, read: Option<&HostRead>, link: HostLink) -> HostInfo {
        let node = read.map(|r| r.node).or_else(|| h.last_node());
        let memory_mb = node.map_or(0, |n| n.memory_kib / 1024);
        HostInfo {
            name: h.cfg.name.clone(),
            ip: h.cfg.ip,
            site: h.cfg.site.clone(),
            link,
            cpu_mhz: node.map_or(0, |n| n.cpus.saturating_mul(n.mhz)),
            memory_mb,
            snapshot_count: 0,
            vitals: Vitals {
                memory_mb: read.map_or(0, |r| memory_mb.saturating_sub(r.free >> 20)),
                ..Vitals::default()
            },
            signals: Default::default(),
        }
    }

    /// One domain as the port's VM, with rates since the last read.
    fn vm_info(
        &self,
        h: &Host,
        r: &host::DomainRead,
        node_mhz: u32,
        prev: Option<&Seen>,
    ) -> (VmInfo, Seen) {
        let x: &DomainXml = &r.xml.1;
        let power = power_of(r.state.0, r.state.1);
        let st = &r.stats;
        let sum = |prefix: &str, count: &str, fields: &[&str]| -> u64 {
            let n = st.get(count).unwrap_or(0).min(4096);
            (0..n)
                .flat_map(|i| fields.iter().map(move |f| format!("{prefix}.{i}.{f}")))
                .filter_map(|k| st.get(&k))
                .fold(0u64, u64::saturating_add)
        };
        let cpu_ns = st.get("cpu.time").unwrap_or(0);
        let disk = sum("block", "block.count", &["rd.bytes", "wr.bytes"]);
        let net = sum("net", "net.count", &["rx.bytes", "tx.bytes"]);
        let now = Instant::now();
        let same_run = prev.is_some_and(|p| p.id == r.domain.id && p.host == h.cfg.name);
        let mut vitals = Vitals {
            memory_mb: if power == PowerState::On {
                st.get("balloon.current").unwrap_or(0) / 1024
            } else {
                0
            },
            storage_gb: (sum("block", "block.count", &["capacity"]) >> 30) as u32,
            ..Vitals::default()
        };
        if let (true, Some((t, c0, d0, n0))) = (same_run, prev.and_then(|p| p.counters)) {
            let dt = now.duration_since(t).as_secs_f64();
            if dt > 0.0 {
                let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / dt) as u64;
                vitals.cpu_mhz =
                    ((rate(cpu_ns, c0) as f64 / 1e9) * f64::from(node_mhz)).round() as u32;
                vitals.disk_kbps = u32::try_from(rate(disk, d0) / 1024).unwrap_or(u32::MAX);
                vitals.net_kbps = u32::try_from(rate(net, n0) / 1024).unwrap_or(u32::MAX);
            }
        }
        let agent_ok_id = match r.agent {
            Some(true) => Some(r.domain.id),
            _ => prev.filter(|_| same_run).and_then(|p| p.agent_ok_id),
        };
        // Missing only once the agent answered in this run: a guest still
        // booting has not started its agent yet.
        let heartbeat = match r.agent {
            Some(true) => Heartbeat::Ok,
            Some(false) if agent_ok_id == Some(r.domain.id) => Heartbeat::Missing,
            _ => Heartbeat::Unknown,
        };
        let shared_disks = self.shared_disks(&h.cfg.site, x);
        let info = VmInfo {
            name: r.domain.name.clone(),
            ip: x.ip.or(r.agent_ip),
            host: h.cfg.name.clone(),
            power,
            heartbeat,
            // Its vCPUs at the host's speed; libvirt reserves no CPU for a
            // guest (shares are not a reservation), so a restore target
            // counts it over the policy's overcommit.
            cpu_mhz: x.vcpus.saturating_mul(node_mhz),
            cpu_reservation_mhz: 0,
            memory_mb: x.memory_mb,
            // libvirt does not say what QEMU itself takes beside the
            // guest's memory.
            memory_overhead_mb: 0,
            snapshot_count: r.snapshots,
            replica_available: false,
            shared_disks,
            vitals,
        };
        let seen = Seen {
            host: h.cfg.name.clone(),
            power,
            id: r.domain.id,
            agent_ok_id,
            counters: Some((now, cpu_ns, disk, net)),
        };
        (info, seen)
    }

    /// A state change no event explained (events lost while the connection
    /// was down, or before vmdr started): recorded from the state's reason.
    fn explain_unexplained(&self, vm: &str, host: &str, was: Option<&Seen>, now: (i32, i32)) {
        let off = matches!(now.0, state::SHUTOFF | state::CRASHED);
        let was_on = was.is_none_or(|s| s.power == PowerState::On);
        if !off || !was_on {
            return;
        }
        let meaning = events::off_meaning(now.0, now.1);
        if meaning == events::Meaning::Ignore {
            return;
        }
        let mut log = lock(&self.shared.log);
        let explained = match log.last_of(vm) {
            Some(e) => matches!(e.kind, PowerEventKind::PoweredOff | PowerEventKind::Crashed),
            None => false,
        };
        if explained {
            return;
        }
        // First sight of a VM that was already off: only a failure matters
        // (the control loop counts a VM found off as stopped on purpose
        // unless its events say a failure stopped it).
        if was.is_none() && meaning != events::Meaning::Failure {
            return;
        }
        let mut own = lock(&self.shared.own);
        log.record(&mut own, vm, host, meaning, host::now());
    }

    /// Removes an inactive definition left on `h` after vmdr moved the VM
    /// to another host while `h` was down.
    async fn remove_stale(&self, h: &Host, d: &Domain) {
        let Ok(c) = h.client().await else { return };
        match c.undefine(d, UNDEFINE_MOVE).await {
            Ok(()) => {
                tracing::warn!(host = %h.cfg.name, vm = %d.name, "removed the stale definition of a VM vmdr restored elsewhere while this host was down")
            }
            Err(e) => {
                tracing::warn!(host = %h.cfg.name, vm = %d.name, error = %e, "cannot remove a stale definition")
            }
        }
    }

    /// The definition of a VM that is to come up from other disks, and the
    /// host (and domain) still holding it, if that host answers. Refused
    /// while the VM runs anywhere: that would be a second copy.
    async fn definition_for_images(
        &self,
        vm: &str,
        op: &'static str,
    ) -> Result<(String, Option<(Arc<Host>, Arc<Client>, Domain)>), HypervisorError> {
        match self.locate(vm).await {
            Ok((h, c, d)) => {
                let (st, _) = self.dom_state(&h, &c, &d).await?;
                if is_active(st) {
                    return Err(HypervisorError::InvalidState {
                        name: vm.to_owned(),
                        detail: format!(
                            "running on {}: {op} would start a second copy",
                            h.cfg.name
                        ),
                    });
                }
                let xml = c
                    .xml(&d, host::XML_FLAGS)
                    .await
                    .map_err(|e| e.into_port(&h.cfg.name, "vm", vm))?;
                Ok((xml, Some((h, c, d))))
            }
            // Its host does not answer: the definition read last.
            Err(HypervisorError::HostUnreachable { .. }) => {
                Ok((self.definition_of(vm).await?, None))
            }
            Err(e) => Err(e),
        }
    }

    /// Where host `dst` runs `images` (raw, as a replica writes them) from:
    /// each converted to a qcow2 `name-dev.qcow2` (so the VM keeps
    /// snapshots and change tracking) in the first directory `dst` shares,
    /// or beside the image when it lists none. Without `qemu-img` on this
    /// machine the raw images are used where they are (a copy for a drill),
    /// and the VM runs without snapshots until converted.
    async fn place_images(
        dst: &Host,
        images: &[PathBuf],
        targets: &[String],
        name: &str,
        drill: bool,
    ) -> Result<Vec<(String, &'static str)>, HypervisorError> {
        for i in images {
            if !tokio::fs::try_exists(i).await.unwrap_or(false) {
                return Err(HypervisorError::NotFound {
                    kind: "disk image",
                    name: i.display().to_string(),
                });
            }
        }
        let dir_for = |img: &std::path::Path| match dst.cfg.shared.first() {
            Some(d) => PathBuf::from(d),
            None => img.parent().map(PathBuf::from).unwrap_or_default(),
        };
        let mut out = Vec::with_capacity(images.len());
        for (img, dev) in images.iter().zip(targets) {
            let to = dir_for(img).join(format!("{name}-{dev}.qcow2"));
            let converted = tokio::process::Command::new("qemu-img")
                .args([
                    "convert",
                    "-q",
                    "-f",
                    "raw",
                    "-O",
                    "qcow2",
                    "-o",
                    "compat=1.1",
                ])
                .arg(img)
                .arg(&to)
                .output()
                .await;
            match converted {
                Ok(o) if o.status.success() => out.push((to.display().to_string(), "qcow2")),
                Ok(o) => {
                    return Err(HypervisorError::Failed {
                        op: "convert a disk image to qcow2",
                        detail: format!(
                            "qemu-img convert {} -> {}: {}",
                            img.display(),
                            to.display(),
                            String::from_utf8_lossy(&o.stderr).trim()
                        ),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(image = %img.display(),
                        "qemu-img is not installed here (Debian package qemu-utils): the VM runs from the raw image, without snapshots or change tracking");
                    if drill {
                        let to = to.with_extension("img");
                        tokio::fs::copy(img, &to)
                            .await
                            .map_err(|e| HypervisorError::Failed {
                                op: "copy a disk image",
                                detail: format!("{} -> {}: {e}", img.display(), to.display()),
                            })?;
                        out.push((to.display().to_string(), "raw"));
                    } else {
                        out.push((img.display().to_string(), "raw"));
                    }
                }
                Err(e) => {
                    return Err(HypervisorError::Failed {
                        op: "convert a disk image to qcow2",
                        detail: format!("qemu-img: {e}"),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Defines a drill's copy on `dst` from `copy_xml` and starts it; a copy
    /// that does not start is undefined again.
    async fn define_and_start_copy(
        &self,
        dst: &Host,
        dc: &Client,
        copy: &str,
        copy_xml: &str,
    ) -> Result<(), HypervisorError> {
        let nd = dc
            .define(copy_xml)
            .await
            .map_err(|e| e.into_port(&dst.cfg.name, "vm", copy))?;
        if let Err(e) = self.start(dst, dc, &nd).await {
            let _ = dc.undefine(&nd, UNDEFINE_MOVE).await;
            return Err(e);
        }
        Ok(())
    }

    /// Where a copy's image of `disk` (target `dev`) goes: beside it, on the
    /// same storage.
    fn copy_path(disk: &str, copy: &str, dev: &str) -> String {
        let dir = std::path::Path::new(disk)
            .parent()
            .map_or_else(|| "/".to_owned(), |p| p.display().to_string());
        format!("{}/{copy}-{dev}.qcow2", dir.trim_end_matches('/'))
    }

    /// Writes every disk of running `vm` as of one instant to `pairs`'
    /// copies: a push-mode backup job on its host, waited for.
    async fn point_in_time_copy(
        &self,
        h: &Host,
        c: &Client,
        d: &Domain,
        x: &DomainXml,
        pairs: &[(String, String)],
    ) -> Result<(), HypervisorError> {
        let port = |e: LibvirtError| e.into_port(&h.cfg.name, "vm", &d.name);
        let mut xml = String::from("<domainbackup mode='push'><disks>");
        for (dev, (_, to)) in x.targets.iter().zip(pairs) {
            xml.push_str(&format!(
                "<disk name='{}' backup='yes' type='file'><target file='{}'/><driver type='qcow2'/></disk>",
                crate::domxml::escape(dev),
                crate::domxml::escape(to)
            ));
        }
        xml.push_str("</disks></domainbackup>");
        c.backup_begin(d, &xml, None).await.map_err(port)?;
        let t0 = Instant::now();
        loop {
            if c.job_type(d).await.map_err(port)? == crate::remote::job::NONE {
                break;
            }
            if t0.elapsed() > self.cfg.action_timeout {
                let _ = c.abort_job(d).await;
                return Err(HypervisorError::Timeout {
                    op: "drill copy (backup)",
                    after: self.cfg.action_timeout,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        match c.completed_job(d).await.map_err(port)? {
            (crate::remote::job::COMPLETED, _) => Ok(()),
            (t, err) => Err(HypervisorError::Failed {
                op: "drill copy (backup)",
                detail: format!(
                    "the backup job ended as {t}: {}",
                    err.unwrap_or_else(|| "no reason given".into())
                ),
            }),
        }
    }

    /// Deletes image files on `h` through libvirt's storage API: the pool
    /// that holds each, or a transient pool over its directory.
    async fn delete_images(&self, h: &Host, c: &Client, paths: &[String]) {
        for path in paths {
            let deleted = match c.vol_by_path(path).await {
                Ok(vol) => c.vol_delete(&vol).await,
                Err(_) => {
                    let dir = std::path::Path::new(path)
                        .parent()
                        .map_or_else(|| "/".to_owned(), |p| p.display().to_string());
                    let name = format!(
                        "vmdr-cleanup-{}",
                        self.serial.fetch_add(1, Ordering::Relaxed)
                    );
                    let pool_xml = format!(
                        "<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>",
                        crate::domxml::escape(&dir)
                    );
                    match c.pool_create(&pool_xml).await {
                        Ok(pool) => {
                            let r = match c.vol_by_path(path).await {
                                Ok(vol) => c.vol_delete(&vol).await,
                                Err(e) => Err(e),
                            };
                            let _ = c.pool_destroy(&pool).await;
                            r
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = deleted {
                tracing::warn!(host = %h.cfg.name, path, error = %e, "cannot delete a drill copy's image");
            }
        }
    }

    /// A domain named `name` on any host in use, if one answers with it.
    async fn find(&self, name: &str) -> Option<(Arc<Host>, Arc<Client>, Domain)> {
        for h in &self.hosts {
            if !self.in_use(&h.cfg) {
                continue;
            }
            if let Ok(c) = h.client_now().await {
                if let Ok(d) = c.lookup(name).await {
                    return Some((h.clone(), c, d));
                }
            }
        }
        None
    }

    /// Keeps a VM's definition on disk when it is not the one kept last.
    async fn keep_definition(&self, vm: &str, xml: &Arc<(String, DomainXml)>) {
        let same = lock(&self.state)
            .saved
            .get(vm)
            .is_some_and(|k| Arc::ptr_eq(k, xml));
        if same {
            return;
        }
        match self.store.save_definition(vm, &xml.0).await {
            Ok(()) => {
                lock(&self.state).saved.insert(vm.to_owned(), xml.clone());
            }
            Err(e) => tracing::warn!(%vm, error = %e, "cannot keep the definition on disk"),
        }
    }

    /// Whether every disk of `x` is on storage every host of `site` shares.
    fn shared_disks(&self, site: &str, x: &DomainXml) -> bool {
        !x.disks.is_empty() && x.disks.iter().all(|d| self.cfg.shared_on_site(site, d))
    }
}

#[async_trait]
impl Hypervisor for Libvirt {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            host_recovery: false,
            add_host: true,
            replicas: false,
            drills: true,
            images: true,
        }
    }

    async fn inventory(&self) -> Result<Inventory, HypervisorError> {
        let reads = self.read_hosts().await;
        let mut inv = Inventory::default();
        let mut found: HashMap<String, Vec<(VmInfo, Seen, (i32, i32), Arc<Host>, Domain)>> =
            HashMap::new();
        let prev = lock(&self.state).seen.clone();
        for (h, r) in &reads {
            let in_use = self.in_use(&h.cfg);
            match r {
                Ok(read) => {
                    let link = if in_use {
                        HostLink::Connected
                    } else {
                        HostLink::Standby
                    };
                    let mut info = self.host_info(h, Some(read), link);
                    if !in_use {
                        inv.hosts.push(info);
                        continue;
                    }
                    for d in &read.domains {
                        self.keep_definition(&d.domain.name, &d.xml).await;
                        let (vm, seen) =
                            self.vm_info(h, d, read.node.mhz, prev.get(&d.domain.name));
                        // The host's CPU in use: its guests', from their
                        // domain stats (libvirt has no host-wide rate).
                        info.vitals.cpu_mhz = info.vitals.cpu_mhz.saturating_add(vm.vitals.cpu_mhz);
                        found.entry(vm.name.clone()).or_default().push((
                            vm,
                            seen,
                            d.state,
                            h.clone(),
                            d.domain.clone(),
                        ));
                    }
                    inv.hosts.push(info);
                }
                Err(e) => {
                    tracing::debug!(host = %h.cfg.name, error = %e, "host not answering");
                    let link = if in_use {
                        HostLink::NotResponding
                    } else {
                        HostLink::Standby
                    };
                    inv.hosts.push(self.host_info(h, None, link));
                }
            }
        }
        let placements = lock(&self.state).placements.clone();
        let mut seen_now: HashMap<String, Seen> = HashMap::new();
        let mut names: Vec<String> = found.keys().cloned().collect();
        names.sort();
        for name in names {
            let Some(mut copies) = found.remove(&name) else {
                continue;
            };
            // One VM per name: the running copy, else the one vmdr placed.
            let placed = placements.vms.get(&name);
            copies.sort_by_key(|(v, _, _, h, _)| {
                (v.power != PowerState::On, Some(&h.cfg.name) != placed)
            });
            let running = copies
                .iter()
                .filter(|c| c.0.power == PowerState::On)
                .count();
            if running > 1 {
                let on: Vec<&str> = copies
                    .iter()
                    .filter(|c| c.0.power == PowerState::On)
                    .map(|c| c.3.cfg.name.as_str())
                    .collect();
                tracing::error!(vm = %name, hosts = ?on, "the same VM runs on more than one host");
            }
            let mut rest = copies.split_off(1);
            let Some((vm, seen, st, h, _)) = copies.pop() else {
                continue;
            };
            // Off copies of a VM vmdr moved are stale: left on a host that
            // was down when vmdr moved it away, or by a restore refused
            // because the original still ran (a cut-off host).
            if let Some(p) = placed {
                for (other, _, _, oh, od) in rest.drain(..) {
                    if other.power == PowerState::Off
                        && (vm.power == PowerState::On || *p != oh.cfg.name)
                    {
                        self.remove_stale(&oh, &od).await;
                    }
                }
                if vm.power == PowerState::On && *p != h.cfg.name {
                    let _ = self.save_placement(&name, &h.cfg.name).await;
                }
            }
            self.explain_unexplained(&name, &h.cfg.name, prev.get(&name), st);
            seen_now.insert(name, seen);
            inv.vms.push(vm);
        }
        // VMs on hosts that do not answer: their power is unknown.
        for (name, s) in &prev {
            if seen_now.contains_key(name) {
                continue;
            }
            let lost = inv
                .hosts
                .iter()
                .any(|h| h.name == s.host && h.link == HostLink::NotResponding);
            if !lost {
                continue;
            }
            // Its definition as last read this run (no file read per tick).
            let Some(def) = lock(&self.state).saved.get(name).cloned() else {
                continue;
            };
            let x = &def.1;
            let host = self.hosts.iter().find(|h| h.cfg.name == s.host);
            let site = host.map(|h| h.cfg.site.clone()).unwrap_or_default();
            let node_mhz = host.and_then(|h| h.last_node()).map_or(0, |n| n.mhz);
            inv.vms.push(VmInfo {
                name: name.clone(),
                ip: x.ip,
                host: s.host.clone(),
                power: PowerState::Unknown,
                heartbeat: Heartbeat::Unknown,
                cpu_mhz: x.vcpus.saturating_mul(node_mhz),
                cpu_reservation_mhz: 0,
                memory_mb: x.memory_mb,
                memory_overhead_mb: 0,
                snapshot_count: 0,
                replica_available: false,
                shared_disks: self.shared_disks(&site, x),
                vitals: Vitals::default(),
            });
            seen_now.insert(
                name.clone(),
                Seen {
                    power: PowerState::Unknown,
                    counters: None,
                    ..s.clone()
                },
            );
        }
        lock(&self.state).seen = seen_now;
        Ok(inv)
    }

    async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, HypervisorError> {
        Ok(lock(&self.shared.log).since(since))
    }

    async fn create_snapshot(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<SnapshotInfo, HypervisorError> {
        let SnapshotTarget::Vm(vm) = target else {
            return Err(HypervisorError::Unsupported {
                op: "host snapshots",
            });
        };
        let (h, c, d) = self.locate(vm).await?;
        let at = host::now();
        let id = format!(
            "vmdr-{}-{}",
            at.as_millis(),
            self.serial.fetch_add(1, Ordering::Relaxed)
        );
        let xml = SnapshotXml::create(&id, name);
        let r = c
            .snapshot_create(&d, &xml, 0, self.cfg.action_timeout)
            .await;
        h.snapshots_changed(vm);
        r.map_err(|e| e.into_port(&h.cfg.name, "vm", vm))?;
        Ok(SnapshotInfo {
            id,
            name: name.to_owned(),
            created: at,
        })
    }

    async fn list_snapshots(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Vec<SnapshotInfo>, HypervisorError> {
        let SnapshotTarget::Vm(vm) = target else {
            return Err(HypervisorError::Unsupported {
                op: "host snapshots",
            });
        };
        let (h, c, d) = self.locate(vm).await?;
        self.snapshot_infos(&c, &d)
            .await
            .map_err(|e| e.into_port(&h.cfg.name, "vm", vm))
    }

    async fn remove_snapshot(
        &self,
        target: &SnapshotTarget,
        id: &str,
    ) -> Result<(), HypervisorError> {
        let SnapshotTarget::Vm(vm) = target else {
            return Err(HypervisorError::Unsupported {
                op: "host snapshots",
            });
        };
        let (h, c, _, snap) = self.vm_snapshot(vm, Some(id)).await.map_err(|e| match e {
            HypervisorError::NotFound {
                kind: "snapshot", ..
            } => HypervisorError::NotFound {
                kind: "snapshot",
                name: format!("{vm}/{id}"),
            },
            e => e,
        })?;
        let r = c.snapshot_delete(&snap, 0, self.cfg.action_timeout).await;
        h.snapshots_changed(vm);
        r.map_err(|e| e.into_port(&h.cfg.name, "snapshot", id))
    }

    async fn revert_vm(&self, vm: &str, snapshot: Option<&str>) -> Result<(), HypervisorError> {
        let (h, c, _, snap) = self.vm_snapshot(vm, snapshot).await?;
        let port = |e: LibvirtError| e.into_port(&h.cfg.name, "vm", vm);
        // Reverted paused, then stopped: the port leaves a reverted VM off
        // (the caller powers it on, from the snapshot's disks).
        let kinds = [PowerEventKind::PoweredOn, PowerEventKind::PoweredOff];
        self.own(vm, &kinds, async {
            c.revert(&snap, REVERT_PAUSED, self.cfg.action_timeout)
                .await
                .map_err(port)?;
            let nd = c.lookup(vm).await.map_err(port)?;
            let (st, _) = self.dom_state(&h, &c, &nd).await?;
            if is_active(st) {
                c.destroy(&nd).await.map_err(port)?;
            }
            Ok::<_, HypervisorError>(())
        })
        .await?;
        Ok(())
    }

    async fn power_on(&self, vm: &str) -> Result<(), HypervisorError> {
        let (h, c, d) = self.locate(vm).await?;
        let (st, _) = self.dom_state(&h, &c, &d).await?;
        if is_active(st) {
            return Err(HypervisorError::InvalidState {
                name: vm.to_owned(),
                detail: "already running".into(),
            });
        }
        self.start(&h, &c, &d).await
    }

    async fn power_off(&self, vm: &str) -> Result<(), HypervisorError> {
        let (h, c, d) = self.locate(vm).await?;
        let (st, _) = self.dom_state(&h, &c, &d).await?;
        if !is_active(st) {
            return Err(HypervisorError::InvalidState {
                name: vm.to_owned(),
                detail: "already off".into(),
            });
        }
        self.own(vm, &[PowerEventKind::PoweredOff], c.destroy(&d))
            .await
            .map_err(|e| e.into_port(&h.cfg.name, "vm", vm))
    }

    async fn reset(&self, vm: &str) -> Result<(), HypervisorError> {
        let (h, c, d) = self.locate(vm).await?;
        let (st, _) = self.dom_state(&h, &c, &d).await?;
        if !is_running(st) {
            return Err(HypervisorError::InvalidState {
                name: vm.to_owned(),
                detail: "not running".into(),
            });
        }
        self.own(vm, &[PowerEventKind::Reset], c.reset(&d))
            .await
            .map_err(|e| e.into_port(&h.cfg.name, "vm", vm))
    }

    async fn restore_vm(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
    ) -> Result<(), HypervisorError> {
        if source == RestoreSource::Replica {
            // The replica's data is in the images its receiver writes.
            return Err(HypervisorError::Unsupported {
                op: "restore_vm from a replica without its images",
            });
        }
        let xml = match self.locate(vm).await {
            Ok((h, c, d)) => {
                let (st, _) = self.dom_state(&h, &c, &d).await?;
                if is_active(st) {
                    return Err(HypervisorError::InvalidState {
                        name: vm.to_owned(),
                        detail: format!(
                            "running on {}: a restore would start a second copy",
                            h.cfg.name
                        ),
                    });
                }
                let (dst, dc) = self.target(host).await?;
                let nd = if h.cfg.name == host {
                    d
                } else {
                    self.move_definition(vm, &h, &c, &d, &dst, &dc).await?
                };
                return self.start(&dst, &dc, &nd).await;
            }
            // Its host does not answer: the definition read last.
            Err(HypervisorError::HostUnreachable { .. }) => self.definition_of(vm).await?,
            Err(e) => return Err(e),
        };
        let (dst, dc) = self.target(host).await?;
        let d = self.define_on(vm, &dst, &dc, &xml, &[]).await?;
        if let Some(s) = lock(&self.state).seen.get_mut(vm) {
            s.host = host.to_owned();
        }
        self.start(&dst, &dc, &d).await
    }

    async fn restore_vm_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
    ) -> Result<(), HypervisorError> {
        let (xml, holder) = self.definition_for_images(vm, "a restore").await?;
        let x = DomainXml::parse(&xml)
            .map_err(|detail| HypervisorError::Protocol(format!("{vm}: {detail}")))?;
        if images.len() != x.targets.len() {
            return Err(HypervisorError::Failed {
                op: "restore from images",
                detail: format!(
                    "{vm} has {} disks and {} images were given",
                    x.targets.len(),
                    images.len()
                ),
            });
        }
        let (dst, dc) = self.target(host).await?;
        // A name of its own: the disks it ran from before stay as they were.
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stem = format!("{vm}-restored-{secs}");
        let placed = Self::place_images(&dst, images, &x.targets, &stem, false).await?;
        let new_xml = crate::domxml::with_disk_images(&xml, &placed)
            .map_err(|detail| HypervisorError::Protocol(format!("{vm}: {detail}")))?;
        // Off the host that held it first (when it answers): one definition.
        if let Some((h, c, d)) = &holder {
            if h.cfg.name != host {
                let _ = self.store.save_definition(vm, &xml).await;
                c.undefine(d, UNDEFINE_MOVE)
                    .await
                    .map_err(|e| e.into_port(&h.cfg.name, "vm", vm))?;
                h.snapshots_changed(vm);
            }
        }
        let d = self.define_on(vm, &dst, &dc, &new_xml, &[]).await?;
        if let Some(s) = lock(&self.state).seen.get_mut(vm) {
            s.host = host.to_owned();
        }
        tracing::warn!(
            vm,
            host,
            "defined on the images a replica wrote; starting it"
        );
        self.start(&dst, &dc, &d).await
    }

    async fn start_drill_copy_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
        copy: &str,
    ) -> Result<(), HypervisorError> {
        if self.find(copy).await.is_some() {
            return Err(HypervisorError::InvalidState {
                name: copy.to_owned(),
                detail: "a drill copy of that name exists".into(),
            });
        }
        // The original is not touched: its definition is read where it is.
        let (h, c, d) = self.locate(vm).await?;
        let xml = c
            .xml(&d, host::XML_FLAGS)
            .await
            .map_err(|e| e.into_port(&h.cfg.name, "vm", vm))?;
        let x = DomainXml::parse(&xml)
            .map_err(|detail| HypervisorError::Protocol(format!("{vm}: {detail}")))?;
        if images.len() != x.targets.len() {
            return Err(HypervisorError::Failed {
                op: "drill from images",
                detail: format!(
                    "{vm} has {} disks and {} images were given",
                    x.targets.len(),
                    images.len()
                ),
            });
        }
        let (dst, dc) = self.target(host).await?;
        // Images of the copy's own (the caller removes its own once started).
        let placed = Self::place_images(&dst, images, &x.targets, copy, true).await?;
        let started = async {
            let on_images = crate::domxml::with_disk_images(&xml, &placed)
                .map_err(|detail| HypervisorError::Protocol(format!("{vm}: {detail}")))?;
            let same: Vec<(String, String)> =
                placed.iter().map(|(p, _)| (p.clone(), p.clone())).collect();
            let copy_xml = crate::domxml::drill_copy(&on_images, copy, vm, &same)
                .map_err(|detail| HypervisorError::Protocol(format!("{vm}: {detail}")))?;
            self.define_and_start_copy(&dst, &dc, copy, &copy_xml).await
        }
        .await;
        if started.is_err() {
            let files: Vec<String> = placed.into_iter().map(|(p, _)| p).collect();
            self.delete_images(&dst, &dc, &files).await;
        }
        started
    }

    async fn migrate_vm(&self, vm: &str, host: &str) -> Result<(), HypervisorError> {
        let (h, c, d) = self.locate(vm).await?;
        let (st, _) = self.dom_state(&h, &c, &d).await?;
        if is_active(st) {
            return Err(HypervisorError::InvalidState {
                name: vm.to_owned(),
                detail: "running: a cold migration needs it off".into(),
            });
        }
        let (dst, dc) = self.target(host).await?;
        if h.cfg.name == host {
            return Ok(());
        }
        self.move_definition(vm, &h, &c, &d, &dst, &dc)
            .await
            .map(drop)
    }

    async fn start_drill_copy(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
        copy: &str,
    ) -> Result<(), HypervisorError> {
        if source == RestoreSource::Replica {
            return Err(HypervisorError::Unsupported {
                op: "start_drill_copy from a replica without its images",
            });
        }
        if self.find(copy).await.is_some() {
            return Err(HypervisorError::InvalidState {
                name: copy.to_owned(),
                detail: "a drill copy of that name exists".into(),
            });
        }
        let (h, c, d) = self.locate(vm).await?;
        let port = |e: LibvirtError| e.into_port(&h.cfg.name, "vm", vm);
        let (st, _) = self.dom_state(&h, &c, &d).await?;
        if !is_running(st) {
            // The copy is taken by the running QEMU at one instant; a
            // stopped VM has none to take it.
            return Err(HypervisorError::InvalidState {
                name: vm.to_owned(),
                detail: "a drill copies a running VM; this one is off".into(),
            });
        }
        let xml = c.xml(&d, host::XML_FLAGS).await.map_err(port)?;
        let x = DomainXml::parse(&xml)
            .map_err(|detail| HypervisorError::Protocol(format!("{vm}: {detail}")))?;
        if x.disks.is_empty() || x.targets.iter().any(String::is_empty) {
            return Err(HypervisorError::InvalidState {
                name: vm.to_owned(),
                detail: "a disk without a source or target cannot be copied".into(),
            });
        }
        let (dst, dc) = self.target(host).await?;
        let pairs: Vec<(String, String)> = x
            .disks
            .iter()
            .zip(&x.targets)
            .map(|(disk, dev)| (disk.clone(), Self::copy_path(disk, copy, dev)))
            .collect();
        let copies: Vec<String> = pairs.iter().map(|(_, to)| to.clone()).collect();
        if let Err(e) = self.point_in_time_copy(&h, &c, &d, &x, &pairs).await {
            self.delete_images(&h, &c, &copies).await;
            return Err(e);
        }
        let started = async {
            let copy_xml = crate::domxml::drill_copy(&xml, copy, vm, &pairs)
                .map_err(|detail| HypervisorError::Protocol(format!("{vm}: {detail}")))?;
            self.define_and_start_copy(&dst, &dc, copy, &copy_xml).await
        }
        .await;
        if started.is_err() {
            self.delete_images(&h, &c, &copies).await;
        }
        started
    }

    async fn remove_drill_copy(&self, copy: &str) -> Result<(), HypervisorError> {
        let (h, c, d) = self
            .find(copy)
            .await
            .ok_or_else(|| HypervisorError::NotFound {
                kind: "vm",
                name: copy.to_owned(),
            })?;
        let port = |e: LibvirtError| e.into_port(&h.cfg.name, "vm", copy);
        let xml = c.xml(&d, host::XML_FLAGS).await.map_err(port)?;
        let x = DomainXml::parse(&xml)
            .map_err(|detail| HypervisorError::Protocol(format!("{copy}: {detail}")))?;
        if x.drill_of.is_none() {
            return Err(HypervisorError::InvalidState {
                name: copy.to_owned(),
                detail: "not a drill copy: vmdr removes only the copies it made".into(),
            });
        }
        let (st, _) = self.dom_state(&h, &c, &d).await?;
        if is_active(st) {
            self.own(copy, &[PowerEventKind::PoweredOff], c.destroy(&d))
                .await
                .map_err(port)?;
        }
        c.undefine(&d, UNDEFINE_MOVE).await.map_err(port)?;
        // Only the images the drill made, by their names.
        let made: Vec<String> = x
            .disks
            .iter()
            .zip(&x.targets)
            .filter(|(disk, dev)| {
                std::path::Path::new(disk.as_str())
                    .file_name()
                    .is_some_and(|f| {
                        *f == *format!("{copy}-{dev}.qcow2") || *f == *format!("{copy}-{dev}.img")
                    })
            })
            .map(|(disk, _)| disk.clone())
            .collect();
        self.delete_images(&h, &c, &made).await;
        Ok(())
    }

    async fn recover_host(&self, host: &str) -> Result<(), HypervisorError> {
        self.host(host)?;
        Err(HypervisorError::Unsupported {
            op: "recover_host (no host restart command is configured)",
        })
    }

    async fn add_host(&self, host: &str) -> Result<(), HypervisorError> {
        let h = self.host(host)?.clone();
        if !h.cfg.standby {
            return Err(HypervisorError::InvalidState {
                name: host.to_owned(),
                detail: "not a standby host: it is in use already".into(),
            });
        }
        if self.in_use(&h.cfg) {
            return Err(HypervisorError::InvalidState {
                name: host.to_owned(),
                detail: "added already".into(),
            });
        }
        h.client()
            .await
            .map_err(|e| e.into_port(host, "host", host))?;
        let p = {
            let mut st = lock(&self.state);
            st.placements.added.insert(host.to_owned());
            st.placements.clone()
        };
        self.store
            .save_placements(&p)
            .await
            .map_err(|e| HypervisorError::Failed {
                op: "record added host",
                detail: e.to_string(),
            })
    }
}
