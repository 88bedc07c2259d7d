//! VM operations and power events against govmomi's vCenter simulator.

mod common;

use common::{available, Vcsim};
use dr_core::model::{Actor, PowerEventKind, PowerState};
use dr_core::ports::HypervisorError;
use dr_core::Timestamp;
use dr_vsphere::xml::Limits;
use dr_vsphere::{PasswordSource, TlsMode, Vsphere, VsphereConfig};
use std::time::Duration;

async fn connect(sim: &Vcsim, var: &str) -> Vsphere {
    std::env::set_var(var, "s3cret");
    let cfg = VsphereConfig {
        url: sim.url.clone(),
        user: "vmdr".into(),
        password: PasswordSource::Env(var.into()),
        tls: TlsMode::Verify,
        timeout: Duration::from_secs(30),
        limits: Limits::default(),
        spares: Vec::new(),
    };
    Vsphere::connect(&cfg).await.expect("login")
}

/// `host` stops responding to vCenter (the simulator's test endpoint).
async fn stops_responding(sim: &Vcsim, host: &str) {
    let url = format!(
        "{}/vmdr-test/host-state?name={host}&state=notResponding",
        sim.base()
    );
    assert!(reqwest::Client::new()
        .post(&url)
        .send()
        .await
        .expect("test endpoint")
        .status()
        .is_success());
}

/// `vm`'s host, and another host.
fn home_and_other(inv: &dr_core::model::Inventory, vm: &str) -> (String, String) {
    let home = inv.vm(vm).expect("vm").host.clone();
    let other = inv
        .hosts
        .iter()
        .find(|h| h.name != home)
        .expect("another host")
        .name
        .clone();
    (home, other)
}

#[tokio::test]
async fn power_cycle_reset_and_faults() {
    if !available("power_cycle_reset_and_faults") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_OPS").await;
    let (inv, _) = v.inventory().await.expect("inventory");
    let vm = inv.vms[0].name.clone();
    let power = |inv: &dr_core::model::Inventory| inv.vm(&vm).map(|x| x.power);

    v.power_off(&vm).await.expect("power off");
    assert_eq!(
        power(&v.inventory().await.expect("inv").0),
        Some(PowerState::Off)
    );
    let e = v.power_off(&vm).await.expect_err("already off");
    assert!(matches!(
        HypervisorError::from(e),
        HypervisorError::InvalidState { .. }
    ));
    v.power_on(&vm).await.expect("power on");
    assert_eq!(
        power(&v.inventory().await.expect("inv").0),
        Some(PowerState::On)
    );
    v.reset(&vm).await.expect("reset");
    let e = v.power_on("no-such-vm").await.expect_err("unknown VM");
    assert!(matches!(
        HypervisorError::from(e),
        HypervisorError::NotFound { kind: "vm", .. }
    ));
    v.close().await;
}

#[tokio::test]
async fn power_events_say_who() {
    if !available("power_events_say_who") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_EVENTS").await;
    let (inv, _) = v.inventory().await.expect("inventory");
    let vm = inv.vms[1].name.clone();
    v.power_off(&vm).await.expect("power off");
    v.power_on(&vm).await.expect("power on");
    let events = v.power_events(Timestamp(0)).await.expect("events");
    let ours: Vec<_> = events.iter().filter(|e| e.vm == vm).collect();
    let kinds: Vec<PowerEventKind> = ours.iter().map(|e| e.kind).collect();
    assert!(
        kinds.ends_with(&[PowerEventKind::PoweredOff, PowerEventKind::PoweredOn]),
        "{ours:?}"
    );
    assert!(
        ours.iter()
            .rev()
            .take(2)
            .all(|e| e.by == Actor::Orchestrator),
        "vmdr's own actions are vmdr's: {ours:?}"
    );
    assert!(
        events.windows(2).all(|w| w[0].at <= w[1].at),
        "oldest first"
    );
    let later = v
        .power_events(Timestamp(4_102_444_800_000))
        .await
        .expect("events");
    assert!(later.is_empty(), "nothing after 2100");
}

