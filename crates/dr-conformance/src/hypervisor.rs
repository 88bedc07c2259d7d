//! The `Hypervisor` conformance suite.

use dr_core::model::{
    Actor, HostLink, Inventory, PowerEventKind, PowerState, RestoreSource, SnapshotTarget, VmInfo,
};
use dr_core::ports::{Hypervisor, HypervisorError, HypervisorExt};
use dr_core::Timestamp;

/// Objects the suite may use and change.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// A powered-on VM the suite may power-cycle, snapshot, revert, restore
    /// and migrate. It is left powered on.
    pub vm: String,
    /// A connected host other than the VM's, with room for it.
    pub other_host: String,
    /// A standby host the suite may add (only with `Capabilities::add_host`).
    pub standby_host: Option<String>,
    /// How many virtual disks the VM has: a restore from disk images
    /// (`Capabilities::images`) is given one image per disk.
    pub disks: usize,
}

/// Runs every test of the suite, in an order where each leaves the fixture
/// VM powered on.
pub async fn run_all(hv: &dyn Hypervisor, fx: &Fixture) {
    inventory_is_consistent(hv).await;
    unknown_objects_are_not_found(hv).await;
    power_cycle(hv, &fx.vm).await;
    double_power_on_is_invalid_state(hv, &fx.vm).await;
    power_events_name_the_orchestrator(hv, &fx.vm).await;
    reset_running_vm(hv, &fx.vm).await;
    vm_snapshot_lifecycle(hv, &fx.vm).await;
    prune_keeps_the_newest(hv, &fx.vm).await;
    cold_migration(hv, &fx.vm, &fx.other_host).await;
    restore_onto_another_host(hv, &fx.vm, &fx.other_host).await;
    if hv.capabilities().images {
        restore_from_images(hv, &fx.vm, &fx.other_host, fx.disks).await;
    }
    drill_copy_lifecycle(hv, &fx.vm, &fx.other_host).await;
    if hv.capabilities().images && hv.capabilities().drills {
        drill_from_images(hv, &fx.vm, &fx.other_host, fx.disks).await;
    }
    if hv.capabilities().host_recovery {
        host_snapshot_lifecycle(hv, &fx.other_host).await;
        recovering_a_healthy_host_is_refused(hv, &fx.other_host).await;
    }
    if let (true, Some(spare)) = (hv.capabilities().add_host, &fx.standby_host) {
        add_standby_host(hv, spare).await;
    }
}

async fn inventory(hv: &dyn Hypervisor) -> Inventory {
    hv.inventory()
        .await
        .unwrap_or_else(|e| panic!("inventory failed: {e}"))
}

async fn vm_info(hv: &dyn Hypervisor, vm: &str) -> VmInfo {
    inventory(hv)
        .await
        .vm(vm)
        .cloned()
        .unwrap_or_else(|| panic!("vm {vm} missing from the inventory"))
}

