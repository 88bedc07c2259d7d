//! `drctl status | events | pause | resume`: the running daemon (drd),
//! through its HTTP API.

use anyhow::{bail, Context};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Where the daemon is.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The daemon's API (else $VMDR_API, else http://127.0.0.1:7070).
    #[arg(long)]
    api: Option<String>,
}

impl ApiArgs {
    fn base(&self) -> String {
        self.api
            .clone()
            .or_else(|| std::env::var("VMDR_API").ok())
            .unwrap_or_else(|| "http://127.0.0.1:7070".into())
            .trim_end_matches('/')
            .to_owned()
    }
}

/// `drctl status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// `drctl events`.
#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Keep printing new events as they happen.
    #[arg(long)]
    follow: bool,
    /// Only events after this id.
    #[arg(long, default_value_t = 0)]
    since: u64,
}

/// `drctl pause VM` and `drctl resume VM`.
#[derive(Args)]
pub struct PauseArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The VM.
    vm: String,
    /// File holding the API token (else $VMDR_API_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// `drctl failover VM [--to HOST]`.
#[derive(Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The VM.
    vm: String,
    /// The target host (else: another site if it has a replica, its own
    /// site otherwise; the connected host with the most room).
    #[arg(long)]
    to: Option<String>,
    /// File holding the API token (else $VMDR_API_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// `drctl drill VM [--to HOST]`.
#[derive(Args)]
pub struct DrillArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The VM.
    vm: String,
    /// The host for the isolated copy (else: another site if it has a
    /// replica, its own site otherwise).
    #[arg(long)]
    to: Option<String>,
    /// File holding the API token (else $VMDR_API_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// A POST to the daemon with the API token; its answer's body.
async fn post(
    api: &ApiArgs,
    token_file: &Option<PathBuf>,
    path: &str,
    what: &str,
) -> anyhow::Result<String> {
    let token = token(token_file)?;
    let base = api.base();
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .context("cannot build the HTTP client")?
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {base} (is drd running?)"))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what}: {status}: {body}");
    }
    Ok(body)
}

/// A POST to the daemon that returns a JSON report.
async fn post_report(
    api: &ApiArgs,
    token_file: &Option<PathBuf>,
    path: String,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    let body = post(api, token_file, &path, what).await?;
    serde_json::from_str(&body).context("the daemon's answer")
}

/// Rehearses a recovery: an isolated copy brought up, timed and removed.
pub async fn drill(args: &DrillArgs) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/vms/{}/drill", args.vm);
    if let Some(to) = &args.to {
        path.push_str(&format!("?to={to}"));
    }
    let rep = post_report(
        &args.api,
        &args.token_file,
        path,
        &format!("drill {}", args.vm),
    )
    .await?;
    println!(
        "{}: copy up on {} from its {} in {:.1} s (RTO); production untouched: {}",
        s(&rep["vm"]),
        s(&rep["host"]),
        s(&rep["source"]),
        rep["rto_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        s(&rep["production_untouched"])
    );
    Ok(())
}

fn token(file: &Option<PathBuf>) -> anyhow::Result<String> {
    match file {
        Some(f) => Ok(std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .trim()
            .to_owned()),
        None => std::env::var("VMDR_API_TOKEN").context("give --token-file or set VMDR_API_TOKEN"),
    }
}

