//! A daemon killed (SIGKILL) while it recovers a VM, then restarted, against
//! a simulated datacenter that outlives it — served from this test's
//! process over HTTP, as `drctl sim-server` serves it — so what the second
//! daemon does about the first one's unfinished work is seen by the
//! datacenter itself: no VM runs twice, none is started more often than it
//! went down, no start is even tried on a VM already running, and nothing
//! is done to the VM a user stopped.

mod common;

use common::datacenter::{
    abandoned, all_back_safely, assert_safe, back, config_for, wait_report, SimServer, RECOVERED,
};
use common::{Daemon, Dir};
use std::time::Duration;

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

    all_back_safely(&sim, &RECOVERED);
    assert!(
        abandoned(&daemon, "db-1"),
        "the interrupted recovery is closed as abandoned: {}",
        daemon.json("/api/v1/journal")
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
