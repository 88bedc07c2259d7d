//! `drctl status | events | pause | resume` against a daemon running the
//! test datacenter of `bins/drd` (in this process, through `dr-daemon`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "an-api-token-for-the-cli-tests";

struct Running {
    addr: String,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(tag: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("drctl-daemon-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../drd/tests/fixtures/dc.toml");
    std::fs::write(dir.join("token"), TOKEN).expect("token");
    let config = dir.join("drd.toml");
    std::fs::write(
        &config,
        format!(
            "backend = \"sim\"\n[sim]\nscenario = \"{}\"\n[control]\nprobe_interval = \"200ms\"\nprobe_timeout = \"100ms\"\ninventory_interval = \"1s\"\n[policy]\nfailure_threshold = 2\nhost_down_after = \"1s\"\nboot_grace = \"2s\"\n[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[journal]\npath = \"journal.redb\"\n",
            fixture.display()
        ),
    )
    .expect("config");
    let cfg = dr_daemon::DaemonConfig::load(&config).expect("valid config");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        rt.block_on(dr_daemon::run(cfg, stopped, reload_rx, move |a| {
            let _ = addr_tx.send(a);
        }))
        .expect("daemon");
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("daemon listening");
    Running {
        addr: format!("http://{addr}"),
        stop,
        thread: Some(thread),
        dir,
    }
}

fn drctl(args: &[&str], api: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(args)
        .args(["--api", api])
        .env("VMDR_API_TOKEN", TOKEN)
        .output()
        .expect("drctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_events_pause_and_resume() {
    let d = start("status");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The table lists the test datacenter's hosts and VMs.
    loop {
        let (code, out, err) = drctl(&["status"], &d.addr);
        assert_eq!(code, 0, "{err}");
        if out.contains("db-1") && out.contains("esx-2") {
            assert!(out.contains("VM") && out.contains("DECISION"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "status never listed db-1: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, _) = drctl(&["status", "--json"], &d.addr);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(st["vms"].as_array().is_some_and(|v| !v.is_empty()));
    // Pause and resume, by name.
    let (code, out, err) = drctl(&["pause", "db-1"], &d.addr);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused"), "{out}");
    let (code, _, err) = drctl(&["pause", "no-such-vm"], &d.addr);
    assert_eq!(code, 2);
    assert!(err.contains("no VM named"), "{err}");
    let (code, _, _) = drctl(&["resume", "db-1"], &d.addr);
    assert_eq!(code, 0);
    // A drill: a copy on the DR site from the replica, timed.
    let (code, out, err) = drctl(&["drill", "app-1"], &d.addr);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("app-1: copy up on dr-1 from its replica")
            && out.contains("production untouched: true"),
        "{out}"
    );
    // A planned failover to the DR site, reported in one line.
    let (code, out, err) = drctl(&["failover", "app-1"], &d.addr);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("app-1: esx-2 -> dr-1 by replica"), "{out}");
    let (code, _, err) = drctl(&["failover", "app-1", "--to", "nowhere"], &d.addr);
    assert_eq!(code, 2);
    assert!(err.contains("no host named"), "{err}");
    // Events: JSON lines with increasing ids.
    let (code, out, _) = drctl(&["events"], &d.addr);
    assert_eq!(code, 0);
    let ids: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["id"]
                .as_u64()
                .expect("id")
        })
        .collect();
    assert!(
        !ids.is_empty() && ids.windows(2).all(|w| w[0] < w[1]),
        "{ids:?}"
    );
    let last = *ids.last().expect("one");
    let (_, later, _) = drctl(&["events", "--since", &last.to_string()], &d.addr);
    assert!(later.lines().all(
        |l| serde_json::from_str::<serde_json::Value>(l).expect("json")["id"].as_u64() > Some(last)
    ));
}

#[test]
fn events_follow_prints_new_events_as_they_come_once_each() {
    use std::io::BufRead;
    let d = start("follow");
    let mut child = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["events", "--follow", "--api", &d.addr])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("drctl events --follow");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The datacenter's db-1 crashes at 1.5 s and is powered on again: the
    // end of that recovery arrives while drctl follows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    while !events
        .iter()
        .any(|e: &serde_json::Value| e["type"] == "action_finished" && e["action"]["vm"] == "db-1")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no recovery of db-1 followed: {events:?}");
        if let Ok(line) = rx.recv_timeout(left) {
            events.push(serde_json::from_str(&line).expect("a JSON line"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, once each: {ids:?}"
    );
}

#[test]
fn no_daemon_is_a_clear_error() {
    let (code, _, err) = drctl(&["status"], "http://127.0.0.1:9");
    assert_eq!(code, 2);
    assert!(err.contains("is drd running"), "{err}");
}
