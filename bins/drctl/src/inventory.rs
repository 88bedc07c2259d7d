//! `drctl inventory --config FILE`: what the configured backend sees, so an
//! operator can check a vCenter or KVM connection before running the daemon.

use anyhow::Context;
use dr_core::model::Inventory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `drctl inventory` arguments.
#[derive(clap::Args)]
pub struct InventoryArgs {
    /// The configuration file (the daemon's).
    #[arg(long)]
    config: PathBuf,
    /// Print the inventory as JSON.
    #[arg(long)]
    json: bool,
}

async fn read(path: &Path) -> anyhow::Result<Inventory> {
    // The daemon's own configuration file, read by the daemon's own code.
    let cfg = dr_daemon::DaemonConfig::load(path)?;
    match &cfg.backend {
        dr_daemon::config::Backend::Vsphere { config, .. } => {
            let v = dr_vsphere::Vsphere::connect(config)
                .await
                .context("cannot connect to vCenter")?;
            let inv = v.full_inventory().await.map(|(inv, _)| inv);
            v.close().await;
            Ok(inv.context("cannot read the vCenter inventory")?)
        }
        dr_daemon::config::Backend::Libvirt { config } => {
            use dr_core::ports::Hypervisor;
            // No state directory: a look must not change the daemon's.
            let hv = dr_libvirt::connect(config, None)
                .await
                .context("cannot start the libvirt backend")?;
            Ok(hv.inventory().await.context("cannot read the KVM hosts")?)
        }
        dr_daemon::config::Backend::Sim { scenario } => {
            let text = std::fs::read_to_string(scenario)
                .with_context(|| format!("cannot read {}", scenario.display()))?;
            let s = dr_sim::Scenario::parse(&text)
                .with_context(|| format!("invalid scenario {}", scenario.display()))?;
            let world = dr_sim::World::new(s.hosts, s.vms, s.seed)
                .map_err(|e| anyhow::anyhow!("{}: {e}", scenario.display()))?;
            Ok(world.inventory(dr_core::Timestamp::ZERO))
        }
        dr_daemon::config::Backend::SimServer { url } => {
            use dr_core::ports::Hypervisor;
            let (sim, _) = dr_sim::remote::RemoteSim::connect(url)
                .await
                .with_context(|| format!("cannot reach the simulated datacenter at {url}"))?;
            Ok(sim.inventory().await.context("cannot read its inventory")?)
        }
    }
}

/// Prints the inventory. Bad configuration or an unreachable backend is an
/// `Err` (exit 2).
pub async fn run(args: &InventoryArgs) -> anyhow::Result<()> {
    let inv = read(&args.config).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &inv)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:<15} {:<14} {:<16} {:>9} {:>10} {:>5}",
        "HOST", "STATE", "SITE", "ADDRESS", "CPU MHz", "MEM MiB", "SNAPS"
    )?;
    for h in &inv.hosts {
        let ip = h.ip.map_or("-".to_owned(), |ip| ip.to_string());
        writeln!(
            out,
            "{:<28} {:<15} {:<14} {:<16} {:>9} {:>10} {:>5}",
            h.name,
            format!("{:?}", h.link),
            h.site,
            ip,
            h.cpu_mhz,
            h.memory_mb,
            h.snapshot_count
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<28} {:<10} {:<10} {:<16} {:<28} {:>5}",
        "VM", "POWER", "HEARTBEAT", "ADDRESS", "HOST", "SNAPS"
    )?;
    for v in &inv.vms {
        let ip = v.ip.map_or("-".to_owned(), |ip| ip.to_string());
        writeln!(
            out,
            "{:<28} {:<10} {:<10} {:<16} {:<28} {:>5}",
            v.name,
            format!("{:?}", v.power),
            format!("{:?}", v.heartbeat),
            ip,
            v.host,
            v.snapshot_count
        )?;
    }
    Ok(())
}
