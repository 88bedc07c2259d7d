//! `drd`: vmdr's reference daemon. Argument parsing, logging and signals;
//! everything else is `dr-daemon`.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

#[derive(Parser)]
#[command(name = "drd", version, about = "vmdr's disaster-recovery daemon")]
struct Cli {
    /// The configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a configuration file without running anything: its keys, and
    /// the files and directories it names, as the daemon will read them
    /// (exit 2 when it is invalid).
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = &cli.command {
        // The checks the daemon makes before it starts, the files it
        // names read as it will read them: `valid` means it can start.
        let checked = dr_daemon::DaemonConfig::load(file)
            .and_then(|c| dr_daemon::preflight::check(&c).map(|()| c));
        return match checked {
            Ok(_) => {
                println!("{}: valid", file.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("drd: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let Some(config) = cli.config else {
        eprintln!("drd: give --config FILE (or check-config FILE)");
        return std::process::ExitCode::from(2);
    };
    let cfg = match dr_daemon::DaemonConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("drd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(cfg) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<dr_daemon::DaemonError>() {
            // The daemon's own checks before it starts (the files the
            // configuration names): an invalid configuration, said as
            // check-config says it.
            Some(dr_daemon::DaemonError::Config(c)) => {
                eprintln!("drd: {c}");
                std::process::ExitCode::from(2)
            }
            _ => {
                eprintln!("drd: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

fn run(cfg: dr_daemon::DaemonConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let (stop, stopped) = watch::channel(false);
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        let _ = reload_tx.try_send(());
                    }
                }
            }
            tracing::info!("stop requested");
            let _ = stop.send(true);
        });
        dr_daemon::run(cfg, stopped, reload_rx, |addr| {
            // A line for scripts and tests to find the API by.
            println!("api listening on {addr}");
            let _ = std::io::stdout().flush();
        })
        .await
        .context("the daemon stopped")
    })
}
