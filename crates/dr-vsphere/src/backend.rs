//! One vCenter as vmdr uses it: a session, the inventory reader, the
//! name → managed object map the inventory keeps fresh, and the operations.

use crate::error::VsphereError;
use crate::events;
use crate::inventory::InventoryReader;
use crate::session::{Session, VsphereConfig};
use crate::soap::MoRef;
use crate::task;
use dr_core::model::{Inventory, PowerEvent};
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
}
