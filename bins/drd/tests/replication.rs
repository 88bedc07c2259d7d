//! drd's replication manager end to end: a protected VM's disk shipped to
//! two receivers (run here, on loopback); RPO, lag and checkpoints in the
//! API and the metrics; each replica equals the disk, before and after it
//! changes.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "a replication key for the tests";
const LIMIT: Duration = Duration::from_secs(40);

struct Receivers {
    addrs: Vec<String>,
    dirs: Vec<std::path::PathBuf>,
    stop: tokio::sync::watch::Sender<bool>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receivers {
    fn start(root: &std::path::Path) -> Receivers {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut addrs = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..2 {
            let dir = root.join(format!("replica-{i}"));
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            addrs.push(listener.local_addr().expect("addr").to_string());
            let replica = Arc::new(Mutex::new(
                dr_replication::Replica::open(&dir, 2).expect("replica"),
            ));
            rt.spawn(dr_replication::net::serve(
                listener,
                replica,
                Arc::new(KEY.as_bytes().to_vec()),
                stopped.clone(),
            ));
            dirs.push(dir);
        }
        Receivers {
            addrs,
            dirs,
            stop,
            rt: Some(rt),
        }
    }

    /// Stops the receivers (releasing their directories) and returns each
    /// replica's newest image of disk 0.
    fn stop_and_restore(&mut self, out: &std::path::Path) -> Vec<Vec<u8>> {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        self.dirs
            .iter()
            .map(|d| {
                let r = dr_replication::Replica::open(d, 2).expect("reopen");
                let newest = r.newest().expect("a checkpoint");
                r.restore(newest.id, 0, out).expect("restore");
                std::fs::read(out).expect("read")
            })
            .collect()
    }
}

#[test]
fn a_protected_vm_is_shipped_to_two_replicas_with_its_rpo_measured() {
    let d = Dir::new("replication");
    let disk = d.0.join("db-1.img");
    let mut image: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i / 4096) as u8 ^ (i as u8))
        .collect();
    std::fs::write(&disk, &image).expect("disk");
    std::fs::write(d.0.join("repl-key"), KEY).expect("key");
    let mut receivers = Receivers::start(&d.0);
    let config = write_config(&d.0, "200ms");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[replication]\nkey_file = \"repl-key\"\ninterval = \"300ms\"\n[[replication.vm]]\nname = \"db-1\"\ndisks = [\"db-1.img\"]\ntargets = [\"{}\", \"{}\"]\n",
        receivers.addrs[0], receivers.addrs[1]
    ));
    std::fs::write(&config, text).expect("config");
    let started = std::time::Instant::now();
    let daemon = Daemon::start(&config);
    let checkpoint = |d: &Daemon, i: usize| {
        d.metric(&format!(
            "vmdr_replication_checkpoint{{vm=\"db-1\",target=\"{}\"}}",
            receivers.addrs[i]
        ))
    };
    daemon.wait_for(LIMIT, "both replicas acknowledged a checkpoint", |d| {
        checkpoint(d, 0) >= Some(1.0) && checkpoint(d, 1) >= Some(1.0)
    });
    // Change a block; both replicas get it.
    image[8192..12288].fill(0xAB);
    std::fs::write(&disk, &image).expect("disk");
    let before = checkpoint(&daemon, 0).unwrap_or(0.0);
    daemon.wait_for(LIMIT, "newer checkpoints everywhere", |d| {
        checkpoint(d, 0) > Some(before + 1.0) && checkpoint(d, 1) > Some(before + 1.0)
    });
    let rpo = daemon
        .metric(&format!(
            "vmdr_replication_rpo_seconds{{vm=\"db-1\",target=\"{}\"}}",
            receivers.addrs[0]
        ))
        .expect("rpo");
    assert!(
        (0.0..=started.elapsed().as_secs_f64()).contains(&rpo),
        "the RPO ({rpo} s) lies within the daemon's run"
    );
    let status = daemon.json("/api/v1/replication");
    let vm = &status.as_array().expect("list")[0];
    assert_eq!(vm["vm"], "db-1");
    assert_eq!(vm["targets"].as_array().expect("targets").len(), 2);
    assert!(vm["error"].is_null(), "{status}");
    drop(daemon);
    for (i, got) in receivers
        .stop_and_restore(&d.0.join("restored.img"))
        .into_iter()
        .enumerate()
    {
        assert!(got == image, "replica {i} differs from the disk");
    }
}

