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

/// A daemon configuration over the lab: 1 s probes, a host down after 3 s;
/// `proof` says what proves a lost host down (TOML after `[policy]`).
fn config_with(lab: &lab::Lab, dir: &Dir, proof: &str) -> std::path::PathBuf {
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
{proof}
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

/// These hosts run no vmdr-agent: a killed host is proved down only by
/// trusting its silence. QEMU's lock on each disk is what refuses a second
/// copy of a cut-off host's guest here (checked below).
fn config(lab: &lab::Lab, dir: &Dir) -> std::path::PathBuf {
    config_with(lab, dir, "[policy.sites.primary]\ntrust_unreachable = true")
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

/// A daemon over the lab that trusts no silence, with a fence device for
/// `fenced`: `fence_ipmilan` to its BMC (`kvm-lab.sh bmcs`). No agents.
fn fence_config(lab: &lab::Lab, dir: &Dir, fenced: &str) -> std::path::PathBuf {
    config_with(
        lab,
        dir,
        &format!(
            r#"[[fence.device]]
host = "{fenced}"
agent = "fence_ipmilan"
password_file = "{}"
timeout = "30s"
# cipher 3: ipmi_sim lacks the cipher-suite query ipmitool makes first.
options = {{ ip = "127.0.0.1", ipport = "{}", username = "admin", lanplus = "1", cipher = "3" }}"#,
            lab.dir.join("bmc-password").display(),
            lab.bmc_port(fenced),
        ),
    )
}

/// What the fence test needs beyond the lab: the BMC and the fence agent.
fn fence_tools_missing() -> Option<String> {
    [
        ("ipmi_sim", "openipmi"),
        ("ipmitool", "ipmitool"),
        ("fence_ipmilan", "fence-agents"),
    ]
    .into_iter()
    .find(|(tool, _)| {
        !std::process::Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .map(|(tool, pkg)| format!("`{tool}` is not installed (Debian package {pkg})"))
}

#[test]
fn a_cut_off_host_is_fenced_through_its_bmc_before_its_guest_runs_elsewhere() {
    let test = "a_cut_off_host_is_fenced_through_its_bmc_before_its_guest_runs_elsewhere";
    if !lab::can_run(test) {
        return;
    }
    if let Some(why) = fence_tools_missing() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{test}: cannot run in CI: {why}"
        );
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let lab = lab::Lab::up(&["kvm-a1", "kvm-a2"]);
    let guest = lab.guest("kvm-a2", "on-fenced-host", 1);
    lab.run(&["bmcs"]);
    let dir = Dir::new("libvirt-fence");
    let daemon = Daemon::start(&fence_config(&lab, &dir, "kvm-a2"));
    steady(&daemon, &["on-fenced-host"]);

    // kvm-a2 is cut off while its guest runs: nothing but its BMC can
    // prove the guest stopped. drd fences it (fence_ipmilan off, then a
    // status that reads off), and only then starts the guest on kvm-a1.
    let cut = std::time::Instant::now();
    lab.run(&["cut", "kvm-a2"]);
    let mut powered_off = None;
    daemon.wait_for(LIMIT, "on-fenced-host running on kvm-a1", |d| {
        let on_a2 = lab.dir.join("kvm-a2").join("powered-off").exists();
        if on_a2 && powered_off.is_none() {
            powered_off = Some(cut.elapsed());
        }
        // Until its BMC powered it off, kvm-a2 runs the guest, and nothing
        // else does (its libvirt stops answering with the power-off).
        if !on_a2 {
            let on = std::process::Command::new("virsh")
                .args([
                    "-q",
                    "-c",
                    &lab.unix_uri("kvm-a2"),
                    "domstate",
                    "on-fenced-host",
                ])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
            let off_now = lab.dir.join("kvm-a2").join("powered-off").exists();
            assert!(
                off_now || on.as_deref() == Some("running"),
                "on kvm-a2: {on:?}"
            );
            assert_ne!(state_on(&lab, "kvm-a1", "on-fenced-host"), "running");
        }
        let v = vm(d, "on-fenced-host");
        v["host"] == "kvm-a1" && v["power"] == "On"
    });
    let moved = cut.elapsed();
    let powered_off = powered_off.expect("kvm-a2 powered off by its BMC");
    assert!(
        lab.pids_in("kvm-a2").is_empty(),
        "kvm-a2 still runs processes"
    );
    let events = daemon.events();
    let fenced = events
        .iter()
        .position(|e| {
            e["type"] == "action_finished" && e["action"]["kind"] == "fence_host" && e["ok"] == true
        })
        .expect("a fence that succeeded");
    let restore = events
        .iter()
        .position(|e| e["type"] == "action_started" && e["action"]["kind"] == "restore")
        .expect("a restore");
    assert!(fenced < restore, "restored before the fence finished");
    assert_eq!(
        events[restore]["action"]["evidence"], "fenced",
        "{}",
        events[restore]
    );
    assert_eq!(events[fenced]["action"]["host"], "kvm-a2");
    let calls = std::fs::read_to_string(lab.dir.join("kvm-a2").join("bmc").join("calls"))
        .unwrap_or_default();
    assert!(
        calls.contains("set power 0"),
        "the BMC was not told: {calls}"
    );
    let host = daemon
        .json("/api/v1/hosts")
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == "kvm-a2").cloned())
        .unwrap_or_default();
    assert_eq!(host["fence"]["state"], "off", "{host}");
    assert!(
        lab::wait_for_ping(guest, LIMIT).is_some(),
        "on-fenced-host restored on kvm-a1 but does not answer ping"
    );
    eprintln!(
        "cut kvm-a2: powered off by its BMC after {powered_off:?}, its guest running on kvm-a1 after {moved:?} (fence took {} ms)",
        events[fenced]["duration_ms"]
    );
}

/// The issue's proof of crash consistency on a real guest: `rec` writes
/// numbered records to its disk, each flushed before the next, on kvm-a1
/// (the primary site); drd replicates it through libvirt's change
/// tracking (a point every second, one instant of the disk each) to two
/// receivers it runs itself (the DR site's); kvm-a1 is killed at a random
/// moment; drd brings `rec` up on kvm-b1 (the secondary site, which does
/// not share kvm-a1's storage) from the replica. The disk it comes back
/// with holds an unbroken prefix of the records (nothing after a hole, no
/// torn record), at least as long as the newest checkpoint both receivers
/// had acknowledged before the kill, and the guest boots from it. Three
/// kill moments, each in a new lab; a failing seed replays exactly.
#[test]
fn a_writing_guest_fails_over_from_its_replica_with_its_records_a_prefix_nothing_acknowledged_lost()
{
    let test = "a_writing_guest_fails_over_from_its_replica";
    if !lab::can_run(test) {
        return;
    }
    for seed in seeds(3) {
        eprintln!(
            "{test}: seed {seed} (VMDR_TEST_SEED={seed} replays it): the kill comes {} ms after the replicas' first checkpoint",
            2000 + seed % 4000
        );
        fails_over_with_its_records_a_prefix(seed);
    }
}

/// `n` seeds, new each run (SplitMix64 from the clock), or the list in
/// `VMDR_TEST_SEED` (comma-separated) to replay.
fn seeds(n: usize) -> Vec<u64> {
    if let Ok(list) = std::env::var("VMDR_TEST_SEED") {
        return list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("VMDR_TEST_SEED: {s:?} is not a number"))
            })
            .collect();
    }
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

