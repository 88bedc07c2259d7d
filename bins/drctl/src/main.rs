//! `drctl`: the vmdr operator CLI. Thin: argument parsing and output; the
//! work is in the library crates.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod daemon_api;
mod inventory;
mod probe;
mod repl;

#[derive(Parser)]
#[command(
    name = "drctl",
    version,
    about = "vmdr: automated disaster recovery for virtual machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario through the real engine and control loop on a
    /// simulated datacenter, on virtual time.
    Simulate(SimulateArgs),
    /// Run a scenario's simulated datacenter as a process of its own, in
    /// real time, for drd (`[sim] url = "http://ADDR"`): it outlives the
    /// daemon, as a real hypervisor does. Prints `listening on ADDR`; its
    /// report (double runs, starts, refused starts) is at
    /// /sim/v1/report. Stops on SIGINT or SIGTERM.
    SimServer(SimServerArgs),
    /// Probe targets like fping: one line per target with up/down, loss and
    /// RTT. Exit status 1 when any target is down, 2 on bad input.
    Probe(probe::ProbeArgs),
    /// Print the hosts and VMs the configured backend sees (state, address,
    /// host, snapshots): check a vCenter connection before running the
    /// daemon.
    Inventory(inventory::InventoryArgs),
    /// Asynchronous replication: serve a replica, ship disks, status, restore.
    #[command(subcommand)]
    Repl(repl::ReplCommand),
    /// The running daemon's hosts and VMs: health, decision, pause.
    Status(daemon_api::StatusArgs),
    /// The failure budget: for every host and site, what losing it now
    /// would cost (which VMs come back where and when, which stay down).
    Budget(daemon_api::StatusArgs),
    /// The running daemon's events, as JSON lines (--follow for new ones).
    Events(daemon_api::EventsArgs),
    /// Stop automation for a VM (it stays monitored).
    Pause(daemon_api::PauseArgs),
    /// Resume automation for a VM.
    Resume(daemon_api::PauseArgs),
    /// Planned failover: stop a VM and bring it up on another host (its
    /// replica on another site, or cold migration on its own).
    Failover(daemon_api::FailoverArgs),
    /// The checkpoints of a VM's replica this daemon receives: the points
    /// `failover --checkpoint` can come back from.
    Checkpoints(daemon_api::CheckpointsArgs),
    /// Recovery drill: bring up an isolated copy of a VM, time it (RTO),
    /// remove it; the VM itself is not touched.
    Drill(daemon_api::DrillArgs),
}

/// `drctl simulate FILE`, `drctl simulate --random [--seeds N]
/// [--first-seed S]` (a sweep), or `drctl simulate [--random] --seed N`
/// (one random datacenter, replayed exactly).
#[derive(Args)]
struct SimulateArgs {
    /// Scenario file (TOML, see docs/scenarios.md).
    file: Option<PathBuf>,
    /// Print a readable timeline instead of JSON lines (one run: a file or
    /// a seed).
    #[arg(long)]
    human: bool,
    /// Run seeded random datacenters with random faults and check the
    /// safety invariants after each.
    #[arg(long)]
    random: bool,
    /// Sweep: how many seeds to run (default 100).
    #[arg(long)]
    seeds: Option<u64>,
    /// Sweep: the first seed (seeds run are FIRST..FIRST+N; default 1).
    #[arg(long)]
    first_seed: Option<u64>,
    /// Replay this one random seed with its full timeline (implies
    /// --random).
    #[arg(long)]
    seed: Option<u64>,
}

/// What `drctl simulate` was asked to run.
enum Simulation<'a> {
    File(&'a std::path::Path),
    Seed(u64),
    Sweep { first: u64, count: u64 },
}

impl SimulateArgs {
    /// The run asked for, or why the options do not go together: none is
    /// silently ignored.
    fn simulation(&self) -> anyhow::Result<Simulation<'_>> {
        let sweep_opts = self.seeds.is_some() || self.first_seed.is_some();
        match (&self.file, self.seed) {
            (Some(_), _) if self.random || self.seed.is_some() || sweep_opts => anyhow::bail!(
                "a scenario file runs alone: --random, --seed, --seeds and --first-seed are for random datacenters"
            ),
            (Some(f), _) => Ok(Simulation::File(f)),
            (None, Some(_)) if sweep_opts => {
                anyhow::bail!("--seed replays one seed: --seeds and --first-seed are for a sweep")
            }
            (None, Some(seed)) => Ok(Simulation::Seed(seed)),
            (None, None) if self.random => {
                if self.human {
                    anyhow::bail!(
                        "--human prints one run's timeline: give --seed N (a sweep prints a line per failed seed)"
                    );
                }
                Ok(Simulation::Sweep {
                    first: self.first_seed.unwrap_or(1),
                    count: self.seeds.unwrap_or(100),
                })
            }
            (None, None) => anyhow::bail!("give a scenario file, --random, or --seed N"),
        }
    }
}

