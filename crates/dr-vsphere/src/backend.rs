//! One vCenter as vmdr uses it: a session, the inventory reader, the
//! name → managed object map the inventory keeps fresh, and the operations.

use crate::error::VsphereError;
use crate::events;
use crate::inventory::{self, InventoryReader};
use crate::session::{Session, SpareHost, VsphereConfig};
use crate::soap::MoRef;
use crate::task;
use crate::time;
use crate::watch::Watch;
use crate::xml;
use async_trait::async_trait;
use dr_core::model::{Inventory, PowerEvent, RestoreSource, SnapshotInfo, SnapshotTarget};
use dr_core::ports::{Capabilities, Hypervisor, HypervisorError};
use dr_core::Timestamp;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

mod from_images;

/// Disk and network rates by VM or host name, and when they were read.
#[derive(Default)]
struct PerfCache {
    counters: Option<crate::perf::Counters>,
    rates: HashMap<String, (u32, u32)>,
    at: Option<tokio::time::Instant>,
}

/// Names → managed objects, from the last inventory read.
#[derive(Default)]
struct Refs {
    vms: HashMap<String, MoRef>,
    hosts: HashMap<String, MoRef>,
    clusters: HashMap<String, MoRef>,
}

/// The original of a restore, as read before it starts.
struct Preflight {
    /// Its properties.
    o: inventory::ObjectContent,
    /// Its host.
    home: MoRef,
    /// Whether vCenter manages that host (connected and not powered off).
    home_managed: bool,
    /// Its folder.
    folder: MoRef,
}

/// A connected vCenter.
pub struct Vsphere {
    session: Session,
    reader: InventoryReader,
    refs: Mutex<Refs>,
    user: String,
    spares: Vec<SpareHost>,
    watch: tokio::sync::Mutex<Option<(Watch, tokio::time::Instant)>>,
    perf: tokio::sync::Mutex<PerfCache>,
    /// How long a task may run before it counts as timed out.
    pub task_timeout: Duration,
    /// The incremental inventory is rebuilt from a full read this often
    /// (and after every change vmdr makes to the topology), in case the
    /// server's view misses objects added later.
    pub full_read_every: Duration,
    /// Where registrations under way are recorded ([`crate::pending`]);
    /// `None`: not recorded (a crash in the middle of a restore off a lost
    /// host then leaves the VM out of the inventory).
    pub pending_dir: Option<std::path::PathBuf>,
    /// The VMs this process is uploading disk images for: a clean-up of
    /// abandoned uploads leaves theirs alone.
    uploads: Mutex<std::collections::HashSet<String>>,
}

