//! The whole inventory in few round trips: one `ContainerView` over the root
//! folder (created once per session) and `RetrievePropertiesEx` with paging
//! through `ContinueRetrievePropertiesEx`.

use crate::error::VsphereError;
use crate::ha;
use crate::session::Session;
use crate::soap::MoRef;
use crate::xml::{self, Element};
use dr_core::model::{
    Heartbeat, HostInfo, HostLink, HostSignals, Inventory, PowerState, Vitals, VmInfo,
};
use std::collections::HashMap;
use std::net::IpAddr;

/// Host properties read.
const HOST_PATHS: &[&str] = &[
    "name",
    "parent",
    "runtime.connectionState",
    "runtime.powerState",
    "runtime.inMaintenanceMode",
    "summary.hardware.cpuMhz",
    "summary.hardware.numCpuCores",
    "summary.hardware.memorySize",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.overallMemoryUsage",
    "config.network.vnic",
    "runtime.dasHostState",
];

/// VM properties read.
const VM_PATHS: &[&str] = &[
    "name",
    "runtime.host",
    "runtime.powerState",
    "runtime.connectionState",
    "guest.ipAddress",
    "guestHeartbeatStatus",
    "summary.config.memorySizeMB",
    "summary.config.numCpu",
    "summary.config.cpuReservation",
    "summary.config.template",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.guestMemoryUsage",
    "summary.quickStats.consumedOverheadMemory",
    "summary.storage.committed",
    "snapshot",
];

/// Properties of the compute resources hosts belong to: their names are
/// the hosts' sites.
const COMPUTE_PATHS: &[&str] = &["name"];

/// A cluster's, with its configuration (vSphere HA's settings).
const CLUSTER_PATHS: &[&str] = &["name", "configurationEx"];

/// One object's properties, by path.
#[derive(Clone, Debug, Default)]
pub struct ObjectContent {
    /// The object.
    pub obj: Option<MoRef>,
    /// Property path → value element.
    pub props: HashMap<String, Element>,
}

impl ObjectContent {
    fn text(&self, path: &str) -> Option<&str> {
        self.props.get(path).map(|e| e.text.trim())
    }

    fn num(&self, path: &str) -> u64 {
        self.text(path)
            .and_then(|t| t.parse::<i64>().ok())
            .map_or(0, |v| v.max(0) as u64)
    }
}

/// Reads the inventory of one session.
pub struct InventoryReader {
    view: tokio::sync::Mutex<Option<MoRef>>,
    /// Objects per page.
    pub page: u32,
}

impl Default for InventoryReader {
    fn default() -> Self {
        InventoryReader {
            view: tokio::sync::Mutex::new(None),
            page: 5_000,
        }
    }
}

impl InventoryReader {
    /// A reader asking for `page` objects per round trip.
    pub fn with_page(page: u32) -> Self {
        InventoryReader {
            page: page.max(1),
            ..InventoryReader::default()
        }
    }

    async fn view(&self, s: &Session) -> Result<(MoRef, u32), VsphereError> {
        let mut v = self.view.lock().await;
        if let Some(view) = v.as_ref() {
            return Ok((view.clone(), 0));
        }
        let view = create_view(s).await?;
        *v = Some(view.clone());
        Ok((view, 1))
    }

    /// Forgets the view (after a re-login the old one is gone).
    pub async fn reset(&self) {
        *self.view.lock().await = None;
    }

    /// Destroys the current view (best effort) so the next read makes a new
    /// one: after adding hosts, for vCenters whose views do not grow.
    pub async fn renew(&self, s: &Session) {
        if let Some(old) = self.view.lock().await.take() {
            if let Err(e) = s.invoke("DestroyView", &old.xml("_this")).await {
                tracing::debug!(error = %e, "could not destroy the old container view");
            }
        }
    }

    /// Every object's properties, and the round trips it took.
    pub async fn retrieve(&self, s: &Session) -> Result<(Vec<ObjectContent>, u32), VsphereError> {
        let (view, mut trips) = self.view(s).await?;
        let body = format!(
            "{}<specSet>{}</specSet><options><maxObjects>{}</maxObjects></options>",
            s.content().property_collector.xml("_this"),
            spec_set_inner(&view),
            self.page,
        );
        let first = match s.invoke("RetrievePropertiesEx", &body).await {
            Err(e) if e.fault() == Some("ManagedObjectNotFound") => {
                // The view died with an old session: make a new one.
                self.reset().await;
                return Box::pin(self.retrieve(s)).await;
            }
            r => r?,
        };
        trips += 1;
        let mut out = Vec::new();
        let mut token = parse_result(&first, &mut out);
        while let Some(t) = token {
            let body = format!(
                "{}<token>{}</token>",
                s.content().property_collector.xml("_this"),
                xml::escape(&t)
            );
            let next = s.invoke("ContinueRetrievePropertiesEx", &body).await?;
            trips += 1;
            token = parse_result(&next, &mut out);
        }
        Ok((out, trips))
    }