#[derive(Args)]
struct SimServerArgs {
    /// Scenario file (TOML, see docs/scenarios.md); its fault schedule runs
    /// from the server's start.
    file: PathBuf,
    /// Address to listen on (port 0: any; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: std::net::SocketAddr,
}

fn main() -> ExitCode {
    // A closed pipe (`drctl events | head`) ends drctl quietly, as it ends
    // other Unix tools: Rust ignores SIGPIPE, and every later write failed
    // with "Broken pipe" and exit status 2, which means bad input here.
    sigpipe::reset();
    let cli = Cli::parse();
    // The replication commands run for long and their problems (a shipper
    // refused, a receiver's disk full) show only in the log: warnings by
    // default. The others report in their output.
    let default_log = match cli.command {
        Command::Repl(_) => "warn",
        _ => "off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DRCTL_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr)
        .init();
    let result = match cli.command {
        Command::Simulate(args) => simulate(&args),
        Command::SimServer(args) => sim_server(&args),
        Command::Probe(args) => probe(&args),
        Command::Inventory(args) => inventory(&args),
        Command::Repl(cmd) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(repl::run(cmd))),
        Command::Status(args) => on_daemon(daemon_api::status(&args)),
        Command::Budget(args) => on_daemon(daemon_api::budget(&args)),
        Command::Events(args) => on_daemon(daemon_api::events(&args)),
        Command::Pause(args) => on_daemon(daemon_api::pause(&args, true)),
        Command::Resume(args) => on_daemon(daemon_api::pause(&args, false)),
        Command::Failover(args) => on_daemon(daemon_api::failover(&args)),
        Command::Checkpoints(args) => on_daemon(daemon_api::checkpoints(&args)),
        Command::Drill(args) => on_daemon(daemon_api::drill(&args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn on_daemon(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(f)?;
    Ok(ExitCode::SUCCESS)
}

fn sim_server(args: &SimServerArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let scenario = dr_sim::Scenario::parse(&text)
        .with_context(|| format!("invalid scenario {}", args.file.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        println!("listening on {}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let _ = stop.send(true);
            Ok::<(), std::io::Error>(())
        });
        dr_sim::remote::serve(listener, scenario, stopped)
            .await
            .context("the simulated datacenter stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn inventory(args: &inventory::InventoryArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(inventory::run(args))?;
    Ok(ExitCode::SUCCESS)
}

fn probe(args: &probe::ProbeArgs) -> anyhow::Result<ExitCode> {
    // One thread: a sweep is a send loop and a receive loop on one socket,
    // and handing wake-ups between worker threads cost more than it gave
    // (1,000 targets: 16 ms with two workers, against fping's 7).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let all_up = rt.block_on(probe::run(args))?;
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn simulate(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let path = match args.simulation()? {
        Simulation::Seed(seed) => {
            let report = dr_sim::run(&dr_sim::random::scenario(seed))?;
            return print_report(&report, args.human);
        }
        Simulation::Sweep { first, count } => return random_sweep(first, count),
        Simulation::File(path) => path,
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let scenario = dr_sim::Scenario::parse(&text)
        .with_context(|| format!("invalid scenario {}", path.display()))?;
    let report = dr_sim::run(&scenario)?;
    print_report(&report, args.human)
}

fn print_report(report: &dr_sim::Report, human: bool) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if human {
        report.write_human(&mut out)?;
    } else {
        report.write_json_lines(&mut out)?;
    }
    out.flush()?;
    Ok(if report.verdict.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn random_sweep(first: u64, count: u64) -> anyhow::Result<ExitCode> {
    let mut failed = Vec::new();
    let mut stdout = io::stdout().lock();
    for seed in first..first.saturating_add(count) {
        let report = dr_sim::run(&dr_sim::random::scenario(seed))?;
        if !report.verdict.ok {
            writeln!(
                stdout,
                "{}",
                serde_json::json!({
                    "type": "failed_seed", "seed": seed, "verdict": report.verdict,
                    "replay": format!("drctl simulate --random --seed {seed} --human"),
                })
            )?;
            failed.push(seed);
        }
    }
    writeln!(
        stdout,
        "{}",
        serde_json::json!({
            "type": "random_summary", "first_seed": first, "seeds": count, "failed": failed.len(), "failed_seeds": failed,
        })
    )?;
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
