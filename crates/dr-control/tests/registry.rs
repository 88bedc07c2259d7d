//! Inventory sync: new objects are monitored, removed ones forgotten, facts
//! survive by name, VMs never seen with an IP are not monitored.

use dr_control::registry::Registry;
use dr_core::model::{Heartbeat, HostInfo, HostLink, Inventory, PowerState, Vitals, VmInfo};
use std::net::IpAddr;

fn host(name: &str) -> HostInfo {
    HostInfo {
        name: name.into(),
        ip: Some(format!("10.0.0.{}", name.len()).parse().expect("ip")),
        site: "primary".into(),
        link: HostLink::Connected,
        cpu_mhz: 10_000,
        memory_mb: 16_384,
        snapshot_count: 0,
        vitals: Vitals::default(),
        signals: Default::default(),
    }
}

fn vm(name: &str, host: &str, ip: Option<&str>, power: PowerState) -> VmInfo {
    VmInfo {
        name: name.into(),
        ip: ip.map(|s| s.parse::<IpAddr>().expect("ip")),
        host: host.into(),
        power,
        heartbeat: Heartbeat::Ok,
        cpu_mhz: 1_000,
        cpu_reservation_mhz: 0,
        memory_mb: 2_048,
        snapshot_count: 1,
        replica_available: false,
        shared_disks: false,
        vitals: Vitals::default(),
    }
}

#[test]
fn sync_adds_removes_and_keeps_state_by_name() {
    let mut reg = Registry::default();
    let inv = Inventory {
        hosts: vec![host("h1"), host("h22")],
        vms: vec![
            vm("a", "h1", Some("10.1.0.1"), PowerState::On),
            vm("b", "h22", Some("10.1.0.2"), PowerState::On),
            vm("no-ip", "h1", None, PowerState::On),
        ],
    };
    let diff = reg.sync(&inv);
    assert_eq!(diff.added_hosts, ["h1", "h22"]);
    assert_eq!(
        diff.added_vms,
        ["a", "b", "no-ip"],
        "a VM never seen with an IP is monitored too (by the hypervisor's view)"
    );
    let no_ip = reg.vm_idx("no-ip").expect("no-ip");
    assert_eq!(reg.vm_entries[no_ip].ip, None);
    let b = reg.vm_idx("b").expect("b");
    reg.vms[b].probe_failures = 2;
    reg.vms[b].failed_attempts = 1;

    // h1 and "a" go away, "c" arrives, "b" stopped reporting its IP.
    let inv2 = Inventory {
        hosts: vec![host("h22"), host("h333")],
        vms: vec![
            vm("c", "h333", Some("10.1.0.3"), PowerState::On),
            vm("b", "h22", None, PowerState::Off),
        ],
    };
    let diff = reg.sync(&inv2);
    assert_eq!(diff.added_hosts, ["h333"]);
    assert_eq!(diff.removed_hosts, ["h1"]);
    assert_eq!(diff.added_vms, ["c"]);
    assert_eq!(diff.removed_vms, ["a", "no-ip"]);
    let b = reg.vm_idx("b").expect("b kept");
    assert_eq!(reg.vms[b].probe_failures, 2, "facts survive a sync");
    assert_eq!(reg.vms[b].failed_attempts, 1);
    assert_eq!(
        reg.vm_entries[b].ip,
        Some("10.1.0.2".parse::<IpAddr>().expect("ip")),
        "last known IP kept"
    );
    assert_eq!(reg.host_name(reg.vms[b].host), "h22", "host index remapped");
    assert!(reg.vm_idx("a").is_none());
    assert!(
        reg.sync(&inv2).is_empty(),
        "a second identical sync changes nothing"
    );
}

#[test]
fn a_vm_found_off_counts_as_stopped_by_intent() {
    let mut reg = Registry::default();
    let inv = Inventory {
        hosts: vec![host("h1")],
        vms: vec![vm("off", "h1", Some("10.1.0.9"), PowerState::Off)],
    };
    reg.sync(&inv);
    let i = reg.vm_idx("off").expect("monitored");
    assert_eq!(reg.vms[i].off_cause, dr_core::engine::OffCause::User);
}

#[test]
fn a_held_vm_gets_no_recovery_before_the_hold_ends() {
    let mut reg = Registry::default();
    reg.hold("a".into(), dr_core::Timestamp(5_000));
    let inv = Inventory {
        hosts: vec![host("h1")],
        vms: vec![
            vm("a", "h1", Some("10.1.0.1"), PowerState::On),
            vm("b", "h1", Some("10.1.0.2"), PowerState::On),
        ],
    };
    reg.sync(&inv);
    let (a, b) = (reg.vm_idx("a").expect("a"), reg.vm_idx("b").expect("b"));
    assert_eq!(reg.vms[a].retry_at, dr_core::Timestamp(5_000));
    assert_eq!(reg.vms[b].retry_at, dr_core::Timestamp::ZERO);
    // A VM monitored already (a cluster node taking over) is held at once,
    // not from the next sync on.
    reg.hold("b".into(), dr_core::Timestamp(7_000));
    assert_eq!(reg.vms[b].retry_at, dr_core::Timestamp(7_000));
    reg.sync(&inv);
    let b = reg.vm_idx("b").expect("b");
    assert_eq!(reg.vms[b].retry_at, dr_core::Timestamp(7_000));
}