/// Names are unique, every VM's host is in the inventory, and a running VM
/// on a connected host reports a known power state.
pub async fn inventory_is_consistent(hv: &dyn Hypervisor) {
    let inv = inventory(hv).await;
    assert!(!inv.hosts.is_empty(), "inventory lists no host");
    let mut names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), inv.hosts.len(), "host names are not unique");
    let mut vms: Vec<&str> = inv.vms.iter().map(|v| v.name.as_str()).collect();
    vms.sort_unstable();
    vms.dedup();
    assert_eq!(vms.len(), inv.vms.len(), "vm names are not unique");
    for vm in &inv.vms {
        let host = inv
            .host(&vm.host)
            .unwrap_or_else(|| panic!("vm {} is on unknown host {}", vm.name, vm.host));
        if host.link == HostLink::Connected {
            assert_ne!(
                vm.power,
                PowerState::Unknown,
                "vm {} on connected host {} has unknown power",
                vm.name,
                host.name
            );
        }
        assert!(vm.memory_mb > 0, "vm {} reports no memory", vm.name);
        // Its size, which a restore target is charged by (over the
        // policy's overcommit), wherever its host says how fast it is.
        if host.cpu_mhz > 0 && vm.power == PowerState::On {
            assert!(vm.cpu_mhz > 0, "vm {} reports no CPU size", vm.name);
        }
    }
    // Usage figures, which restores are spread by: within the host, and a
    // host's CPU in use at least what its running VMs use.
    for h in &inv.hosts {
        assert!(h.memory_mb > 0, "host {} reports no memory", h.name);
        assert!(
            h.vitals.memory_mb <= h.memory_mb,
            "host {} uses {} MiB of its {} MiB",
            h.name,
            h.vitals.memory_mb,
            h.memory_mb
        );
        let guests: u64 = inv
            .vms
            .iter()
            .filter(|v| v.host == h.name && v.power == PowerState::On)
            .map(|v| u64::from(v.vitals.cpu_mhz))
            .sum();
        assert!(
            u64::from(h.vitals.cpu_mhz) >= guests,
            "host {} reports {} MHz in use, less than its running VMs' {guests}",
            h.name,
            h.vitals.cpu_mhz
        );
    }
}

/// Every operation on a name that does not exist is `NotFound`.
pub async fn unknown_objects_are_not_found(hv: &dyn Hypervisor) {
    let ghost = "vmdr-conformance-no-such-object";
    let is_not_found = |r: Result<(), HypervisorError>, op: &str| match r {
        Err(HypervisorError::NotFound { .. }) => {}
        other => panic!("{op} on an unknown object: expected NotFound, got {other:?}"),
    };
    is_not_found(hv.power_on(ghost).await, "power_on");
    is_not_found(hv.power_off(ghost).await, "power_off");
    is_not_found(hv.reset(ghost).await, "reset");
    is_not_found(hv.revert_vm(ghost, None).await, "revert_vm");
    is_not_found(hv.migrate_vm(ghost, ghost).await, "migrate_vm");
    is_not_found(
        hv.restore_vm(ghost, ghost, RestoreSource::Snapshot).await,
        "restore_vm",
    );
    is_not_found(
        hv.list_snapshots(&SnapshotTarget::Vm(ghost.into()))
            .await
            .map(drop),
        "list_snapshots",
    );
}

/// Power off then on; the inventory follows.
pub async fn power_cycle(hv: &dyn Hypervisor, vm: &str) {
    assert_eq!(
        vm_info(hv, vm).await.power,
        PowerState::On,
        "fixture vm {vm} must start powered on"
    );
    hv.power_off(vm)
        .await
        .unwrap_or_else(|e| panic!("power_off {vm}: {e}"));
    assert_eq!(
        vm_info(hv, vm).await.power,
        PowerState::Off,
        "power_off did not stop {vm}"
    );
    hv.power_on(vm)
        .await
        .unwrap_or_else(|e| panic!("power_on {vm}: {e}"));
    assert_eq!(
        vm_info(hv, vm).await.power,
        PowerState::On,
        "power_on did not start {vm}"
    );
}

/// Powering on a running VM is `InvalidState`, not success and not another
/// copy.
pub async fn double_power_on_is_invalid_state(hv: &dyn Hypervisor, vm: &str) {
    match hv.power_on(vm).await {
        Err(HypervisorError::InvalidState { .. }) => {}
        other => panic!("power_on of running {vm}: expected InvalidState, got {other:?}"),
    }
}

/// The event log records the orchestrator's own power-off as the
/// orchestrator's, never as a user's (or vmdr would leave its own VM off).
pub async fn power_events_name_the_orchestrator(hv: &dyn Hypervisor, vm: &str) {
    let events = hv
        .power_events(Timestamp::ZERO)
        .await
        .unwrap_or_else(|e| panic!("power_events: {e}"));
    let off = events
        .iter()
        .rev()
        .find(|e| e.vm == vm && e.kind == PowerEventKind::PoweredOff)
        .unwrap_or_else(|| panic!("no PoweredOff event for {vm} after power_cycle"));
    assert_eq!(
        off.by,
        Actor::Orchestrator,
        "vmdr's power-off of {vm} is attributed to {:?}",
        off.by
    );
    assert!(
        events.windows(2).all(|w| w[0].at <= w[1].at),
        "power events are not oldest first"
    );
}

