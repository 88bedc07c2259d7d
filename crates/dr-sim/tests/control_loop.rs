//! The control loop's own behaviour over the simulated datacenter: its tick
//! rate, configuration reload, and shutdown.

use async_trait::async_trait;
use dr_control::{ControlConfig, ControlEvent, ControlLoop, EventSink, TokioClock};
use dr_core::ports::{Clock, ProbeError, ProbeResult, ProbeTarget, Prober};
use dr_core::{Policy, Timestamp};
use dr_sim::world::{HostSpec, VmSpec};
use dr_sim::{Latencies, SimHypervisor, SimProber, World};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Counts batches on the way to the real prober (a decorator, like
/// `object_store`'s).
struct Counting<P> {
    inner: P,
    batches: AtomicU32,
}

#[async_trait]
impl<P: Prober> Prober for Counting<P> {
    async fn probe(
        &self,
        targets: &[ProbeTarget],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, ProbeError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.inner.probe(targets, timeout).await
    }
}

#[derive(Default)]
struct Errors(Mutex<Vec<String>>);

impl EventSink for Errors {
    fn emit(&self, _: Timestamp, event: ControlEvent) {
        if let ControlEvent::Error { context, error } = event {
            self.0
                .lock()
                .expect("lock")
                .push(format!("{context}: {error}"));
        }
    }
}

fn world() -> Arc<Mutex<World>> {
    let host = HostSpec {
        name: "h1".into(),
        site: "primary".into(),
        ip: Some("10.0.0.1".parse().expect("ip")),
        cpu_mhz: 10_000,
        memory_mb: 16_384,
        snapshot: false,
        standby: false,
        agent: None,
        fence: None,
    };
    let vm = VmSpec {
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
        powered_on: true,
        created_at: None,
    };
    Arc::new(Mutex::new(
        World::new(vec![host], vec![vm], 1).expect("world"),
    ))
}

#[tokio::test(start_paused = true)]
async fn reload_changes_the_interval_and_rejects_an_invalid_config() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let w = world();
    let hv = Arc::new(SimHypervisor::new(
        w.clone(),
        clock.clone(),
        Latencies::default(),
    ));
    let prober = Arc::new(Counting {
        inner: SimProber::new(w, clock.clone(), Duration::from_millis(1)),
        batches: AtomicU32::new(0),
    });
    let sink = Arc::new(Errors::default());
    let cfg = ControlConfig::default();
    let mut control =
        ControlLoop::new(hv, prober.clone(), clock.clone(), sink.clone(), cfg.clone())
            .expect("valid");
    let (stop, stopped) = watch::channel(false);
    let (publish, config) = watch::channel(cfg.clone());
    let script = async {
        clock.sleep(Duration::from_millis(9_500)).await;
        let at_ten = prober.batches.load(Ordering::SeqCst);
        publish
            .send(ControlConfig {
                probe_interval: Duration::from_secs(5),
                ..cfg.clone()
            })
            .expect("loop listens");
        clock.sleep(Duration::from_secs(30)).await;
        let at_forty = prober.batches.load(Ordering::SeqCst);
        let bad = ControlConfig {
            policy: Policy {
                failure_threshold: 0,
                ..Policy::default()
            },
            ..cfg.clone()
        };
        publish.send(bad).expect("loop listens");
        clock.sleep(Duration::from_secs(30)).await;
        let at_seventy = prober.batches.load(Ordering::SeqCst);
        stop.send(true).expect("loop listens");
        (at_ten, at_forty, at_seventy)
    };
    let ((), (at_ten, at_forty, at_seventy)) =
        tokio::join!(control.run_with_reload(stopped, Some(config)), script);
    assert_eq!(at_ten, 10, "1 s interval: ticks at 0..=9 s");
    assert_eq!(at_forty - at_ten, 6, "5 s interval over the next 30 s");
    assert_eq!(at_seventy - at_forty, 6, "the invalid config did not apply");
    let errors = sink.0.lock().expect("lock").clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("failure_threshold"), "{errors:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_loop_promptly() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let w = world();
    let hv = Arc::new(SimHypervisor::new(
        w.clone(),
        clock.clone(),
        Latencies::default(),
    ));
    let prober = Arc::new(SimProber::new(w, clock.clone(), Duration::from_millis(1)));
    let cfg = ControlConfig {
        probe_interval: Duration::from_secs(3600),
        ..ControlConfig::default()
    };
    let mut control = ControlLoop::new(hv, prober, clock.clone(), Arc::new(Errors::default()), cfg)
        .expect("valid");
    let (stop, stopped) = watch::channel(false);
    let script = async {
        clock.sleep(Duration::from_secs(2)).await;
        stop.send(true).expect("loop listens");
    };
    tokio::join!(control.run(stopped), script);
    assert_eq!(
        clock.now(),
        Timestamp(2_000),
        "did not wait out the hour-long interval"
    );
}