#[test]
fn a_drill_copy_is_never_monitored() {
    let mut reg = Registry::default();
    let copy = dr_core::model::drill_copy_name("a", 1234);
    let inv = Inventory {
        hosts: vec![host("h1")],
        vms: vec![
            vm("a", "h1", Some("10.1.0.1"), PowerState::On),
            vm(&copy, "h1", None, PowerState::On),
        ],
    };
    let diff = reg.sync(&inv);
    assert_eq!(diff.added_vms, ["a"]);
    assert!(reg.vm_idx(&copy).is_none());
}

/// Disks the site shares make a VM restorable on another host of its site,
/// but they are not a snapshot: a VM without one must never be sent to a
/// revert (the engine escalates a flapping VM to its snapshot).
#[test]
fn shared_disks_are_a_restore_source_not_a_snapshot() {
    let mut reg = Registry::default();
    let mut shared = vm("shared", "h1", Some("10.1.0.1"), PowerState::On);
    shared.snapshot_count = 0;
    shared.shared_disks = true;
    let inv = Inventory {
        hosts: vec![host("h1"), host("h22")],
        vms: vec![shared],
    };
    reg.sync(&inv);
    reg.refresh(
        &inv,
        &dr_core::Policy::default(),
        dr_core::Timestamp(0),
        &dr_control::events::TracingSink,
    );
    let i = reg.vm_idx("shared").expect("shared");
    assert!(reg.vms[i].shared_disks);
    assert!(
        !reg.vms[i].has_snapshot,
        "shared disks counted as a snapshot"
    );
}

#[test]
fn cpu_counts_by_reservation_or_nominal_over_the_overcommit() {
    // 48 VMs of 2 GHz on one host of 40 GHz: nominally 96 GHz, more than
    // the host; overcommitted 4:1 as restores count it, 24 GHz.
    let mut reg = Registry::default();
    let mut vms: Vec<VmInfo> = (0..48)
        .map(|i| {
            let mut v = vm(&format!("vm-{i}"), "h1", Some("10.1.0.1"), PowerState::On);
            v.cpu_mhz = 2_000;
            v
        })
        .collect();
    // One with a reservation: it costs that, whatever its nominal size.
    vms[0].cpu_reservation_mhz = 1_500;
    let mut h1 = host("h1");
    h1.cpu_mhz = 40_000;
    let inv = Inventory {
        hosts: vec![h1],
        vms,
    };
    reg.sync(&inv);
    let policy = dr_core::Policy::default();
    assert_eq!(policy.cpu_overcommit, 4);
    reg.refresh(
        &inv,
        &policy,
        dr_core::Timestamp(0),
        &dr_control::events::TracingSink,
    );
    let cost = |name: &str| reg.vms[reg.vm_idx(name).expect("vm")].cpu_mhz;
    assert_eq!(cost("vm-0"), 1_500);
    assert_eq!(cost("vm-1"), 500);
    let h = reg.host_idx("h1").expect("h1");
    assert_eq!(reg.hosts[h].free_cpu_mhz, 40_000 - 1_500 - 47 * 500);
    // No overcommit: nominal CPU is a hard reservation again.
    let strict = dr_core::Policy {
        cpu_overcommit: 1,
        ..dr_core::Policy::default()
    };
    reg.refresh(
        &inv,
        &strict,
        dr_core::Timestamp(0),
        &dr_control::events::TracingSink,
    );
    assert_eq!(reg.vms[reg.vm_idx("vm-1").expect("vm")].cpu_mhz, 2_000);
    assert_eq!(reg.hosts[h].free_cpu_mhz, 0);
}

#[test]
fn a_vm_being_restored_takes_its_room_on_its_target_once() {
    let mut reg = Registry::default();
    let mut h1 = host("h1");
    h1.memory_mb = 16_384;
    let mut h2 = host("h2");
    h2.memory_mb = 16_384;
    let lost = vm("lost", "h1", Some("10.1.0.1"), PowerState::Off);
    let mut inv = Inventory {
        hosts: vec![h1, h2],
        vms: vec![lost],
    };
    reg.sync(&inv);
    let policy = dr_core::Policy::default();
    let free = |reg: &Registry| reg.hosts[reg.host_idx("h2").expect("h2")].free_memory_mb;
    let sink = dr_control::events::TracingSink;
    reg.refresh(&inv, &policy, dr_core::Timestamp(0), &sink);
    assert_eq!(free(&reg), 16_384);
    // Restore under way: its 2 GiB are taken on h2 before it runs there.
    reg.arriving("lost", Some("h2"));
    reg.refresh(&inv, &policy, dr_core::Timestamp(1), &sink);
    assert_eq!(free(&reg), 16_384 - 2_048);
    // Running there: counted once, not twice.
    inv.vms[0].host = "h2".into();
    inv.vms[0].power = PowerState::On;
    reg.refresh(&inv, &policy, dr_core::Timestamp(2), &sink);
    assert_eq!(free(&reg), 16_384 - 2_048);
    // A restore that ended without it running there gives the room back.
    inv.vms[0].host = "h1".into();
    inv.vms[0].power = PowerState::Off;
    reg.arriving("lost", None);
    reg.refresh(&inv, &policy, dr_core::Timestamp(3), &sink);
    assert_eq!(free(&reg), 16_384);
}