/// A running VM can be reset and stays on.
pub async fn reset_running_vm(hv: &dyn Hypervisor, vm: &str) {
    hv.reset(vm)
        .await
        .unwrap_or_else(|e| panic!("reset {vm}: {e}"));
    assert_eq!(
        vm_info(hv, vm).await.power,
        PowerState::On,
        "{vm} not on after reset"
    );
}

/// Create, list, revert (leaves it off), power on, remove.
pub async fn vm_snapshot_lifecycle(hv: &dyn Hypervisor, vm: &str) {
    let target = SnapshotTarget::Vm(vm.to_owned());
    let before = hv
        .list_snapshots(&target)
        .await
        .unwrap_or_else(|e| panic!("list_snapshots {vm}: {e}"));
    let snap = hv
        .create_snapshot(&target, "conformance")
        .await
        .unwrap_or_else(|e| panic!("create_snapshot {vm}: {e}"));
    assert_eq!(snap.name, "conformance");
    let after = hv
        .list_snapshots(&target)
        .await
        .unwrap_or_else(|e| panic!("list_snapshots {vm}: {e}"));
    assert_eq!(
        after.len(),
        before.len() + 1,
        "snapshot count did not grow by one"
    );
    assert!(
        after.iter().any(|s| s.id == snap.id),
        "new snapshot not listed"
    );
    assert!(
        vm_info(hv, vm).await.snapshot_count as usize >= after.len(),
        "inventory snapshot_count lags the list"
    );
    hv.revert_vm(vm, Some(&snap.id))
        .await
        .unwrap_or_else(|e| panic!("revert_vm {vm}: {e}"));
    assert_eq!(
        vm_info(hv, vm).await.power,
        PowerState::Off,
        "revert must leave {vm} powered off"
    );
    hv.power_on(vm)
        .await
        .unwrap_or_else(|e| panic!("power_on after revert: {e}"));
    hv.remove_snapshot(&target, &snap.id)
        .await
        .unwrap_or_else(|e| panic!("remove_snapshot: {e}"));
    let end = hv
        .list_snapshots(&target)
        .await
        .unwrap_or_else(|e| panic!("list_snapshots: {e}"));
    assert!(
        !end.iter().any(|s| s.id == snap.id),
        "removed snapshot still listed"
    );
    match hv.remove_snapshot(&target, &snap.id).await {
        Err(HypervisorError::NotFound { .. }) => {}
        other => panic!("removing a removed snapshot: expected NotFound, got {other:?}"),
    }
}

/// Rotation keeps exactly the newest `keep`.
pub async fn prune_keeps_the_newest(hv: &dyn Hypervisor, vm: &str) {
    let target = SnapshotTarget::Vm(vm.to_owned());
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(
            hv.rotate_snapshots(&target, &format!("rot-{i}"), 2)
                .await
                .unwrap_or_else(|e| panic!("rotate_snapshots: {e}")),
        );
    }
    let left = hv
        .list_snapshots(&target)
        .await
        .unwrap_or_else(|e| panic!("list_snapshots: {e}"));
    assert_eq!(left.len(), 2, "rotation to 2 left {} snapshots", left.len());
    assert!(
        left.iter().any(|s| s.id == made[2].id),
        "newest snapshot was pruned"
    );
    assert_eq!(
        hv.prune_snapshots(&target, 0).await.ok(),
        Some(2),
        "prune to 0 did not remove both"
    );
    assert!(
        hv.list_snapshots(&target)
            .await
            .map(|l| l.is_empty())
            .unwrap_or(false),
        "prune to 0 left snapshots"
    );
}

