//! drd against govmomi's vCenter simulator: a host stops responding (to
//! vCenter and to ping: its namespace's link goes down) and its VM is
//! restored on the other host. Needs Go and govmomi (the simulator) and
//! root with iproute2 (the test hosts that answer for the simulated
//! addresses); in CI these must be there, elsewhere the test is skipped.

mod common;
#[path = "../../../crates/dr-probe/tests/common/mod.rs"]
mod netns;
#[path = "../../../crates/dr-vsphere/tests/common/mod.rs"]
mod vcsim;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn third_octet(ip: std::net::IpAddr) -> u8 {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets()[2],
        std::net::IpAddr::V6(_) => panic!("an IPv4 test host"),
    }
}

/// The simulator (with `args`), one test namespace per host answering for
/// it and its VMs, and a daemon configuration over them.
struct Setup {
    sim: vcsim::Vcsim,
    api: String,
    hosts: Vec<netns::TestHost>,
    dir: Dir,
    config: std::path::PathBuf,
}

/// What the simulator's cluster site trusts without vSphere HA or a fence:
/// a host lost to vCenter and to ping is proved down only by its silence.
const TRUST_SILENCE: &str = "[policy.sites.DC0_C0]\ntrust_unreachable = true\n";

fn setup(tag: &str, args: &[&str]) -> Setup {
    setup_with(tag, args, TRUST_SILENCE)
}

/// [`setup`] with `site_policy` as the policy's per-site lines.
fn setup_with(tag: &str, args: &[&str], site_policy: &str) -> Setup {
    let mut full = vec!["-clusters", "1", "-hosts", "2", "-vms", "2"];
    full.extend_from_slice(args);
    let sim = vcsim::Vcsim::start(&full);
    let api = sim.base().trim_start_matches("http://").to_owned();
    // One test host per simulated host: it answers for the host's address
    // and its VMs' (198.19.N.0/24, inside the namespace only).
    let mut hosts = Vec::new();
    for name in ["DC0_C0_H0", "DC0_C0_H1"] {
        let mut t = netns::TestHost::new();
        let prefix = format!("198.19.{}.", third_octet(t.v4));
        t.answer_range(&format!("{prefix}0/24"));
        let (code, body) = http(
            &api,
            "POST",
            &format!("/vmdr-test/ips?host={name}&prefix={prefix}"),
            None,
        );
        assert_eq!(code, 200, "{body}");
        hosts.push(t);
    }
    let dir = Dir::new(tag);
    std::fs::write(dir.0.join("vc-password"), "s3cret").expect("password");
    std::fs::write(dir.0.join("token"), TOKEN).expect("token");
    let config = dir.0.join("drd.toml");
    std::fs::write(
        &config,
        format!(
            r#"backend = "vsphere"
[vsphere]
url = "{}"
user = "vmdr"
password_file = "vc-password"
timeout = "20s"
full_read_interval = "2s"             # the simulator's views do not grow
[control]
probe_interval = "500ms"
probe_timeout = "300ms"
inventory_interval = "2s"
action_timeout = "30s"
action_retries = 1
retry_delay = "500ms"
[policy]
failure_threshold = 2
host_down_after = "2s"
boot_grace = "3s"
self_fence_margin = "500ms"
{}
[snapshots]
vm_interval = "1s"
vm_keep = 2
[api]
listen = "127.0.0.1:0"
token_file = "token"
[journal]
path = "journal.redb"
"#,
            sim.url, site_policy
        ),
    )
    .expect("config");
    Setup {
        sim,
        api,
        hosts,
        dir,
        config,
    }
}

