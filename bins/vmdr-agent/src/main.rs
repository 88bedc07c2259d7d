//! `vmdr-agent`: vmdr's agent on a KVM host. Argument parsing, logging and
//! signals; the agent is `dr-agent`'s.

use clap::Parser;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "vmdr-agent", version, about = "vmdr's host agent")]
struct Cli {
    /// The configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// Check the configuration and exit (2 when it is invalid).
    #[arg(long)]
    check: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = match dr_agent::AgentConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmdr-agent: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.check {
        println!("{}: valid", cli.config.display());
        return std::process::ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmdr-agent: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let agent = dr_agent::Agent::new(cfg)?;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = stop.send(true);
        });
        agent.run(stopped).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmdr-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
