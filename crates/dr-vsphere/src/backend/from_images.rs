//! Failover and drills from a replica's disk images: files on this
//! machine, one per virtual disk of the VM, written from the replica's
//! checkpoint. They are uploaded to a datastore of the target host as flat
//! VMDK extents with their descriptors, and a VM with the original's
//! hardware (CPUs, memory, guest type, disk controllers, network cards) is
//! created around them on that host. A failover's is created under a
//! temporary name, then takes the original's place (the original is
//! unregistered, its files stay) and its name, and is powered on. A
//! drill's is the copy, its network cards disconnected, beside the
//! running original.
//!
//! Nothing of the original is touched until the new VM exists. A restore
//! or drill that fails before then removes what it uploaded or created.
//! One cut off while it uploads (by its action timeout, or a crash) cannot
//! clean up after itself, so each upload is recorded on disk first
//! ([`crate::pending::Upload`]) until a VM owns its directory; the next
//! restore or drill of the same VM, and the next connection, remove the
//! directory of a record whose VM does not exist.

use super::{cloned_vm, folder_of, restore_name, Preflight, Vsphere};
use crate::error::VsphereError;
use crate::inventory;
use crate::pending;
use crate::session::Upload;
use crate::soap::MoRef;
use crate::task;
use crate::xml::{self, Element};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

const SECTOR: u64 = 512;

/// A checked disk image.
struct Image {
    path: PathBuf,
    bytes: u64,
}

/// The original's properties a VM made from its images copies.
const HARDWARE: [&str; 5] = [
    "config.hardware.device",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.guestId",
    "config.version",
];

/// What a VM is made from: the original (its properties, `HARDWARE`
/// among them, and folder), where, and the checked images.
#[derive(Clone, Copy)]
struct FromImages<'a> {
    vm: &'a str,
    o: &'a inventory::ObjectContent,
    folder: &'a MoRef,
    target: &'a MoRef,
    images: &'a [Image],
}

/// Where the images go: a new directory on one datastore.
struct Place {
    datacenter: MoRef,
    /// The datacenter's inventory path (`dcPath` of `/folder`).
    dc_path: String,
    datastore: String,
    dir: String,
}

impl Place {
    fn file(&self, name: &str) -> String {
        format!("[{}] {}/{name}", self.datastore, self.dir)
    }
}

/// Each image a regular file of whole sectors.
async fn check_images(images: &[PathBuf]) -> Result<Vec<Image>, VsphereError> {
    let mut out = Vec::with_capacity(images.len());
    for path in images {
        let not_image = |detail: String| VsphereError::Upload {
            path: path.display().to_string(),
            detail,
        };
        let m = match tokio::fs::metadata(path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VsphereError::NotFound {
                    kind: "disk image",
                    name: path.display().to_string(),
                })
            }
            Err(e) => return Err(not_image(e.to_string())),
        };
        if !m.is_file() || m.len() == 0 || m.len() % SECTOR != 0 {
            return Err(not_image(format!(
                "not a disk image: {} bytes, not a file of whole 512-byte sectors",
                m.len()
            )));
        }
        out.push(Image {
            path: path.clone(),
            bytes: m.len(),
        });
    }
    Ok(out)
}

fn key_of(d: &Element) -> Option<i64> {
    d.child_text("key")?.trim().parse().ok()
}

fn controller_of(d: &Element) -> Option<i64> {
    d.child_text("controllerKey")?.trim().parse().ok()
}

/// A file name made of the VM's name: characters a datastore path or a
/// descriptor would have to quote are replaced.
fn file_stem(vm: &str) -> String {
    vm.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The descriptor of a monolithic flat extent of `bytes`.
fn descriptor(flat: &str, bytes: u64, adapter: &str) -> String {
    let sectors = bytes / SECTOR;
    let cylinders = (sectors / (255 * 63)).clamp(1, 65_535);
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW {sectors} VMFS \"{flat}\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"{adapter}\"\nddb.geometry.cylinders = \"{cylinders}\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.virtualHWVersion = \"13\"\n"
    )
}

