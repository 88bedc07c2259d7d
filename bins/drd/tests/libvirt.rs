//! drd with `backend = "libvirt"` on the KVM lab (`scripts/kvm-lab.sh`):
//! real libvirt daemons, one per host in its own namespaces, and real
//! guests that answer ping. What happens to a guest is watched through
//! each host's own unix socket, which a cut link does not cut. Needs root
//! and the lab's packages; in CI they must be there.

mod common;
#[path = "../../../crates/dr-libvirt/tests/common/mod.rs"]
mod lab;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// A daemon configuration over the lab: 1 s probes, a host down after 3 s.
fn config(lab: &lab::Lab, dir: &Dir) -> std::path::PathBuf {
    let path = dir.0.join("drd.toml");
    std::fs::write(dir.0.join("token"), TOKEN).expect("token");
    std::fs::write(
        &path,
        format!(
            r#"backend = "libvirt"
{}
[control]
probe_interval = "1s"
probe_timeout = "500ms"
inventory_interval = "2s"
action_timeout = "60s"
action_retries = 1
retry_delay = "1s"
[policy]
failure_threshold = 2
host_down_after = "3s"
boot_grace = "20s"
# These hosts run no vmdr-agent: a killed host is proved down only by
# trusting its silence. QEMU's lock on each disk is what refuses a second
# copy of a cut-off host's guest here (checked below).
[policy.sites.primary]
trust_unreachable = true
[api]
listen = "127.0.0.1:0"
token_file = "token"
[journal]
path = "journal.redb"
"#,
            lab.libvirt_toml(&[])
        ),
    )
    .expect("config");
    path
}

fn vm(d: &Daemon, name: &str) -> serde_json::Value {
    d.json("/api/v1/vms")
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until every VM of `names` answers its probes in drd's view.
fn steady(d: &Daemon, names: &[&str]) {
    d.wait_for(LIMIT, "every guest answering", |d| {
        names.iter().all(|n| vm(d, n)["reachable"] == true)
    });
}

/// The state of `vm` on `host`, as that host's daemon says (`virsh
/// domstate`), or "undefined".
fn state_on(lab: &lab::Lab, host: &str, vm: &str) -> String {
    let list = lab.virsh(host, &["list", "--all", "--name"]);
    if !list.lines().any(|l| l.trim() == vm) {
        return "undefined".into();
    }
    lab.virsh(host, &["domstate", vm])
}

fn started(d: &Daemon, vm: &str) -> usize {
    actions_for(&d.events(), "action_started", vm).len()
}

#[test]
fn a_guest_whose_qemu_dies_is_started_again_and_one_a_person_stops_is_left_off() {
    let test = "a_guest_whose_qemu_dies_is_started_again_and_one_a_person_stops_is_left_off";
    if !lab::can_run(test) {
        return;
    }
    let lab = lab::Lab::up(&["kvm-a1", "kvm-a2"]);
    let crash = lab.guest("kvm-a1", "crash-me", 1);
    lab.guest("kvm-a1", "destroy-me", 2);
    lab.guest("kvm-a2", "poweroff-me", 3);
    let dir = Dir::new("libvirt-local");
    let daemon = Daemon::start(&config(&lab, &dir));
    steady(&daemon, &["crash-me", "destroy-me", "poweroff-me"]);

    // QEMU killed: libvirt says "Stopped Failed"; vmdr starts it in place.
    lab.kill_qemu("crash-me");
    daemon.wait_for(LIMIT, "crash-me started again in place", |d| {
        actions_for(&d.events(), "action_finished", "crash-me")
            .iter()
            .any(|e| e["action"]["kind"] == "power_on" && e["ok"] == true)
    });
    assert!(
        lab::wait_for_ping(crash, LIMIT).is_some(),
        "crash-me restarted but does not answer ping"
    );
    assert_eq!(state_on(&lab, "kvm-a1", "crash-me"), "running");

    // A person's `virsh destroy`, and a guest that powers itself off: both
    // are left off.
    lab.virsh("kvm-a1", &["destroy", "destroy-me"]);
    lab.virsh(
        "kvm-a2",
        &[
            "qemu-agent-command",
            "poweroff-me",
            r#"{"execute":"vmdr-poweroff"}"#,
        ],
    );
    daemon.wait_for(LIMIT, "both stops seen", |d| {
        vm(d, "destroy-me")["power"] == "Off" && vm(d, "poweroff-me")["power"] == "Off"
    });
    // Well past the failure threshold and the host-down time.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        started(&daemon, "destroy-me"),
        0,
        "vmdr acted on a VM a person destroyed"
    );
    assert_eq!(
        started(&daemon, "poweroff-me"),
        0,
        "vmdr acted on a VM whose guest powered itself off"
    );
    assert_eq!(state_on(&lab, "kvm-a1", "destroy-me"), "shut off");
    assert_eq!(state_on(&lab, "kvm-a2", "poweroff-me"), "shut off");

    // A drill of the running guest: an isolated copy up and removed, the
    // original untouched.
    let (code, body) = daemon.post("/api/v1/vms/crash-me/drill", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["production_untouched"], true, "{report}");
    assert_eq!(report["source"], "snapshot", "{report}");
    for host in ["kvm-a1", "kvm-a2"] {
        let left = lab.virsh(host, &["list", "--all", "--name"]);
        assert!(
            !left.contains("-vmdr-drill-"),
            "a drill copy was left on {host}: {left}"
        );
    }
    let images: Vec<_> = std::fs::read_dir(lab.shared())
        .expect("shared")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-vmdr-drill-"))
        .collect();
    assert!(images.is_empty(), "drill images left: {images:?}");
    assert_eq!(state_on(&lab, "kvm-a1", "crash-me"), "running");
    assert!(
        lab::pings(crash),
        "crash-me stopped answering during its drill"
    );
}

