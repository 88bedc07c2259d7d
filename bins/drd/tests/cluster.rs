//! Three drd as one cluster on a real three-member etcd (loopback), over a
//! simulated datacenter that outlives them and counts what they did: only
//! the leader acts; its death (SIGKILL) while a recovery runs, or its
//! freeze (SIGSTOP) past its lease, hands automation to another node that
//! neither repeats nor loses the recovery; nothing ever runs twice; a
//! follower forwards commands to the leader.

mod common;
#[path = "../../../crates/dr-cluster/tests/support/mod.rs"]
mod etcd;

use common::datacenter::{
    abandoned, all_back_safely, assert_safe, back, config_for, wait_report, SimServer, RECOVERED,
};
use common::{Daemon, Dir, TOKEN};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A node's configuration: the common test daemon on the datacenter at
/// `url`, in a cluster of `endpoints` under `prefix`.
fn node_config(dir: &Path, url: &str, node: &str, endpoints: &[String], prefix: &str) -> PathBuf {
    let nd = dir.join(node);
    std::fs::create_dir_all(&nd).expect("node dir");
    let path = config_for(&nd, url);
    let mut text = std::fs::read_to_string(&path).expect("config");
    let eps: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    text.push_str(&format!(
        "\n[cluster]\nnode = \"{node}\"\nendpoints = [{}]\nprefix = \"{prefix}\"\nlease_ttl = \"2s\"\nrequest_timeout = \"500ms\"\n",
        eps.join(", ")
    ));
    std::fs::write(&path, text).expect("config");
    path
}

fn cluster_of(d: &Daemon) -> serde_json::Value {
    d.json("/api/v1/status")["cluster"].clone()
}

/// The indices of the nodes that say they lead (a frozen one, `skip`,
/// cannot answer).
fn leading_but(nodes: &[Option<Daemon>], skip: Option<usize>) -> Vec<usize> {
    (0..nodes.len())
        .filter(|&i| Some(i) != skip)
        .filter(|&i| {
            nodes[i]
                .as_ref()
                .is_some_and(|d| cluster_of(d)["role"] == "leader")
        })
        .collect()
}

/// Waits until exactly one of the running nodes leads; never two.
fn leading(nodes: &[Option<Daemon>]) -> Vec<usize> {
    leading_but(nodes, None)
}

