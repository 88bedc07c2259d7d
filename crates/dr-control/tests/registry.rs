//! Inventory sync: new objects are monitored, removed ones forgotten, facts
//! survive by name, VMs never seen with an IP are not monitored.

use dr_control::registry::Registry;
use dr_core::engine::{cpu_demand, HostLoad};
use dr_core::model::{Heartbeat, HostInfo, HostLink, Inventory, PowerState, Vitals, VmInfo};
use dr_core::SitePolicy;
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
        memory_overhead_mb: 0,
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
    // The facts keep both figures; a target prices them at its overcommit.
    let facts = |reg: &Registry, name: &str| reg.vms[reg.vm_idx(name).expect("vm")];
    assert_eq!(facts(&reg, "vm-0").cpu_mhz, 2_000);
    assert_eq!(facts(&reg, "vm-0").cpu_reservation_mhz, 1_500);
    let h = reg.host_idx("h1").expect("h1");
    assert_eq!(reg.hosts[h].cpu_overcommit, 4);
    let cost = |reg: &Registry, name: &str| {
        let v = facts(reg, name);
        cpu_demand(
            v.cpu_mhz,
            v.cpu_reservation_mhz,
            reg.hosts[h].cpu_overcommit,
        )
    };
    assert_eq!(cost(&reg, "vm-0"), 1_500);
    assert_eq!(cost(&reg, "vm-1"), 500);
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
    assert_eq!(cost(&reg, "vm-1"), 2_000);
    assert_eq!(reg.hosts[h].free_cpu_mhz, 0);
    // The same, for this host's site only ("primary"): the policy's ratio
    // is for every other site.
    let per_site = dr_core::Policy {
        sites: [(
            "primary".to_owned(),
            SitePolicy {
                cpu_overcommit: Some(1),
                ..SitePolicy::default()
            },
        )]
        .into(),
        ..dr_core::Policy::default()
    };
    per_site.validate().expect("valid");
    reg.refresh(
        &inv,
        &per_site,
        dr_core::Timestamp(0),
        &dr_control::events::TracingSink,
    );
    assert_eq!(reg.hosts[h].cpu_overcommit, 1);
    assert_eq!(reg.hosts[h].free_cpu_mhz, 0);
    let zero = dr_core::Policy {
        sites: [(
            "primary".to_owned(),
            SitePolicy {
                cpu_overcommit: Some(0),
                ..SitePolicy::default()
            },
        )]
        .into(),
        ..dr_core::Policy::default()
    };
    let err = zero.validate().expect_err("0 is refused").to_string();
    assert!(err.contains("sites.<site>.cpu_overcommit"), "{err}");
}

#[test]
fn the_hypervisors_memory_overhead_counts_and_is_remembered_while_the_vm_is_down() {
    let mut reg = Registry::default();
    let mut on = vm("big", "h1", Some("10.1.0.1"), PowerState::On);
    on.memory_overhead_mb = 300;
    let mut inv = Inventory {
        hosts: vec![host("h1"), host("h2")],
        vms: vec![on],
    };
    reg.sync(&inv);
    let policy = dr_core::Policy::default();
    let sink = dr_control::events::TracingSink;
    reg.refresh(&inv, &policy, dr_core::Timestamp(0), &sink);
    let h1 = reg.host_idx("h1").expect("h1");
    let big = reg.vm_idx("big").expect("big");
    assert_eq!(reg.vms[big].memory_mb, 2_048 + 300);
    assert_eq!(reg.hosts[h1].free_memory_mb, 16_384 - 2_048 - 300);
    // Its host died: the manager no longer reports the overhead (vSphere
    // does only while it runs), but a target must still hold it.
    inv.vms[0].power = PowerState::Unknown;
    inv.vms[0].memory_overhead_mb = 0;
    reg.refresh(&inv, &policy, dr_core::Timestamp(1), &sink);
    assert_eq!(reg.vms[big].memory_mb, 2_048 + 300);
    // On its way to h2, it takes its memory and overhead there.
    reg.arriving("big", Some("h2"));
    reg.refresh(&inv, &policy, dr_core::Timestamp(2), &sink);
    let h2 = reg.host_idx("h2").expect("h2");
    assert_eq!(reg.hosts[h2].free_memory_mb, 16_384 - 2_048 - 300);
}

#[test]
fn a_hosts_load_is_its_backends_usage_plus_what_is_on_its_way() {
    let mut reg = Registry::default();
    // h1 reports its usage (quick stats), h2 reports none.
    let mut h1 = host("h1");
    h1.vitals.cpu_mhz = 3_000;
    h1.vitals.memory_mb = 5_000;
    let mut inv = Inventory {
        hosts: vec![h1, host("h2")],
        vms: vec![
            vm("a", "h1", Some("10.1.0.1"), PowerState::On),
            vm("b", "h2", Some("10.1.0.2"), PowerState::On),
            vm("c", "h1", Some("10.1.0.3"), PowerState::Off),
        ],
    };
    reg.sync(&inv);
    let policy = dr_core::Policy::default();
    let sink = dr_control::events::TracingSink;
    reg.refresh(&inv, &policy, dr_core::Timestamp(0), &sink);
    let load = |reg: &Registry, h: &str| reg.hosts[reg.host_idx(h).expect("host")].load;
    assert_eq!(
        load(&reg, "h1"),
        HostLoad {
            cpu_mhz: 10_000,
            cpu_used_mhz: 3_000,
            memory_mb: 16_384,
            memory_used_mb: 5_000,
        }
    );
    // Without usage figures: what is committed (b: 1 GHz over 4, 2 GiB).
    assert_eq!(
        load(&reg, "h2"),
        HostLoad {
            cpu_mhz: 10_000,
            cpu_used_mhz: 250,
            memory_mb: 16_384,
            memory_used_mb: 2_048,
        }
    );
    // c on its way to h1: no figure shows it yet, so it is added.
    reg.arriving("c", Some("h1"));
    reg.refresh(&inv, &policy, dr_core::Timestamp(1), &sink);
    assert_eq!(load(&reg, "h1").cpu_used_mhz, 3_000 + 250);
    assert_eq!(load(&reg, "h1").memory_used_mb, 5_000 + 2_048);
    // Running there, its usage is in the host's figures: not added again.
    inv.vms[2].power = PowerState::On;
    reg.refresh(&inv, &policy, dr_core::Timestamp(2), &sink);
    assert_eq!(load(&reg, "h1").cpu_used_mhz, 3_000);
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
