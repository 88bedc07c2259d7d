//! Recovery execution against the simulated hypervisor: timeouts, retries of
//! transient errors, and no retry of permanent ones.

use dr_control::executor::{execute, Action, RetryPolicy};
use dr_control::TokioClock;
use dr_core::ports::{Clock, HypervisorError};
use dr_core::Timestamp;
use dr_sim::world::{HostSpec, VmSpec};
use dr_sim::{Latencies, SimHypervisor, World};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn world() -> Arc<Mutex<World>> {
    let h = HostSpec {
        name: "h1".into(),
        site: "primary".into(),
        ip: None,
        cpu_mhz: 10_000,
        memory_mb: 16_384,
        snapshot: false,
        standby: false,
        agent: None,
        fence: None,
    };
    let v = VmSpec {
        name: "a".into(),
        ip: "10.1.0.1".parse().expect("ip"),
        host: "h1".into(),
        cpu_mhz: 1_000,
        cpu_reservation_mhz: 0,
        memory_mb: 1_024,
        memory_overhead_mb: 0,
        snapshot: false,
        replica: false,
        tools: true,
        powered_on: false,
        created_at: None,
    };
    Arc::new(Mutex::new(World::new(vec![h], vec![v], 1).expect("world")))
}

fn power_on() -> Action {
    Action::PowerOn {
        vm: "a".into(),
        host: "h1".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_operation_times_out() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let lat = Latencies {
        power: Duration::from_secs(10),
        ..Latencies::default()
    };
    let hv = SimHypervisor::new(world(), clock.clone(), lat);
    let retry = RetryPolicy {
        timeout: Duration::from_secs(3),
        retries: 1,
        delay: Duration::from_secs(1),
    };
    let (attempts, r) = execute(&hv, &*clock, retry, &power_on()).await;
    assert_eq!(attempts, 2, "a timeout is transient: retried once");
    assert!(
        matches!(r, Err(HypervisorError::Timeout { op: "power_on", .. })),
        "{r:?}"
    );
    assert_eq!(clock.now(), Timestamp(7_000), "3 s + 1 s pause + 3 s");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_host_is_retried_until_it_answers() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let w = world();
    w.lock().expect("lock").hosts[0].mgmt_lost = true;
    let hv = SimHypervisor::new(w.clone(), clock.clone(), Latencies::default());
    let heal = {
        let (w, clock) = (w.clone(), clock.clone());
        async move {
            clock.sleep(Duration::from_secs(3)).await;
            w.lock().expect("lock").hosts[0].mgmt_lost = false;
        }
    };
    let retry = RetryPolicy {
        timeout: Duration::from_secs(30),
        retries: 3,
        delay: Duration::from_secs(2),
    };
    let action = power_on();
    let ((attempts, r), ()) = tokio::join!(execute(&hv, &*clock, retry, &action), heal);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(attempts, 3, "failed at 0 s and 2 s, worked at 4 s");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let w = world();
    w.lock().expect("lock").vms[0].fail_next = 5;
    let hv = SimHypervisor::new(w, clock.clone(), Latencies::default());
    let retry = RetryPolicy {
        timeout: Duration::from_secs(30),
        retries: 3,
        delay: Duration::from_secs(2),
    };
    let (attempts, r) = execute(&hv, &*clock, retry, &power_on()).await;
    assert_eq!(attempts, 1);
    assert!(matches!(r, Err(HypervisorError::Failed { .. })), "{r:?}");
}
