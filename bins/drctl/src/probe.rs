//! `drctl probe`: an fping-like check of targets, for operators.

use anyhow::{bail, Context};
use dr_core::ports::{ProbeKind, ProbeTarget};
use dr_probe::{IcmpConfig, NetProber, ProbeConfig};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// `drctl probe` arguments.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Addresses or host names.
    #[arg(required_unless_present = "file")]
    targets: Vec<String>,
    /// Read targets from this file, one per line (`#` starts a comment).
    #[arg(long, conflicts_with = "targets")]
    file: Option<PathBuf>,
    /// Probe with a TCP connect to this port instead of ICMP echo. A host
    /// that refuses the connection (nothing listening) answered, so it is
    /// up: this checks the host, not a service (see --tcp-open).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "tcp_open")]
    tcp: Option<u16>,
    /// Probe with a TCP connect to this port that must be accepted: up only
    /// with a listener there (a service check).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    tcp_open: Option<u16>,
    /// Probes per target.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Per-probe timeout, milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    timeout: u64,
    /// Time between probes of a target, milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    interval: u64,
    /// Spread each round's requests over this many milliseconds (default:
    /// all at once, as `fping -i 0`; a sweep then ends as soon as every
    /// target has answered or timed out).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    spread: u64,
    /// One JSON object per target.
    #[arg(long)]
    json: bool,
}

/// One target's line of `--json`.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    target: &'a str,
    address: IpAddr,
    up: bool,
    sent: u32,
    received: usize,
    loss_percent: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_ms: Option<Rtt>,
}

#[derive(serde::Serialize)]
struct Rtt {
    min: f64,
    avg: f64,
    max: f64,
}

struct Tally {
    name: String,
    addr: IpAddr,
    sent: u32,
    rtts: Vec<Duration>,
}

/// Bad input is an `Err` (exit 2); the `bool` says whether every target
/// answered at least once.
pub async fn run(args: &ProbeArgs) -> anyhow::Result<bool> {
    let names: Vec<(String, String)> = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            text.lines()
                .enumerate()
                .filter_map(|(i, l)| {
                    let t = l.split('#').next().unwrap_or("").trim();
                    (!t.is_empty()).then(|| (t.to_owned(), format!("{}:{}", path.display(), i + 1)))
                })
                .collect()
        }
        None => args
            .targets
            .iter()
            .map(|t| (t.clone(), format!("argument {t:?}")))
            .collect(),
    };
    if names.is_empty() {
        bail!("no targets");
    }
    let mut tallies = Vec::with_capacity(names.len());
    for (name, origin) in names {
        let addr = resolve(&name)
            .await
            .with_context(|| format!("{origin}: invalid target"))?;
        tallies.push(Tally {
            name,
            addr,
            sent: 0,
            rtts: Vec::new(),
        });
    }
    let kind = match (args.tcp, args.tcp_open) {
        (Some(port), _) => ProbeKind::Tcp(port),
        (None, Some(port)) => ProbeKind::TcpOpen(port),
        (None, None) => ProbeKind::Icmp,
    };
    let targets: Vec<ProbeTarget> = tallies
        .iter()
        .map(|t| ProbeTarget { addr: t.addr, kind })
        .collect();
    let prober = NetProber::new(ProbeConfig {
        icmp: IcmpConfig {
            attempts: 1,
            ..IcmpConfig::default()
        },
        ..ProbeConfig::default()
    });
    if kind == ProbeKind::Icmp {
        // Only the families the targets need: a socket costs its opening.
        use dr_probe::packet::Family;
        for family in [Family::V4, Family::V6] {
            let wanted = tallies.iter().any(|t| {
                matches!(
                    (family, t.addr),
                    (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
                )
            });
            if wanted {
                let k = prober.socket_kind(family).await?;
                tracing::info!(?family, socket = %k, "ICMP socket");
            }
        }
    }
    let interval = Duration::from_millis(args.interval);
    let timeout = Duration::from_millis(args.timeout);
    let (tx, mut rx) = mpsc::channel(4);
    let rounds = prober.rounds(
        &targets,
        dr_probe::RoundConfig {
            interval,
            jitter: interval / 10,
            spread: Duration::from_millis(args.spread).min(interval),
            timeout,
            rounds: Some(args.count),
        },
        tx,
    );
    let collect = async {
        while let Some(round) = rx.recv().await {
            let round = round?;
            for (t, r) in tallies.iter_mut().zip(round) {
                t.sent += 1;
                t.rtts.extend(r.rtt);
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let ((), collected) = tokio::join!(rounds, collect);
    collected?;

    // Buffered: a write per line was a third of a 10,000-target run.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let width = tallies.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut all_up = true;
    for t in &tallies {
        let up = !t.rtts.is_empty();
        all_up &= up;
        let loss = 100.0 * f64::from(t.sent - t.rtts.len() as u32) / f64::from(t.sent.max(1));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (min, avg, max) = if up {
            let sum: Duration = t.rtts.iter().sum();
            (
                t.rtts.iter().min().map_or(0.0, |d| ms(*d)),
                ms(sum) / t.rtts.len() as f64,
                t.rtts.iter().max().map_or(0.0, |d| ms(*d)),
            )
        } else {
            (0.0, 0.0, 0.0)
        };
        if args.json {
            let line = JsonLine {
                target: &t.name,
                address: t.addr,
                up,
                sent: t.sent,
                received: t.rtts.len(),
                loss_percent: loss,
                rtt_ms: up.then_some(Rtt { min, avg, max }),
            };
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        } else if up {
            writeln!(out, "{:<width$} : up    xmt/rcv/%loss = {}/{}/{:.0}%, min/avg/max = {:.3}/{:.3}/{:.3} ms",
                t.name, t.sent, t.rtts.len(), loss, min, avg, max)?;
        } else {
            writeln!(
                out,
                "{:<width$} : DOWN  xmt/rcv/%loss = {}/0/100%",
                t.name, t.sent
            )?;
        }
    }
    out.flush()?;
    drop(out);
    let s = prober.stats();
    let ignored =
        s.duplicates + s.late + s.truncated + s.bad_checksum + s.unknown_sender + s.forged;
    if ignored + s.send_errors > 0 {
        eprintln!(
            "drctl: ignored {ignored} bad or stray replies (duplicate {}, late {}, truncated {}, bad checksum {}, unknown sender {}, forged {}); {} send errors",
            s.duplicates, s.late, s.truncated, s.bad_checksum, s.unknown_sender, s.forged, s.send_errors
        );
    }
    Ok(all_up)
}

async fn resolve(name: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        if ip.is_unspecified() {
            bail!("{ip} is not a host address");
        }
        return Ok(ip);
    }
    if name.is_empty()
        || name.len() > 253
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        bail!("{name:?} is neither an IP address nor a host name");
    }
    let mut addrs = tokio::net::lookup_host((name, 0))
        .await
        .with_context(|| format!("cannot resolve {name:?}"))?;
    addrs
        .next()
        .map(|a| a.ip())
        .with_context(|| format!("{name:?} resolves to no address"))
}