fn one_leader(nodes: &[Option<Daemon>], within: Duration) -> usize {
    let start = Instant::now();
    loop {
        let l = leading(nodes);
        if l.len() > 1 {
            let views: Vec<String> = l
                .iter()
                .map(|&i| cluster_of(nodes[i].as_ref().expect("node")).to_string())
                .collect();
            panic!("two nodes lead at once: {l:?}\n{}", views.join("\n"));
        }
        if let [one] = l[..] {
            return one;
        }
        assert!(start.elapsed() < within, "no leader within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_nodes(
    dir: &Path,
    sim: &SimServer,
    etcd: &etcd::EtcdCluster,
    prefix: &str,
) -> Vec<Option<Daemon>> {
    let mut eps = etcd.endpoints();
    ["a", "b", "c"]
        .iter()
        .map(|n| {
            eps.rotate_left(1);
            Some(Daemon::start(&node_config(dir, &sim.url, n, &eps, prefix)))
        })
        .collect()
}

/// How long after the recovery began the leader dies, for `seed`: anywhere
/// in the 3 s power-on (0 to 2.5 s).
fn kill_delay(seed: u64) -> Duration {
    Duration::from_millis(dr_sim::rng::Rng::new(seed).range(0, 2500))
}

#[test]
fn the_leader_killed_during_a_recovery_hands_over_and_no_vm_runs_twice() {
    leader_killed_during_a_recovery(1);
}

#[test]
fn the_leader_killed_later_in_a_recovery_seed_2() {
    leader_killed_during_a_recovery(2);
}

#[test]
fn the_leader_killed_later_in_a_recovery_seed_3() {
    leader_killed_during_a_recovery(3);
}

/// The leader SIGKILLed `kill_delay(seed)` into the datacenter's power-on
/// of db-1 (a failure names its seed).
fn leader_killed_during_a_recovery(seed: u64) {
    if !etcd::etcd_present("the_leader_killed_during_a_recovery_hands_over") {
        return;
    }
    eprintln!(
        "seed {seed}: the leader dies {:?} into the recovery",
        kill_delay(seed)
    );
    let etcd = etcd::EtcdCluster::start(3, &format!("drd-kill-{seed}"));
    // Power-ons take 3 s: the leader dies while the datacenter runs one.
    let sim = SimServer::start("3s");
    let d = Dir::new(&format!("cluster-kill-{seed}"));
    let mut nodes = start_nodes(&d.0, &sim, &etcd, "/kill");
    let first = one_leader(&nodes, Duration::from_secs(10));
    let first_epoch = cluster_of(nodes[first].as_ref().expect("leader"))["leader"]["epoch"].clone();

    // Followers know the leader and say where commands go.
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != first) {
        let n = n.as_ref().expect("node");
        n.wait_for(
            Duration::from_secs(5),
            "the follower to know the leader",
            |n| {
                let c = cluster_of(n);
                c["leader"]["epoch"] == first_epoch
                    && c["nodes"].as_array().map(Vec::len) == Some(3)
            },
        );
        let c = cluster_of(n);
        assert_eq!(c["role"], "follower", "node {i}: {c}");
    }

    wait_report(&sim, "the recovery of db-1 under way", |r| {
        r.in_progress.iter().any(|op| op == "power_on db-1")
    });
    std::thread::sleep(kill_delay(seed));
    // And an entry nobody can read among the open ones: the next leader
    // must not guess what it meant, but hold its VM for a person.
    let damaged = format!("/kill/journal/entry/{:020}", 99_999);
    for (k, v) in [
        (damaged.as_str(), r#"{"intent":{"vm":"app-1"},"outcome":5}"#),
        (&format!("/kill/journal/open/{:020}", 99_999), ""),
    ] {
        let out = etcd.etcdctl(&["put", k, v]);
        assert!(out.status.success(), "{out:?}");
    }
    let killed = Instant::now();
    nodes[first] = None; // SIGKILL: no lease revoked, a recovery in flight.
    let second = one_leader(&nodes, Duration::from_secs(10));
    let takeover = killed.elapsed();
    let leader = nodes[second].as_ref().expect("new leader");
    let c = cluster_of(leader);
    assert!(
        c["leader"]["epoch"].as_i64() > first_epoch.as_i64(),
        "a later epoch: {c}"
    );

    all_back_safely(&sim, &RECOVERED);
    journal_closed(leader);
    leader.wait_for(Duration::from_secs(2), "app-1 held for a person", |l| {
        l.json("/api/v1/vms").as_array().is_some_and(|v| {
            v.iter()
                .any(|v| v["name"] == "app-1" && v["paused"] == true)
        })
    });
    let log = std::fs::read_to_string(&leader.log).unwrap_or_default();
    assert!(
        log.contains(&damaged),
        "the damaged entry is named by its key"
    );
    assert!(
        abandoned(leader, "db-1"),
        "the dead leader's recovery is closed as abandoned by the new one: {}",
        leader.json("/api/v1/journal")
    );

    // A follower forwards a command to the leader, token and all; without
    // the token it refuses it itself.
    let follower = (0..3)
        .find(|&i| i != second && nodes[i].is_some())
        .expect("a follower");
    let f = nodes[follower].as_ref().expect("follower");
    let (code, _) = f.post("/api/v1/vms/web-1/pause", None);
    assert_eq!(code, 401);
    let (code, body) = f.post("/api/v1/vms/web-1/pause", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    leader.wait_for(Duration::from_secs(2), "web-1 paused on the leader", |l| {
        l.json("/api/v1/vms").as_array().is_some_and(|v| {
            v.iter()
                .any(|v| v["name"] == "web-1" && v["paused"] == true)
        })
    });
    let (_, metrics) = leader.get("/metrics");
    assert!(metrics.contains("vmdr_cluster_leader 1"), "{metrics}");
    eprintln!("takeover after the leader's SIGKILL: {takeover:?}");
}

#[test]
fn a_leader_frozen_past_its_lease_does_not_act_when_it_wakes() {
    leader_frozen_past_its_lease(1);
}

#[test]
fn a_leader_frozen_past_its_lease_seed_2() {
    leader_frozen_past_its_lease(2);
}

/// The leader SIGSTOPped `kill_delay(seed)` into a recovery, until another
/// node has led for 3 s, then SIGCONTed.
fn leader_frozen_past_its_lease(seed: u64) {
    if !etcd::etcd_present("a_leader_frozen_past_its_lease") {
        return;
    }
    eprintln!(
        "seed {seed}: the leader freezes {:?} into the recovery",
        kill_delay(seed)
    );
    let etcd = etcd::EtcdCluster::start(3, &format!("drd-stop-{seed}"));
    let sim = SimServer::start("3s");
    let d = Dir::new(&format!("cluster-stop-{seed}"));
    let nodes = start_nodes(&d.0, &sim, &etcd, "/stop");
    let first = one_leader(&nodes, Duration::from_secs(10));
    wait_report(&sim, "the recovery of db-1 under way", |r| {
        r.in_progress.iter().any(|op| op == "power_on db-1")
    });
    std::thread::sleep(kill_delay(seed));
    let pid = nodes[first]
        .as_ref()
        .expect("leader")
        .child
        .id()
        .to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    };
    signal("-STOP");
    // Another node takes over while it sleeps, and the datacenter's faults
    // go on: the others recover them.
    let start = Instant::now();
    let second = loop {
        let l = leading_but(&nodes, Some(first));
        if let [one] = l[..] {
            break one;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no takeover");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(3));
    signal("-CONT");
    // Awake, it finds its deadline gone and follows.
    nodes[first].as_ref().expect("old leader").wait_for(
        Duration::from_secs(5),
        "the woken node to follow",
        |n| cluster_of(n)["role"] != "leader",
    );
    assert_eq!(one_leader(&nodes, Duration::from_secs(1)), second);
    let recovered = RECOVERED;
    wait_report(&sim, "every VM back", |r| {
        recovered.iter().all(|vm| back(r, vm))
    });
    std::thread::sleep(Duration::from_secs(2));
    let report = sim.report();
    if report.vms.iter().any(|v| v.refused_starts > 0) {
        for (i, n) in nodes.iter().enumerate() {
            let log = std::fs::read_to_string(&n.as_ref().expect("node").log).unwrap_or_default();
            eprintln!(
                "=== node {i} (first {first}, second {second})\n{}",
                log.lines()
                    .filter(|l| l.contains("db-1") || l.contains("lead") || l.contains("took over"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    assert_safe(&report, &recovered);
    journal_closed(nodes[second].as_ref().expect("leader"));
    let log = std::fs::read_to_string(&nodes[first].as_ref().expect("old").log).unwrap_or_default();
    assert!(
        !log_after_wake_started(&log),
        "the woken node started a recovery"
    );
}

/// Whether the log shows a recovery started after the node stopped leading.
fn log_after_wake_started(log: &str) -> bool {
    let Some(stopped) = log.rfind("stops leading").or_else(|| log.rfind("deposed")) else {
        return false;
    };
    log[stopped..].contains("recovery started")
}

/// Once all is quiet, every readable entry of the journal has ended.
fn journal_closed(leader: &Daemon) {
    let journal = leader.json("/api/v1/journal");
    let open: Vec<&serde_json::Value> = journal
        .as_array()
        .expect("journal")
        .iter()
        .filter(|e| e["outcome"].is_null())
        .collect();
    assert!(open.is_empty(), "entries left open: {open:?}");
}

/// Every VM's starts, from the datacenter's report.
fn starts(sim: &SimServer) -> Vec<(String, u32)> {
    sim.report()
        .vms
        .iter()
        .map(|v| (v.name.clone(), v.starts))
        .collect()
}

#[test]
fn a_leader_cut_off_from_etcd_but_not_from_the_datacenter_stops_and_another_takes_over() {
    leader_cut_off_from_etcd(1);
}

#[test]
fn a_leader_cut_off_from_etcd_seed_2() {
    leader_cut_off_from_etcd(2);
}

/// The leader's etcd black-holed `kill_delay(seed)` into a recovery, while
/// it still reaches the datacenter; mended once the others have recovered.
fn leader_cut_off_from_etcd(seed: u64) {
    if !etcd::etcd_present("a_leader_cut_off_from_etcd_but_not_from_the_datacenter") {
        return;
    }
    eprintln!(
        "seed {seed}: the leader is cut off {:?} into the recovery",
        kill_delay(seed)
    );
    let etcd = etcd::EtcdCluster::start(3, &format!("drd-cut-{seed}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sim = SimServer::start("3s");
    let d = Dir::new(&format!("cluster-cut-{seed}"));
    // Each node reaches etcd through relays of its own, which the test can
    // black-hole; the datacenter it reaches directly.
    let mut relays = Vec::new();
    let mut nodes = Vec::new();
    for n in ["a", "b", "c"] {
        let mine: Vec<etcd::Relay> = (0..3)
            .map(|i| rt.block_on(etcd::Relay::start(etcd.client_port(i))))
            .collect();
        let eps: Vec<String> = mine
            .iter()
            .map(|r| format!("http://127.0.0.1:{}", r.port))
            .collect();
        nodes.push(Some(Daemon::start(&node_config(
            &d.0, &sim.url, n, &eps, "/cut",
        ))));
        relays.push(mine);
    }
    let first = one_leader(&nodes, Duration::from_secs(10));
    wait_report(&sim, "the recovery of db-1 under way", |r| {
        r.in_progress.iter().any(|op| op == "power_on db-1")
    });
    std::thread::sleep(kill_delay(seed));
    for r in &relays[first] {
        r.cut();
    }
    let cut = Instant::now();
    let start = Instant::now();
    let second = loop {
        if let [one] = leading_but(&nodes, Some(first))[..] {
            break one;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no takeover");
        std::thread::sleep(Duration::from_millis(50));
    };
    let takeover = cut.elapsed();
    // The cut-off node says it cannot act (it answers: only etcd is gone).
    let c = cluster_of(nodes[first].as_ref().expect("cut node"));
    assert_ne!(c["role"], "leader", "{c}");
    all_back_safely(&sim, &RECOVERED);
    journal_closed(nodes[second].as_ref().expect("leader"));
    // Mended, it follows the new leader.
    for r in &relays[first] {
        r.mend();
    }
    nodes[first].as_ref().expect("cut node").wait_for(
        Duration::from_secs(10),
        "the mended node to follow",
        |n| {
            let c = cluster_of(n);
            c["role"] == "follower"
                && c["leader"]["node"]
                    == cluster_of(nodes[second].as_ref().expect("leader"))["node"]
        },
    );
    eprintln!("takeover after the leader was cut off from etcd: {takeover:?}");
}

#[test]
fn without_etcd_quorum_no_node_acts_and_automation_resumes_with_it() {
    if !etcd::etcd_present("without_etcd_quorum_no_node_acts") {
        return;
    }
    let mut etcd = etcd::EtcdCluster::start(3, "drd-quorum");
    let sim = SimServer::start("300ms");
    let d = Dir::new("cluster-quorum");
    let nodes = start_nodes(&d.0, &sim, &etcd, "/quorum");
    one_leader(&nodes, Duration::from_secs(10));
    // One member lost: quorum holds, a leader still acts.
    etcd.kill(2);
    one_leader(&nodes, Duration::from_secs(5));
    // Two lost: no quorum. Past the lease, nothing starts, whatever fails.
    etcd.kill(1);
    std::thread::sleep(Duration::from_secs(3));
    assert!(leading(&nodes).is_empty(), "a node leads without quorum");
    let before = starts(&sim);
    wait_report(&sim, "esx-3 lost (at 4 s)", |r| {
        r.vms
            .iter()
            .any(|v| v.name == "erp-1" && v.running_on.is_empty())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(starts(&sim), before, "a VM was started without quorum");
    let r = sim.report();
    assert!(
        r.in_progress.is_empty(),
        "an operation ran without quorum: {r:#?}"
    );
    for n in nodes.iter().flatten() {
        let c = cluster_of(n);
        assert_ne!(c["role"], "leader", "{c}");
    }

    // Quorum back: a leader, and every VM back.
    let lost_for = Instant::now();
    etcd.restart(1);
    etcd.restart(2);
    let leader = one_leader(&nodes, Duration::from_secs(20));
    all_back_safely(&sim, &RECOVERED);
    journal_closed(nodes[leader].as_ref().expect("leader"));
    eprintln!(
        "automation back {:?} after quorum returned",
        lost_for.elapsed()
    );
}

#[test]
fn a_node_that_cannot_reach_etcd_at_start_says_so_and_acts_on_nothing() {
    if !etcd::etcd_present("a_node_that_cannot_reach_etcd_at_start") {
        return;
    }
    let sim = SimServer::start("300ms");
    let d = Dir::new("cluster-noetcd");
    // Nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}", etcd::free_port());
    let node = Daemon::start(&node_config(&d.0, &sim.url, "a", &[nowhere], "/none"));
    wait_report(&sim, "the crash of db-1", |r| {
        r.vms.iter().any(|v| v.name == "db-1" && v.outages > 0)
    });
    std::thread::sleep(Duration::from_secs(3));
    let c = cluster_of(&node);
    assert_eq!(c["role"], "unreachable", "{c}");
    assert!(
        c["etcd_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{c}"
    );
    assert!(
        sim.report().vms.iter().all(|v| v.starts == 0),
        "a node without etcd started a VM"
    );
    // The status says so to drctl too.
    let (code, _) = node.post("/api/v1/vms/db-1/pause", Some(TOKEN));
    assert_eq!(code, 503, "a command with no leader to take it");
}