#[tokio::test]
async fn snapshot_lifecycle_and_cold_migration() {
    if !available("snapshot_lifecycle_and_cold_migration") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_SNAP").await;
    let (inv, _) = v.inventory().await.expect("inventory");
    let vm = inv.vms[0].name.clone();
    let target = dr_core::model::SnapshotTarget::Vm(vm.clone());
    assert!(v.list_snapshots(&target).await.expect("list").is_empty());
    let a = v.create_snapshot(&target, "first").await.expect("create");
    let b = v
        .create_snapshot(&target, "second & <newest>")
        .await
        .expect("create");
    assert_eq!(b.name, "second & <newest>");
    let list = v.list_snapshots(&target).await.expect("list");
    assert_eq!(
        list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [a.id.as_str(), b.id.as_str()],
        "oldest first"
    );
    assert_eq!(
        v.inventory()
            .await
            .expect("inv")
            .0
            .vm(&vm)
            .map(|x| x.snapshot_count),
        Some(2)
    );

    v.revert_vm(&vm, None).await.expect("revert to newest");
    assert_eq!(
        v.inventory().await.expect("inv").0.vm(&vm).map(|x| x.power),
        Some(PowerState::Off),
        "revert leaves it off"
    );
    v.power_on(&vm).await.expect("on");

    v.remove_snapshot(&target, &a.id).await.expect("remove");
    let left: Vec<String> = v
        .list_snapshots(&target)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, std::slice::from_ref(&b.id));
    let e = v
        .remove_snapshot(&target, &a.id)
        .await
        .expect_err("removed twice");
    assert!(matches!(
        HypervisorError::from(e),
        HypervisorError::NotFound {
            kind: "snapshot",
            ..
        }
    ));
    let e = v
        .create_snapshot(
            &dr_core::model::SnapshotTarget::Host(inv.hosts[0].name.clone()),
            "h",
        )
        .await
        .expect_err("no host snapshots");
    assert!(matches!(
        HypervisorError::from(e),
        HypervisorError::Unsupported { .. }
    ));

    let (_, other) = home_and_other(&inv, &vm);
    let e = v.migrate_vm(&vm, &other).await.expect_err("running");
    assert!(matches!(
        HypervisorError::from(e),
        HypervisorError::InvalidState { .. }
    ));
    v.power_off(&vm).await.expect("off");
    v.migrate_vm(&vm, &other).await.expect("cold migration");
    assert_eq!(
        v.inventory()
            .await
            .expect("inv")
            .0
            .vm(&vm)
            .map(|x| x.host.clone()),
        Some(other)
    );
}

#[tokio::test]
async fn incremental_inventory_takes_one_round_trip() {
    if !available("incremental_inventory_takes_one_round_trip") {
        return;
    }
    let sim = Vcsim::start(&["-clusters", "1", "-hosts", "3", "-vms", "10"]);
    let v = connect(&sim, "DRV_PW_INCR").await;
    let (full, trips) = v.full_inventory().await.expect("full");
    assert!(trips <= 3, "a full read took {trips} round trips");
    let (first, _) = v.inventory().await.expect("first incremental read");
    assert_eq!(first.vms.len(), full.vms.len());
    assert_eq!(first.hosts.len(), full.hosts.len());
    let (same, trips) = v.inventory().await.expect("refresh");
    assert_eq!(trips, 1);
    assert_eq!(same, first, "nothing changed");
    let vm = first.vms[3].name.clone();
    v.power_off(&vm).await.expect("off");
    let (changed, trips) = v.inventory().await.expect("refresh");
    assert_eq!(trips, 1, "one round trip brings the change");
    assert_eq!(changed.vm(&vm).map(|x| x.power), Some(PowerState::Off));
    assert_eq!(changed.vms.len(), first.vms.len());
}

