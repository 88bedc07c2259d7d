//! The simulated datacenter served over HTTP from the test's process, as
//! `drctl sim-server` serves it (it outlives the daemons, as a real
//! hypervisor does, and counts what they did), and the safety rules checked
//! on its report.

use dr_sim::remote::{self as remote_sim, SimReport};
use std::path::Path;
use std::time::{Duration, Instant};

pub const LIMIT: Duration = Duration::from_secs(30);

/// The datacenter of the other end-to-end tests, served on a loopback port
/// by a runtime of this process until the returned guard drops.
pub struct SimServer {
    pub url: String,
    _stop: tokio::sync::watch::Sender<bool>,
    _rt: tokio::runtime::Runtime,
}

impl SimServer {
    /// With the fixture's power operations taking `power` (it says 300ms).
    pub fn start(power: &str) -> SimServer {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dc.toml");
        let text = std::fs::read_to_string(&fixture).expect("fixture");
        let fixture_power = "power = \"300ms\"";
        assert!(
            text.contains(fixture_power),
            "the fixture's power latency changed"
        );
        SimServer::serve(&text.replace(fixture_power, &format!("power = \"{power}\"")))
    }

    /// The datacenter of the scenario `text`.
    pub fn serve(text: &str) -> SimServer {
        let scenario = dr_sim::Scenario::parse(text).expect("valid scenario");
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

    pub fn report(&self) -> SimReport {
        let addr = self.url.trim_start_matches("http://");
        let (code, body) = super::http(addr, "GET", "/sim/v1/report", None);
        assert_eq!(code, 200, "report: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("report: {e}: {body}"))
    }
}

/// A daemon configuration in `dir` (as the other tests') on the datacenter
/// at `url`.
pub fn config_for(dir: &Path, url: &str) -> std::path::PathBuf {
    super::write_config_on(dir, &format!("url = \"{url}\""), "200ms")
}

/// Waits until `f` holds for the datacenter's report.
pub fn wait_report(sim: &SimServer, what: &str, f: impl Fn(&SimReport) -> bool) -> SimReport {
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
pub fn back(report: &SimReport, vm: &str) -> bool {
    report
        .vms
        .iter()
        .any(|v| v.name == vm && v.outages > 0 && !v.running_on.is_empty())
}

/// The rules across restarts: nothing ran twice, nothing started more often
/// than it went down or while it ran, nothing done to a user's stopped VM;
/// each of `recovered` started exactly once.
pub fn assert_safe(report: &SimReport, recovered: &[&str]) {
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

/// The fixture's failures that end with their VMs running again: a crashed
/// VM, a host recovered from its snapshot, a host lost for good.
pub const RECOVERED: [&str; 3] = ["db-1", "web-1", "erp-1"];

/// Waits until every VM of `recovered` went down and runs again, leaves
/// ten probe intervals for a wrong second start to happen, and checks the
/// safety rules with each of `recovered` started exactly once.
pub fn all_back_safely(sim: &SimServer, recovered: &[&str]) {
    wait_report(sim, "every VM back", |r| {
        recovered.iter().all(|vm| back(r, vm))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_safe(&sim.report(), recovered);
}

/// Whether the journal at `daemon` closed a recovery of `vm` as abandoned.
pub fn abandoned(daemon: &super::Daemon, vm: &str) -> bool {
    daemon.json("/api/v1/journal").as_array().is_some_and(|j| {
        j.iter()
            .any(|e| e["intent"]["vm"] == vm && e["outcome"]["outcome"] == "abandoned")
    })
}
