//! `drctl status | events | pause | resume` against a daemon running the
//! test datacenter of `bins/drd` (in this process, through `dr-daemon`).

mod common;

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
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../drd/tests/fixtures/dc.toml");
    start_on(tag, &format!("scenario = \"{}\"", fixture.display()))
}

/// A daemon on the simulation `sim` names (`scenario = …` or `url = …`).
fn start_on(tag: &str, sim: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("drctl-daemon-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("token"), TOKEN).expect("token");
    let config = dir.join("drd.toml");
    std::fs::write(
        &config,
        format!(
            "backend = \"sim\"\n[sim]\n{sim}\n[control]\nprobe_interval = \"200ms\"\nprobe_timeout = \"100ms\"\ninventory_interval = \"1s\"\n[policy]\nfailure_threshold = 2\nhost_down_after = \"1s\"\nboot_grace = \"2s\"\n[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[journal]\npath = \"journal.redb\"\n",
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
        if out.contains("db-1") && out.contains("esx-2") && out.contains("heard ") {
            assert!(out.contains("VM") && out.contains("DECISION"), "{out}");
            // Each host's agent (the fixture gives every host one with a
            // 2 s isolation timeout), its storage heartbeat, its evidence.
            let esx2 = out
                .lines()
                .find(|l| l.starts_with("esx-2 "))
                .unwrap_or_default();
            assert!(
                esx2.contains("fences in 2s, watchdog")
                    && esx2.contains("moved ")
                    && esx2.contains("not_down"),
                "{out}"
            );
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
    // Its state word says so at once, before the next tick.
    let (_, out, _) = drctl(&["status"], &d.addr);
    let db1 = out
        .lines()
        .find(|l| l.starts_with("db-1 "))
        .unwrap_or_default();
    assert!(db1.split_whitespace().nth(3) == Some("paused"), "{out}");
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
    // This daemon receives no replica (the simulation's stands in): no
    // checkpoint to list, or to choose.
    let (code, _, err) = drctl(&["checkpoints", "app-1"], &d.addr);
    assert_eq!(code, 2);
    assert!(
        err.contains("404") && err.contains("receives no replica"),
        "{err}"
    );
    let (code, _, err) = drctl(&["failover", "app-1", "--checkpoint", "3"], &d.addr);
    assert_eq!(code, 2);
    assert!(
        err.contains("replica is not received by this daemon"),
        "{err}"
    );
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

#[test]
fn status_says_the_view_is_stale_when_the_backend_is_gone() {
    use std::io::{BufRead, BufReader};
    let scenario = format!(
        "{}/../../examples/drd-datacenter.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut server = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["sim-server", &scenario, "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("drctl sim-server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let sim = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address")
        .to_owned();
    let d = start_on("stale", &format!("url = \"http://{sim}\""));
    // An address without a scheme is accepted.
    let api = d.addr.trim_start_matches("http://").to_owned();
    let status = || {
        let (code, out, err) = drctl(&["status", "--json"], &api);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")
    };
    let wait = |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = status();
            if ok(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "{what}: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("a fresh view", &|st| {
        st["view"]["stale"] == false && st["view"]["fresh_at_ms"].is_u64()
    });
    let ready = |path: &str| common::http_get(&api, path);
    assert_eq!(ready("/readyz").expect("readyz").0, 200);
    // The backend goes. Before, status went on showing every host
    // connected and every VM on, as current.
    let _ = server.kill();
    let _ = server.wait();
    let st = wait("a stale view", &|st| st["view"]["stale"] == true);
    assert!(st["view"]["failing"]["step"].is_string(), "{st}");
    assert!(st["view"]["age_ms"].as_u64() > Some(600), "{st}");
    let (code, out, _) = drctl(&["status"], &api);
    assert_eq!(code, 0);
    assert!(out.starts_with("STALE: this is how things were"), "{out}");
    assert!(out.contains("failing since"), "{out}");
    let (code, body) = ready("/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("stale") && body.contains("failing"), "{body}");
    let (_, metrics) = ready("/metrics").expect("metrics");
    assert!(metrics.contains("vmdr_view_stale 1"), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vmdr_step_failing{") && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[test]
fn status_columns_never_run_together_and_say_why_nothing_is_done() {
    let d = start("columns");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = drctl(&["status"], &d.addr);
        assert_eq!(code, 0, "{err}");
        if out.contains("user-off") && out.contains("(user_stopped)") {
            // Every cell of a row is apart from the next by two spaces at
            // least, whatever its length: the header's columns line up.
            let vm_header = out
                .lines()
                .find(|l| l.starts_with("VM "))
                .expect("VM header");
            let decision_at = vm_header.find("DECISION").expect("DECISION column");
            for row in out.lines().skip_while(|l| !l.starts_with("VM ")).skip(1) {
                if row.is_empty() {
                    break;
                }
                assert!(
                    row.len() > decision_at && row[..decision_at].ends_with("  "),
                    "{row:?} in {out}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no user-stopped VM said so: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_failure_budget_says_what_each_loss_would_cost() {
    let d = start("budget");
    let deadline = Instant::now() + Duration::from_secs(30);
    let budget = loop {
        let (code, out, err) = drctl(&["budget", "--json"], &d.addr);
        assert_eq!(code, 0, "{err}");
        let b: serde_json::Value = serde_json::from_str(&out).expect("json");
        if !b["computed_at_ms"].is_null() {
            break b;
        }
        assert!(Instant::now() < deadline, "never computed: {b}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let failure = |kind: &str, name: &str| {
        budget["failures"]
            .as_array()
            .expect("failures")
            .iter()
            .find(|f| f["kind"] == kind && f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name}: {budget}"))
    };
    // The primary site lost: only app-1 has a replica, on the DR site; the
    // others' snapshots are on the lost site's storage.
    let primary = failure("site", "primary");
    let restored: Vec<(&str, &str)> = primary["restored"]
        .as_array()
        .expect("restored")
        .iter()
        .map(|r| {
            (
                r["vm"].as_str().expect("vm"),
                r["target"].as_str().expect("target"),
            )
        })
        .collect();
    assert_eq!(restored, [("app-1", "dr-1")], "{primary}");
    let down: Vec<&str> = primary["down"]
        .as_array()
        .expect("down")
        .iter()
        .map(|v| v["vm"].as_str().expect("vm"))
        .collect();
    assert!(
        down.contains(&"db-1") && down.contains(&"erp-1"),
        "{primary}"
    );
    // The DR host runs nothing: losing it costs nothing.
    let dr = failure("host", "dr-1");
    assert!(dr["down"].as_array().is_some_and(Vec::is_empty), "{dr}");
    // The table, and the metrics.
    let (code, out, err) = drctl(&["budget"], &d.addr);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("IF LOST") && out.contains("site primary"),
        "{out}"
    );
    assert!(out.contains("db-1 ("), "{out}");
    let (_, metrics) = common::http_get(&d.addr, "/metrics").expect("metrics");
    assert!(
        metrics.contains("vmdr_budget_vms_at_risk{failure=\"site:primary\"}"),
        "{metrics}"
    );
}
