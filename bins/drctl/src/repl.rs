//! `drctl repl`: run a replica receiver, ship disks to receivers, show a
//! replica's state, write out a recovered image.

use anyhow::{bail, Context};
use clap::Subcommand;
use dr_replication::agent::{self, ShipJob};
use dr_replication::net::{self, ShipConfig};
use dr_replication::Replica;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// `drctl repl` subcommands.
#[derive(Subcommand)]
pub enum ReplCommand {
    /// Receive replication into DIR until interrupted.
    Serve {
        /// Address to listen on (port 0: any; the address is printed).
        #[arg(long)]
        listen: SocketAddr,
        /// Replica directory.
        #[arg(long)]
        dir: PathBuf,
        /// Checkpoints kept apart for point-in-time recovery.
        #[arg(long, default_value_t = 3)]
        keep: usize,
        /// File holding the pre-shared key (else $VMDR_REPL_KEY).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Ship disk images to receivers: one checkpoint (--once) or one every
    /// --interval seconds. A line of JSON per checkpoint, once every
    /// receiver has it (or the next is due). Exit status 1 when a --once
    /// checkpoint did not reach every receiver (a refusal — wrong key,
    /// another stream — ends it at once), 2 on bad input.
    Ship {
        /// Disk: an image file or a block device (repeat for a group of
        /// disks, shipped consistently).
        #[arg(long, required = true)]
        disk: Vec<PathBuf>,
        /// Receiver address (repeat for more replicas).
        #[arg(long, required = true)]
        to: Vec<SocketAddr>,
        /// Log directory (default: <first disk>.vmdr-log; required when the
        /// first disk is a block device).
        #[arg(long)]
        log: Option<PathBuf>,
        /// One checkpoint, acknowledged by every receiver, then exit.
        #[arg(long, conflicts_with = "interval")]
        once: bool,
        /// Seconds between checkpoints.
        #[arg(long)]
        interval: Option<f64>,
        /// Bandwidth cap per receiver, bytes per second.
        #[arg(long)]
        bandwidth: Option<u64>,
        /// With --once: give up after this many seconds.
        #[arg(long, default_value_t = 600.0)]
        timeout: f64,
        /// File holding the pre-shared key (else $VMDR_REPL_KEY).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Show a replica's checkpoints and RPO (safe while it receives).
    Status {
        /// Replica directory.
        #[arg(long)]
        dir: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write a disk as it was at a checkpoint (refused while a receiver has
    /// the directory open).
    Restore {
        /// Replica directory.
        #[arg(long)]
        dir: PathBuf,
        /// Checkpoint id.
        #[arg(long)]
        checkpoint: u64,
        /// Output image.
        #[arg(long)]
        out: PathBuf,
        /// Disk number in the group.
        #[arg(long, default_value_t = 0)]
        disk: u32,
    },
}

fn key(file: &Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    let k = match file {
        Some(f) => {
            std::fs::read(f).with_context(|| format!("cannot read key file {}", f.display()))?
        }
        None => std::env::var("VMDR_REPL_KEY")
            .map(String::into_bytes)
            .context("no key: give --key-file or set VMDR_REPL_KEY")?,
    };
    let k: Vec<u8> = k.strip_suffix(b"\n").unwrap_or(&k).to_vec();
    if k.len() < 16 {
        bail!("the replication key must be at least 16 bytes");
    }
    Ok(k)
}

async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Runs a subcommand. Bad input is an `Err` (exit 2); shipping that did
/// not reach every receiver is exit 1, said on stderr.
pub async fn run(cmd: ReplCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReplCommand::Serve {
            listen,
            dir,
            keep,
            key_file,
        } => {
            let psk = Arc::new(key(&key_file)?);
            // The port first: a receiver that cannot listen leaves no
            // directory behind.
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            if dir.exists() && !dir.is_dir() {
                bail!("--dir {} is not a directory", dir.display());
            }
            let replica = Replica::open(&dir, keep)
                .with_context(|| format!("cannot open replica {}", dir.display()))?;
            println!("listening on {}", listener.local_addr()?);
            let (stop, stopped) = watch::channel(false);
            let server = tokio::spawn(net::serve(
                listener,
                Arc::new(Mutex::new(replica)),
                psk,
                stopped,
            ));
            interrupted().await;
            let _ = stop.send(true);
            let _ = server.await;
            Ok(ExitCode::SUCCESS)
        }
        ReplCommand::Ship {
            disk,
            to,
            log,
            once,
            interval,
            bandwidth,
            timeout,
            key_file,
        } => {
            if !once && interval.is_none() {
                bail!("give --once or --interval SECONDS");
            }
            let interval = match interval {
                Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
                Some(_) => bail!("--interval must be a positive number of seconds"),
                None => None,
            };
            if !timeout.is_finite() || timeout <= 0.0 {
                bail!("--timeout must be a positive number of seconds");
            }
            for (i, d) in disk.iter().enumerate() {
                let m = std::fs::metadata(d)
                    .with_context(|| format!("cannot read disk {}", d.display()))?;
                if i == 0 && log.is_none() && !m.is_file() {
                    // The default log beside it would land under /dev, in
                    // memory: gone with the next boot.
                    bail!(
                        "{} is not an image file (a block device?): give --log DIR for its log",
                        d.display()
                    );
                }
            }
            let log_dir = log.unwrap_or_else(|| {
                let mut p = disk[0].clone().into_os_string();
                p.push(".vmdr-log");
                PathBuf::from(p)
            });
            let job = ShipJob {
                disks: disk,
                log_dir,
                targets: to,
                ship: ShipConfig {
                    bandwidth,
                    ..ShipConfig::new(key(&key_file)?)
                },
                interval,
                timeout: Duration::from_secs_f64(timeout),
            };
            let (stop, stopped) = watch::channel(false);
            let stopper = tokio::spawn(async move {
                interrupted().await;
                let _ = stop.send(true);
            });
            let r = agent::ship(job, stopped, |round| {
                let targets: Vec<serde_json::Value> = round
                    .targets
                    .iter()
                    .zip(round.lag_bytes.iter().zip(&round.rpo_ms))
                    .map(|((a, p), (lag, rpo))| serde_json::json!({"to": a.to_string(), "acked_seq": p.acked_seq, "checkpoint": p.checkpoint.map(|c| c.0), "lag_bytes": lag, "rpo_ms": rpo, "failures": p.failures, "error": p.error.as_deref()}))
                    .collect();
                let changed: u64 = round.scans.iter().map(|s| s.changed).sum();
                let bytes: u64 = round.scans.iter().map(|s| s.bytes).sum();
                println!("{}", serde_json::json!({"checkpoint": round.checkpoint, "seq": round.seq, "changed_blocks": changed, "bytes": bytes, "targets": targets}));
            })
            .await;
            stopper.abort();
            if let Err(e) = r {
                eprintln!("drctl: shipping failed: {e}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        ReplCommand::Status { dir, json } => {
            let st = agent::inspect(&dir)
                .with_context(|| format!("cannot read replica {}", dir.display()))?;
            let now = agent::now();
            let newest = st.checkpoints.last();
            if json {
                let cps: Vec<serde_json::Value> = st
                    .checkpoints
                    .iter()
                    .map(|c| serde_json::json!({"id": c.id, "seq": c.seq, "time_ms": c.time_ms}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "checkpoints": cps,
                        "newest": newest.map(|c| c.id),
                        "rpo_ms": newest.map(|c| now.saturating_sub(c.time_ms)),
                        "receiving_bytes": st.receiving_bytes,
                        "merging_through": st.merging_through,
                    })
                );
            } else {
                for c in &st.checkpoints {
                    println!(
                        "checkpoint {:>8}  seq {:>12}  age {:>10.1} s",
                        c.id,
                        c.seq,
                        now.saturating_sub(c.time_ms) as f64 / 1000.0
                    );
                }
                match newest {
                    Some(c) => println!(
                        "newest {} · RPO {:.1} s · receiving {} bytes",
                        c.id,
                        now.saturating_sub(c.time_ms) as f64 / 1000.0,
                        st.receiving_bytes
                    ),
                    None => println!("no checkpoint yet · receiving {} bytes", st.receiving_bytes),
                }
                if let Some(id) = st.merging_through {
                    println!("merging checkpoints up to {id} into the base images");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ReplCommand::Restore {
            dir,
            checkpoint,
            out,
            disk,
        } => {
            if !dir.is_dir() {
                // Opening would create it (and its lock file): a typo
                // would leave an empty replica behind.
                bail!("no replica at {}: not a directory", dir.display());
            }
            let r = Replica::open(&dir, usize::MAX)
                .with_context(|| format!("cannot open replica {}", dir.display()))?;
            r.restore(checkpoint, disk, &out)
                .with_context(|| format!("cannot restore checkpoint {checkpoint}"))?;
            let bytes = std::fs::metadata(&out).map_or(0, |m| m.len());
            println!(
                "wrote disk {disk} at checkpoint {checkpoint} to {} ({bytes} bytes)",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
