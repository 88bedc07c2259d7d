//! The hosts' vmdr agents: their listener, and the backend's inventory
//! amended with what they say (`dr_agent::Agents`), so the engine sees each
//! host's agent and storage heartbeat beside ping and the manager.

use crate::config::AgentsConfig;
use crate::daemon::DaemonError;
use dr_core::ports::{Amended, Clock, Hypervisor};
use std::sync::Arc;
use tokio::sync::watch;

/// Starts the agent listener of `cfg` (until `stopping` flips) and returns
/// `hv` with its inventory amended by the agents' signals.
pub async fn start(
    cfg: &AgentsConfig,
    hv: Arc<dyn Hypervisor>,
    clock: Arc<dyn Clock>,
    mut stopping: watch::Receiver<bool>,
) -> Result<Arc<dyn Hypervisor>, DaemonError> {
    let agents = dr_agent::Agents::new(clock, cfg.storage_dir.clone());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|cause| DaemonError::Listen {
            addr: cfg.listen,
            cause,
        })?;
    let addr = listener.local_addr().map_err(|cause| DaemonError::Listen {
        addr: cfg.listen,
        cause,
    })?;
    tracing::info!(%addr, storage_dir = ?cfg.storage_dir, "listening for host agents");
    let app = agents.router(Arc::from(cfg.token.as_str()));
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "agent listener failed");
        }
    });
    Ok(Arc::new(Amended::new(hv, agents)))
}
