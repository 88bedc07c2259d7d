//! The simulated datacenter passes the shared conformance suites.

use dr_control::TokioClock;
use dr_core::ports::Clock;
use dr_sim::world::{HostSpec, VmSpec};
use dr_sim::{Latencies, SimHypervisor, SimProber, World};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn world() -> World {
    let host = |name: &str, addr: &str, standby: bool| HostSpec {
        name: name.into(),
        site: "primary".into(),
        ip: Some(ip(addr)),
        cpu_mhz: 40_000,
        memory_mb: 65_536,
        snapshot: true,
        standby,
        agent: None,
        fence: None,
    };
    let vm = |name: &str, addr: &str, host: &str| VmSpec {
        name: name.into(),
        ip: ip(addr),
        host: host.into(),
        cpu_mhz: 2_000,
        cpu_reservation_mhz: 0,
        memory_mb: 4_096,
        memory_overhead_mb: 0,
        snapshot: false,
        replica: true,
        tools: true,
        powered_on: true,
        created_at: None,
    };
    World::new(
        vec![
            host("h1", "10.0.0.1", false),
            host("h2", "10.0.0.2", false),
            host("h3", "10.0.0.3", false),
            host("spare", "10.0.0.9", true),
        ],
        vec![vm("a", "10.1.0.1", "h1"), vm("b", "10.1.0.2", "h1")],
        1,
    )
    .expect("valid world")
}

#[tokio::test(start_paused = true)]
async fn sim_hypervisor_passes_the_conformance_suite() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let hv = SimHypervisor::new(Arc::new(Mutex::new(world())), clock, Latencies::default());
    let fx = dr_conformance::hypervisor::Fixture {
        vm: "a".into(),
        other_host: "h2".into(),
        standby_host: Some("spare".into()),
        disks: 1,
    };
    dr_conformance::hypervisor::run_all(&hv, &fx).await;
}

#[tokio::test(start_paused = true)]
async fn sim_prober_passes_the_conformance_suite() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let w = Arc::new(Mutex::new(world()));
    // Take h3 down so its address is silent.
    let h3 = w.lock().expect("lock").host_idx("h3").expect("h3");
    w.lock().expect("lock").host_goes_down(
        h3,
        dr_sim::world::HostState::Down,
        dr_core::Timestamp::ZERO,
    );
    let p = SimProber::new(w, clock, Duration::from_millis(1));
    let fx = dr_conformance::prober::Fixture {
        reachable: vec![ip("10.0.0.1"), ip("10.1.0.1"), ip("10.1.0.2")],
        unreachable: vec![ip("10.0.0.3"), ip("10.9.9.9"), ip("::1")],
        timeout: Duration::from_millis(500),
    };
    dr_conformance::prober::run_all(&p, &fx).await;
}

#[tokio::test(start_paused = true)]
async fn sim_fencer_passes_the_conformance_suite() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let mut w = world();
    let h2 = w.host_idx("h2").expect("h2");
    w.hosts[h2].spec.fence = Some(dr_sim::world::FenceSpec::working());
    let w = Arc::new(Mutex::new(w));
    let fencer = dr_sim::SimFencer::new(w.clone(), clock);
    let fx = dr_conformance::fencer::FencerFixture {
        host: "h2".into(),
        no_device: "h1".into(),
    };
    dr_conformance::fencer::run_all(&fencer, &fx).await;
    assert_eq!(
        w.lock().expect("lock").hosts[h2].state,
        dr_sim::world::HostState::DeviceOff
    );
}