/// drd on a new lab replicating its writing guest `rec` (on kvm-a1, the
/// primary site) through libvirt's change tracking to two receivers it
/// runs itself (dr-a keeping `keep` checkpoints apart), restored on kvm-b1
/// (the secondary site, which does not share kvm-a1's storage).
struct Replicated {
    daemon: Daemon,
    /// The receivers' ports.
    ports: [u16; 2],
    ip: std::net::IpAddr,
    dir: Dir,
    lab: lab::Lab,
}

impl Replicated {
    fn start(keep: usize) -> Replicated {
        let lab = lab::Lab::up(&["kvm-a1", "kvm-b1"]);
        let ip = lab.guest_with("kvm-a1", "rec", 1, "vmdr.writer=50000");
        let dir = Dir::new("libvirt-replication");
        let dr_site = lab.dir.join("dr-site");
        std::fs::create_dir_all(&dr_site).expect("dr-site");
        let host = |name: &str, site: &str, shared: &std::path::Path| {
            format!(
                "[[libvirt.host]]\nname = \"{name}\"\nuri = \"{}\"\nip = \"{}\"\nsite = \"{site}\"\nshared = [\"{}\"]\n",
                lab.uri(name),
                lab.host_ip(name),
                shared.display()
            )
        };
        let (a, b) = (free_port(), free_port());
        std::fs::write(dir.0.join("repl-key"), "a replication key for the lab test").expect("key");
        std::fs::write(dir.0.join("token"), TOKEN).expect("token");
        let config = dir.0.join("drd.toml");
        std::fs::write(
            &config,
            format!(
                r#"backend = "libvirt"
[libvirt]
timeout = "3s"
action_timeout = "60s"
{}{}
[control]
probe_interval = "1s"
probe_timeout = "500ms"
inventory_interval = "2s"
action_timeout = "120s"
action_retries = 1
retry_delay = "1s"
[policy]
failure_threshold = 2
host_down_after = "3s"
boot_grace = "20s"
[policy.sites.primary]
trust_unreachable = true
[api]
listen = "127.0.0.1:0"
token_file = "token"
[journal]
path = "journal.redb"
[replication]
key_file = "repl-key"
interval = "1s"
[[replication.receive]]
listen = "127.0.0.1:{a}"
dir = "dr-a"
keep = {keep}
[[replication.receive]]
listen = "127.0.0.1:{b}"
dir = "dr-b"
[[replication.vm]]
name = "rec"
source = "libvirt"
targets = ["127.0.0.1:{a}", "127.0.0.1:{b}"]
replica = "dr-a"
restore_dir = "restored"
"#,
                host("kvm-a1", "primary", &lab.shared()),
                host("kvm-b1", "secondary", &dr_site),
            ),
        )
        .expect("config");
        let daemon = Daemon::start(&config);
        steady(&daemon, &["rec"]);
        Replicated {
            daemon,
            ports: [a, b],
            ip,
            dir,
            lab,
        }
    }