#[tokio::test]
async fn a_user_power_off_is_attributed_to_the_user() {
    if !available("a_user_power_off_is_attributed_to_the_user") {
        return;
    }
    let sim = Vcsim::start(&["-any-user"]);
    let vmdr = connect(&sim, "DRV_PW_WHO").await;
    std::env::set_var("DRV_PW_ALICE", "alice-pw");
    let alice = Vsphere::connect(&VsphereConfig {
        url: sim.url.clone(),
        user: "alice".into(),
        password: PasswordSource::Env("DRV_PW_ALICE".into()),
        tls: TlsMode::Verify,
        timeout: Duration::from_secs(30),
        limits: Limits::default(),
        spares: Vec::new(),
    })
    .await
    .expect("alice logs in");
    let (inv, _) = vmdr.inventory().await.expect("inventory");
    let vm = inv.vms[0].name.clone();
    alice.power_off(&vm).await.expect("alice powers it off");
    let events = vmdr.power_events(Timestamp(0)).await.expect("events");
    let last = events.iter().rev().find(|e| e.vm == vm).expect("an event");
    assert_eq!(last.kind, PowerEventKind::PoweredOff);
    assert_eq!(last.by, Actor::User("alice".into()), "{events:?}");
}

#[tokio::test]
async fn vitals_include_disk_and_network_rates() {
    if !available("vitals_include_disk_and_network_rates") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_PERF").await;
    let (inv, _) = v.inventory().await.expect("inventory");
    let running: Vec<_> = inv
        .vms
        .iter()
        .filter(|x| x.power == PowerState::On)
        .collect();
    assert!(!running.is_empty());
    assert!(
        running
            .iter()
            .any(|x| x.vitals.disk_kbps > 0 || x.vitals.net_kbps > 0),
        "no VM has disk or network rates: {:?}",
        running.iter().map(|x| x.vitals).collect::<Vec<_>>()
    );
    assert!(
        inv.hosts
            .iter()
            .all(|h| h.vitals.cpu_mhz > 0 || h.vitals.memory_mb > 0),
        "host quick stats"
    );
    let (_, trips) = v.inventory().await.expect("refresh");
    assert_eq!(
        trips, 1,
        "rates are not read again within the 20 s interval"
    );
}

#[tokio::test]
async fn maintenance_mode() {
    if !available("maintenance_mode") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_MAINT").await;
    let (inv, _) = v.full_inventory().await.expect("inventory");
    let host = inv.hosts[0].name.clone();
    v.enter_maintenance(&host).await.expect("enter");
    let (inv, _) = v.full_inventory().await.expect("inventory");
    assert_eq!(
        inv.host(&host).map(|h| h.link),
        Some(dr_core::model::HostLink::Maintenance)
    );
    v.exit_maintenance(&host).await.expect("exit");
    let (inv, _) = v.full_inventory().await.expect("inventory");
    assert_eq!(
        inv.host(&host).map(|h| h.link),
        Some(dr_core::model::HostLink::Connected)
    );
}

#[tokio::test]
async fn restore_off_a_host_that_stopped_responding_registers_the_files_elsewhere() {
    if !available("restore_off_a_host_that_stopped_responding_registers_the_files_elsewhere") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_LOST").await;
    let (inv, _) = v.full_inventory().await.expect("inventory");
    let vm = inv.vms[0].name.clone();
    let (home, other) = home_and_other(&inv, &vm);
    let others_before = inv.vms.len();
    // The host dies with the VM on it.
    v.power_off(&vm).await.expect("the VM stops with its host");
    stops_responding(&sim, &home).await;
    v.restore_vm(&vm, &other, dr_core::model::RestoreSource::Snapshot)
        .await
        .expect("restore");
    let (after, _) = v.full_inventory().await.expect("inventory");
    let restored = after.vm(&vm).expect("the VM keeps its name");
    assert_eq!(restored.host, other);
    assert_eq!(restored.power, PowerState::On);
    assert_eq!(after.vms.len(), others_before, "one VM, not two");
    assert_eq!(after.vms.iter().filter(|x| x.name == vm).count(), 1);
}

/// The drill copy `copy` is powered on, every network card of it
/// disconnected and not connecting at power-on (there is one at least).
async fn assert_runs_isolated(v: &Vsphere, copy: &str) {
    let r = v.moref(true, copy).await.expect("the copy exists");
    let o = dr_vsphere::inventory::retrieve_one(
        v.session(),
        &r,
        &["runtime.powerState", "config.hardware.device"],
    )
    .await
    .expect("read the copy");
    assert_eq!(
        o.props.get("runtime.powerState").map(|e| e.text.trim()),
        Some("poweredOn")
    );
    let nics: Vec<_> = o
        .props
        .get("config.hardware.device")
        .map(|a| a.children.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.child("macAddress").is_some())
        .collect();
    assert!(!nics.is_empty(), "the simulated VM has a network card");
    for nic in &nics {
        for flag in ["connected", "startConnected"] {
            assert_eq!(
                nic.path(&["connectable", flag]).map(|e| e.text.trim()),
                Some("false"),
                "the copy's network card is {flag}"
            );
        }
    }
}