/// The descriptor's adapter type for a disk on a controller of this type.
fn adapter_type(controller: &str) -> &'static str {
    match controller {
        "VirtualIDEController" => "ide",
        "ParaVirtualSCSIController" => "pvscsi",
        "VirtualBusLogicController" => "buslogic",
        "VirtualLsiLogicSASController" => "lsisas1068",
        _ => "lsilogic",
    }
}

/// Every `…:type` attribute as `xsi:type`, the prefix the request declares.
fn normalize_types(e: &mut Element) {
    for (k, _) in &mut e.attrs {
        if k.ends_with(":type") {
            *k = "xsi:type".into();
        }
    }
    for c in &mut e.children {
        normalize_types(c);
    }
}

/// A network card as `nic`, disconnected and not connected at power-on.
pub(super) fn disconnected(nic: &Element) -> Element {
    let mut device = nic.clone();
    device.children.retain(|c| c.name != "connectable");
    let off = |name: &str| text_element(name, "false".into());
    let connectable = Element {
        name: "connectable".into(),
        children: vec![
            off("startConnected"),
            off("allowGuestControl"),
            off("connected"),
        ],
        ..Default::default()
    };
    // Schema order: connectable comes after backing.
    let at = device
        .children
        .iter()
        .position(|c| c.name == "backing")
        .map_or(device.children.len(), |i| i + 1);
    device.children.insert(at, connectable);
    device
}

fn text_element(name: &str, text: String) -> Element {
    Element {
        name: name.into(),
        text,
        ..Default::default()
    }
}

/// `d` as an added device of the new VM under `key`: without what only
/// the original may hold (its PCI slot, its attached devices' keys, its
/// distributed switch port).
fn added_device(d: &Element, key: i64) -> String {
    let mut device = d.clone();
    normalize_types(&mut device);
    device
        .children
        .retain(|c| c.name != "slotInfo" && c.name != "device");
    for c in &mut device.children {
        if c.name == "key" {
            c.text = key.to_string();
        }
        if c.name == "backing" {
            for b in &mut c.children {
                if b.name == "port" {
                    b.children
                        .retain(|p| p.name == "switchUuid" || p.name == "portgroupKey");
                }
            }
        }
    }
    let kind = device.xsi_type().unwrap_or("VirtualDevice").to_owned();
    let mut body = String::new();
    device.write_children(&mut body);
    format!(
        "<deviceChange><operation>add</operation><device xsi:type=\"{}\">{body}</device></deviceChange>",
        xml::escape(&kind)
    )
}

/// The original's hardware, and its virtual disks in key order (disk N is
/// the image N).
struct Hardware<'a> {
    devices: &'a [Element],
    disks: Vec<&'a Element>,
}

impl<'a> Hardware<'a> {
    fn read(vm: &str, o: &'a inventory::ObjectContent) -> Result<Self, VsphereError> {
        let devices = o
            .props
            .get("config.hardware.device")
            .map(|a| a.children.as_slice())
            .ok_or_else(|| VsphereError::Missing {
                method: "RetrievePropertiesEx".into(),
                what: format!("the devices of {vm}"),
            })?;
        let mut disks: Vec<&Element> = devices
            .iter()
            .filter(|d| d.xsi_type() == Some("VirtualDisk"))
            .collect();
        disks.sort_by_key(|d| key_of(d));
        Ok(Hardware { devices, disks })
    }