/// A running VM cannot be migrated cold; a stopped one moves.
pub async fn cold_migration(hv: &dyn Hypervisor, vm: &str, other: &str) {
    match hv.migrate_vm(vm, other).await {
        Err(HypervisorError::InvalidState { .. }) => {}
        other_result => {
            panic!("cold migration of running {vm}: expected InvalidState, got {other_result:?}")
        }
    }
    let home = vm_info(hv, vm).await.host;
    hv.power_off(vm)
        .await
        .unwrap_or_else(|e| panic!("power_off {vm}: {e}"));
    hv.migrate_vm(vm, other)
        .await
        .unwrap_or_else(|e| panic!("migrate_vm {vm} -> {other}: {e}"));
    assert_eq!(
        vm_info(hv, vm).await.host,
        other,
        "{vm} not on {other} after migration"
    );
    hv.migrate_vm(vm, &home)
        .await
        .unwrap_or_else(|e| panic!("migrate_vm back: {e}"));
    hv.power_on(vm)
        .await
        .unwrap_or_else(|e| panic!("power_on {vm}: {e}"));
}

/// A restore is refused while the original runs; a stopped VM with a
/// snapshot is brought up on another host: registered there and powered on.
pub async fn restore_onto_another_host(hv: &dyn Hypervisor, vm: &str, other: &str) {
    let target = SnapshotTarget::Vm(vm.to_owned());
    hv.create_snapshot(&target, "before-restore")
        .await
        .unwrap_or_else(|e| panic!("create_snapshot: {e}"));
    match hv.restore_vm(vm, other, RestoreSource::Snapshot).await {
        Err(HypervisorError::InvalidState { .. }) => {}
        r => panic!(
            "restore of {vm} while it runs: expected InvalidState (a second copy), got {r:?}"
        ),
    }
    hv.power_off(vm)
        .await
        .unwrap_or_else(|e| panic!("power_off {vm}: {e}"));
    hv.restore_vm(vm, other, RestoreSource::Snapshot)
        .await
        .unwrap_or_else(|e| panic!("restore_vm {vm} -> {other}: {e}"));
    let info = vm_info(hv, vm).await;
    assert_eq!(info.host, other, "restored {vm} is not on {other}");
    assert_eq!(
        info.power,
        PowerState::On,
        "restored {vm} is not powered on"
    );
    if hv.capabilities().replicas {
        hv.power_off(vm)
            .await
            .unwrap_or_else(|e| panic!("power_off {vm}: {e}"));
        let home = inventory(hv)
            .await
            .hosts
            .into_iter()
            .find(|h| h.name != other && h.link == HostLink::Connected);
        let home = home
            .unwrap_or_else(|| panic!("no second connected host to restore {vm} back to"))
            .name;
        hv.restore_vm(vm, &home, RestoreSource::Replica)
            .await
            .unwrap_or_else(|e| panic!("restore_vm from replica: {e}"));
        assert_eq!(
            vm_info(hv, vm).await.host,
            home,
            "replica restore did not place {vm} on {home}"
        );
    }
}

