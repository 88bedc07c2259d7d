//! One vCenter as vmdr uses it: a session, the inventory reader, the
//! name → managed object map the inventory keeps fresh, and the operations.

use crate::error::VsphereError;
use crate::events;
use crate::inventory::{self, InventoryReader};
use crate::session::{Session, VsphereConfig};
use crate::soap::MoRef;
use crate::task;
use crate::time;
use crate::xml;
use dr_core::model::{Inventory, PowerEvent, SnapshotInfo, SnapshotTarget};
use dr_core::Timestamp;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Names → managed objects, from the last inventory read.
#[derive(Default)]
struct Refs {
    vms: HashMap<String, MoRef>,
    hosts: HashMap<String, MoRef>,
}

/// A connected vCenter.
pub struct Vsphere {
    session: Session,
    reader: InventoryReader,
    refs: Mutex<Refs>,
    user: String,
    /// How long a task may run before it counts as timed out.
    pub task_timeout: Duration,
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
            task_timeout: Duration::from_secs(600),
        })
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Logs out.
    pub async fn close(&self) {
        self.session.logout().await;
    }

    /// The whole inventory (and the round trips it took); refreshes the
    /// name map.
    pub async fn inventory(&self) -> Result<(Inventory, u32), VsphereError> {
        let (objects, trips) = self.reader.retrieve(&self.session).await?;
        let mut refs = Refs::default();
        for o in &objects {
            let (Some(r), Some(name)) = (o.obj.as_ref(), o.props.get("name")) else {
                continue;
            };
            let map = match r.kind.as_str() {
                "VirtualMachine" => &mut refs.vms,
                "HostSystem" => &mut refs.hosts,
                _ => continue,
            };
            map.insert(name.text.trim().to_owned(), r.clone());
        }
        *self
            .refs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = refs;
        Ok((crate::inventory::to_model(&objects), trips))
    }

    /// Power events at or after `since`.
    pub async fn power_events(&self, since: Timestamp) -> Result<Vec<PowerEvent>, VsphereError> {
        events::power_events(&self.session, since, &self.user).await
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
        self.inventory().await?;
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
}

/// The number in `snapshot-42`, for a stable order of equal creation times.
fn snapshot_number(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