    fn device(&self, key: i64) -> Option<&'a Element> {
        self.devices.iter().find(|d| key_of(d) == Some(key))
    }

    /// The device changes of the new VM: the disks' controllers (IDE ones
    /// every VM has already), each disk backed by its uploaded file, and
    /// the network cards. Also each disk's descriptor adapter type.
    fn changes(
        &self,
        vm: &str,
        files: &[String],
        images: &[Image],
        isolate: bool,
    ) -> Result<(String, Vec<&'static str>), VsphereError> {
        let mut out = String::new();
        let mut next_key = -1i64;
        let mut take_key = || {
            let k = next_key;
            next_key -= 1;
            k
        };
        let mut controllers: HashMap<i64, i64> = HashMap::new();
        let mut adapters = Vec::new();
        for (i, disk) in self.disks.iter().enumerate() {
            let original = controller_of(disk).ok_or_else(|| VsphereError::Missing {
                method: "RetrievePropertiesEx".into(),
                what: format!("the controller of disk {i} of {vm}"),
            })?;
            let controller = self.device(original).ok_or_else(|| VsphereError::Missing {
                method: "RetrievePropertiesEx".into(),
                what: format!("controller {original} of {vm}"),
            })?;
            let kind = controller.xsi_type().unwrap_or("");
            adapters.push(adapter_type(kind));
            let key = match controllers.get(&original) {
                Some(&k) => k,
                None => {
                    let k = if kind == "VirtualIDEController" {
                        original
                    } else {
                        let k = take_key();
                        out.push_str(&added_device(controller, k));
                        k
                    };
                    controllers.insert(original, k);
                    k
                }
            };
            let unit = disk.child_text("unitNumber").unwrap_or("0").trim();
            let bytes = images[i].bytes;
            let mut backing = Element {
                name: "backing".into(),
                attrs: vec![("xsi:type".into(), "VirtualDiskFlatVer2BackingInfo".into())],
                ..Default::default()
            };
            backing.children = vec![
                text_element("fileName", files[i].clone()),
                text_element("diskMode", "persistent".into()),
                text_element("thinProvisioned", "false".into()),
            ];
            let device = Element {
                name: "device".into(),
                children: vec![
                    text_element("key", take_key().to_string()),
                    backing,
                    text_element("controllerKey", key.to_string()),
                    text_element("unitNumber", unit.to_owned()),
                    text_element("capacityInKB", (bytes / 1024).to_string()),
                    text_element("capacityInBytes", bytes.to_string()),
                ],
                ..Default::default()
            };
            let mut body = String::new();
            device.write_children(&mut body);
            out.push_str(&format!(
                "<deviceChange><operation>add</operation><device xsi:type=\"VirtualDisk\">{body}</device></deviceChange>"
            ));
        }
        // Every kind of network card has a MAC address; nothing else does.
        for nic in self
            .devices
            .iter()
            .filter(|d| d.child("macAddress").is_some())
        {
            let nic = if isolate { &disconnected(nic) } else { nic };
            out.push_str(&added_device(nic, take_key()));
        }
        Ok((out, adapters))
    }
}