fn vms(d: &Daemon) -> Vec<serde_json::Value> {
    d.json("/api/v1/vms")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until both VMs answer and have snapshots; returns the VM on H0.
fn steady(daemon: &Daemon) -> String {
    daemon.wait_for(LIMIT, "both VMs answering, and snapshots taken", |d| {
        let v = vms(d);
        v.len() == 2
            && v.iter().all(|v| v["reachable"] == true)
            && d.metric("vmdr_snapshots_total{kind=\"vm\",result=\"taken\"}") >= Some(2.0)
    });
    vms(daemon)
        .into_iter()
        .find(|v| v["host"] == "DC0_C0_H0")
        .and_then(|v| v["name"].as_str().map(str::to_owned))
        .expect("a VM on DC0_C0_H0")
}

/// DC0_C0_H0 stops responding: to vCenter, and to ping.
fn lose_h0(s: &Setup) {
    let (code, body) = http(
        &s.api,
        "POST",
        "/vmdr-test/host-state?name=DC0_C0_H0&state=notResponding",
        None,
    );
    assert_eq!(code, 200, "{body}");
    s.hosts[0].link(false);
}

#[test]
fn a_vm_whose_host_stops_responding_is_restored_on_the_other_host() {
    let test = "a_vm_whose_host_stops_responding_is_restored_on_the_other_host";
    if !vcsim::available(test) || !netns::can_run(test) {
        return;
    }
    let s = setup("vsphere", &[]);
    let daemon = Daemon::start(&s.config);
    let name = steady(&daemon);
    lose_h0(&s);
    daemon.wait_for(LIMIT, "the VM restored on DC0_C0_H1", |d| {
        let restored = actions_for(&d.events(), "action_finished", &name)
            .iter()
            .any(|e| e["action"]["kind"] == "restore" && e["ok"] == true);
        restored
            && vms(d)
                .iter()
                .any(|v| v["name"] == name.as_str() && v["host"] == "DC0_C0_H1")
    });
    // The other VM, on the healthy host, was never touched.
    let other = vms(&daemon)
        .into_iter()
        .find(|v| v["name"] != name.as_str())
        .expect("the other VM");
    assert!(actions_for(
        &daemon.events(),
        "action_started",
        other["name"].as_str().unwrap_or("")
    )
    .is_empty());
    let _ = (&s.sim, &s.dir);
}

/// The VM's current decision, as the API gives it.
fn decision_of(d: &Daemon, vm: &str) -> serde_json::Value {
    vms(d)
        .into_iter()
        .find(|v| v["name"] == vm)
        .map(|v| v["decision"].clone())
        .unwrap_or_default()
}

#[test]
fn vsphere_ha_is_evidence_its_isolation_response_proves_a_host_down_and_its_restarts_are_left_to_it(
) {
    let test = "vsphere_ha_is_evidence_its_isolation_response_proves_a_host_down_and_its_restarts_are_left_to_it";
    if !vcsim::available(test) || !netns::can_run(test) {
        return;
    }
    // No trust in silence: only HA (or a fence) can prove H0 down.
    let s = setup_with("vsphere-ha", &[], "");
    let post = |path: &str| {
        let (code, body) = http(&s.api, "POST", path, None);
        assert_eq!(code, 200, "{path}: {body}");
    };
    // HA restarts a failed host's VMs itself.
    post("/vmdr-test/ha?cluster=DC0_C0&restart=medium&response=powerOff&delay=3");
    let daemon = Daemon::start(&s.config);
    let name = steady(&daemon);
    lose_h0(&s);
    post("/vmdr-test/ha-state?host=DC0_C0_H0&state=hostDown");
    daemon.wait_for(LIMIT, "the VM left to vSphere HA", |d| {
        decision_of(d, &name)["why"] == "left_to_ha"
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(decision_of(&daemon, &name)["why"], "left_to_ha");
    let none_started = || actions_for(&daemon.events(), "action_started", &name).is_empty();
    assert!(none_started(), "vmdr acted on a VM vSphere HA restarts");
    // HA now leaves restarts to vmdr; the master cannot say yet what
    // became of the host: nothing proves it down.
    post("/vmdr-test/ha?cluster=DC0_C0&restart=disabled&response=powerOff&delay=3");
    post("/vmdr-test/ha-state?host=DC0_C0_H0&state=election");
    daemon.wait_for(LIMIT, "the VM held: its host unproven down", |d| {
        decision_of(d, &name)["why"] == "host_down_unproven"
    });
    std::thread::sleep(Duration::from_secs(4));
    assert!(none_started(), "moved off a host nothing proved down");
    // The master reports it isolated: its VMs are off 3 s later (its
    // isolation response), and only then does the VM move.
    post("/vmdr-test/ha-state?host=DC0_C0_H0&state=networkIsolated");
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(none_started(), "moved before the isolation response's time");
    daemon.wait_for(LIMIT, "the VM restored on DC0_C0_H1", |d| {
        vms(d)
            .iter()
            .any(|v| v["name"] == name.as_str() && v["host"] == "DC0_C0_H1")
    });
    let events = daemon.events();
    let started = actions_for(&events, "action_started", &name);
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["action"]["kind"], "restore", "{started:?}");
    assert_eq!(started[0]["action"]["evidence"], "deadline", "{started:?}");
    let _ = (&s.sim, &s.dir);
}

/// The simulator's VMs (`-clusters 1 -vms 2`): which one lands on the host
/// that is lost is the simulator's choice, so both are protected.
const VCSIM_VMS: [&str; 2] = ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"];

#[test]
fn a_vm_whose_host_is_lost_comes_back_from_its_replica_on_a_datastore() {
    let test = "a_vm_whose_host_is_lost_comes_back_from_its_replica_on_a_datastore";
    if !vcsim::available(test) || !netns::can_run(test) {
        return;
    }
    let s = setup("vsphere-replica", &[]);
    // Each VM's disk, shipped by this daemon to a replica it also receives
    // (the DR site's receiver).
    let mut text = std::fs::read_to_string(&s.config).expect("config");
    text.push_str("[replication]\nkey_file = \"repl-key\"\ninterval = \"300ms\"\n");
    let mut disks = Vec::new();
    let mut ports = Vec::new();
    for (i, vm) in VCSIM_VMS.iter().enumerate() {
        let data: Vec<u8> = (0..(2u32 << 20))
            .map(|n| (n.wrapping_mul(2_246_822_519) >> 11) as u8 ^ i as u8)
            .collect();
        std::fs::write(s.dir.0.join(format!("vm{i}.img")), &data).expect("disk");
        disks.push(data);
        let port = free_port();
        ports.push(port);
        text.push_str(&format!(
            "[[replication.receive]]\nlisten = \"127.0.0.1:{port}\"\ndir = \"dr-{i}\"\n\
             [[replication.vm]]\nname = \"{vm}\"\ndisks = [\"vm{i}.img\"]\n\
             targets = [\"127.0.0.1:{port}\"]\nreplica = \"dr-{i}\"\n\
             restore_disks = [\"dr-site/vm{i}.img\"]\n"
        ));
    }
    std::fs::write(s.dir.0.join("repl-key"), "a replication key for the tests").expect("key");
    std::fs::write(&s.config, text).expect("config");
    let daemon = Daemon::start(&s.config);
    let name = steady(&daemon);
    let i = VCSIM_VMS
        .iter()
        .position(|v| *v == name)
        .unwrap_or_else(|| panic!("{name} is not one of the simulator's VMs {VCSIM_VMS:?}"));
    let checkpoint = format!(
        "vmdr_replication_checkpoint{{vm=\"{name}\",target=\"127.0.0.1:{}\"}}",
        ports[i]
    );
    daemon.wait_for(LIMIT, "a checkpoint of its replica", |d| {
        d.metric(&checkpoint) >= Some(1.0)
    });
    lose_h0(&s);
    daemon.wait_for(
        LIMIT,
        "the VM restored from its replica on DC0_C0_H1",
        |d| {
            let restored = actions_for(&d.events(), "action_finished", &name)
                .iter()
                .any(|e| {
                    e["action"]["kind"] == "restore"
                        && e["action"]["source"] == "replica"
                        && e["ok"] == true
                });
            restored
                && vms(d)
                    .iter()
                    .any(|v| v["name"] == name.as_str() && v["host"] == "DC0_C0_H1")
        },
    );
    // Its disk on the datastore is the replica's checkpoint, byte for byte.
    let (code, body) = http(&s.api, "GET", "/vmdr-test/datastores", None);
    assert_eq!(code, 200, "{body}");
    let stores: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&body).expect("datastores");
    let uploaded: Vec<std::path::PathBuf> = stores
        .values()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-vmdr-replica-"))
        })
        .map(|e| e.path().join(format!("{name}_0-flat.vmdk")))
        .collect();
    assert_eq!(uploaded.len(), 1, "one restore's files: {uploaded:?}");
    let on_datastore = std::fs::read(&uploaded[0]).expect("the uploaded disk");
    assert!(
        on_datastore == disks[i],
        "the disk on the datastore is not the source's"
    );
}