#[test]
fn a_dead_hosts_guests_come_back_on_another_host_and_a_cut_off_host_gets_no_second_copy() {
    let test =
        "a_dead_hosts_guests_come_back_on_another_host_and_a_cut_off_host_gets_no_second_copy";
    if !lab::can_run(test) {
        return;
    }
    let lab = lab::Lab::up(&["kvm-a1", "kvm-a2", "kvm-a3"]);
    let dies = lab.guest("kvm-a1", "on-dead-host", 1);
    lab.guest("kvm-a2", "on-cut-host", 2);
    let dir = Dir::new("libvirt-host");
    let daemon = Daemon::start(&config(&lab, &dir));
    steady(&daemon, &["on-dead-host", "on-cut-host"]);

    // kvm-a1 dies: its daemon and QEMUs are killed, its address goes quiet.
    lab.run(&["kill", "kvm-a1"]);
    daemon.wait_for(LIMIT, "on-dead-host restored on another host", |d| {
        let v = vm(d, "on-dead-host");
        v["host"] != "kvm-a1" && v["power"] == "On"
    });
    let now_on = vm(&daemon, "on-dead-host")["host"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(state_on(&lab, &now_on, "on-dead-host"), "running");
    assert!(
        lab::wait_for_ping(dies, LIMIT).is_some(),
        "on-dead-host restored on {now_on} but does not answer ping"
    );

    // kvm-a2 is cut off (its guests run on): whatever vmdr decides, no
    // guest ever runs on two hosts (QEMU's lock on a disk refuses a second
    // copy). Watched through each host's own socket.
    lab.run(&["cut", "kvm-a2"]);
    let until = std::time::Instant::now() + Duration::from_secs(25);
    while std::time::Instant::now() < until {
        for guest in ["on-dead-host", "on-cut-host"] {
            let running: Vec<&str> = ["kvm-a2", "kvm-a3"]
                .into_iter()
                .filter(|h| state_on(&lab, h, guest) == "running")
                .collect();
            assert_eq!(running.len(), 1, "{guest} runs on {running:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(state_on(&lab, "kvm-a2", "on-cut-host"), "running");
    lab.run(&["heal", "kvm-a2"]);
    daemon.wait_for(LIMIT, "on-cut-host seen on kvm-a2 again", |d| {
        let v = vm(d, "on-cut-host");
        v["host"] == "kvm-a2" && v["reachable"] == true
    });
}