impl Vsphere {
    /// Brings `vm` up on `host` from disk images on this machine (one per
    /// virtual disk, in the order of the disks' device keys): see the
    /// module's documentation. Refused while the original runs on a host
    /// vCenter manages, and when the number of images is not the number of
    /// its disks.
    pub async fn restore_vm_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
    ) -> Result<(), VsphereError> {
        let images = check_images(images).await?;
        let Some(original) = self.original_or_finish(vm).await? else {
            return Ok(());
        };
        let target = self.moref(false, host).await?;
        let Preflight { o, folder, .. } = self.restore_preflight(vm, &original, &HARDWARE).await?;
        let temp = restore_name(vm);
        self.remove_leftover(vm, &temp).await?;
        let from = FromImages {
            vm,
            o: &o,
            folder: &folder,
            target: &target,
            images: &images,
        };
        let created = self.create_from_images(&from, &temp, false).await?;
        self.take_over(vm, &original, &created).await?;
        tracing::warn!(vm, host, "failover: the VM runs from its replica's images");
        Ok(())
    }

    /// A recovery drill from disk images: a VM named `copy` made from them
    /// as a failover's is, on `host`, with every network card disconnected
    /// (and not connected at power-on), then powered on. The original is
    /// not touched and may run. `InvalidState` if `copy` exists.
    pub async fn start_drill_copy_from_images(
        &self,
        vm: &str,
        host: &str,
        images: &[PathBuf],
        copy: &str,
    ) -> Result<(), VsphereError> {
        let images = check_images(images).await?;
        if self.moref(true, copy).await.is_ok() {
            return Err(VsphereError::InvalidState {
                name: copy.to_owned(),
                detail: "exists already".into(),
            });
        }
        let original = self.moref(true, vm).await?;
        let target = self.moref(false, host).await?;
        let mut paths = vec!["parent"];
        paths.extend_from_slice(&HARDWARE);
        let o = inventory::retrieve_one(&self.session, &original, &paths).await?;
        let folder = folder_of(vm, &o)?;
        let from = FromImages {
            vm,
            o: &o,
            folder: &folder,
            target: &target,
            images: &images,
        };
        let created = self.create_from_images(&from, copy, true).await?;
        self.invalidate().await;
        // Powered on explicitly, once its network is off for sure.
        if let Err(e) = task::run(
            &self.session,
            "PowerOnVM_Task",
            &created,
            "",
            self.task_timeout,
        )
        .await
        {
            self.discard(vm, &created).await;
            return Err(e);
        }
        Ok(())
    }

    /// Uploads the images to a new directory on a datastore of the target
    /// and creates a VM named `name` around them (powered off) with the
    /// original's hardware; with `isolate`, its network cards disconnected.
    /// What a failure leaves is removed.
    async fn create_from_images(
        &self,
        from: &FromImages<'_>,
        name: &str,
        isolate: bool,
    ) -> Result<MoRef, VsphereError> {
        let FromImages {
            vm,
            o,
            folder,
            target,
            images,
        } = *from;
        let hw = Hardware::read(vm, o)?;
        if hw.disks.len() != images.len() {
            return Err(VsphereError::InvalidState {
                name: vm.to_owned(),
                detail: format!(
                    "has {} virtual disks; {} disk images were given",
                    hw.disks.len(),
                    images.len()
                ),
            });
        }
        let total: u64 = images.iter().map(|i| i.bytes).sum();
        let _active = Active::claim(&self.uploads, name)?;
        // An earlier attempt cut off while uploading: its directory goes
        // before the datastore's room is counted.
        // A failure is logged, not returned: the record stays for later,
        // and this failover matters more.
        for u in self.upload_records().await {
            if u.vm == name {
                if let Err(e) = self.clear_upload(&u).await {
                    tracing::warn!(vm = name, dir = %u.dir, error = %e, "could not remove an upload a cut-off attempt left");
                }
            }
        }
        let place = self.place_for(vm, target, total).await?;
        let record = pending::Upload {
            vm: name.to_owned(),
            datastore: place.datastore.clone(),
            dir: place.dir.clone(),
            datacenter: place.datacenter.clone(),
        };
        self.record_upload(Some(&record), name).await;
        let pool = self.resource_pool_of(target).await?;
        let stem = file_stem(vm);
        let descriptors: Vec<String> = (0..images.len())
            .map(|i| place.file(&format!("{stem}_{i}.vmdk")))
            .collect();
        let (changes, adapters) = hw.changes(vm, &descriptors, images, isolate)?;

        let uploaded = async {
            for (i, image) in images.iter().enumerate() {
                let flat = format!("{stem}_{i}-flat.vmdk");
                tracing::info!(vm, image = %image.path.display(), to = %place.file(&flat), bytes = image.bytes, "uploading a replica disk image");
                self.session
                    .upload(
                        &place.dc_path,
                        &place.datastore,
                        &format!("{}/{flat}", place.dir),
                        Upload::File(&image.path),
                    )
                    .await?;
                let text = descriptor(&flat, image.bytes, adapters[i]);
                self.session
                    .upload(
                        &place.dc_path,
                        &place.datastore,
                        &format!("{}/{stem}_{i}.vmdk", place.dir),
                        Upload::Bytes(text.as_bytes()),
                    )
                    .await?;
            }
            Ok::<(), VsphereError>(())
        };
        if let Err(e) = uploaded.await {
            self.remove_upload(&record).await;
            return Err(e);
        }

        let prop = |p: &str| o.props.get(p).map(|e| e.text.trim().to_owned());
        let mut config = format!("<name>{}</name>", xml::escape(name));
        if let Some(v) = prop("config.version").filter(|v| !v.is_empty()) {
            config.push_str(&format!("<version>{}</version>", xml::escape(&v)));
        }
        if let Some(g) = prop("config.guestId").filter(|g| !g.is_empty()) {
            config.push_str(&format!("<guestId>{}</guestId>", xml::escape(&g)));
        }
        config.push_str(&format!(
            "<files><vmPathName>{}</vmPathName></files>",
            xml::escape(&place.file(&format!("{stem}.vmx")))
        ));
        if let Some(n) = prop("config.hardware.numCPU") {
            config.push_str(&format!("<numCPUs>{}</numCPUs>", xml::escape(&n)));
        }
        if let Some(m) = prop("config.hardware.memoryMB") {
            config.push_str(&format!("<memoryMB>{}</memoryMB>", xml::escape(&m)));
        }
        config.push_str(&changes);
        let args = format!(
            "<config>{config}</config>{}{}",
            pool.xml("pool"),
            target.xml("host")
        );
        match task::run(
            &self.session,
            "CreateVM_Task",
            folder,
            &args,
            self.task_timeout,
        )
        .await
        .and_then(|r| cloned_vm(r, "the VM created from the images"))
        {
            Ok(r) => {
                // The new VM owns the directory now.
                self.record_upload(None, name).await;
                Ok(r)
            }
            Err(e) => {
                self.remove_upload(&record).await;
                Err(e)
            }
        }
    }

    /// A new directory for `vm`'s images on the datastore of `host` with
    /// the most free space (at least `bytes`).
    async fn place_for(&self, vm: &str, host: &MoRef, bytes: u64) -> Result<Place, VsphereError> {
        let (datacenter, dc_path) = self.datacenter_of(host).await?;
        let h = inventory::retrieve_one(&self.session, host, &["datastore"]).await?;
        let mut best: Option<(u64, String)> = None;
        for ds in h
            .props
            .get("datastore")
            .map(|a| a.children.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(MoRef::from_element)
        {
            let d = inventory::retrieve_one(
                &self.session,
                &ds,
                &["summary.name", "summary.accessible", "summary.freeSpace"],
            )
            .await?;
            let text = |p: &str| d.props.get(p).map(|e| e.text.trim().to_owned());
            let free: u64 = text("summary.freeSpace")
                .and_then(|f| f.parse().ok())
                .unwrap_or(0);
            let Some(name) = text("summary.name").filter(|n| !n.is_empty()) else {
                continue;
            };
            if text("summary.accessible").as_deref() == Some("true")
                && free >= bytes
                && best.as_ref().is_none_or(|(f, _)| free > *f)
            {
                best = Some((free, name));
            }
        }
        let (_, datastore) = best.ok_or_else(|| VsphereError::InvalidState {
            name: host.value.clone(),
            detail: format!("no accessible datastore of the host has {bytes} bytes free"),
        })?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Ok(Place {
            datacenter,
            dc_path,
            datastore,
            dir: format!("{}-vmdr-replica-{ms}", file_stem(vm)),
        })
    }

    /// The datacenter `host` is in, and its inventory path.
    async fn datacenter_of(&self, host: &MoRef) -> Result<(MoRef, String), VsphereError> {
        let mut at = host.clone();
        let mut datacenter = None;
        let mut names = Vec::new();
        // The inventory tree is shallow; the bound stops a cycle.
        for _ in 0..64 {
            let o = inventory::retrieve_one(&self.session, &at, &["parent", "name"]).await?;
            let parent = o.props.get("parent").and_then(MoRef::from_element);
            if at.kind == "Datacenter" {
                datacenter = Some(at.clone());
            }
            let Some(parent) = parent else {
                // The root folder: not part of inventory paths.
                break;
            };
            if datacenter.is_some() {
                names.push(
                    o.props
                        .get("name")
                        .map(|e| e.text.trim().to_owned())
                        .unwrap_or_default(),
                );
            }
            at = parent;
        }
        let datacenter = datacenter.ok_or_else(|| VsphereError::Missing {
            method: "RetrievePropertiesEx".into(),
            what: format!("the datacenter of {}", host.value),
        })?;
        names.reverse();
        Ok((datacenter, names.join("/")))
    }

    /// Removes the directories of uploads that a restore or drill cut off
    /// (by its action timeout, or a crash) left behind, as their records
    /// in [`Vsphere::pending_dir`] name them: a directory a VM of the
    /// record's name has its files in stays (the VM owns it). Uploads this
    /// process runs now are left alone. Returns each record's VM with the
    /// outcome; a record stays until its clean-up succeeds.
    pub async fn remove_abandoned_uploads(&self) -> Vec<(String, Result<(), VsphereError>)> {
        let mut out = Vec::new();
        for u in self.upload_records().await {
            if lock(&self.uploads).contains(&u.vm) {
                continue;
            }
            let result = self.clear_upload(&u).await;
            out.push((u.vm, result));
        }
        out
    }

    async fn upload_records(&self) -> Vec<pending::Upload> {
        let Some(dir) = self.pending_dir.clone() else {
            return Vec::new();
        };
        tokio::task::spawn_blocking(move || pending::Upload::all(&dir))
            .await
            .unwrap_or_default()
    }

    /// Writes (`Some`) or removes (`None`) the record of `vm`'s upload. A
    /// failure is logged, not returned: without the record a cut-off
    /// upload only takes datastore room, and a failover matters more.
    async fn record_upload(&self, record: Option<&pending::Upload>, vm: &str) {
        let Some(dir) = self.pending_dir.clone() else {
            return;
        };
        let (record, name) = (record.cloned(), vm.to_owned());
        let written = tokio::task::spawn_blocking(move || match record {
            Some(r) => r.save(&dir),
            None => pending::Upload::done(&dir, &name),
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            tracing::error!(vm, error = %e, "cannot keep the record of an upload of disk images");
        }
    }

    /// The clean-up of one upload record: its directory is removed unless
    /// the record's VM has its files there; then the record goes.
    async fn clear_upload(&self, u: &pending::Upload) -> Result<(), VsphereError> {
        let owned = match self.moref(true, &u.vm).await {
            Ok(r) => {
                match inventory::retrieve_one(&self.session, &r, &["summary.config.vmPathName"])
                    .await
                {
                    Ok(o) => o.props.get("summary.config.vmPathName").is_some_and(|p| {
                        p.text
                            .trim()
                            .starts_with(&format!("[{}] {}/", u.datastore, u.dir))
                    }),
                    // Known by name from before, gone since.
                    Err(e) if e.fault() == Some("ManagedObjectNotFound") => false,
                    Err(e) => return Err(e),
                }
            }
            Err(VsphereError::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        if !owned {
            tracing::warn!(vm = %u.vm, datastore = %u.datastore, dir = %u.dir, "removing the upload of disk images a cut-off restore left");
            self.delete_dir(&u.datastore, &u.dir, &u.datacenter).await?;
        }
        self.record_upload(None, &u.vm).await;
        Ok(())
    }

    /// Removes an upload after its restore failed; its record goes with it,
    /// or stays for a later clean-up if the removal fails.
    async fn remove_upload(&self, u: &pending::Upload) {
        match self.delete_dir(&u.datastore, &u.dir, &u.datacenter).await {
            Ok(()) => self.record_upload(None, &u.vm).await,
            Err(e) => {
                tracing::warn!(dir = %u.dir, error = %e, "could not remove the files of a failed restore; a later one retries");
            }
        }
    }

    /// Deletes an upload's directory. Only a name [`Vsphere::place_for`]
    /// makes is accepted: a damaged record must not name a datastore's
    /// root or another VM's files. One already gone is fine.
    async fn delete_dir(
        &self,
        datastore: &str,
        dir: &str,
        datacenter: &MoRef,
    ) -> Result<(), VsphereError> {
        if !is_upload_dir(dir) {
            return Err(VsphereError::InvalidState {
                name: format!("[{datastore}] {dir}"),
                detail: "is not a directory of an upload of disk images: not removed".into(),
            });
        }
        let fm =
            self.session
                .content()
                .file_manager
                .clone()
                .ok_or_else(|| VsphereError::Missing {
                    method: "RetrieveServiceContent".into(),
                    what: "the file manager".into(),
                })?;
        let args = format!(
            "<name>{}</name>{}",
            xml::escape(&format!("[{datastore}] {dir}")),
            datacenter.xml("datacenter")
        );
        match task::run(
            &self.session,
            "DeleteDatastoreFile_Task",
            &fm,
            &args,
            self.task_timeout,
        )
        .await
        {
            Err(e) if e.fault() == Some("FileNotFound") => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

/// Whether `dir` is a name [`Vsphere::place_for`] gives an upload: one
/// path component ending in `-vmdr-replica-<ms>`.
fn is_upload_dir(dir: &str) -> bool {
    !dir.contains('/')
        && dir.rsplit_once("-vmdr-replica-").is_some_and(|(stem, ms)| {
            !stem.is_empty() && !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit())
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An upload this process runs, marked so that a clean-up of abandoned
/// ones leaves it alone; unmarked when the restore ends, however it ends
/// (a restore cut off by its timeout is dropped).
struct Active<'a> {
    set: &'a Mutex<HashSet<String>>,
    vm: String,
}

impl<'a> Active<'a> {
    fn claim(set: &'a Mutex<HashSet<String>>, vm: &str) -> Result<Self, VsphereError> {
        if !lock(set).insert(vm.to_owned()) {
            return Err(VsphereError::InvalidState {
                name: vm.to_owned(),
                detail: "is being created from disk images already".into(),
            });
        }
        Ok(Active {
            set,
            vm: vm.to_owned(),
        })
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.vm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(name: &str, text: &str) -> Element {
        text_element(name, text.into())
    }

    #[test]
    fn descriptors_name_their_extent_in_sectors() {
        let d = descriptor("web_0-flat.vmdk", 2 << 20, "lsilogic");
        assert!(d.contains("RW 4096 VMFS \"web_0-flat.vmdk\""), "{d}");
        assert!(d.contains("ddb.adapterType = \"lsilogic\""));
        assert!(d.contains("createType=\"vmfs\""));
    }

    #[test]
    fn only_upload_directories_are_removed() {
        assert!(is_upload_dir("web_1-vmdr-replica-1700000000000"));
        for bad in [
            "",
            "web_1",
            "-vmdr-replica-17",
            "web_1-vmdr-replica-",
            "web_1-vmdr-replica-17x",
            "a/web_1-vmdr-replica-17",
            "../x-vmdr-replica-17/..",
        ] {
            assert!(!is_upload_dir(bad), "{bad:?}");
        }
    }

    #[test]
    fn file_stems_keep_only_plain_characters() {
        assert_eq!(file_stem("web-1.prod_a"), "web-1.prod_a");
        assert_eq!(file_stem("db [east]/\"x\""), "db__east___x_");
    }

    #[test]
    fn an_added_device_drops_what_only_the_original_holds() {
        let nic = Element {
            name: "VirtualDevice".into(),
            attrs: vec![("XMLSchema-instance:type".into(), "VirtualVmxnet3".into())],
            children: vec![
                el("key", "4000"),
                Element {
                    name: "backing".into(),
                    attrs: vec![(
                        "xsi:type".into(),
                        "VirtualEthernetCardDistributedVirtualPortBackingInfo".into(),
                    )],
                    children: vec![Element {
                        name: "port".into(),
                        children: vec![
                            el("switchUuid", "50 1a"),
                            el("portgroupKey", "dvportgroup-1"),
                            el("portKey", "7"),
                            el("connectionCookie", "123"),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                Element {
                    name: "slotInfo".into(),
                    children: vec![el("pciSlotNumber", "192")],
                    ..Default::default()
                },
                el("macAddress", "00:50:56:aa:bb:cc"),
            ],
            text: String::new(),
        };
        let x = added_device(&nic, -3);
        assert!(x.starts_with(
            "<deviceChange><operation>add</operation><device xsi:type=\"VirtualVmxnet3\"><key>-3</key>"
        ), "{x}");
        assert!(x.contains("<portgroupKey>dvportgroup-1</portgroupKey>"));
        assert!(!x.contains("portKey>7"), "{x}");
        assert!(!x.contains("connectionCookie"), "{x}");
        assert!(!x.contains("pciSlotNumber"), "{x}");
        assert!(x.contains("<macAddress>00:50:56:aa:bb:cc</macAddress>"));
    }
}
