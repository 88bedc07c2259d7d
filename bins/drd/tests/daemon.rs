//! drd end to end on the embedded simulated datacenter: the paper's
//! scenarios through the running daemon (HTTP API and metrics asserted), a
//! VM created at runtime, configuration reloads, pause and resume, a restart
//! after SIGKILL, bad configuration.

mod common;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(40);

#[test]
fn the_paper_scenarios_run_through_the_daemon() {
    let d = Dir::new("paper");
    let daemon = Daemon::start(&write_config(&d.0, "200ms"));
    daemon.wait_for(LIMIT, "readiness", |d| d.get("/readyz").0 == 200);
    assert_eq!(daemon.get("/healthz"), (200, "ok\n".into()));

    // Scenario 2: db-1 crashes on a healthy host: powered on in place, once.
    daemon.wait_for(LIMIT, "db-1 powered on again", |d| {
        actions_for(&d.events(), "action_finished", "db-1")
            .iter()
            .any(|e| e["action"]["kind"] == "power_on" && e["ok"] == true)
    });
    // Scenario 3: esx-1 dies and comes back from its host snapshot (web-1
    // back on it); esx-3 dies for good and erp-1 is restored elsewhere.
    daemon.wait_for(LIMIT, "esx-1 recovered and erp-1 restored", |d| {
        let events = d.events();
        let host_back = actions_for(&events, "action_finished", "web-1")
            .iter()
            .any(|e| e["action"]["kind"] == "recover_host" && e["ok"] == true);
        let erp = actions_for(&events, "action_finished", "erp-1")
            .iter()
            .any(|e| e["action"]["kind"] == "restore" && e["ok"] == true);
        host_back && erp
    });
    daemon.wait_for(LIMIT, "every VM but the user's running", |d| {
        let vms = d.json("/api/v1/vms");
        vms.as_array().expect("vms").iter().all(|v| {
            let on = v["power"] == "On";
            if v["name"] == "user-off" {
                !on
            } else {
                on && v["in_flight"] == false
            }
        })
    });
    let events = daemon.events();
    assert!(
        actions_for(&events, "action_started", "user-off").is_empty(),
        "a VM a user switched off was acted on"
    );
    let erp_host = daemon
        .json("/api/v1/vms")
        .as_array()
        .expect("vms")
        .iter()
        .find(|v| v["name"] == "erp-1")
        .expect("erp-1")["host"]
        .clone();
    assert_ne!(erp_host, "esx-3", "erp-1 must have moved off its dead host");
    // The VM created while the daemon ran is monitored.
    assert!(daemon
        .json("/api/v1/vms")
        .as_array()
        .expect("vms")
        .iter()
        .any(|v| v["name"] == "late-1"));

    // Metrics say the same.
    assert!(
        daemon.metric("vmdr_recoveries_finished_total{action=\"power_on\",result=\"ok\"}")
            >= Some(1.0)
    );
    assert!(
        daemon.metric("vmdr_recoveries_finished_total{action=\"recover_host\",result=\"ok\"}")
            >= Some(1.0)
    );
    assert!(
        daemon.metric("vmdr_recoveries_finished_total{action=\"restore\",result=\"ok\"}")
            >= Some(1.0)
    );
    assert!(daemon.metric("vmdr_rto_seconds_count") >= Some(2.0));
    assert!(daemon.metric("vmdr_probes_total{result=\"answered\"}") > Some(0.0));
    assert!(
        daemon.metric("vmdr_probes_total{result=\"lost\"}") > Some(0.0),
        "crashed VMs lose probes"
    );
    assert!(daemon.metric("vmdr_probe_rtt_seconds_count") > Some(0.0));
    assert_eq!(daemon.metric("vmdr_vms"), Some(6.0));
    // Every recovery is in the journal, ended.
    let journal = daemon.json("/api/v1/journal");
    let entries = journal.as_array().expect("journal");
    assert!(entries.len() >= 3, "{journal}");
    assert!(entries.iter().all(|e| !e["outcome"].is_null()), "{journal}");
    // ...with where the VM was and where it went: erp-1 off esx-3, onto
    // the host it runs on (before, both were the target); db-1 in place.
    let hosts = |vm: &str, action: &str| {
        entries
            .iter()
            .filter(|e| e["intent"]["vm"] == vm && e["intent"]["action"] == action)
            .map(|e| {
                (
                    e["intent"]["from_host"].clone(),
                    e["intent"]["to_host"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(
        hosts("erp-1", "restore").contains(&("esx-3".into(), erp_host.clone())),
        "{journal}"
    );
    // The log is plain text (a file, not a terminal) with fields to grep.
    let log = std::fs::read_to_string(&daemon.log).expect("log");
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    assert!(
        log.lines().any(|l| l.contains("action started")
            && l.contains("vm=\"db-1\"")
            && l.contains("action=\"power_on\"")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("decision=") && l.contains("vm=")),
        "{log}"
    );
    assert!(
        !log.contains("ActionStarted {"),
        "Rust debug text in the log"
    );
    let db = hosts("db-1", "power_on");
    assert!(
        !db.is_empty() && db.iter().all(|(f, t)| f == t && f.is_string()),
        "{journal}"
    );
}

#[test]
fn a_new_configuration_applies_and_a_bad_one_is_refused() {
    let d = Dir::new("reload");
    let config = write_config(&d.0, "1s");
    let daemon = Daemon::start(&config);
    daemon.wait_for(LIMIT, "readiness", |d| d.get("/readyz").0 == 200);
    let ticks = |d: &Daemon| d.metric("vmdr_ticks_total").unwrap_or(0.0);
    let t0 = ticks(&daemon);
    std::thread::sleep(Duration::from_secs(2));
    let slow = ticks(&daemon) - t0;
    // A valid file: the new interval takes effect (picked up on change).
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dc.toml");
    std::fs::write(&config, config_text(&fixture, "100ms")).expect("rewrite");
    daemon.wait_for(LIMIT, "the reload", |d| {
        d.metric("vmdr_config_reloads_total{result=\"applied\"}") == Some(1.0)
    });
    let t1 = ticks(&daemon);
    std::thread::sleep(Duration::from_secs(2));
    let fast = ticks(&daemon) - t1;
    assert!(
        fast >= 4.0 * slow.max(1.0),
        "interval 1s gave {slow} ticks in 2 s, 100ms gave {fast}"
    );
    // An invalid file: refused, the daemon keeps running as it was.
    std::fs::write(&config, config_text(&fixture, "soon")).expect("rewrite");
    daemon.wait_for(LIMIT, "the refusal", |d| {
        d.metric("vmdr_config_reloads_total{result=\"rejected\"}") == Some(1.0)
    });
    let t2 = ticks(&daemon);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        ticks(&daemon) - t2 >= 5.0,
        "the running configuration stays"
    );
    // SIGHUP re-reads it too (still invalid: refused again).
    let pid = daemon.child.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(hup.success());
    daemon.wait_for(LIMIT, "the SIGHUP reload", |d| {
        d.metric("vmdr_config_reloads_total{result=\"rejected\"}") == Some(2.0)
    });
}

#[test]
fn pause_needs_the_token_and_keeps_automation_off_a_vm() {
    let d = Dir::new("pause");
    let daemon = Daemon::start(&write_config(&d.0, "200ms"));
    daemon.wait_for(LIMIT, "db-1 monitored", |d| {
        d.json("/api/v1/vms")
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == "db-1"))
    });
    assert_eq!(daemon.post("/api/v1/vms/db-1/pause", None).0, 401);
    assert_eq!(
        daemon
            .post("/api/v1/vms/db-1/pause", Some("wrong-token-wrong-token"))
            .0,
        401
    );
    assert_eq!(daemon.post("/api/v1/vms/nope/pause", Some(TOKEN)).0, 404);
    let (code, body) = daemon.post("/api/v1/vms/db-1/pause", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    // Shown at once (before, from the next tick on).
    let paused_now = daemon
        .json("/api/v1/vms")
        .as_array()
        .expect("vms")
        .iter()
        .any(|v| v["name"] == "db-1" && v["paused"] == true);
    assert!(paused_now, "status right after the pause");
    // db-1 crashes at 1.5 s; paused, it is left alone.
    daemon.wait_for(LIMIT, "db-1 seen down", |d| {
        d.json("/api/v1/vms")
            .as_array()
            .expect("vms")
            .iter()
            .any(|v| v["name"] == "db-1" && v["power"] == "Off")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        actions_for(&daemon.events(), "action_started", "db-1").is_empty(),
        "a paused VM was acted on"
    );
    let vm = daemon
        .json("/api/v1/vms")
        .as_array()
        .expect("vms")
        .iter()
        .find(|v| v["name"] == "db-1")
        .cloned()
        .expect("db-1");
    assert_eq!(vm["paused"], true);
    assert_eq!(vm["decision"]["decision"], "none", "{vm}");
    // Resumed: recovered.
    assert_eq!(daemon.post("/api/v1/vms/db-1/resume", Some(TOKEN)).0, 200);
    daemon.wait_for(LIMIT, "db-1 recovered after resume", |d| {
        actions_for(&d.events(), "action_finished", "db-1")
            .iter()
            .any(|e| e["ok"] == true)
    });
}

#[test]
fn a_daemon_killed_during_a_recovery_closes_it_at_restart() {
    let d = Dir::new("sigkill");
    let config = write_config(&d.0, "200ms");
    let daemon = Daemon::start(&config);
    // Kill it while a recovery runs (its intent is in the journal).
    daemon.wait_for(LIMIT, "a recovery under way", |d| {
        d.metric("vmdr_recoveries_in_flight").unwrap_or(0.0) >= 1.0
    });
    drop(daemon); // SIGKILL
    let daemon = Daemon::start(&config);
    daemon.wait_for(LIMIT, "readiness", |d| d.get("/readyz").0 == 200);
    let journal = daemon.json("/api/v1/journal");
    let entries = journal.as_array().expect("journal");
    assert!(
        entries
            .iter()
            .any(|e| e["outcome"]["outcome"] == "abandoned"),
        "the interrupted recovery is closed as abandoned: {journal}"
    );
    // The abandoned one is the recovery the first run had started.
    let abandoned: Vec<_> = entries
        .iter()
        .filter(|e| e["outcome"]["outcome"] == "abandoned")
        .collect();
    assert_eq!(abandoned.len(), 1, "{journal}");
    assert!(abandoned[0]["outcome"]["why"]
        .as_str()
        .is_some_and(|w| w.contains("daemon stopped")));
}

#[test]
fn check_config_names_the_key_and_line_and_exits_2() {
    let d = Dir::new("check");
    let good = write_config(&d.0, "1s");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drd"))
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("drd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = d.0.join("bad.toml");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dc.toml");
    std::fs::write(
        &bad,
        config_text(&fixture, "1s").replace("retry_delay", "retry_dleay"),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drd"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("drd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retry_dleay") && err.contains("bad.toml:12"),
        "{err}"
    );
}

/// `drd check-config FILE`: exit code and stderr.
fn check_config(file: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drd"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("drd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reads_the_files_the_daemon_will_read() {
    // Each of these was `valid` before, and the daemon could not start
    // with it.
    let d = Dir::new("check-files");
    let good = write_config(&d.0, "1s");
    let text = std::fs::read_to_string(&good).expect("config");
    let scenario = text
        .lines()
        .find_map(|l| l.strip_prefix("scenario = "))
        .expect("a scenario line")
        .trim_matches('"')
        .to_owned();
    std::fs::write(
        d.0.join("empty.toml"),
        "name = \"empty\"\nduration = \"1m\"\n",
    )
    .expect("write");
    std::fs::write(d.0.join("broken.toml"), "[[host]\n").expect("write");
    std::fs::write(d.0.join("k"), "0123456789abcdef").expect("key");
    let replication = "\n[replication]\nkey_file = \"k\"\n[[replication.vm]]\nname = \"db-1\"\n\
                       disks = [\"no-such-disk.img\"]\ntargets = [\"127.0.0.1:1\"]\n";
    for (name, changed, wants) in [
        (
            "missing-scenario",
            text.replace(&scenario, "no-such-scenario.toml"),
            vec!["sim.scenario", "no-such-scenario.toml", "cannot read"],
        ),
        (
            "broken-scenario",
            text.replace(&scenario, "broken.toml"),
            vec!["sim.scenario", "broken.toml"],
        ),
        (
            "no-host",
            text.replace(&scenario, "empty.toml"),
            vec!["sim.scenario", "needs at least one host"],
        ),
        (
            "no-journal-dir",
            text.replace("path = \"journal.redb\"", "path = \"gone/journal.redb\""),
            vec!["journal.path", "gone", "does not exist"],
        ),
        (
            "missing-disk",
            format!("{text}{replication}"),
            vec!["replication.vm", "db-1", "no-such-disk.img"],
        ),
    ] {
        let file = d.0.join(format!("{name}.toml"));
        std::fs::write(&file, changed).expect("write");
        let (code, err) = check_config(&file);
        assert_eq!(code, Some(2), "{name}: {err}");
        for want in wants {
            assert!(err.contains(want), "{name}: {want:?} not in {err}");
        }
        // The daemon refuses it the same way, before it starts anything.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drd"))
            .arg("--config")
            .arg(&file)
            .output()
            .expect("drd");
        assert_eq!(out.status.code(), Some(2), "{name}: the daemon started");
        assert_eq!(String::from_utf8_lossy(&out.stderr), err, "{name}");
    }
    assert_eq!(check_config(&good).0, Some(0));
}

/// Runs drd on `config` to its end: exit code and stderr.
fn drd_fails(config: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drd"))
        .arg("--config")
        .arg(config)
        .output()
        .expect("drd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_errors_say_what_failed_once() {
    let d = Dir::new("start-errors");
    let config = write_config(&d.0, "1s");
    let daemon = Daemon::start(&config);
    daemon.wait_for(LIMIT, "readiness", |d| d.get("/readyz").0 == 200);
    // A second daemon on the same journal.
    let (code, err) = drd_fails(&config);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.matches("cannot open journal").count(), 1, "{err}");
    drop(daemon);
    // An API address in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("127.0.0.1:0", &addr)).expect("config");
    let (code, err) = drd_fails(&config);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn sigterm_stops_it_cleanly() {
    let d = Dir::new("term");
    let mut daemon = Daemon::start(&write_config(&d.0, "200ms"));
    daemon.wait_for(LIMIT, "readiness", |d| d.get("/readyz").0 == 200);
    daemon.terminate_within(Duration::from_secs(40), "drd did not stop on SIGTERM");
}

#[test]
fn snapshots_are_taken_and_pruned_on_schedule() {
    let d = Dir::new("snapshots");
    let config = write_config(&d.0, "200ms");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(
        "\n[snapshots]\nvm_interval = \"1s\"\nvm_keep = 2\nhost_interval = \"1s\"\nhost_keep = 1\n",
    );
    std::fs::write(&config, text).expect("config");
    let started = std::time::Instant::now();
    let daemon = Daemon::start(&config);
    // Each round snapshots every running VM; from the third, pruning keeps 2.
    daemon.wait_for(LIMIT, "VM snapshots taken and pruned", |d| {
        d.metric("vmdr_snapshots_total{kind=\"vm\",result=\"taken\"}") >= Some(9.0)
            && d.metric("vmdr_snapshots_total{kind=\"vm\",result=\"pruned\"}") >= Some(1.0)
    });
    daemon.wait_for(LIMIT, "host snapshots taken and pruned", |d| {
        d.metric("vmdr_snapshots_total{kind=\"host\",result=\"pruned\"}") >= Some(1.0)
    });
    let age = daemon
        .metric("vmdr_snapshot_age_seconds{kind=\"vm\"}")
        .expect("age");
    assert!(
        (0.0..=started.elapsed().as_secs_f64()).contains(&age),
        "the age of the last round ({age} s) lies within the daemon's run"
    );
}

#[test]
fn a_planned_failover_moves_a_vm_to_the_dr_site_and_back() {
    let d = Dir::new("failover");
    let daemon = Daemon::start(&write_config(&d.0, "200ms"));
    daemon.wait_for(LIMIT, "app-1 monitored", |d| {
        d.json("/api/v1/vms")
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == "app-1"))
    });
    assert_eq!(daemon.post("/api/v1/vms/app-1/failover", None).0, 401);
    let (code, body) = daemon.post("/api/v1/vms/nope/failover", Some(TOKEN));
    assert_eq!(code, 409, "{body}");
    // No target given: it has a replica, so the other site.
    let (code, body) = daemon.post("/api/v1/vms/app-1/failover", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["from"], "esx-2");
    assert_eq!(report["to"], "dr-1");
    assert_eq!(report["method"], "replica");
    let app = |d: &Daemon| {
        d.json("/api/v1/vms")
            .as_array()
            .expect("vms")
            .iter()
            .find(|v| v["name"] == "app-1")
            .cloned()
            .expect("app-1")
    };
    daemon.wait_for(LIMIT, "app-1 running on dr-1", |d| {
        let v = app(d);
        v["host"] == "dr-1" && v["power"] == "On"
    });
    // Back home, by name; automation is handed back afterwards.
    let (code, body) = daemon.post("/api/v1/vms/app-1/failover?to=esx-2", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    daemon.wait_for(LIMIT, "app-1 back on esx-2, not paused", |d| {
        let v = app(d);
        v["host"] == "esx-2" && v["power"] == "On" && v["paused"] == false
    });
    // The engine never raced the failover: no recovery of app-1.
    assert!(
        actions_for(&daemon.events(), "action_started", "app-1").is_empty(),
        "automation acted on a VM under planned failover"
    );
    // Both show in the event stream, started and finished.
    let events = daemon.events();
    for kind in ["operation_started", "operation_finished"] {
        let found: Vec<_> = events
            .iter()
            .filter(|e| {
                e["type"] == kind && e["vm"] == "app-1" && e["operation"] == "planned_failover"
            })
            .collect();
        assert_eq!(found.len(), 2, "{kind}: {events:?}");
    }
    let journal = daemon.json("/api/v1/journal");
    let failovers = journal
        .as_array()
        .expect("journal")
        .iter()
        .filter(|e| {
            e["intent"]["action"] == "planned_failover" && e["outcome"]["outcome"] == "succeeded"
        })
        .count();
    assert_eq!(failovers, 2, "{journal}");
    // Both hosts of each, as the reports said (before, null and null).
    let moves: Vec<(serde_json::Value, serde_json::Value)> = journal
        .as_array()
        .expect("journal")
        .iter()
        .filter(|e| e["intent"]["action"] == "planned_failover")
        .map(|e| {
            (
                e["intent"]["from_host"].clone(),
                e["intent"]["to_host"].clone(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        // Newest first.
        [
            ("dr-1".into(), "esx-2".into()),
            ("esx-2".into(), "dr-1".into())
        ],
        "{journal}"
    );
}

#[test]
fn a_drill_brings_up_an_isolated_copy_and_reports_its_rto() {
    let d = Dir::new("drill");
    let daemon = Daemon::start(&write_config(&d.0, "200ms"));
    daemon.wait_for(LIMIT, "late-1 monitored", |d| {
        d.json("/api/v1/vms")
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == "late-1"))
    });
    assert_eq!(daemon.post("/api/v1/vms/app-1/drill", None).0, 401);
    let (code, body) = daemon.post("/api/v1/vms/app-1/drill", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["host"], "dr-1", "{report}");
    assert_eq!(report["source"], "replica");
    assert_eq!(report["production_untouched"], true);
    // The simulated replica restore takes 1 s: the drill's RTO includes it.
    let rto = report["rto_ms"].as_u64().expect("rto");
    assert!(rto >= 900, "the RTO covers the copy's bring-up: {report}");
    // A VM with neither snapshot nor replica cannot be drilled.
    let (code, body) = daemon.post("/api/v1/vms/late-1/drill", Some(TOKEN));
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("no snapshot, no disks on shared storage and no replica"),
        "{body}"
    );
    // Production was never touched: app-1 still runs where it ran, and no
    // recovery of it happened.
    let vms = daemon.json("/api/v1/vms");
    let app = vms
        .as_array()
        .expect("vms")
        .iter()
        .find(|v| v["name"] == "app-1")
        .expect("app-1");
    assert_eq!(
        (app["host"].as_str(), app["power"].as_str()),
        (Some("esx-2"), Some("On"))
    );
    assert!(actions_for(&daemon.events(), "action_started", "app-1").is_empty());
    let journal = daemon.json("/api/v1/journal");
    assert!(journal
        .as_array()
        .expect("journal")
        .iter()
        .any(|e| e["intent"]["action"] == "drill"
            && e["outcome"]["outcome"] == "succeeded"
            && e["intent"]["from_host"] == "esx-2"
            && e["intent"]["to_host"] == "dr-1"));
}

#[test]
fn events_stream_as_they_happen_and_do_not_hold_up_shutdown() {
    use std::io::{BufRead, BufReader, Write};
    let d = Dir::new("stream");
    let mut daemon = Daemon::start(&write_config(&d.0, "200ms"));
    let mut s = std::net::TcpStream::connect(&daemon.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "GET /api/v1/events/stream HTTP/1.1\r\nHost: drd\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut lines = BufReader::new(s.try_clone().expect("clone")).lines();
    let first = lines.next().expect("status line").expect("read");
    assert!(first.contains("200"), "{first}");
    // db-1 crashes at 1.5 s: its events arrive on the stream.
    let mut seen = None;
    for line in lines.by_ref() {
        let line = line.expect("read");
        if let Some(json) = line.strip_prefix("data: ") {
            let ev: serde_json::Value = serde_json::from_str(json).expect("an event");
            if ev["type"] == "observation" && ev["subject"]["vm"] == "db-1" {
                seen = Some(ev);
                break;
            }
        }
    }
    let ev = seen.expect("a db-1 event on the stream");
    assert!(ev["id"].as_u64().is_some(), "{ev}");
    // A client that reconnects (as a browser does, with Last-Event-ID)
    // gets the kept events after the one it names first, in order.
    let first_data = |path: &str, header: &str| {
        let mut s = std::net::TcpStream::connect(&daemon.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: drd\r\nAccept: text/event-stream\r\n{header}\r\n"
        )
        .expect("request");
        let mut kind = String::new();
        for line in BufReader::new(s).lines() {
            let line = line.expect("read");
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_owned();
            }
            if let Some(json) = line.strip_prefix("data: ") {
                let v: serde_json::Value = serde_json::from_str(json).expect("JSON data");
                return (kind, v);
            }
        }
        panic!("{path}: the stream ended before any event");
    };
    let (_, replayed) = first_data("/api/v1/events/stream", "Last-Event-ID: 3\r\n");
    assert_eq!(replayed["id"], 4, "{replayed}");
    let (_, replayed) = first_data("/api/v1/events/stream?since=5", "");
    assert_eq!(replayed["id"], 6, "{replayed}");
    // The status stream begins with the whole status, each VM's state in it.
    let (kind, snapshot) = first_data("/api/v1/status/stream", "");
    assert_eq!(kind, "snapshot");
    let vms = snapshot["status"]["vms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !vms.is_empty() && vms.iter().all(|v| v["state"].is_string()),
        "{snapshot}"
    );
    // SIGTERM with the stream still open: the daemon still stops.
    daemon.terminate_within(
        Duration::from_secs(20),
        "an open event stream held up shutdown",
    );
}

/// A host with a fence device (and no agent) cut off while its VM runs.
const FENCE_SCENARIO: &str = r#"name = "fence"
seed = 1
duration = "1h"
[latency]
read = "5ms"
power = "300ms"
restore_replica = "1s"
[[site]]
name = "primary"
[[host]]
name = "esx-f"               # no agent: only its fence device can prove it off
ip = "10.0.1.1"
fence = { delay = "500ms" }
[[host]]
name = "esx-2"
ip = "10.0.1.2"
[[vm]]
name = "app"
ip = "10.1.0.1"
host = "esx-f"
replica = true
[[fault]]                    # cut off while app runs on
at = "3s"
kind = "host_partition"
host = "esx-f"
[[fault]]
at = "3s"
kind = "host_mgmt_loss"
host = "esx-f"
"#;

/// The VM moved only once the host's fence device read it off.
fn fenced_before_it_moved(daemon: &Daemon) {
    daemon.wait_for(LIMIT, "app restored on esx-2", |d| {
        actions_for(&d.events(), "action_finished", "app")
            .iter()
            .any(|e| e["action"]["kind"] == "restore" && e["ok"] == true)
    });
    let events = daemon.events();
    let fence = events
        .iter()
        .position(|e| e["type"] == "action_finished" && e["action"]["kind"] == "fence_host")
        .expect("a fence");
    assert_eq!(events[fence]["ok"], true, "{}", events[fence]);
    let restore = events
        .iter()
        .position(|e| e["type"] == "action_started" && e["action"]["kind"] == "restore")
        .expect("a restore");
    assert!(fence < restore, "moved before the fence finished");
    assert_eq!(events[restore]["action"]["evidence"], "fenced");
    let host = daemon
        .json("/api/v1/hosts")
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == "esx-f").cloned())
        .unwrap_or_default();
    assert_eq!(host["fence"]["state"], "off", "{host}");
}

#[test]
fn on_the_simulation_a_cut_off_host_is_fenced_through_its_own_device_before_its_vm_moves() {
    let d = Dir::new("sim-fence");
    let scenario = d.0.join("dc.toml");
    std::fs::write(&scenario, FENCE_SCENARIO).expect("scenario");
    let daemon = Daemon::start(&write_config_on(
        &d.0,
        &format!("scenario = \"{}\"", scenario.display()),
        "200ms",
    ));
    fenced_before_it_moved(&daemon);
}

/// The same on a datacenter served as its own process (`drctl sim-server`):
/// its fence devices over its wire.
#[test]
fn on_a_served_simulation_a_cut_off_host_is_fenced_through_its_own_device_before_its_vm_moves() {
    let d = Dir::new("served-fence");
    let sim = common::datacenter::SimServer::serve(FENCE_SCENARIO);
    let daemon = Daemon::start(&common::datacenter::config_for(&d.0, &sim.url));
    fenced_before_it_moved(&daemon);
    let report = sim.report();
    assert!(report.vms.iter().all(|v| v.double_runs == 0), "{report:#?}");
}
