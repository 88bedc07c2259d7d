//! A daemon killed (SIGKILL) while it recovers a VM, then restarted, against
//! a simulated datacenter that outlives it — served from this test's
//! process over HTTP, as `drctl sim-server` serves it — so what the second
//! daemon does about the first one's unfinished work is seen by the
//! datacenter itself: no VM runs twice, none is started more often than it
//! went down, no start is even tried on a VM already running, and nothing
//! is done to the VM a user stopped.

mod common;

use common::{Daemon, Dir};
use dr_daemon::remote_sim::{self, SimReport};
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// The datacenter of the other end-to-end tests, served on a loopback port
/// by a runtime of this process until the returned guard drops.
struct SimServer {
    url: String,
    _stop: tokio::sync::watch::Sender<bool>,
    _rt: tokio::runtime::Runtime,
}

impl SimServer {
    /// With the fixture's power operations taking `power` (it says 300ms).
    fn start(power: &str) -> SimServer {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dc.toml");
        let text = std::fs::read_to_string(&fixture).expect("fixture");
        let fixture_power = "power = \"300ms\"";
        assert!(
            text.contains(fixture_power),
            "the fixture's power latency changed"
        );
        let text = text.replace(fixture_power, &format!("power = \"{power}\""));
        let scenario = dr_sim::Scenario::parse(&text).expect("valid fixture");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        rt.spawn(remote_sim::serve(listener, scenario, stopped));
        SimServer {
            url,
            _stop: stop,
            _rt: rt,
        }
    }

    fn report(&self) -> SimReport {
        let addr = self.url.trim_start_matches("http://");
        let (code, body) = common::http(addr, "GET", "/sim/v1/report", None);
        assert_eq!(code, 200, "report: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("report: {e}: {body}"))
    }
}

/// A daemon configuration in `dir` (as the other tests') on the datacenter
/// at `url`.
fn config_for(dir: &Path, url: &str) -> std::path::PathBuf {
    common::write_config_on(dir, &format!("url = \"{url}\""), "200ms")
}

/// Waits until `f` holds for the datacenter's report.
fn wait_report(sim: &SimServer, what: &str, f: impl Fn(&SimReport) -> bool) -> SimReport {
    let start = Instant::now();
    loop {
        let report = sim.report();
        if f(&report) {
            return report;
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {what}: {report:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `vm` went down and runs again.
fn back(report: &SimReport, vm: &str) -> bool {
    report
        .vms
        .iter()
        .any(|v| v.name == vm && v.outages > 0 && !v.running_on.is_empty())
}

/// The rules across restarts: nothing ran twice, nothing started more often
/// than it went down or while it ran, nothing done to a user's stopped VM;
/// each of `recovered` started exactly once.
fn assert_safe(report: &SimReport, recovered: &[&str]) {
    for vm in &report.vms {
        assert_eq!(vm.double_runs, 0, "{} ran twice: {report:#?}", vm.name);
        assert!(
            vm.starts <= vm.outages,
            "{} started {} times for {} outages: {report:#?}",
            vm.name,
            vm.starts,
            vm.outages
        );
        assert_eq!(
            vm.refused_starts, 0,
            "a start of {} was tried while it ran: {report:#?}",
            vm.name
        );
    }
    for vm in recovered {
        let v = report
            .vms
            .iter()
            .find(|v| v.name == *vm)
            .expect("in the report");
        assert_eq!(v.starts, 1, "{vm} started exactly once: {report:#?}");
    }
    assert!(
        report.user_stop_violations.is_empty(),
        "a VM a user stopped was acted on: {report:#?}"
    );
}

#[test]
fn a_daemon_killed_while_the_datacenter_runs_its_recovery_never_starts_a_vm_twice() {
    // Power-ons take 3 s here: the restarted daemon sees db-1 off, with
    // failed probes, while the datacenter is still finishing the killed
    // daemon's power-on. Starting it again then is the double start this
    // test is about.
    let sim = SimServer::start("3s");
    let d = Dir::new("restart");
    let config = config_for(&d.0, &sim.url);
    let daemon = Daemon::start(&config);
    // db-1 crashes at 1.5 s. Kill the daemon while the datacenter runs its
    // power-on.
    wait_report(&sim, "the recovery of db-1 under way", |r| {
        r.in_progress.iter().any(|op| op == "power_on db-1")
    });
    drop(daemon); // SIGKILL; the datacenter finishes the power-on alone.
    let daemon = Daemon::start(&config);

    // The scenario's failures (a crashed VM, a host recovered from its
    // snapshot, a host lost for good) all end with their VMs running.
    let recovered = ["db-1", "web-1", "erp-1"];
    wait_report(&sim, "every VM back", |r| {
        recovered.iter().all(|vm| back(r, vm))
    });
    // Time for a wrong second start to happen: ten probe intervals.
    std::thread::sleep(Duration::from_secs(2));
    assert_safe(&sim.report(), &recovered);
    let journal = daemon.json("/api/v1/journal");
    assert!(
        journal
            .as_array()
            .expect("journal")
            .iter()
            .any(|e| e["intent"]["vm"] == "db-1" && e["outcome"]["outcome"] == "abandoned"),
        "the interrupted recovery is closed as abandoned: {journal}"
    );
}

#[test]
fn a_vm_that_crashed_while_no_daemon_ran_is_recovered_when_one_starts() {
    let sim = SimServer::start("300ms");
    let d = Dir::new("late-start");
    let config = config_for(&d.0, &sim.url);
    // db-1 crashes and a user switches user-off off at 1.5 s, before any
    // daemon runs: found off at start, one by a crash, one on purpose.
    wait_report(&sim, "the crash of db-1", |r| {
        r.vms.iter().any(|v| v.name == "db-1" && v.outages > 0)
            && r.vms
                .iter()
                .any(|v| v.name == "user-off" && v.running_on.is_empty())
    });
    let _daemon = Daemon::start(&config);
    wait_report(&sim, "db-1 back", |r| back(r, "db-1"));
    std::thread::sleep(Duration::from_secs(2));
    let report = sim.report();
    assert_safe(&report, &["db-1"]);
    let user_off = report
        .vms
        .iter()
        .find(|v| v.name == "user-off")
        .expect("user-off");
    assert!(user_off.running_on.is_empty(), "left off: {report:#?}");
}