    /// The inventory in the port's model, and the round trips it took.
    pub async fn read(&self, s: &Session) -> Result<(Inventory, u32), VsphereError> {
        let (objects, trips) = self.retrieve(s).await?;
        Ok((to_model(&objects), trips))
    }
}

/// A container view of hosts, VMs and clusters under the root folder.
pub async fn create_view(s: &Session) -> Result<MoRef, VsphereError> {
    let c = s.content();
    let body = format!(
        "{}{}<type>HostSystem</type><type>VirtualMachine</type><type>ComputeResource</type><type>ClusterComputeResource</type><recursive>true</recursive>",
        c.view_manager.xml("_this"),
        c.root_folder.xml("container"),
    );
    let r = s.invoke("CreateContainerView", &body).await?;
    r.child("returnval")
        .and_then(MoRef::from_element)
        .ok_or_else(|| VsphereError::Missing {
            method: "CreateContainerView".into(),
            what: "returnval".into(),
        })
}

/// The property filter spec's content (property sets and the object set
/// through `view`) for the inventory.
pub fn spec_set_inner(view: &MoRef) -> String {
    let spec = |kind: &str, paths: &[&str]| {
        let p: String = paths
            .iter()
            .map(|p| format!("<pathSet>{}</pathSet>", xml::escape(p)))
            .collect();
        format!("<propSet><type>{kind}</type>{p}</propSet>")
    };
    format!(
        "{}{}{}{}<objectSet>{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>view</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet>",
        spec("HostSystem", HOST_PATHS),
        spec("VirtualMachine", VM_PATHS),
        spec("ComputeResource", COMPUTE_PATHS),
        spec("ClusterComputeResource", CLUSTER_PATHS),
        view.xml("obj"),
    )
}

/// Some properties of one object.
pub async fn retrieve_one(
    s: &Session,
    obj: &MoRef,
    paths: &[&str],
) -> Result<ObjectContent, VsphereError> {
    let p: String = paths
        .iter()
        .map(|p| format!("<pathSet>{}</pathSet>", xml::escape(p)))
        .collect();
    let body = format!(
        "{}<specSet><propSet><type>{}</type>{p}</propSet><objectSet>{}</objectSet></specSet><options/>",
        s.content().property_collector.xml("_this"),
        xml::escape(&obj.kind),
        obj.xml("obj"),
    );
    let r = s.invoke("RetrievePropertiesEx", &body).await?;
    let mut out = Vec::new();
    parse_result(&r, &mut out);
    Ok(out.pop().unwrap_or_default())
}

/// Appends the objects of a `RetrieveResult`; returns its paging token.
fn parse_result(resp: &Element, out: &mut Vec<ObjectContent>) -> Option<String> {
    let rv = resp.child("returnval")?;
    for o in rv.children_named("objects") {
        let mut oc = ObjectContent {
            obj: o.child("obj").and_then(MoRef::from_element),
            props: HashMap::new(),
        };
        for p in o.children_named("propSet") {
            if let (Some(name), Some(val)) = (p.child_text("name"), p.child("val")) {
                oc.props.insert(name.to_owned(), val.clone());
            }
        }
        out.push(oc);
    }
    rv.child_text("token")
        .map(str::to_owned)
        .filter(|t| !t.is_empty())
}

fn host_link(o: &ObjectContent) -> HostLink {
    match (
        o.text("runtime.powerState"),
        o.text("runtime.connectionState"),
        o.text("runtime.inMaintenanceMode"),
    ) {
        (Some("poweredOff"), _, _) => HostLink::PoweredOff,
        (Some("standBy"), _, _) => HostLink::Standby,
        (_, Some("connected"), Some("true")) => HostLink::Maintenance,
        (_, Some("connected"), _) => HostLink::Connected,
        (_, Some("disconnected"), _) => HostLink::Disconnected,
        _ => HostLink::NotResponding,
    }
}

/// The host's first VMkernel NIC address (its management address), or its
/// name if that is an address.
fn host_ip(o: &ObjectContent) -> Option<IpAddr> {
    let from_vnic = o
        .props
        .get("config.network.vnic")
        .and_then(|arr| {
            arr.children
                .iter()
                .find_map(|nic| nic.path(&["spec", "ip", "ipAddress"]))
        })
        .and_then(|e| e.text.trim().parse().ok());
    from_vnic.or_else(|| o.text("name").and_then(|n| n.parse().ok()))
}

/// Every snapshot in a `VirtualMachineSnapshotInfo` tree, depth first.
pub fn snapshot_trees(info: &Element) -> Vec<&Element> {
    fn walk<'a>(list: &'a Element, out: &mut Vec<&'a Element>) {
        for t in list
            .children_named("rootSnapshotList")
            .chain(list.children_named("childSnapshotList"))
        {
            out.push(t);
            walk(t, out);
        }
    }
    let mut out = Vec::new();
    walk(info, &mut out);
    out
}