    /// The newest checkpoint both receivers acknowledged.
    fn acked(&self) -> u64 {
        self.ports
            .iter()
            .map(|p| {
                self.daemon
                    .metric(&format!(
                        "vmdr_replication_checkpoint{{vm=\"rec\",target=\"127.0.0.1:{p}\"}}"
                    ))
                    .unwrap_or(0.0) as u64
            })
            .min()
            .unwrap_or(0)
    }

    /// The checkpoint drd logged it wrote the failover's disks from.
    fn restored_checkpoint(&self) -> u64 {
        let log = std::fs::read_to_string(&self.daemon.log).expect("drd's log");
        let line = log
            .lines()
            .find(|l| l.contains("failover: disks written from the replica"))
            .unwrap_or_else(|| panic!("drd logged no failover from the replica:\n{log}"));
        line.split("checkpoint=")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no checkpoint in {line:?}"))
    }
}

/// One run of the test above: a new lab, the kill `2 + seed % 4` s after
/// both receivers acknowledged a first checkpoint.
fn fails_over_with_its_records_a_prefix(seed: u64) {
    let r = Replicated::start(2);
    r.daemon
        .wait_for(LIMIT, "a checkpoint on both replicas", |_| r.acked() >= 1);
    let repl = r.daemon.json("/api/v1/replication");
    eprintln!("replication before the kill: {repl}");
    std::thread::sleep(Duration::from_millis(2000 + seed % 4000));
    let before_kill = r.acked();
    r.lab.run(&["kill", "kvm-a1"]);
    r.daemon
        .wait_for(Duration::from_secs(180), "rec restored on kvm-b1", |d| {
            let v = vm(d, "rec");
            v["host"] == "kvm-b1" && v["power"] == "On"
        });
    let events = r.daemon.events();
    let report = actions_for(&events, "action_finished", "rec");
    eprintln!("rec's actions: {report:?}");
    assert_eq!(state_on(&r.lab, "kvm-b1", "rec"), "running");
    assert!(
        lab::wait_for_ping(r.ip, LIMIT).is_some(),
        "rec restored on kvm-b1 but does not answer ping"
    );
    // The disk it came back with, as the replica wrote it.
    let restored =
        std::fs::read(r.dir.0.join("restored/rec-disk0.img")).expect("the restored disk");
    let n = lab::records_prefix(&restored, "the restored disk");
    // The checkpoint it was written from (drd logs it) is at least the one
    // both receivers had acknowledged before the kill: nothing
    // acknowledged was lost.
    let restored_id = r.restored_checkpoint();
    assert!(
        restored_id >= before_kill,
        "restored checkpoint {restored_id}, but both receivers had acknowledged {before_kill}"
    );
    let (daemon, dir) = (r.daemon, &r.dir);
    drop(daemon);
    // Both replicas hold whole instants too (drd went on protecting rec on
    // kvm-b1 after the failover: theirs can only be newer).
    for name in ["dr-a", "dr-b"] {
        let replica = dr_replication::Replica::open(&dir.0.join(name), 2).expect("replica");
        let c = replica.newest().expect("a checkpoint");
        let out = dir.0.join(format!("{name}.img"));
        replica.restore(c.id, 0, &out).expect("restore");
        let m = lab::records_prefix(&std::fs::read(&out).expect("image"), name);
        eprintln!("{name}: checkpoint {} holds {m} records", c.id);
        assert!(c.id >= restored_id.min(before_kill), "{name} went back");
    }
    assert!(n >= 1, "no record reached the replica");
    eprintln!("failover restored {n} records (checkpoint {restored_id}; {before_kill} acknowledged by both before the kill)");
}