/// `disks` disk images of 1 MiB in a new directory.
fn write_images(
    vm: &str,
    tag: &str,
    disks: usize,
) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let dir = std::env::temp_dir().join(format!(
        "dr-conformance-images-{}-{vm}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let images = (0..disks.max(1))
        .map(|i| {
            let p = dir.join(format!("disk-{i}.img"));
            let data: Vec<u8> = (0..1u32 << 20).map(|n| (n >> 9) as u8 ^ i as u8).collect();
            std::fs::write(&p, data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            p
        })
        .collect();
    (dir, images)
}

/// A drill from disk images leaves the original running where it was;
/// its copy cannot be started twice under one name; a missing image
/// starts nothing.
pub async fn drill_from_images(hv: &dyn Hypervisor, vm: &str, other: &str, disks: usize) {
    if vm_info(hv, vm).await.power != PowerState::On {
        hv.power_on(vm)
            .await
            .unwrap_or_else(|e| panic!("power_on {vm}: {e}"));
    }
    let (dir, images) = write_images(vm, "drill", disks);
    let before = vm_info(hv, vm).await;
    let copy = format!("{vm}-conformance-image-drill");
    hv.start_drill_copy_from_images(vm, other, &images, &copy)
        .await
        .unwrap_or_else(|e| panic!("start_drill_copy_from_images {vm} -> {other}: {e}"));
    let after = vm_info(hv, vm).await;
    assert_eq!(
        (after.host.as_str(), after.power),
        (before.host.as_str(), PowerState::On),
        "the original moved or stopped during a drill from images"
    );
    match hv
        .start_drill_copy_from_images(vm, other, &images, &copy)
        .await
    {
        Err(HypervisorError::InvalidState { .. }) => {}
        r => panic!("a second drill copy under one name: expected InvalidState, got {r:?}"),
    }
    let mut missing = images.clone();
    missing[0] = dir.join("no-such-image.img");
    let second = format!("{copy}-2");
    match hv
        .start_drill_copy_from_images(vm, other, &missing, &second)
        .await
    {
        Err(HypervisorError::NotFound { .. }) => {}
        r => panic!("a drill from a missing image: expected NotFound, got {r:?}"),
    }
    match hv.remove_drill_copy(&second).await {
        Err(HypervisorError::NotFound { .. }) => {}
        r => panic!("a refused drill left a copy: {r:?}"),
    }
    hv.remove_drill_copy(&copy)
        .await
        .unwrap_or_else(|e| panic!("remove_drill_copy: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restore from disk images (as a replica's receiver writes them) is
/// refused while the original runs and when an image is missing, leaving
/// the VM where it was; a stopped VM comes back on the other host, powered
/// on.
pub async fn restore_from_images(hv: &dyn Hypervisor, vm: &str, other: &str, disks: usize) {
    let (dir, images) = write_images(vm, "restore", disks);
    // Whatever the host the last test left it on.
    let home = vm_info(hv, vm).await.host;
    let target = if home == other {
        inventory(hv)
            .await
            .hosts
            .into_iter()
            .find(|h| h.name != other && h.link == HostLink::Connected)
            .unwrap_or_else(|| panic!("no second connected host for {vm}"))
            .name
    } else {
        other.to_owned()
    };
    match hv.restore_vm_from_images(vm, &target, &images).await {
        Err(HypervisorError::InvalidState { .. }) => {}
        r => panic!(
            "restore of {vm} from images while it runs: expected InvalidState (a second copy), got {r:?}"
        ),
    }
    hv.power_off(vm)
        .await
        .unwrap_or_else(|e| panic!("power_off {vm}: {e}"));
    let mut missing = images.clone();
    missing[0] = dir.join("no-such-image.img");
    match hv.restore_vm_from_images(vm, &target, &missing).await {
        Err(HypervisorError::NotFound { .. }) => {}
        r => panic!("restore of {vm} from a missing image: expected NotFound, got {r:?}"),
    }
    assert_eq!(
        vm_info(hv, vm).await.host,
        home,
        "a refused restore moved {vm}"
    );
    hv.restore_vm_from_images(vm, &target, &images)
        .await
        .unwrap_or_else(|e| panic!("restore_vm_from_images {vm} -> {target}: {e}"));
    let info = vm_info(hv, vm).await;
    assert_eq!(
        info.host, target,
        "{vm} restored from images is not on {target}"
    );
    assert_eq!(
        info.power,
        PowerState::On,
        "{vm} restored from images is not powered on"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Host snapshots: create, list, remove.
pub async fn host_snapshot_lifecycle(hv: &dyn Hypervisor, host: &str) {
    let target = SnapshotTarget::Host(host.to_owned());
    let snap = hv
        .create_snapshot(&target, "host-conformance")
        .await
        .unwrap_or_else(|e| panic!("host snapshot {host}: {e}"));
    let list = hv
        .list_snapshots(&target)
        .await
        .unwrap_or_else(|e| panic!("list host snapshots: {e}"));
    assert!(
        list.iter().any(|s| s.id == snap.id),
        "host snapshot not listed"
    );
    assert!(
        inventory(hv)
            .await
            .host(host)
            .map(|h| h.snapshot_count)
            .unwrap_or(0)
            >= 1,
        "host snapshot_count not updated"
    );
}

/// Recovering a host that is fine is refused, not a reboot of a healthy host.
pub async fn recovering_a_healthy_host_is_refused(hv: &dyn Hypervisor, host: &str) {
    match hv.recover_host(host).await {
        Err(HypervisorError::InvalidState { .. }) => {}
        other => panic!("recover_host of healthy {host}: expected InvalidState, got {other:?}"),
    }
}

/// A standby host is added and then connected; adding it again is refused.
pub async fn add_standby_host(hv: &dyn Hypervisor, host: &str) {
    let before = inventory(hv).await.host(host).map(|h| h.link);
    assert_eq!(
        before,
        Some(HostLink::Standby),
        "fixture standby host {host} is not standby"
    );
    hv.add_host(host)
        .await
        .unwrap_or_else(|e| panic!("add_host {host}: {e}"));
    assert_eq!(
        inventory(hv).await.host(host).map(|h| h.link),
        Some(HostLink::Connected),
        "{host} not connected after add_host"
    );
    match hv.add_host(host).await {
        Err(HypervisorError::InvalidState { .. }) => {}
        other => panic!("adding {host} twice: expected InvalidState, got {other:?}"),
    }
}

/// A drill copy comes up beside the running original without touching it,
/// cannot be started twice under one name, and goes away; a backend without
/// drills says `Unsupported`.
pub async fn drill_copy_lifecycle(hv: &dyn Hypervisor, vm: &str, other: &str) {
    let copy = format!("{vm}-conformance-drill");
    if !hv.capabilities().drills {
        match hv
            .start_drill_copy(vm, other, RestoreSource::Snapshot, &copy)
            .await
        {
            Err(HypervisorError::Unsupported { .. }) => return,
            r => panic!("a backend without drills started one: {r:?}"),
        }
    }
    if vm_info(hv, vm).await.power != PowerState::On {
        hv.power_on(vm)
            .await
            .unwrap_or_else(|e| panic!("power_on {vm}: {e}"));
    }
    hv.create_snapshot(&SnapshotTarget::Vm(vm.to_owned()), "before-drill")
        .await
        .unwrap_or_else(|e| panic!("create_snapshot: {e}"));
    let before = vm_info(hv, vm).await;
    // The copy goes on a host of the VM's own site (its snapshots are there).
    let site_of = |inv: &Inventory, h: &str| {
        inv.hosts
            .iter()
            .find(|x| x.name == h)
            .map(|x| x.site.clone())
    };
    let inv = inventory(hv).await;
    let host = if site_of(&inv, other) == site_of(&inv, &before.host) {
        other.to_owned()
    } else {
        before.host.clone()
    };
    hv.start_drill_copy(vm, &host, RestoreSource::Snapshot, &copy)
        .await
        .unwrap_or_else(|e| panic!("start_drill_copy {vm} -> {host}: {e}"));
    let after = vm_info(hv, vm).await;
    assert_eq!(
        (after.host.as_str(), after.power),
        (before.host.as_str(), PowerState::On),
        "the original moved or stopped during a drill"
    );
    match hv
        .start_drill_copy(vm, &host, RestoreSource::Snapshot, &copy)
        .await
    {
        Err(HypervisorError::InvalidState { .. }) => {}
        r => panic!("a second drill copy under one name: expected InvalidState, got {r:?}"),
    }
    hv.remove_drill_copy(&copy)
        .await
        .unwrap_or_else(|e| panic!("remove_drill_copy: {e}"));
    match hv.remove_drill_copy(&copy).await {
        Err(HypervisorError::NotFound { .. }) => {}
        r => panic!("removing a removed drill copy: expected NotFound, got {r:?}"),
    }
}