fn count_snapshots(list: &Element) -> u32 {
    list.children_named("rootSnapshotList")
        .chain(list.children_named("childSnapshotList"))
        .map(|s| 1 + count_snapshots(s))
        .sum()
}

/// Maps property sets onto the port's inventory. Objects missing their name
/// are skipped; VM templates are not VMs to protect.
pub fn to_model(objects: &[ObjectContent]) -> Inventory {
    let by_ref: HashMap<&MoRef, &ObjectContent> = objects
        .iter()
        .filter_map(|o| o.obj.as_ref().map(|r| (r, o)))
        .collect();
    let name_of = |r: &MoRef| {
        by_ref
            .get(r)
            .and_then(|o| o.text("name"))
            .map(str::to_owned)
    };
    let mut hosts = Vec::new();
    let mut host_names: HashMap<&MoRef, String> = HashMap::new();
    for o in objects {
        let Some(r) = o.obj.as_ref().filter(|r| r.kind == "HostSystem") else {
            continue;
        };
        let Some(name) = o.text("name").map(str::to_owned) else {
            continue;
        };
        let parent = o.props.get("parent").and_then(MoRef::from_element);
        let site = parent.as_ref().and_then(&name_of).unwrap_or_default();
        // Where its cluster has HA watching hosts, what HA says of it.
        let ha = parent
            .as_ref()
            .and_then(|p| by_ref.get(p))
            .and_then(|c| c.props.get("configurationEx"))
            .and_then(ha::config)
            .map(|c| ha::signal(c, o.props.get("runtime.dasHostState")));
        host_names.insert(r, name.clone());
        let mhz = o.num("summary.hardware.cpuMhz") * o.num("summary.hardware.numCpuCores");
        hosts.push(HostInfo {
            ip: host_ip(o),
            site,
            link: host_link(o),
            cpu_mhz: u32::try_from(mhz).unwrap_or(u32::MAX),
            memory_mb: o.num("summary.hardware.memorySize") / (1 << 20),
            snapshot_count: 0,
            vitals: Vitals {
                cpu_mhz: u32::try_from(o.num("summary.quickStats.overallCpuUsage"))
                    .unwrap_or(u32::MAX),
                memory_mb: o.num("summary.quickStats.overallMemoryUsage"),
                ..Vitals::default()
            },
            signals: HostSignals {
                ha,
                ..HostSignals::default()
            },
            name,
        });
    }
    let mut vms = Vec::new();
    for o in objects {
        if o.obj.as_ref().is_none_or(|r| r.kind != "VirtualMachine")
            || o.text("summary.config.template") == Some("true")
        {
            continue;
        }
        let Some(name) = o.text("name").map(str::to_owned) else {
            continue;
        };
        let host = o
            .props
            .get("runtime.host")
            .and_then(MoRef::from_element)
            .and_then(|h| host_names.get(&h).cloned())
            .unwrap_or_default();
        let connected = o
            .text("runtime.connectionState")
            .is_none_or(|c| c == "connected");
        let power = match (connected, o.text("runtime.powerState")) {
            (true, Some("poweredOn")) => PowerState::On,
            (true, Some("poweredOff")) => PowerState::Off,
            (true, Some("suspended")) => PowerState::Suspended,
            _ => PowerState::Unknown,
        };
        let heartbeat = match o.text("guestHeartbeatStatus") {
            Some("green" | "yellow") if power == PowerState::On => Heartbeat::Ok,
            Some("red") if power == PowerState::On => Heartbeat::Missing,
            _ => Heartbeat::Unknown,
        };
        vms.push(VmInfo {
            ip: o.text("guest.ipAddress").and_then(|t| t.parse().ok()),
            host,
            power,
            heartbeat,
            cpu_mhz: u32::try_from(o.num("summary.config.numCpu") * 1000).unwrap_or(u32::MAX),
            cpu_reservation_mhz: u32::try_from(o.num("summary.config.cpuReservation"))
                .unwrap_or(u32::MAX),
            memory_mb: o.num("summary.config.memorySizeMB"),
            memory_overhead_mb: o.num("summary.quickStats.consumedOverheadMemory"),
            snapshot_count: o.props.get("snapshot").map_or(0, count_snapshots),
            replica_available: false,
            shared_disks: false,
            vitals: Vitals {
                cpu_mhz: u32::try_from(o.num("summary.quickStats.overallCpuUsage"))
                    .unwrap_or(u32::MAX),
                memory_mb: o.num("summary.quickStats.guestMemoryUsage"),
                storage_gb: u32::try_from(o.num("summary.storage.committed") >> 30)
                    .unwrap_or(u32::MAX),
                ..Vitals::default()
            },
            name,
        });
    }
    Inventory { hosts, vms }
}