/// A planned failover of the writing guest to an older checkpoint the
/// operator chose from the API's list: drd stops `rec` on kvm-a1 (alive),
/// writes its disk from that checkpoint and brings it up on kvm-b1 around
/// a qcow2 of it there. It boots, and its disk holds exactly that
/// checkpoint's records: fewer than the newest's, an unbroken prefix.
#[test]
fn a_planned_failover_to_a_chosen_older_checkpoint_brings_the_guest_back_as_it_was_then() {
    if !lab::can_run("a_planned_failover_to_a_chosen_older_checkpoint") {
        return;
    }
    let r = Replicated::start(1000);
    r.daemon
        .wait_for(LIMIT, "three checkpoints on both replicas", |_| {
            r.acked() >= 3
        });
    let listed = || {
        let listed = r.daemon.json("/api/v1/vms/rec/checkpoints");
        let ids: Vec<u64> = listed["checkpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_u64())
            .collect();
        assert!(!ids.is_empty(), "{listed}");
        ids
    };
    // The writer has begun by then (it starts once the guest is up).
    std::thread::sleep(Duration::from_secs(4));
    let chosen = *listed().last().expect("a checkpoint");
    // It goes on: later checkpoints hold more records (waited for: under
    // load a point can take seconds).
    std::thread::sleep(Duration::from_secs(3));
    r.daemon.wait_for(LIMIT, "a later checkpoint", |_| {
        listed().last().is_some_and(|&l| l > chosen)
    });
    let later = *listed().last().expect("a checkpoint");
    let (code, body) = r.daemon.post(
        &format!("/api/v1/vms/rec/failover?to=kvm-b1&checkpoint={chosen}"),
        Some(TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["method"], "replica", "{report}");
    assert_eq!(report["checkpoint"], chosen, "{report}");
    assert_eq!(state_on(&r.lab, "kvm-b1", "rec"), "running");
    assert!(
        lab::wait_for_ping(r.ip, LIMIT).is_some(),
        "rec restored on kvm-b1 but does not answer ping"
    );
    let log = std::fs::read_to_string(&r.daemon.log).expect("drd's log");
    assert!(
        log.contains("disks written from the replica's checkpoint the operator chose"),
        "{log}"
    );
    let restored =
        std::fs::read(r.dir.0.join("restored/rec-disk0.img")).expect("the restored disk");
    let n = lab::records_prefix(&restored, "the restored disk");
    let (daemon, dir) = (r.daemon, &r.dir);
    drop(daemon);
    let replica = dr_replication::Replica::open(&dir.0.join("dr-a"), 1000).expect("replica");
    let out = dir.0.join("check.img");
    replica.restore(chosen, 0, &out).expect("restore");
    assert!(
        std::fs::read(&out).expect("image") == restored,
        "the restored disk is not checkpoint {chosen} of the replica"
    );
    // `later` was listed before the failover (after it the guest, booted
    // again, writes its records from the first anew).
    replica.restore(later, 0, &out).expect("restore");
    let m = lab::records_prefix(&std::fs::read(&out).expect("image"), "a later checkpoint");
    assert!(
        n >= 1 && n < m,
        "checkpoint {chosen} holds {n} records, the later {later} {m}"
    );
    eprintln!("checkpoint {chosen} brought back with {n} records (the later {later} holds {m})");
}