#[test]
fn replication_settings_are_checked() {
    let d = Dir::new("replication-bad");
    let config = write_config(&d.0, "1s");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[replication]\nkey_env = \"VMDR_TEST_UNSET_KEY_VARIABLE\"\n");
    std::fs::write(&config, &text).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drd"))
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("drd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("VMDR_TEST_UNSET_KEY_VARIABLE"), "{err}");
    std::fs::write(d.0.join("k"), "0123456789abcdef").expect("key");
    let text = text.replace(
        "key_env = \"VMDR_TEST_UNSET_KEY_VARIABLE\"",
        "key_file = \"k\"\n[[replication.vm]]\nname = \"x\"\ndisks = [\"x.img\"]\ntargets = [\"nowhere\"]",
    );
    std::fs::write(&config, text).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drd"))
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("drd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replication.vm.targets") && err.contains("nowhere"),
        "{err}"
    );
}

#[test]
fn a_failover_from_the_replica_writes_the_disks_from_its_newest_checkpoint() {
    let image: Vec<u8> = (0..(2u32 << 20)).map(|i| (i / 512) as u8 ^ 0x5A).collect();
    let (d, config, [a, b]) = shipping_and_receiving("replica-failover", &image, 2, KEY);
    let daemon = Daemon::start(&config);
    daemon.wait_for(LIMIT, "a checkpoint on both replicas", |d| {
        [a, b].iter().all(|p| {
            d.metric(&format!(
                "vmdr_replication_checkpoint{{vm=\"app-1\",target=\"127.0.0.1:{p}\"}}"
            )) >= Some(1.0)
        })
    });
    // A drill from the replica writes the checkpoint to images of its own
    // (the simulation refuses missing ones), and removes them after.
    let (code, body) = daemon.post("/api/v1/vms/app-1/drill", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let drill: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(drill["source"], "replica", "{drill}");
    let left: Vec<_> = std::fs::read_dir(d.0.join("dr-site"))
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the drill left images: {left:?}");
    let (code, body) = daemon.post("/api/v1/vms/app-1/failover", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["method"], "replica", "{report}");
    let restored = std::fs::read(d.0.join("dr-site/app-1.img")).expect("the restored disk");
    assert!(
        restored == image,
        "the restored disk differs from the source"
    );
}

/// A planned failover to a checkpoint the operator chose (one from before
/// a corruption): the API lists the replica's checkpoints; one it does not
/// hold is refused before anything stops; an older one it holds brings
/// the VM back with the disk as it was then, not as it is now.
#[test]
fn a_failover_to_a_chosen_older_checkpoint_restores_the_disk_as_it_was_then() {
    let before: Vec<u8> = (0..(1u32 << 20)).map(|i| (i / 512) as u8 ^ 0x3C).collect();
    let (d, config, [a, _]) = shipping_and_receiving("replica-failover-older", &before, 1000, KEY);
    let disk = d.0.join("app-1.img");
    let daemon = Daemon::start(&config);
    let acked = |d: &Daemon| {
        d.metric(&format!(
            "vmdr_replication_checkpoint{{vm=\"app-1\",target=\"127.0.0.1:{a}\"}}"
        ))
        .unwrap_or(0.0) as u64
    };
    daemon.wait_for(LIMIT, "a checkpoint on dr-a", |d| acked(d) >= 1);
    let listed = daemon.json("/api/v1/vms/app-1/checkpoints");
    let old = listed["checkpoints"]
        .as_array()
        .and_then(|c| c.last())
        .unwrap_or_else(|| panic!("no checkpoint listed: {listed}"));
    let old_id = old["id"].as_u64().expect("id");
    assert_eq!(old["disks"], serde_json::json!([0]), "{listed}");
    assert!(old["time_ms"].as_u64() > Some(0), "{listed}");
    // The disk is corrupted; the replicas get that too.
    let mut after = before.clone();
    after[4096..65536].fill(0xEE);
    std::fs::write(&disk, &after).expect("disk");
    daemon.wait_for(LIMIT, "newer checkpoints on dr-a", |d| {
        acked(d) >= old_id + 2
    });
    let newest = daemon.json("/api/v1/vms/app-1/checkpoints")["checkpoints"]
        .as_array()
        .and_then(|c| c.last().cloned())
        .expect("checkpoints");
    assert!(newest["id"].as_u64() > Some(old_id));
    // Not held: refused, and app-1 was not stopped.
    let (code, body) = daemon.post("/api/v1/vms/app-1/failover?checkpoint=999999", Some(TOKEN));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("checkpoint 999999 is not one of"), "{body}");
    assert_eq!(vm(&daemon, "app-1")["power"], "On");
    let (code, _) = daemon.get("/api/v1/vms/nope/checkpoints");
    assert_eq!(code, 404);
    let (code, body) = daemon.post(
        &format!("/api/v1/vms/app-1/failover?checkpoint={old_id}"),
        Some(TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["method"], "replica", "{report}");
    assert_eq!(report["checkpoint"], old_id, "{report}");
    let restored = std::fs::read(d.0.join("dr-site/app-1.img")).expect("the restored disk");
    assert!(
        restored == before,
        "the restored disk is not the disk as it was at checkpoint {old_id}"
    );
}
