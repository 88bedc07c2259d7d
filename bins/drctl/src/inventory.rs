//! `drctl inventory --config FILE`: what the configured backend sees, so an
//! operator can check a vCenter connection before running the daemon.

use anyhow::{bail, Context};
use dr_core::model::Inventory;
use serde::Deserialize;
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

/// The parts of the daemon's configuration this command needs; other
/// sections are the daemon's business and are left alone here.
#[derive(Deserialize)]
struct ConfigFile {
    backend: String,
    vsphere: Option<dr_vsphere::config::VsphereSection>,
    sim: Option<SimSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimSection {
    scenario: PathBuf,
}

async fn read(path: &Path) -> anyhow::Result<Inventory> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cfg: ConfigFile = toml::from_str(&text)
        .with_context(|| format!("invalid configuration {}", path.display()))?;
    match cfg.backend.as_str() {
        "vsphere" => {
            let section = cfg.vsphere.with_context(|| {
                format!(
                    "{}: backend = \"vsphere\" needs a [vsphere] section",
                    path.display()
                )
            })?;
            let vcfg = section
                .into_config()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let v = dr_vsphere::Vsphere::connect(&vcfg)
                .await
                .context("cannot connect to vCenter")?;
            let inv = v.full_inventory().await.map(|(inv, _)| inv);
            v.close().await;
            Ok(inv.context("cannot read the vCenter inventory")?)
        }
        "sim" => {
            let section = cfg.sim.with_context(|| {
                format!(
                    "{}: backend = \"sim\" needs a [sim] section",
                    path.display()
                )
            })?;
            let base = path.parent().unwrap_or(Path::new("."));
            let scenario_path = base.join(&section.scenario);
            let text = std::fs::read_to_string(&scenario_path)
                .with_context(|| format!("cannot read {}", scenario_path.display()))?;
            let s = dr_sim::Scenario::parse(&text)
                .with_context(|| format!("invalid scenario {}", scenario_path.display()))?;
            let world = dr_sim::World::new(s.hosts, s.vms, s.seed)
                .map_err(|e| anyhow::anyhow!("{}: {e}", scenario_path.display()))?;
            Ok(world.inventory())
        }
        other => bail!(
            "{}: backend = {other:?}: expected \"vsphere\" or \"sim\"",
            path.display()
        ),
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