impl Vsphere {
    /// Connects and logs in.
    pub async fn connect(cfg: &VsphereConfig) -> Result<Vsphere, VsphereError> {
        let session = Session::connect(cfg).await?;
        Ok(Vsphere {
            session,
            reader: InventoryReader::default(),
            refs: Mutex::new(Refs::default()),
            user: cfg.user.clone(),
            spares: cfg.spares.clone(),
            watch: tokio::sync::Mutex::new(None),
            perf: tokio::sync::Mutex::new(PerfCache::default()),
            task_timeout: Duration::from_secs(600),
            full_read_every: Duration::from_secs(300),
            pending_dir: None,
            uploads: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Finishes the registrations a previous process left under way
    /// (see [`crate::pending`]): a VM already back in the inventory needs
    /// nothing; otherwise its files are registered on the target, or else
    /// back on its home host. Returns each VM with the outcome.
    pub async fn resume_pending(&self) -> Vec<(String, Result<(), VsphereError>)> {
        let Some(dir) = self.pending_dir.clone() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in crate::pending::Pending::all(&dir) {
            let result = self.finish_registration(&p).await;
            if result.is_ok() {
                if let Err(e) = crate::pending::Pending::done(&dir, &p.vm) {
                    tracing::error!(vm = %p.vm, error = %e, "cannot remove a pending registration record");
                }
            }
            out.push((p.vm.clone(), result));
        }
        if !out.is_empty() {
            self.invalidate().await;
        }
        out
    }

    async fn finish_registration(&self, p: &crate::pending::Pending) -> Result<(), VsphereError> {
        self.full_inventory().await?;
        if self.lookup(true, &p.vm).is_some() {
            tracing::info!(vm = %p.vm, "a registration left under way had finished");
            return Ok(());
        }
        let register = |host: &MoRef| register_args(&p.path, &p.vm, &p.pool, host);
        tracing::warn!(vm = %p.vm, path = %p.path, "finishing a registration left under way");
        match task::run(
            &self.session,
            "RegisterVM_Task",
            &p.folder,
            &register(&p.target),
            self.task_timeout,
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.fault() == Some("AlreadyExists") || e.fault() == Some("DuplicateName") => {
                Ok(())
            }
            Err(e) => {
                tracing::warn!(vm = %p.vm, error = %e, "registration on the target failed; registering it back on its host");
                task::run(
                    &self.session,
                    "RegisterVM_Task",
                    &p.folder,
                    &register(&p.home),
                    self.task_timeout,
                )
                .await
                .map(drop)
            }
        }
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Logs out.
    pub async fn close(&self) {
        self.session.logout().await;
    }

    /// The whole inventory read afresh (`RetrievePropertiesEx`), and the
    /// round trips it took; refreshes the name map. Vitals are the quick
    /// stats only (no disk and network rates: see [`Vsphere::inventory`]).
    pub async fn full_inventory(&self) -> Result<(Inventory, u32), VsphereError> {
        let (objects, trips) = self.reader.retrieve(&self.session).await?;
        Ok((self.absorb(&objects), trips))
    }

    /// The inventory, incrementally: after the first read, one
    /// `WaitForUpdatesEx` round trip that brings only what changed; with
    /// disk and network rates from `QueryPerf`, refreshed once per real-time
    /// interval (20 s). Returns the round trips taken.
    pub async fn inventory(&self) -> Result<(Inventory, u32), VsphereError> {
        let mut guard = self.watch.lock().await;
        let fresh = guard
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() < self.full_read_every);
        let trips = match guard.as_mut() {
            Some((w, _)) if fresh => match w.refresh(&self.session).await {
                Ok(t) => t,
                Err(e) => {
                    // The collector may be gone with an expired session:
                    // start over.
                    tracing::info!(error = %e, "incremental inventory lost: reading it all again");
                    *guard = None;
                    0
                }
            },
            _ => 0,
        };
        let trips = if guard.is_none() || !fresh {
            if let Some((old, _)) = guard.take() {
                old.close(&self.session).await;
            }
            let (w, t) = Watch::start(&self.session).await?;
            *guard = Some((w, tokio::time::Instant::now()));
            trips + t
        } else {
            trips
        };
        let objects = guard.as_ref().map(|(w, _)| w.objects()).unwrap_or_default();
        drop(guard);
        let mut inv = self.absorb(&objects);
        let perf_trips = self.add_rates(&mut inv).await;
        Ok((inv, trips + perf_trips))
    }

    /// Fills disk and network rates into `inv` from `QueryPerf`, read again
    /// only once per real-time interval (so most inventory refreshes cost no
    /// extra round trip). Rates are advisory: a failure is logged, not
    /// returned. Returns the round trips taken.
    async fn add_rates(&self, inv: &mut Inventory) -> u32 {
        let Some(perf_mgr) = self.session.content().perf_manager.clone() else {
            return 0;
        };
        let mut cache = self.perf.lock().await;
        let mut trips = 0;
        let stale = cache.at.is_none_or(|t| {
            t.elapsed() >= Duration::from_secs(u64::from(crate::perf::INTERVAL_SECS))
        });
        if stale {
            cache.at = Some(tokio::time::Instant::now());
            if cache.counters.is_none() {
                trips += 1;
                match crate::perf::counters(&self.session, &perf_mgr).await {
                    Ok(c) => cache.counters = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "no performance counters: disk and network rates unavailable")
                    }
                }
            }
            if let Some(c) = cache.counters {
                let (entities, names): (Vec<MoRef>, HashMap<MoRef, String>) = {
                    let refs = self
                        .refs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let running = inv
                        .vms
                        .iter()
                        .filter(|v| v.power == dr_core::model::PowerState::On)
                        .filter_map(|v| refs.vms.get(&v.name).map(|r| (r.clone(), v.name.clone())));
                    let up = inv
                        .hosts
                        .iter()
                        .filter(|h| h.link.accepts_vms())
                        .filter_map(|h| {
                            refs.hosts.get(&h.name).map(|r| (r.clone(), h.name.clone()))
                        });
                    let pairs: Vec<(MoRef, String)> = running.chain(up).collect();
                    (
                        pairs.iter().map(|(r, _)| r.clone()).collect(),
                        pairs.into_iter().collect(),
                    )
                };
                trips += 1;
                match crate::perf::query(&self.session, &perf_mgr, c, &entities).await {
                    Ok(rates) => {
                        cache.rates = rates
                            .into_iter()
                            .filter_map(|(r, v)| names.get(&r).map(|n| (n.clone(), v)))
                            .collect()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "QueryPerf failed: disk and network rates not refreshed")
                    }
                }
            }
        }
        for v in &mut inv.vms {
            if let Some(&(disk, net)) = cache.rates.get(&v.name) {
                v.vitals.disk_kbps = disk;
                v.vitals.net_kbps = net;
            }
        }
        for h in &mut inv.hosts {
            if let Some(&(disk, net)) = cache.rates.get(&h.name) {
                h.vitals.disk_kbps = disk;
                h.vitals.net_kbps = net;
            }
        }
        trips
    }

    /// Makes the next [`Vsphere::inventory`] a full read (after vmdr changed
    /// the topology).
    async fn invalidate(&self) {
        if let Some((old, _)) = self.watch.lock().await.take() {
            old.close(&self.session).await;
        }
        self.reader.renew(&self.session).await;
    }

