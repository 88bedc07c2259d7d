//! The hypervisor, prober and clock the daemon runs on: the embedded
//! simulated datacenter (with its fault schedule, in real time), one served
//! by its own process (`drctl sim-server`), or vCenter or KVM hosts
//! (libvirt) with the real prober.

use crate::config::Backend;
use dr_core::ports::{Clock, Hypervisor, Prober};
use dr_sim::{Scenario, SimHypervisor, SimProber, World};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The ports, ready for the control loop.
pub struct Ports {
    /// The hypervisor.
    pub hv: Arc<dyn Hypervisor>,
    /// The prober.
    pub prober: Arc<dyn Prober>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The simulated world, when the backend is the simulation (tests and
    /// the fault schedule act on it).
    pub world: Option<Arc<Mutex<World>>>,
    /// The simulation's fault schedule.
    pub faults: Vec<dr_sim::fault::Fault>,
    /// The vCenter session, to log out at shutdown.
    pub vsphere: Option<Arc<dr_vsphere::Vsphere>>,
    /// The backend's own fence devices (the simulated hosts'), if it has
    /// them; a real datacenter's are `[[fence.device]]`.
    pub fencer: Option<Arc<dyn dr_core::ports::Fencer>>,
}

/// Why the backend cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The scenario file of the simulation.
    #[error("{path}: {message}")]
    Scenario {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// vCenter.
    #[error("cannot connect to vCenter: {0}")]
    Vsphere(String),
    /// The KVM hosts.
    #[error("libvirt: {0}")]
    Libvirt(String),
    /// A simulated datacenter served by `drctl sim-server`.
    #[error("cannot reach the simulated datacenter at {url}: {message}")]
    SimServer {
        /// Its address.
        url: String,
        /// Why.
        message: String,
    },
}

/// Checks a scenario file as the embedded simulation starts from it: it
/// parses (a host at least) and builds a world.
fn parse_scenario(path: &std::path::Path, text: &str) -> Result<(Scenario, World), BackendError> {
    let err = |message: String| BackendError::Scenario {
        path: path.display().to_string(),
        message,
    };
    let s = Scenario::parse(text).map_err(|e| err(e.to_string()))?;
    let world = World::new(s.hosts.clone(), s.vms.clone(), s.seed).map_err(err)?;
    Ok((s, world))
}

/// Reads and checks the scenario file at `path` (see [`start`]); for the
/// checks before the daemon starts.
pub fn load_scenario(path: &std::path::Path) -> Result<Scenario, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| BackendError::Scenario {
        path: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    parse_scenario(path, &text).map(|(s, _)| s)
}

/// Starts the configured backend. `state_dir` holds what a backend must
/// keep across restarts (vSphere: registrations under way).
pub async fn start(backend: &Backend, state_dir: &std::path::Path) -> Result<Ports, BackendError> {
    match backend {
        Backend::Sim { scenario } => {
            let err = |message: String| BackendError::Scenario {
                path: scenario.display().to_string(),
                message,
            };
            let text = tokio::fs::read_to_string(scenario)
                .await
                .map_err(|e| err(format!("cannot read: {e}")))?;
            let (s, world) = parse_scenario(scenario, &text)?;
            let world = Arc::new(Mutex::new(world));
            // The schedule's times count from the daemon's start.
            let clock: Arc<dyn Clock> = Arc::new(dr_control::TokioClock::from_zero());
            let hv = Arc::new(SimHypervisor::new(
                world.clone(),
                clock.clone(),
                s.latencies.clone(),
            ));
            let prober = Arc::new(SimProber::new(
                world.clone(),
                clock.clone(),
                Duration::from_millis(1),
            ));
            let fencer = Arc::new(dr_sim::SimFencer::new(world.clone(), clock.clone()));
            Ok(Ports {
                hv,
                prober,
                clock,
                world: Some(world),
                faults: s.faults,
                vsphere: None,
                fencer: Some(fencer),
            })
        }
        Backend::SimServer { url } => {
            let (sim, now) = dr_sim::remote::RemoteSim::connect(url).await.map_err(|e| {
                BackendError::SimServer {
                    url: url.clone(),
                    message: e.to_string(),
                }
            })?;
            let sim = Arc::new(sim);
            Ok(Ports {
                hv: sim.clone(),
                prober: sim.clone(),
                // The datacenter's timeline: its events and ours agree.
                clock: Arc::new(dr_control::TokioClock::starting_at(now)),
                world: None,
                faults: Vec::new(),
                vsphere: None,
                // The served datacenter's fence devices, over its wire.
                fencer: Some(sim),
            })
        }
        Backend::Libvirt { config } => {
            let hv = dr_libvirt::connect(config, Some(state_dir.join("libvirt")))
                .await
                .map_err(|e| BackendError::Libvirt(e.to_string()))?;
            Ok(Ports {
                hv: Arc::new(hv),
                prober: Arc::new(dr_probe::NetProber::new(dr_probe::ProbeConfig::default())),
                clock: Arc::new(dr_control::TokioClock::wall()),
                world: None,
                faults: Vec::new(),
                vsphere: None,
                fencer: None,
            })
        }
        Backend::Vsphere {
            config,
            full_read_every,
        } => {
            let mut v = dr_vsphere::Vsphere::connect(config)
                .await
                .map_err(|e| BackendError::Vsphere(e.to_string()))?;
            v.full_read_every = *full_read_every;
            v.pending_dir = Some(state_dir.join("vsphere-pending"));
            for (vm, r) in v.resume_pending().await {
                match r {
                    Ok(()) => {
                        tracing::warn!(%vm, "a registration a previous run left under way is finished")
                    }
                    Err(e) => {
                        tracing::error!(%vm, error = %e, "a registration a previous run left under way could not be finished; its record stays")
                    }
                }
            }
            for (vm, r) in v.remove_abandoned_uploads().await {
                match r {
                    Ok(()) => {
                        tracing::warn!(%vm, "the disk images a previous run left uploading are cleaned up")
                    }
                    Err(e) => {
                        tracing::error!(%vm, error = %e, "the disk images a previous run left uploading could not be removed; its record stays")
                    }
                }
            }
            let v = Arc::new(v);
            let prober = Arc::new(dr_probe::NetProber::new(dr_probe::ProbeConfig::default()));
            Ok(Ports {
                hv: v.clone(),
                prober,
                clock: Arc::new(dr_control::TokioClock::wall()),
                world: None,
                faults: Vec::new(),
                vsphere: Some(v),
                fencer: None,
            })
        }
    }
}