#[tokio::test]
async fn a_drill_copy_runs_with_its_network_cards_disconnected() {
    if !available("a_drill_copy_runs_with_its_network_cards_disconnected") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_DRILL").await;
    let (inv, _) = v.inventory().await.expect("inventory");
    let vm = inv.vms[0].clone();
    let target = dr_core::model::SnapshotTarget::Vm(vm.name.clone());
    v.create_snapshot(&target, "drill").await.expect("snapshot");
    let copy = format!("{}-drill", vm.name);
    v.start_drill_copy(
        &vm.name,
        &vm.host,
        dr_core::model::RestoreSource::Snapshot,
        &copy,
    )
    .await
    .expect("drill copy");
    assert_runs_isolated(&v, &copy).await;
    // The original still runs, connected.
    let (inv, _) = v.inventory().await.expect("inventory");
    assert_eq!(inv.vm(&vm.name).map(|x| x.power), Some(PowerState::On));
    v.remove_drill_copy(&copy).await.expect("remove");
    let again = v
        .remove_drill_copy(&copy)
        .await
        .map_err(HypervisorError::from);
    assert!(
        matches!(again, Err(HypervisorError::NotFound { .. })),
        "removing it again: {again:?}"
    );
}

#[tokio::test]
async fn a_registration_left_under_way_is_finished_by_the_next_connection() {
    if !available("a_registration_left_under_way_is_finished_by_the_next_connection") {
        return;
    }
    use dr_vsphere::soap::MoRef;
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_PENDING").await;
    let (inv, _) = v.full_inventory().await.expect("inventory");
    let vm = inv.vms[0].clone();
    let target_name = inv
        .hosts
        .iter()
        .find(|h| h.name != vm.host)
        .expect("another host")
        .name
        .clone();
    let r = v.moref(true, &vm.name).await.expect("vm");
    let o = dr_vsphere::inventory::retrieve_one(
        v.session(),
        &r,
        &[
            "parent",
            "resourcePool",
            "summary.config.vmPathName",
            "runtime.host",
        ],
    )
    .await
    .expect("read");
    let get = |k: &str| o.props.get(k).and_then(MoRef::from_element).expect(k);
    let dir = std::env::temp_dir().join(format!("drv-pending-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // What a restore records before it unregisters; then the process dies
    // right after the unregistration.
    dr_vsphere::pending::Pending {
        vm: vm.name.clone(),
        path: o.props["summary.config.vmPathName"].text.trim().to_owned(),
        folder: get("parent"),
        pool: get("resourcePool"),
        target: v.moref(false, &target_name).await.expect("target"),
        home: get("runtime.host"),
    }
    .save(&dir)
    .expect("record");
    v.power_off(&vm.name).await.expect("power off");
    v.session()
        .invoke("UnregisterVM", &r.xml("_this"))
        .await
        .expect("unregister");
    // The next process finishes the registration.
    let mut next = connect(&sim, "DRV_PW_PENDING").await;
    next.pending_dir = Some(dir.clone());
    let done = next.resume_pending().await;
    assert_eq!(done.len(), 1);
    assert!(done[0].1.is_ok(), "{done:?}");
    let (after, _) = next.full_inventory().await.expect("inventory");
    assert_eq!(
        after.vm(&vm.name).map(|x| x.host.as_str()),
        Some(target_name.as_str()),
        "the VM is back in the inventory, on the target"
    );
    assert!(
        dr_vsphere::pending::Pending::all(&dir).is_empty(),
        "the record is gone"
    );
    // Nothing left: a second pass does nothing.
    assert!(next.resume_pending().await.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The virtual disks of `vm` as vCenter lists them: (backing file, bytes).
async fn disks_of(v: &Vsphere, vm: &str) -> Vec<(String, u64)> {
    let r = v.moref(true, vm).await.expect("the VM");
    let o = dr_vsphere::inventory::retrieve_one(v.session(), &r, &["config.hardware.device"])
        .await
        .expect("its devices");
    o.props
        .get("config.hardware.device")
        .map(|a| a.children.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.xsi_type() == Some("VirtualDisk"))
        .map(|d| {
            let file = d
                .path(&["backing", "fileName"])
                .map(|f| f.text.trim().to_owned())
                .unwrap_or_default();
            let kb: u64 = d
                .child_text("capacityInKB")
                .and_then(|k| k.trim().parse().ok())
                .unwrap_or(0);
            (file, kb * 1024)
        })
        .collect()
}

/// Where a datastore path (`[ds] dir/file`) is on this machine: vcsim keeps
/// each datastore in a local directory, its `info.url`.
async fn local_path(v: &Vsphere, ds_path: &str) -> std::path::PathBuf {
    let (ds, rel) = ds_path
        .strip_prefix('[')
        .and_then(|p| p.split_once("] "))
        .expect("a datastore path");
    let (inv, _) = v.full_inventory().await.expect("inventory");
    for h in &inv.hosts {
        let host = v.moref(false, &h.name).await.expect("host");
        let o = dr_vsphere::inventory::retrieve_one(v.session(), &host, &["datastore"])
            .await
            .expect("datastores");
        for d in o.props["datastore"]
            .children
            .iter()
            .filter_map(dr_vsphere::soap::MoRef::from_element)
        {
            let p = dr_vsphere::inventory::retrieve_one(v.session(), &d, &["name", "info.url"])
                .await
                .expect("datastore");
            if p.props.get("name").map(|n| n.text.trim()) == Some(ds) {
                let url = p.props["info.url"].text.trim().to_owned();
                return std::path::Path::new(url.trim_start_matches("file://")).join(rel);
            }
        }
    }
    panic!("no datastore {ds}")
}

/// `n` disk images a replica's checkpoint was written to, in a new
/// directory: distinct content per disk, sizes (3 MiB and a sector more per
/// disk) that are not the simulator's disks'.
fn write_images(
    tag: &str,
    n: usize,
) -> (std::path::PathBuf, Vec<std::path::PathBuf>, Vec<Vec<u8>>) {
    let dir = std::env::temp_dir().join(format!("drv-images-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut images = Vec::new();
    let mut contents = Vec::new();
    for i in 0..n {
        let bytes: Vec<u8> = (0..(3u32 << 20) + 512 * (i as u32))
            .map(|x| (x.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8)
            .collect();
        let p = dir.join(format!("disk-{i}.img"));
        std::fs::write(&p, &bytes).expect("image");
        images.push(p);
        contents.push(bytes);
    }
    (dir, images, contents)
}

/// The flat extent a descriptor (`x.vmdk`) names by convention (`x-flat.vmdk`).
fn extent_of(descriptor: &std::path::Path) -> std::path::PathBuf {
    descriptor.with_file_name(
        descriptor
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .replace(".vmdk", "-flat.vmdk"),
    )
}

#[tokio::test]
async fn failover_from_replica_images_uploads_them_and_runs_the_vm_from_them() {
    if !available("failover_from_replica_images_uploads_them_and_runs_the_vm_from_them") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_IMAGES").await;
    let (inv, _) = v.full_inventory().await.expect("inventory");
    let vm = inv.vms[0].name.clone();
    let (home, other) = home_and_other(&inv, &vm);
    let vms_before = inv.vms.len();
    let disks = disks_of(&v, &vm).await;
    assert!(!disks.is_empty(), "{vm} has no disk in the simulator");
    let (dir, images, contents) = write_images("failover", disks.len());

    // Refused while the original runs on a host vCenter manages.
    let e = v
        .restore_vm_from_images(&vm, &other, &images)
        .await
        .expect_err("a second copy");
    assert!(
        matches!(
            HypervisorError::from(e),
            HypervisorError::InvalidState { .. }
        ),
        "while running"
    );
    v.power_off(&vm).await.expect("the VM stops with its host");
    // Bad images are refused before anything changes.
    let mut one_too_many = images.clone();
    one_too_many.push(images[0].clone());
    let e = v
        .restore_vm_from_images(&vm, &other, &one_too_many)
        .await
        .expect_err("more images than disks");
    assert!(e.to_string().contains("virtual disks"), "{e}");
    let e = v
        .restore_vm_from_images(&vm, &other, &[dir.join("missing.img")])
        .await
        .expect_err("no such image");
    assert!(
        matches!(
            HypervisorError::from(e),
            HypervisorError::NotFound {
                kind: "disk image",
                ..
            }
        ),
        "missing image"
    );
    let odd = dir.join("odd.img");
    std::fs::write(&odd, b"not sectors").expect("odd");
    let e = v
        .restore_vm_from_images(&vm, &other, &[odd])
        .await
        .expect_err("not whole sectors");
    assert!(e.to_string().contains("512-byte sectors"), "{e}");
    let (same, _) = v.full_inventory().await.expect("inventory");
    assert_eq!(same.vm(&vm).map(|x| x.host.as_str()), Some(home.as_str()));
    assert_eq!(disks_of(&v, &vm).await, disks, "the original is untouched");

    // A crash stopped an earlier restore before the original was
    // unregistered: its new VM is left, under the temporary name.
    let leftover = format!("{vm}.vmdr-restore");
    v.create_snapshot(
        &dr_core::model::SnapshotTarget::Vm(vm.clone()),
        "for-a-copy",
    )
    .await
    .expect("snapshot");
    v.start_drill_copy(
        &vm,
        &other,
        dr_core::model::RestoreSource::Snapshot,
        &leftover,
    )
    .await
    .expect("a VM under the temporary name");
    let e = v
        .restore_vm_from_images(&vm, &other, &images)
        .await
        .expect_err("a running leftover is not touched");
    assert!(e.to_string().contains("left under way"), "{e}");
    v.power_off(&leftover).await.expect("the leftover stops");

    // Its host dies; the failover runs it elsewhere from the images.
    stops_responding(&sim, &home).await;
    v.restore_vm_from_images(&vm, &other, &images)
        .await
        .expect("failover from the images");
    let (after, _) = v.full_inventory().await.expect("inventory");
    let restored = after.vm(&vm).expect("the VM keeps its name");
    assert_eq!(restored.host, other);
    assert_eq!(restored.power, PowerState::On);
    assert_eq!(after.vms.len(), vms_before, "one VM, not two");
    assert!(after.vm(&format!("{vm}.vmdr-restore")).is_none());
    let new_disks = disks_of(&v, &vm).await;
    assert_eq!(new_disks.len(), disks.len());
    for (i, (file, _)) in new_disks.iter().enumerate() {
        assert!(
            file.contains("-vmdr-replica-") && file.ends_with(&format!("_{i}.vmdk")),
            "disk {i} is backed by {file}"
        );
        let local = local_path(&v, file).await;
        let flat = extent_of(&local);
        let data = std::fs::read(&flat).expect("the uploaded extent");
        assert!(data == contents[i], "disk {i}: the extent is not the image");
        let desc = std::fs::read_to_string(&local).expect("the descriptor");
        assert!(
            desc.contains(&format!("RW {} VMFS", contents[i].len() / 512)),
            "{desc}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    v.close().await;
}

#[tokio::test]
async fn a_drill_from_replica_images_runs_isolated_from_their_upload() {
    if !available("a_drill_from_replica_images_runs_isolated_from_their_upload") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_IMAGE_DRILL").await;
    let (inv, _) = v.full_inventory().await.expect("inventory");
    let vm = inv.vms[0].name.clone();
    let (home, other) = home_and_other(&inv, &vm);
    let disks = disks_of(&v, &vm).await;
    let (dir, images, contents) = write_images("drill", disks.len());
    let copy = format!("{vm}-image-drill");
    v.start_drill_copy_from_images(&vm, &other, &images, &copy)
        .await
        .expect("drill copy from the images");
    assert_runs_isolated(&v, &copy).await;
    for (i, (file, _)) in disks_of(&v, &copy).await.iter().enumerate() {
        let local = local_path(&v, file).await;
        assert!(
            std::fs::read(extent_of(&local)).expect("the uploaded extent") == contents[i],
            "disk {i} of the copy is not the image"
        );
    }
    // The original runs on, where it was, on its own disks.
    let (after, _) = v.full_inventory().await.expect("inventory");
    let original = after.vm(&vm).expect("the original");
    assert_eq!(
        (original.host.as_str(), original.power),
        (home.as_str(), PowerState::On)
    );
    assert_eq!(disks_of(&v, &vm).await, disks);
    v.remove_drill_copy(&copy).await.expect("remove");
    let _ = std::fs::remove_dir_all(&dir);
    v.close().await;
}

#[tokio::test]
async fn a_restore_cut_off_after_the_original_was_unregistered_is_finished_by_the_next() {
    if !available("a_restore_cut_off_after_the_original_was_unregistered_is_finished_by_the_next") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let v = connect(&sim, "DRV_PW_RESUME").await;
    let (inv, _) = v.full_inventory().await.expect("inventory");
    let vm = inv.vms[0].name.clone();
    let (_, other) = home_and_other(&inv, &vm);
    let vms_before = inv.vms.len();
    // What a crash between the take-over's steps leaves: the restore's new
    // VM under the temporary name, stopped, and the original unregistered.
    let temp = format!("{vm}.vmdr-restore");
    v.create_snapshot(&dr_core::model::SnapshotTarget::Vm(vm.clone()), "s")
        .await
        .expect("snapshot");
    v.start_drill_copy(&vm, &other, dr_core::model::RestoreSource::Snapshot, &temp)
        .await
        .expect("a VM under the temporary name");
    v.power_off(&temp).await.expect("stopped");
    let new = v.moref(true, &temp).await.expect("the new VM");
    v.power_off(&vm).await.expect("the original stops");
    let original = v.moref(true, &vm).await.expect("the original");
    v.session()
        .invoke("UnregisterVM", &original.xml("_this"))
        .await
        .expect("unregister the original");
    v.close().await;

    // The next process's restore finishes that one.
    let v = connect(&sim, "DRV_PW_RESUME").await;
    let (dir, images, _) = write_images("resume", 1);
    v.restore_vm_from_images(&vm, &other, &images)
        .await
        .expect("the restore under way finished");
    let (after, _) = v.full_inventory().await.expect("inventory");
    let restored = after.vm(&vm).expect("the VM has its name back");
    assert_eq!(restored.power, PowerState::On);
    assert_eq!(
        v.moref(true, &vm).await.expect("the VM"),
        new,
        "it is the restore's new VM"
    );
    assert!(after.vm(&temp).is_none(), "the temporary name is gone");
    assert_eq!(after.vms.len(), vms_before);
    let _ = std::fs::remove_dir_all(&dir);
    v.close().await;
}

/// Sparse disk images of 1 GiB each: an upload takes long enough to be cut
/// off in the middle.
fn large_images(tag: &str, n: usize) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let dir = std::env::temp_dir().join(format!("drv-large-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let images = (0..n)
        .map(|i| {
            let p = dir.join(format!("disk-{i}.img"));
            std::fs::File::create(&p)
                .and_then(|f| f.set_len(1 << 30))
                .expect("image");
            p
        })
        .collect();
    (dir, images)
}

/// Runs `op` (a restore or drill from images) until its upload has begun
/// writing to the datastore, then drops it, as an action timeout does.
/// Returns the local directory it left.
async fn cut_off_while_uploading<F: std::future::Future>(
    v: &Vsphere,
    records: &std::path::Path,
    op: F,
) -> std::path::PathBuf {
    use dr_vsphere::pending::Upload;
    let watch = async {
        let u = loop {
            if let Some(u) = Upload::all(records).pop() {
                break u;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let local = local_path(v, &format!("[{}] {}", u.datastore, u.dir)).await;
        while std::fs::read_dir(&local).map_or(true, |mut d| d.next().is_none()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        local
    };
    tokio::select! {
        _ = op => panic!("the operation ended before it was cut off"),
        local = watch => local,
    }
}

#[tokio::test]
async fn uploads_cut_off_are_removed_by_the_next_restore_and_the_next_connection() {
    if !available("uploads_cut_off_are_removed_by_the_next_restore_and_the_next_connection") {
        return;
    }
    use dr_vsphere::pending::Upload;
    let sim = Vcsim::start(&[]);
    let records = std::env::temp_dir().join(format!("drv-uploads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&records);
    let mut v = connect(&sim, "DRV_PW_UPLOADS").await;
    v.pending_dir = Some(records.clone());
    let (inv, _) = v.full_inventory().await.expect("inventory");
    let vm = inv.vms[0].name.clone();
    let (_, other) = home_and_other(&inv, &vm);
    let n = disks_of(&v, &vm).await.len();
    let (large_dir, large) = large_images("cut", n);
    let (small_dir, small, _) = write_images("after-cut", n);
    v.power_off(&vm).await.expect("the original stops");

    // A failover cut off while it uploads leaves its directory and record.
    let left =
        cut_off_while_uploading(&v, &records, v.restore_vm_from_images(&vm, &other, &large)).await;
    assert!(left.is_dir(), "the cut-off upload is on the datastore");
    assert_eq!(Upload::all(&records).len(), 1);
    let (same, _) = v.full_inventory().await.expect("inventory");
    assert!(
        same.vm(&format!("{vm}.vmdr-restore")).is_none(),
        "no VM was created"
    );
    // The next failover of the VM removes it first, then succeeds.
    v.restore_vm_from_images(&vm, &other, &small)
        .await
        .expect("failover");
    assert!(!left.exists(), "the cut-off upload is gone");
    assert!(Upload::all(&records).is_empty(), "no upload is under way");

    // A record whose directory the VM now runs from is dropped, the
    // directory kept.
    v.full_inventory()
        .await
        .expect("inventory after the failover");
    let file = disks_of(&v, &vm).await[0].0.clone();
    let (ds, rel) = file
        .strip_prefix('[')
        .and_then(|p| p.split_once("] "))
        .expect("a datastore path");
    let owned_dir = rel.split('/').next().expect("a directory").to_owned();
    let datacenter = dr_vsphere::soap::MoRef::new("Datacenter", sim_datacenter(&v).await.as_str());
    Upload {
        vm: vm.clone(),
        datastore: ds.to_owned(),
        dir: owned_dir.clone(),
        datacenter: datacenter.clone(),
    }
    .save(&records)
    .expect("record");
    let done = v.remove_abandoned_uploads().await;
    assert_eq!(done.len(), 1);
    assert!(done[0].1.is_ok(), "{done:?}");
    let owned_local = local_path(&v, &format!("[{ds}] {owned_dir}")).await;
    assert!(owned_local.is_dir(), "the VM's files stay");
    assert!(Upload::all(&records).is_empty());

    // A drill cut off while it uploads: the next connection removes it.
    let copy = format!("{vm}-cut-drill");
    let left = cut_off_while_uploading(
        &v,
        &records,
        v.start_drill_copy_from_images(&vm, &other, &large, &copy),
    )
    .await;
    assert!(left.is_dir());
    v.close().await;
    let mut next = connect(&sim, "DRV_PW_UPLOADS").await;
    next.pending_dir = Some(records.clone());
    let done = next.remove_abandoned_uploads().await;
    assert_eq!(done.len(), 1);
    assert!(done[0].1.is_ok(), "{done:?}");
    assert_eq!(done[0].0, copy);
    assert!(!left.exists(), "the drill's cut-off upload is gone");
    assert!(Upload::all(&records).is_empty());
    assert!(next.remove_abandoned_uploads().await.is_empty());
    for d in [large_dir, small_dir, records] {
        let _ = std::fs::remove_dir_all(d);
    }
    next.close().await;
}

/// The simulator's datacenter's reference value.
async fn sim_datacenter(v: &Vsphere) -> String {
    let root = v.session().content().root_folder.clone();
    let o = dr_vsphere::inventory::retrieve_one(v.session(), &root, &["childEntity"])
        .await
        .expect("root folder");
    o.props["childEntity"]
        .children
        .iter()
        .filter_map(dr_vsphere::soap::MoRef::from_element)
        .find(|m| m.kind == "Datacenter")
        .expect("a datacenter")
        .value
}