/// Moves a VM on purpose: stopped, then brought up on the target.
pub async fn failover(args: &FailoverArgs) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/vms/{}/failover", args.vm);
    if let Some(to) = &args.to {
        path.push_str(&format!("?to={to}"));
    }
    let rep = post_report(
        &args.api,
        &args.token_file,
        path,
        &format!("failover {}", args.vm),
    )
    .await?;
    println!(
        "{}: {} -> {} by {}, down {:.1} s",
        s(&rep["vm"]),
        s(&rep["from"]),
        s(&rep["to"]),
        s(&rep["method"]),
        rep["downtime_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
    Ok(())
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")
}

async fn get_json(base: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{base}{path}");
    let r = client()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {base} (is drd running?)"))?;
    let status = r.status();
    let body = r.text().await.context("reading the daemon's answer")?;
    if !status.is_success() {
        bail!("{url}: {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{url}: not JSON"))
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints hosts and VMs.
pub async fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let st = get_json(&args.api.base(), "/api/v1/status").await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{st}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<16} {:<16} {:<10} {:<14} {:>9}",
        "HOST", "IP", "REACHABLE", "LINK", "IN FLIGHT"
    )?;
    for h in st["hosts"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<16} {:<16} {:<10} {:<14} {:>9}",
            s(&h["name"]),
            s(&h["ip"]),
            s(&h["reachable"]),
            s(&h["link"]),
            s(&h["in_flight"])
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<16} {:<16} {:<12} {:<6} {:<10} {:<24} {:<6}",
        "VM", "IP", "HOST", "POWER", "REACHABLE", "DECISION", "PAUSED"
    )?;
    for v in st["vms"].as_array().into_iter().flatten() {
        let decision = v["decision"]["decision"].as_str().unwrap_or("-");
        writeln!(
            out,
            "{:<16} {:<16} {:<12} {:<6} {:<10} {:<24} {:<6}",
            s(&v["name"]),
            s(&v["ip"]),
            s(&v["host"]),
            s(&v["power"]),
            s(&v["reachable"]),
            if v["in_flight"] == true {
                format!("{decision} (running)")
            } else {
                decision.to_owned()
            },
            s(&v["paused"])
        )?;
    }
    writeln!(
        out,
        "\n{} ticks, {} recoveries running",
        s(&st["ticks"]),
        s(&st["in_flight"])
    )?;
    Ok(())
}

/// Prints events as JSON lines; with `--follow`, then prints new ones as
/// the daemon pushes them (its server-sent event stream), catching up
/// through the event list whenever the stream starts, lags or drops, and
/// reconnecting (a restarted daemon) until interrupted.
pub async fn events(args: &EventsArgs) -> anyhow::Result<()> {
    let base = args.api.base();
    let mut since = catch_up(&base, args.since).await?;
    if !args.follow {
        return Ok(());
    }
    let mut reported = false;
    loop {
        match follow(&base, &mut since).await {
            Ok(()) => reported = false,
            Err(e) if !reported => {
                eprintln!("drctl: {e:#}; retrying every second");
                reported = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints every event after `since` from the event list; returns the last
/// id printed (or `since`).
async fn catch_up(base: &str, mut since: u64) -> anyhow::Result<u64> {
    loop {
        let batch = get_json(base, &format!("/api/v1/events?since={since}&limit=1000")).await?;
        let list = batch.as_array().cloned().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for e in &list {
            writeln!(out, "{e}")?;
            since = since.max(e["id"].as_u64().unwrap_or(since));
        }
        out.flush()?;
        if list.len() < 1000 {
            return Ok(since);
        }
    }
}

/// Follows the event stream until it ends. Subscribes first, then catches
/// up, so nothing falls between the two; events already printed (id at or
/// below `since`) are skipped.
async fn follow(base: &str, since: &mut u64) -> anyhow::Result<()> {
    let url = format!("{base}/api/v1/events/stream");
    // No overall timeout: the stream stays open (the daemon sends
    // keep-alives).
    let mut r = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {base} (is drd running?)"))?;
    if !r.status().is_success() {
        bail!("{url}: {}", r.status());
    }
    *since = catch_up(base, *since).await?;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = r.chunk().await.context("reading the event stream")? {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let mut lagged = false;
            let mut data = String::new();
            for line in block.lines() {
                if line == "event: lagged" {
                    lagged = true;
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if lagged {
                // Some events were dropped on the way: the list has them.
                *since = catch_up(base, *since).await?;
                continue;
            }
            if data.is_empty() {
                continue;
            }
            let e: serde_json::Value =
                serde_json::from_str(&data).with_context(|| format!("event not JSON: {data}"))?;
            let id = e["id"].as_u64().unwrap_or(0);
            if id > *since {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{e}")?;
                out.flush()?;
                *since = id;
            }
        }
    }
    Ok(())
}

/// Pauses or resumes automation for a VM.
pub async fn pause(args: &PauseArgs, paused: bool) -> anyhow::Result<()> {
    let verb = if paused { "pause" } else { "resume" };
    let path = format!("/api/v1/vms/{}/{verb}", args.vm);
    post(
        &args.api,
        &args.token_file,
        &path,
        &format!("{verb} {}", args.vm),
    )
    .await?;
    println!(
        "{}: automation {}",
        args.vm,
        if paused { "paused" } else { "resumed" }
    );
    Ok(())
}
