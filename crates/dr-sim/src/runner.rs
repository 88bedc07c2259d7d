//! Runs a scenario: the real control loop (`dr-control`) and the real engine
//! (`dr-core`) against the simulated datacenter, on virtual time.

use crate::fault::Fault;
use crate::fencer::SimFencer;
use crate::hypervisor::{lock, SimHypervisor};
use crate::prober::SimProber;
use crate::report::{Record, Report};
use crate::scenario::Scenario;
use crate::world::World;
use dr_control::{ControlEvent, ControlLoop, EventSink, TokioClock};
use dr_core::ports::Clock;
use dr_core::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Why a scenario could not run at all (a safety failure is not this: it is
/// in the [`Report`]'s verdict).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The datacenter described is inconsistent.
    #[error("invalid datacenter: {0}")]
    World(String),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] dr_core::PolicyError),
    /// The virtual-time runtime could not start.
    #[error("cannot start the simulation runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Collects everything that happens, in order.
#[derive(Default)]
struct Collector(Mutex<Vec<(Timestamp, Record)>>);

impl Collector {
    fn push(&self, at: Timestamp, r: Record) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((at, r));
    }
}

impl EventSink for Collector {
    fn emit(&self, at: Timestamp, event: ControlEvent) {
        self.push(at, Record::Control(event));
    }
}

/// Runs `scenario` to its end and reports what happened. Deterministic: the
/// same scenario (same seed) gives the same report, event for event.
pub fn run(scenario: &Scenario) -> Result<Report, RunError> {
    let world = World::new(scenario.hosts.clone(), scenario.vms.clone(), scenario.seed)
        .map_err(RunError::World)?;
    let world = Arc::new(Mutex::new(world));
    // Paused time: the clock jumps to the next timer whenever every task
    // waits, so a run takes as long as its computation, not its timeline.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let collector = Arc::new(Collector::default());
    let end = Timestamp::ZERO.saturating_add(scenario.duration);
    rt.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
        let hv = Arc::new(SimHypervisor::new(
            world.clone(),
            clock.clone(),
            scenario.latencies.clone(),
        ));
        let prober = Arc::new(SimProber::new(
            world.clone(),
            clock.clone(),
            Duration::from_millis(1),
        ));
        let fencer = Arc::new(SimFencer::new(world.clone(), clock.clone()));
        let mut control = ControlLoop::new(
            hv,
            prober,
            clock.clone(),
            collector.clone(),
            scenario.control.clone(),
        )?
        .with_fencer(fencer);
        let (stop, stopped) = watch::channel(false);
        let inject = async {
            for fault in &scenario.faults {
                clock.sleep_until(fault.at).await;
                inject_fault(&world, fault, clock.now(), &collector);
            }
            clock.sleep_until(end).await;
            // The receiver lives as long as `control`, which outlives this.
            let _ = stop.send(true);
        };
        tokio::join!(control.run(stopped), inject);
        Ok::<(), RunError>(())
    })?;
    let records = std::mem::take(
        &mut *collector
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let world = lock(&world).clone();
    Ok(Report::new(scenario, records, &world, end))
}

fn inject_fault(world: &Mutex<World>, fault: &Fault, now: Timestamp, collector: &Collector) {
    fault.apply(&mut lock(world), now);
    collector.push(now, Record::Fault(fault.clone()));
}