    /// Keeps the name map of `objects` and maps them onto the port's model,
    /// with the configured spares not yet in vCenter as standby hosts.
    fn absorb(&self, objects: &[inventory::ObjectContent]) -> Inventory {
        let mut refs = Refs::default();
        for o in objects {
            let (Some(r), Some(name)) = (o.obj.as_ref(), o.props.get("name")) else {
                continue;
            };
            let map = match r.kind.as_str() {
                "VirtualMachine" => &mut refs.vms,
                "HostSystem" => &mut refs.hosts,
                "ClusterComputeResource" | "ComputeResource" => &mut refs.clusters,
                _ => continue,
            };
            map.insert(name.text.trim().to_owned(), r.clone());
        }
        let mut inv = crate::inventory::to_model(objects);
        for spare in &self.spares {
            if !refs.hosts.contains_key(&spare.name) {
                inv.hosts.push(dr_core::model::HostInfo {
                    name: spare.name.clone(),
                    ip: spare.name.parse().ok(),
                    site: spare.cluster.clone(),
                    link: dr_core::model::HostLink::Standby,
                    cpu_mhz: spare.cpu_mhz,
                    memory_mb: spare.memory_mb,
                    snapshot_count: 0,
                    vitals: dr_core::model::Vitals::default(),
                    signals: Default::default(),
                });
            }
        }
        *self
            .refs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = refs;
        inv
    }

    /// Power events at or after `since`.
    pub async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, VsphereError> {
        events::power_events(&self.session, since, &self.user).await
    }

    fn cluster(&self, name: &str) -> Option<MoRef> {
        self.refs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clusters
            .get(name)
            .cloned()
    }

    fn lookup(&self, vm: bool, name: &str) -> Option<MoRef> {
        let refs = self
            .refs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if vm {
            refs.vms.get(name)
        } else {
            refs.hosts.get(name)
        }
        .cloned()
    }

    /// The managed object of a VM (`vm == true`) or host by name; re-reads
    /// the inventory once if it is not known yet.
    pub async fn moref(&self, vm: bool, name: &str) -> Result<MoRef, VsphereError> {
        if let Some(r) = self.lookup(vm, name) {
            return Ok(r);
        }
        self.full_inventory().await?;
        self.lookup(vm, name).ok_or_else(|| VsphereError::NotFound {
            kind: if vm { "vm" } else { "host" },
            name: name.to_owned(),
        })
    }

    async fn vm_task(&self, method: &str, vm: &str, args: &str) -> Result<(), VsphereError> {
        let r = self.moref(true, vm).await?;
        task::run(&self.session, method, &r, args, self.task_timeout)
            .await
            .map(drop)
    }

    /// `PowerOnVM_Task`.
    pub async fn power_on(&self, vm: &str) -> Result<(), VsphereError> {
        self.vm_task("PowerOnVM_Task", vm, "").await
    }

    /// `PowerOffVM_Task` (hard).
    pub async fn power_off(&self, vm: &str) -> Result<(), VsphereError> {
        self.vm_task("PowerOffVM_Task", vm, "").await
    }

    /// `ResetVM_Task`.
    pub async fn reset(&self, vm: &str) -> Result<(), VsphereError> {
        self.vm_task("ResetVM_Task", vm, "").await
    }

    /// The VM of a snapshot target (host snapshots do not exist in vSphere).
    fn snapshot_vm(target: &SnapshotTarget) -> Result<&str, VsphereError> {
        match target {
            SnapshotTarget::Vm(vm) => Ok(vm),
            SnapshotTarget::Host(_) => Err(VsphereError::Unsupported {
                op: "host snapshots",
            }),
        }
    }

