//! The simulated datacenter served over HTTP (`drctl sim-server`) passes the
//! shared conformance suites through the daemon's backend for it, as the
//! embedded simulation and vCenter do.

use dr_sim::remote::{self as remote_sim, RemoteSim};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::watch;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The conformance world of the embedded simulation's suite, as a
/// scenario; operations take milliseconds (real time here).
fn scenario(faults: &str) -> dr_sim::Scenario {
    dr_sim::Scenario::parse(&scenario_text(faults)).expect("valid scenario")
}

/// [`scenario`]'s text.
fn scenario_text(faults: &str) -> String {
    format!(
        r#"
name = "conformance"
seed = 1
duration = "1h"

[latency]
read = "1ms"
power = "5ms"
revert = "5ms"
restore_snapshot = "10ms"
restore_replica = "10ms"
migrate = "10ms"
recover_host = "10ms"
add_host = "10ms"
snapshot = "5ms"

[[host]]
name = "h1"
agent = {{ isolation_timeout = "2s" }}
ip = "10.0.0.1"
snapshot = true
[[host]]
name = "h2"
agent = {{ isolation_timeout = "2s" }}
ip = "10.0.0.2"
snapshot = true
[[host]]
name = "h3"
agent = {{ isolation_timeout = "2s" }}
ip = "10.0.0.3"
snapshot = true
[[host]]
name = "spare"
agent = {{ isolation_timeout = "2s" }}
ip = "10.0.0.9"
snapshot = true
standby = true

[[vm]]
name = "a"
ip = "10.1.0.1"
host = "h1"
replica = true
[[vm]]
name = "b"
ip = "10.1.0.2"
host = "h1"
replica = true
{faults}
"#
    )
}

/// Serves `scenario` on a loopback port; the server stops with the sender.
async fn server(scenario: dr_sim::Scenario) -> (String, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(remote_sim::serve(listener, scenario, stopped));
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_simulation_passes_the_hypervisor_suite() {
    let (url, _stop) = server(scenario("")).await;
    let (hv, _) = RemoteSim::connect(&url).await.expect("connect");
    let fx = dr_conformance::hypervisor::Fixture {
        vm: "a".into(),
        other_host: "h2".into(),
        standby_host: Some("spare".into()),
        disks: 1,
    };
    dr_conformance::hypervisor::run_all(&hv, &fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_simulation_passes_the_prober_suite() {
    let (url, _stop) = server(scenario(
        "[[fault]]\nat = \"0s\"\nkind = \"host_crash\"\nhost = \"h3\"\n",
    ))
    .await;
    let (p, _) = RemoteSim::connect(&url).await.expect("connect");
    // The fault applies as the server starts: wait until its manager has
    // lost h3.
    use dr_core::ports::Hypervisor;
    let start = std::time::Instant::now();
    while p
        .inventory()
        .await
        .expect("inventory")
        .hosts
        .iter()
        .any(|h| h.name == "h3" && !h.link.is_lost())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "h3 never went down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fx = dr_conformance::prober::Fixture {
        reachable: vec![ip("10.0.0.1"), ip("10.1.0.1"), ip("10.1.0.2")],
        unreachable: vec![ip("10.0.0.3"), ip("10.9.9.9"), ip("::1")],
        timeout: Duration::from_millis(500),
    };
    dr_conformance::prober::run_all(&p, &fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_simulation_passes_the_fencer_suite() {
    let text = scenario_text("");
    let h2 = "name = \"h2\"\n";
    assert!(text.contains(h2), "the scenario's h2 changed");
    let text = text.replacen(h2, &format!("{h2}fence = {{ delay = \"5ms\" }}\n"), 1);
    let (url, _stop) = server(dr_sim::Scenario::parse(&text).expect("valid scenario")).await;
    let (fencer, _) = RemoteSim::connect(&url).await.expect("connect");
    let fx = dr_conformance::fencer::FencerFixture {
        host: "h2".into(),
        no_device: "h1".into(),
    };
    dr_conformance::fencer::run_all(&fencer, &fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error() {
    // A port nobody listens on (bound, then closed).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let err = RemoteSim::connect(&format!("http://{addr}"))
        .await
        .err()
        .expect("nothing listens there");
    assert!(err.to_string().contains("simulated datacenter"), "{err}");
}