    /// A VM's snapshots, oldest first; `id` is the snapshot's managed object.
    pub async fn list_snapshots(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Vec<SnapshotInfo>, VsphereError> {
        let vm = self.moref(true, Self::snapshot_vm(target)?).await?;
        let o = inventory::retrieve_one(&self.session, &vm, &["snapshot"]).await?;
        let mut out: Vec<SnapshotInfo> = o
            .props
            .get("snapshot")
            .map(|info| {
                inventory::snapshot_trees(info)
                    .into_iter()
                    .filter_map(|t| {
                        Some(SnapshotInfo {
                            id: t.child_text("snapshot")?.trim().to_owned(),
                            name: t.child_text("name").unwrap_or("").to_owned(),
                            created: time::parse(t.child_text("createTime")?)?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| {
            a.created
                .cmp(&b.created)
                .then_with(|| snapshot_number(&a.id).cmp(&snapshot_number(&b.id)))
        });
        Ok(out)
    }

    /// `CreateSnapshot_Task` (no memory, not quiesced).
    pub async fn create_snapshot(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<SnapshotInfo, VsphereError> {
        let vm = self.moref(true, Self::snapshot_vm(target)?).await?;
        let args = format!(
            "<name>{}</name><description>vmdr</description><memory>false</memory><quiesce>false</quiesce>",
            xml::escape(name)
        );
        let result = task::run(
            &self.session,
            "CreateSnapshot_Task",
            &vm,
            &args,
            self.task_timeout,
        )
        .await?;
        let id = result
            .map(|r| r.text.trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| VsphereError::Missing {
                method: "CreateSnapshot_Task".into(),
                what: "the new snapshot".into(),
            })?;
        self.list_snapshots(target)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| VsphereError::Missing {
                method: "CreateSnapshot_Task".into(),
                what: format!("snapshot {id} in the tree"),
            })
    }

    async fn snapshot_ref(
        &self,
        target: &SnapshotTarget,
        id: Option<&str>,
    ) -> Result<MoRef, VsphereError> {
        let list = self.list_snapshots(target).await?;
        let found = match id {
            Some(id) => list.iter().find(|s| s.id == id),
            None => list.last(),
        };
        found
            .map(|s| MoRef::new("VirtualMachineSnapshot", &s.id))
            .ok_or_else(|| VsphereError::NotFound {
                kind: "snapshot",
                name: id.unwrap_or(target.name()).to_owned(),
            })
    }

    /// `RemoveSnapshot_Task` (children kept).
    pub async fn remove_snapshot(
        &self,
        target: &SnapshotTarget,
        id: &str,
    ) -> Result<(), VsphereError> {
        let snap = self.snapshot_ref(target, Some(id)).await?;
        task::run(
            &self.session,
            "RemoveSnapshot_Task",
            &snap,
            "<removeChildren>false</removeChildren>",
            self.task_timeout,
        )
        .await
        .map(drop)
    }

    /// `RevertToSnapshot_Task` to `id` (or the newest), leaving the VM off.
    pub async fn revert_vm(&self, vm: &str, id: Option<&str>) -> Result<(), VsphereError> {
        let snap = self
            .snapshot_ref(&SnapshotTarget::Vm(vm.to_owned()), id)
            .await?;
        task::run(
            &self.session,
            "RevertToSnapshot_Task",
            &snap,
            "",
            self.task_timeout,
        )
        .await?;
        // A snapshot with memory comes back running; the port promises "off"
        // so the caller decides when it starts.
        if self.power_state(vm).await?.as_deref() == Some("poweredOn") {
            self.power_off(vm).await?;
        }
        Ok(())
    }

    async fn power_state(&self, vm: &str) -> Result<Option<String>, VsphereError> {
        let r = self.moref(true, vm).await?;
        let o = inventory::retrieve_one(&self.session, &r, &["runtime.powerState"]).await?;
        Ok(o.props
            .get("runtime.powerState")
            .map(|e| e.text.trim().to_owned()))
    }

    /// Cold migration (`RelocateVM_Task` to `host`) of a powered-off VM.
    pub async fn migrate_vm(&self, vm: &str, host: &str) -> Result<(), VsphereError> {
        if self.power_state(vm).await?.as_deref() == Some("poweredOn") {
            return Err(VsphereError::InvalidState {
                name: vm.to_owned(),
                detail: "cold migration needs the VM powered off".into(),
            });
        }
        let h = self.moref(false, host).await?;
        self.vm_task(
            "RelocateVM_Task",
            vm,
            &format!("<spec>{}</spec>", h.xml("host")),
        )
        .await
    }

    /// Brings `vm` up on `host`. Refused while vCenter sees the original
    /// running.
    ///
    /// - While the VM's own host is managed: a clone of its newest snapshot
    ///   placed on `host`, which then takes the VM's name (the original is
    ///   unregistered; its files stay).
    /// - When its host is lost (not responding, disconnected, powered off):
    ///   cloning needs the source host, so the VM's own files on the shared
    ///   datastore are registered on `host` instead (as vSphere HA does),
    ///   reverted to the newest snapshot if the snapshot tree came with
    ///   them, and powered on.
    pub async fn restore_vm(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
    ) -> Result<(), VsphereError> {
        if source == RestoreSource::Replica {
            // The replica's data is on the machine that receives it: see
            // `restore_vm_from_images`.
            return Err(VsphereError::Unsupported {
                op: "restore from a replica without its disk images",
            });
        }
        let Some(original) = self.original_or_finish(vm).await? else {
            return Ok(());
        };
        let target = self.moref(false, host).await?;
        let Preflight {
            o,
            home,
            home_managed,
            folder,
        } = self
            .restore_preflight(vm, &original, &["summary.config.vmPathName"])
            .await?;
        let missing = |what: &str| VsphereError::Missing {
            method: "RetrievePropertiesEx".into(),
            what: format!("{what} of {vm}"),
        };
        let pool = self.resource_pool_of(&target).await?;
        if home_managed {
            self.restore_by_clone(vm, &original, &folder, &target, &pool)
                .await?;
        } else {
            let path = o
                .props
                .get("summary.config.vmPathName")
                .map(|e| e.text.trim().to_owned())
                .filter(|p| !p.is_empty())
                .ok_or_else(|| missing("the files"))?;
            self.restore_by_registration(vm, &original, &path, &folder, &target, &pool, &home)
                .await?;
        }
        self.invalidate().await;
        Ok(())
    }

    /// A drill copy: `CloneVM_Task` of the VM's newest snapshot onto
    /// `host`, named `copy`, with every network card disconnected (and not
    /// connected at power-on), then `PowerOnVM_Task`. The original is not
    /// touched.
    pub async fn start_drill_copy(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
        copy: &str,
    ) -> Result<(), VsphereError> {
        if source == RestoreSource::Replica {
            // See `start_drill_copy_from_images`.
            return Err(VsphereError::Unsupported {
                op: "a drill from a replica without its disk images",
            });
        }
        if self.lookup(true, copy).is_some() {
            return Err(VsphereError::InvalidState {
                name: copy.to_owned(),
                detail: "exists already".into(),
            });
        }
        let original = self.moref(true, vm).await?;
        let target = self.moref(false, host).await?;
        let o = inventory::retrieve_one(
            &self.session,
            &original,
            &["parent", "config.hardware.device"],
        )
        .await?;
        let folder = folder_of(vm, &o)?;
        // Isolation: each network card of the copy is edited to be
        // disconnected, now and at power-on.
        let mut changes = String::new();
        for d in o
            .props
            .get("config.hardware.device")
            .map(|a| a.children.as_slice())
            .unwrap_or_default()
        {
            let Some(kind) = d.xsi_type() else { continue };
            // Every kind of network card (E1000, Vmxnet3, SR-IOV, ...) has
            // a MAC address; nothing else does.
            let nic = d.child("macAddress").is_some();
            if nic {
                // The device as read, sent back with its connection off (a
                // vCenter wants the whole device in an edit).
                let device = from_images::disconnected(d);
                let mut body = String::new();
                device.write_children(&mut body);
                changes.push_str(&format!(
                    "<deviceChange><operation>edit</operation><device xsi:type=\"{}\">{body}</device></deviceChange>",
                    xml::escape(kind)
                ));
            }
        }
        let snap = self
            .snapshot_ref(&SnapshotTarget::Vm(vm.to_owned()), None)
            .await?;
        let pool = self.resource_pool_of(&target).await?;
        let args = format!(
            "{}<name>{}</name><spec><location>{}{}</location><template>false</template><config>{changes}</config><powerOn>false</powerOn>{}</spec>",
            folder.xml("folder"),
            xml::escape(copy),
            target.xml("host"),
            pool.xml("pool"),
            snap.xml("snapshot")
        );
        let clone = cloned_vm(
            task::run(
                &self.session,
                "CloneVM_Task",
                &original,
                &args,
                self.task_timeout,
            )
            .await?,
            "the drill copy",
        )?;
        self.invalidate().await;
        // Powered on explicitly, once its network is off for sure.
        task::run(
            &self.session,
            "PowerOnVM_Task",
            &clone,
            "",
            self.task_timeout,
        )
        .await?;
        Ok(())
    }

    /// Removes a drill copy: powered off (if on), then destroyed.
    pub async fn remove_drill_copy(&self, copy: &str) -> Result<(), VsphereError> {
        let r = self.moref(true, copy).await?;
        match task::run(&self.session, "PowerOffVM_Task", &r, "", self.task_timeout).await {
            Ok(_) => {}
            Err(e) if e.fault() == Some("InvalidPowerState") => {}
            Err(e) => return Err(e),
        }
        task::run(&self.session, "Destroy_Task", &r, "", self.task_timeout).await?;
        self.invalidate().await;
        Ok(())
    }

    /// What a restore reads of the original first, with `extra`
    /// properties: its folder and home host. Refuses while it runs on a
    /// host vCenter manages: a restore would start a second copy.
    async fn restore_preflight(
        &self,
        vm: &str,
        original: &MoRef,
        extra: &[&str],
    ) -> Result<Preflight, VsphereError> {
        let mut paths = vec!["parent", "runtime.powerState", "runtime.host"];
        paths.extend_from_slice(extra);
        let o = inventory::retrieve_one(&self.session, original, &paths).await?;
        let missing = |what: &str| VsphereError::Missing {
            method: "RetrievePropertiesEx".into(),
            what: format!("{what} of {vm}"),
        };
        let home = o
            .props
            .get("runtime.host")
            .and_then(MoRef::from_element)
            .ok_or_else(|| missing("the host"))?;
        let home_state = inventory::retrieve_one(
            &self.session,
            &home,
            &["runtime.connectionState", "runtime.powerState"],
        )
        .await?;
        let home_managed = home_state
            .props
            .get("runtime.connectionState")
            .map(|e| e.text.trim())
            == Some("connected")
            && home_state
                .props
                .get("runtime.powerState")
                .map(|e| e.text.trim())
                != Some("poweredOff");
        if home_managed
            && o.props.get("runtime.powerState").map(|e| e.text.trim()) == Some("poweredOn")
        {
            return Err(VsphereError::InvalidState {
                name: vm.to_owned(),
                detail: "is running: a restore would start a second copy".into(),
            });
        }
        let folder = folder_of(vm, &o)?;
        Ok(Preflight {
            o,
            home,
            home_managed,
            folder,
        })
    }

    async fn restore_by_clone(
        &self,
        vm: &str,
        original: &MoRef,
        folder: &MoRef,
        target: &MoRef,
        pool: &MoRef,
    ) -> Result<(), VsphereError> {
        let snap = self
            .snapshot_ref(&SnapshotTarget::Vm(vm.to_owned()), None)
            .await?;
        let placement = format!("{}{}", target.xml("host"), pool.xml("pool"));
        let temp = restore_name(vm);
        self.remove_leftover(vm, &temp).await?;
        let args = format!(
            "{}<name>{}</name><spec><location>{placement}</location><template>false</template><powerOn>false</powerOn>{}</spec>",
            folder.xml("folder"),
            xml::escape(&temp),
            snap.xml("snapshot")
        );
        let clone = cloned_vm(
            task::run(
                &self.session,
                "CloneVM_Task",
                original,
                &args,
                self.task_timeout,
            )
            .await?,
            "the clone",
        )?;
        // Placement is asked for in the clone spec; relocating makes sure
        // (a no-op where it already is).
        let placed = task::run(
            &self.session,
            "RelocateVM_Task",
            &clone,
            &format!("<spec>{placement}</spec>"),
            self.task_timeout,
        )
        .await;
        if let Err(e) = placed {
            self.discard(vm, &clone).await;
            return Err(e);
        }
        self.take_over(vm, original, &clone).await
    }

    /// Puts `new` (a VM named [`restore_name`]) in the place of `original`:
    /// the original is unregistered (its files stay), `new` takes its name
    /// and is powered on. Until the original is unregistered a failure
    /// removes `new`; from then on `new` is the only copy and is kept.
    pub(crate) async fn take_over(
        &self,
        vm: &str,
        original: &MoRef,
        new: &MoRef,
    ) -> Result<(), VsphereError> {
        if let Err(e) = self
            .session
            .invoke("UnregisterVM", &original.xml("_this"))
            .await
        {
            self.discard(vm, new).await;
            return Err(e);
        }
        self.finish_take_over(vm, new).await
    }

    /// The end of [`Self::take_over`], once the original is unregistered:
    /// `new` takes `vm`'s name and is powered on.
    async fn finish_take_over(&self, vm: &str, new: &MoRef) -> Result<(), VsphereError> {
        let finish = async {
            task::run(
                &self.session,
                "Rename_Task",
                new,
                &format!("<newName>{}</newName>", xml::escape(vm)),
                self.task_timeout,
            )
            .await?;
            task::run(&self.session, "PowerOnVM_Task", new, "", self.task_timeout).await
        };
        let result = finish.await;
        self.invalidate().await;
        result.map(drop).inspect_err(|e| {
            tracing::error!(vm, error = %e, "the restored copy replaced the original but did not start; it is in vCenter as {vm} or {}", restore_name(vm));
        })
    }

    /// Removes the new VM of a restore that failed before it replaced the
    /// original, or of a drill that did not start (best effort).
    async fn discard(&self, vm: &str, new: &MoRef) {
        tracing::warn!(vm, "removing the new VM of a restore or drill that failed");
        if let Err(e) = task::run(&self.session, "Destroy_Task", new, "", self.task_timeout).await {
            tracing::warn!(vm, error = %e, "could not remove the restore's new VM {}", new.value);
        }
    }

    /// The VM a restore of `vm` starts from. When `vm` is gone and a
    /// restore's new VM waits under the temporary name (a crash after the
    /// original was unregistered), that restore is finished instead: the
    /// new VM takes the name and is powered on; `None` then.
    pub(crate) async fn original_or_finish(&self, vm: &str) -> Result<Option<MoRef>, VsphereError> {
        let gone = match self.moref(true, vm).await {
            Ok(r) => return Ok(Some(r)),
            Err(e @ VsphereError::NotFound { .. }) => e,
            Err(e) => return Err(e),
        };
        let Ok(new) = self.moref(true, &restore_name(vm)).await else {
            return Err(gone);
        };
        tracing::warn!(
            vm,
            "finishing a restore a crash left after the original was unregistered"
        );
        self.finish_take_over(vm, &new).await?;
        Ok(None)
    }

    /// Removes `temp`, the new VM of an earlier restore of `vm` that a
    /// crash stopped before the original was unregistered (the original is
    /// still there, so it is a leftover; it would block this restore's own
    /// under the same name). A running one is not touched.
    pub(crate) async fn remove_leftover(&self, vm: &str, temp: &str) -> Result<(), VsphereError> {
        let r = match self.moref(true, temp).await {
            Ok(r) => r,
            Err(VsphereError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let o = inventory::retrieve_one(&self.session, &r, &["runtime.powerState"]).await?;
        if o.props.get("runtime.powerState").map(|e| e.text.trim()) == Some("poweredOn") {
            return Err(VsphereError::InvalidState {
                name: temp.to_owned(),
                detail: format!("runs: a restore of {vm} left under way must be looked at"),
            });
        }
        tracing::warn!(
            vm,
            leftover = temp,
            "removing the new VM of a restore a crash left unfinished"
        );
        task::run(&self.session, "Destroy_Task", &r, "", self.task_timeout).await?;
        self.invalidate().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn restore_by_registration(
        &self,
        vm: &str,
        original: &MoRef,
        path: &str,
        folder: &MoRef,
        target: &MoRef,
        pool: &MoRef,
        home: &MoRef,
    ) -> Result<(), VsphereError> {
        let register = |host: &MoRef| register_args(path, vm, pool, host);
        // Recorded first: a crash between the two steps must not lose the VM.
        let pending = crate::pending::Pending {
            vm: vm.to_owned(),
            path: path.to_owned(),
            folder: folder.clone(),
            pool: pool.clone(),
            target: target.clone(),
            home: home.clone(),
        };
        if let Some(dir) = &self.pending_dir {
            pending.save(dir).map_err(|e| VsphereError::Missing {
                method: "UnregisterVM".into(),
                what: format!(
                    "a durable record of the registration in {}: {e}",
                    dir.display()
                ),
            })?;
        }
        let clear = || {
            if let Some(dir) = &self.pending_dir {
                if let Err(e) = crate::pending::Pending::done(dir, vm) {
                    tracing::error!(vm, error = %e, "cannot remove a pending registration record");
                }
            }
        };
        if let Err(e) = self
            .session
            .invoke("UnregisterVM", &original.xml("_this"))
            .await
        {
            clear();
            return Err(e);
        }
        let registered = match task::run(
            &self.session,
            "RegisterVM_Task",
            folder,
            &register(target),
            self.task_timeout,
        )
        .await
        {
            Ok(r) => r.and_then(|r| {
                MoRef::from_element(&r)
                    .or_else(|| Some(MoRef::new("VirtualMachine", r.text.trim())))
            }),
            Err(e) => {
                // Put the VM back where it was, so nothing is lost from the
                // inventory.
                tracing::warn!(vm, error = %e, "registration on the target failed; registering it back on its host");
                if let Err(back) = task::run(
                    &self.session,
                    "RegisterVM_Task",
                    folder,
                    &register(home),
                    self.task_timeout,
                )
                .await
                {
                    tracing::error!(vm, error = %back, "could not register the VM back: it is out of the inventory, its files are at {path}");
                } else {
                    clear();
                }
                return Err(e);
            }
        };
        clear();
        let new =
            registered
                .filter(|r| !r.value.is_empty())
                .ok_or_else(|| VsphereError::Missing {
                    method: "RegisterVM_Task".into(),
                    what: "the registered VM".into(),
                })?;
        {
            let mut refs = self
                .refs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            refs.vms.insert(vm.to_owned(), new.clone());
        }
        match self
            .snapshot_ref(&SnapshotTarget::Vm(vm.to_owned()), None)
            .await
        {
            Ok(snap) => {
                task::run(
                    &self.session,
                    "RevertToSnapshot_Task",
                    &snap,
                    "",
                    self.task_timeout,
                )
                .await?;
            }
            Err(VsphereError::NotFound { .. }) => {
                tracing::warn!(vm, "no snapshot came with the registered files: starting from the disks as they are");
            }
            Err(e) => return Err(e),
        }
        task::run(&self.session, "PowerOnVM_Task", &new, "", self.task_timeout)
            .await
            .map(drop)
    }

    async fn resource_pool_of(&self, host: &MoRef) -> Result<MoRef, VsphereError> {
        let h = inventory::retrieve_one(&self.session, host, &["parent"]).await?;
        let cr = h
            .props
            .get("parent")
            .and_then(MoRef::from_element)
            .ok_or_else(|| VsphereError::Missing {
                method: "RetrievePropertiesEx".into(),
                what: format!("the cluster of {}", host.value),
            })?;
        let c = inventory::retrieve_one(&self.session, &cr, &["resourcePool"]).await?;
        c.props
            .get("resourcePool")
            .and_then(MoRef::from_element)
            .ok_or_else(|| VsphereError::Missing {
                method: "RetrievePropertiesEx".into(),
                what: format!("the resource pool of {}", cr.value),
            })
    }

    /// `EnterMaintenanceMode_Task`: the host runs nothing new (vmdr stops
    /// placing VMs on it and alerts about the VMs left there).
    pub async fn enter_maintenance(&self, host: &str) -> Result<(), VsphereError> {
        let h = self.moref(false, host).await?;
        task::run(
            &self.session,
            "EnterMaintenanceMode_Task",
            &h,
            "<timeout>0</timeout>",
            self.task_timeout,
        )
        .await
        .map(drop)
    }

    /// `ExitMaintenanceMode_Task`.
    pub async fn exit_maintenance(&self, host: &str) -> Result<(), VsphereError> {
        let h = self.moref(false, host).await?;
        task::run(
            &self.session,
            "ExitMaintenanceMode_Task",
            &h,
            "<timeout>0</timeout>",
            self.task_timeout,
        )
        .await
        .map(drop)
    }

    /// Adds a configured spare host to its cluster (`AddHost_Task`).
    pub async fn add_host(&self, host: &str) -> Result<(), VsphereError> {
        let Some(spare) = self.spares.iter().find(|s| s.name == host) else {
            if self.lookup(false, host).is_some() {
                return Err(VsphereError::InvalidState {
                    name: host.to_owned(),
                    detail: "host is already added".into(),
                });
            }
            return Err(VsphereError::NotFound {
                kind: "host",
                name: host.to_owned(),
            });
        };
        self.full_inventory().await?;
        if self.lookup(false, host).is_some() {
            return Err(VsphereError::InvalidState {
                name: host.to_owned(),
                detail: "host is already added".into(),
            });
        }
        let cluster = self
            .cluster(&spare.cluster)
            .ok_or_else(|| VsphereError::NotFound {
                kind: "cluster",
                name: spare.cluster.clone(),
            })?;
        let password = spare.password.read()?;
        let thumb = spare.ssl_thumbprint.as_ref().map_or(String::new(), |t| {
            format!("<sslThumbprint>{}</sslThumbprint>", xml::escape(t))
        });
        let args = format!(
            "<spec><hostName>{}</hostName><userName>{}</userName><password>{}</password>{thumb}<force>true</force></spec><asConnected>true</asConnected>",
            xml::escape(&spare.name),
            xml::escape(&spare.user),
            xml::escape(password.expose()),
        );
        task::run(
            &self.session,
            "AddHost_Task",
            &cluster,
            &args,
            self.task_timeout,
        )
        .await?;
        // Some vCenters (govmomi's simulator among them) do not grow an
        // existing container view with objects added after it: start a new
        // one so the next read sees the host.
        self.invalidate().await;
        Ok(())
    }
}

#[async_trait]
impl Hypervisor for Vsphere {
    fn capabilities(&self) -> Capabilities {
        // vSphere has no host snapshots to recover a host from. A replica
        // is restored from the images its receiver writes (uploaded to a
        // datastore), not by `restore_vm` alone. Drills are isolated clones.
        Capabilities {
            host_recovery: false,
            add_host: true,
            replicas: false,
            drills: true,
            images: true,
        }
    }

    async fn inventory(&self) -> Result<Inventory, HypervisorError> {
        Ok(Vsphere::inventory(self).await?.0)
    }

    async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, HypervisorError> {
        Ok(Vsphere::power_events(self, since).await?)
    }

    async fn create_snapshot(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<SnapshotInfo, HypervisorError> {
        Ok(Vsphere::create_snapshot(self, target, name).await?)
    }

    async fn list_snapshots(
        &self,
        target: &SnapshotTarget,
    ) -> Result<Vec<SnapshotInfo>, HypervisorError> {
        Ok(Vsphere::list_snapshots(self, target).await?)
    }

    async fn remove_snapshot(
        &self,
        target: &SnapshotTarget,
        id: &str,
    ) -> Result<(), HypervisorError> {
        Ok(Vsphere::remove_snapshot(self, target, id).await?)
    }

    async fn revert_vm(&self, vm: &str, snapshot: Option<&str>) -> Result<(), HypervisorError> {
        Ok(Vsphere::revert_vm(self, vm, snapshot).await?)
    }

    async fn power_on(&self, vm: &str) -> Result<(), HypervisorError> {
        Ok(Vsphere::power_on(self, vm).await?)
    }

    async fn power_off(&self, vm: &str) -> Result<(), HypervisorError> {
        Ok(Vsphere::power_off(self, vm).await?)
    }

    async fn reset(&self, vm: &str) -> Result<(), HypervisorError> {
        Ok(Vsphere::reset(self, vm).await?)
    }

    async fn restore_vm(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
    ) -> Result<(), HypervisorError> {
        Ok(Vsphere::restore_vm(self, vm, host, source).await?)
    }

    async fn restore_vm_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[std::path::PathBuf],
    ) -> Result<(), HypervisorError> {
        Ok(Vsphere::restore_vm_from_images(self, vm, host, images).await?)
    }

    async fn start_drill_copy_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[std::path::PathBuf],
        copy: &str,
    ) -> Result<(), HypervisorError> {
        Ok(Vsphere::start_drill_copy_from_images(self, vm, host, images, copy).await?)
    }

    async fn migrate_vm(&self, vm: &str, host: &str) -> Result<(), HypervisorError> {
        Ok(Vsphere::migrate_vm(self, vm, host).await?)
    }

    async fn recover_host(&self, host: &str) -> Result<(), HypervisorError> {
        // Say "not found" for unknown hosts like every other operation.
        self.moref(false, host).await?;
        Err(HypervisorError::Unsupported {
            op: "recover_host (vSphere has no host snapshots)",
        })
    }

    async fn add_host(&self, host: &str) -> Result<(), HypervisorError> {
        Ok(Vsphere::add_host(self, host).await?)
    }

    async fn start_drill_copy(
        &self,
        vm: &str,
        host: &str,
        source: RestoreSource,
        copy: &str,
    ) -> Result<(), HypervisorError> {
        Ok(Vsphere::start_drill_copy(self, vm, host, source, copy).await?)
    }

    async fn remove_drill_copy(&self, copy: &str) -> Result<(), HypervisorError> {
        Ok(Vsphere::remove_drill_copy(self, copy).await?)
    }
}

/// The virtual machine a `CloneVM_Task` made, from its result.
/// The folder of `vm`, from its `parent` property in `o`.
fn folder_of(vm: &str, o: &inventory::ObjectContent) -> Result<MoRef, VsphereError> {
    o.props
        .get("parent")
        .and_then(MoRef::from_element)
        .ok_or_else(|| VsphereError::Missing {
            method: "RetrievePropertiesEx".into(),
            what: format!("the folder of {vm}"),
        })
}

/// The temporary name of `vm`'s new copy while a restore puts it in place.
fn restore_name(vm: &str) -> String {
    format!("{vm}.vmdr-restore")
}

fn cloned_vm(result: Option<crate::xml::Element>, what: &str) -> Result<MoRef, VsphereError> {
    result
        .and_then(|r| {
            MoRef::from_element(&r).or_else(|| Some(MoRef::new("VirtualMachine", r.text.trim())))
        })
        .filter(|r| !r.value.is_empty())
        .ok_or_else(|| VsphereError::Missing {
            method: "CloneVM_Task".into(),
            what: what.into(),
        })
}

/// The arguments of `RegisterVM_Task` for a VM's files on `host`.
fn register_args(path: &str, vm: &str, pool: &MoRef, host: &MoRef) -> String {
    format!(
        "<path>{}</path><name>{}</name><asTemplate>false</asTemplate>{}{}",
        xml::escape(path),
        xml::escape(vm),
        pool.xml("pool"),
        host.xml("host")
    )
}

/// The number in `snapshot-42`, for a stable order of equal creation times.
fn snapshot_number(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
