//! `drctl status | events | pause | resume | failover | checkpoints |
//! drill`: the running daemon (drd), through its HTTP API.

use anyhow::{bail, Context};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Where the daemon is.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The daemon's API: http://HOST:PORT or HOST:PORT (else $VMDR_API,
    /// else http://127.0.0.1:7070).
    #[arg(long)]
    api: Option<String>,
}

impl ApiArgs {
    fn base(&self) -> String {
        let given = self
            .api
            .clone()
            .or_else(|| std::env::var("VMDR_API").ok())
            .unwrap_or_else(|| "http://127.0.0.1:7070".into());
        let given = given.trim_end_matches('/');
        // An address without a scheme is the daemon's plain HTTP API (drd
        // prints its address that way).
        if given.contains("://") {
            given.to_owned()
        } else {
            format!("http://{given}")
        }
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
    /// Come back from this checkpoint of the VM's replica (`drctl
    /// checkpoints VM` lists them), even on its own site: a point before a
    /// corruption. Else the newest.
    #[arg(long)]
    checkpoint: Option<u64>,
    /// File holding the API token (else $VMDR_API_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// `drctl checkpoints VM`.
#[derive(Args)]
pub struct CheckpointsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The VM.
    vm: String,
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
    let mut query = Vec::new();
    if let Some(to) = &args.to {
        query.push(format!("to={to}"));
    }
    if let Some(c) = args.checkpoint {
        query.push(format!("checkpoint={c}"));
    }
    let mut path = format!("/api/v1/vms/{}/failover", args.vm);
    if !query.is_empty() {
        path.push_str(&format!("?{}", query.join("&")));
    }
    let rep = post_report(
        &args.api,
        &args.token_file,
        path,
        &format!("failover {}", args.vm),
    )
    .await?;
    let from = match rep["checkpoint"].as_u64() {
        Some(c) => format!(" (checkpoint {c})"),
        None => String::new(),
    };
    println!(
        "{}: {} -> {} by {}{from}, down {:.1} s",
        s(&rep["vm"]),
        s(&rep["from"]),
        s(&rep["to"]),
        s(&rep["method"]),
        rep["downtime_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
    Ok(())
}

/// The checkpoints of a VM's replica a failover can come back from,
/// oldest first.
pub async fn checkpoints(args: &CheckpointsArgs) -> anyhow::Result<()> {
    let base = args.api.base();
    let list = get_json(&base, &format!("/api/v1/vms/{}/checkpoints", args.vm)).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut rows = vec![vec!["CHECKPOINT".into(), "TAKEN".into(), "DISKS".into()]];
    for c in list["checkpoints"].as_array().into_iter().flatten() {
        let disks: Vec<String> = c["disks"].as_array().into_iter().flatten().map(s).collect();
        rows.push(vec![s(&c["id"]), ago(&c["time_ms"], now), disks.join(",")]);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} (replica {})", args.vm, s(&list["replica"]))?;
    table(&mut out, &rows)?;
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

/// Lines of columns, each as wide as its widest cell, two spaces apart.
fn table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// A decision as the status shows it: its kind, and why for one that does
/// nothing (`none (user_stopped)`, `wait (in_flight)`).
fn decision_text(v: &serde_json::Value) -> String {
    let kind = v["decision"]["decision"].as_str().unwrap_or("-");
    let text = match v["decision"]["why"].as_str() {
        Some(why) => format!("{kind} ({why})"),
        None => kind.to_owned(),
    };
    if v["in_flight"] == true {
        format!("{text}, running")
    } else {
        text
    }
}

/// The line saying how fresh the picture is, and what fails when it is not.
fn view_line(st: &serde_json::Value) -> String {
    let view = &st["view"];
    let age = view["age_ms"]
        .as_f64()
        .map_or("never read".to_owned(), |ms| {
            format!("{:.1} s old", ms / 1000.0)
        });
    let failing = match view["failing"].as_object() {
        Some(f) => format!(
            "; {} failing since {:.1} s: {}",
            s(&f["step"]),
            (st["at_ms"].as_f64().unwrap_or(0.0) - f["since_ms"].as_f64().unwrap_or(0.0)).max(0.0)
                / 1000.0,
            s(&f["error"])
        ),
        None => String::new(),
    };
    if view["stale"] == true {
        format!("STALE: this is how things were, not how they are (view {age}{failing})")
    } else {
        format!("view {age}{failing}")
    }
}

/// Prints hosts and VMs, and how fresh the picture is.
pub async fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let st = get_json(&args.api.base(), "/api/v1/status").await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{st}")?;
        return Ok(());
    }
    let view = view_line(&st);
    if st["view"]["stale"] == true {
        writeln!(out, "{view}\n")?;
    }
    if let Some(cluster) = cluster_lines(&st["cluster"]) {
        writeln!(out, "{cluster}\n")?;
    }
    let mut hosts = vec![[
        "HOST",
        "IP",
        "REACHABLE",
        "LINK",
        "IN FLIGHT",
        "AGENT",
        "STORAGE",
        "FENCE",
        "EVIDENCE",
    ]
    .map(str::to_owned)
    .to_vec()];
    let at = st["at_ms"].as_u64().unwrap_or(0);
    for h in st["hosts"].as_array().into_iter().flatten() {
        hosts.push(vec![
            s(&h["name"]),
            s(&h["ip"]),
            s(&h["reachable"]),
            s(&h["link"]),
            s(&h["in_flight"]),
            agent_text(&h["agent"], at),
            storage_text(&h["storage"], at),
            fence_text(&h["fence"]),
            s(&h["evidence"]),
        ]);
    }
    table(&mut out, &hosts)?;
    writeln!(out)?;
    let mut vms = vec![[
        "VM",
        "IP",
        "HOST",
        "STATE",
        "POWER",
        "REACHABLE",
        "PAUSED",
        "DECISION",
    ]
    .map(str::to_owned)
    .to_vec()];
    for v in st["vms"].as_array().into_iter().flatten() {
        vms.push(vec![
            s(&v["name"]),
            s(&v["ip"]),
            s(&v["host"]),
            s(&v["state"]),
            s(&v["power"]),
            s(&v["reachable"]),
            s(&v["paused"]),
            decision_text(v),
        ]);
    }
    table(&mut out, &vms)?;
    writeln!(
        out,
        "\n{} ticks, {} recoveries running; {view}",
        s(&st["ticks"]),
        s(&st["in_flight"])
    )?;
    Ok(())
}

/// A cluster node's view of the cluster: this node's role, the leader and
/// its epoch, the lease left when leading, the nodes. `None` for a single
/// daemon.
fn cluster_lines(c: &serde_json::Value) -> Option<String> {
    let node = c["node"].as_str()?;
    let role = s(&c["role"]);
    let leader = match c["leader"].as_object() {
        Some(l) => format!("leader {} (epoch {})", s(&l["node"]), s(&l["epoch"])),
        None => "NO LEADER: nothing is recovered until one is elected".into(),
    };
    let lease = c["lease_left_ms"]
        .as_f64()
        .map(|ms| format!(", lease {:.1} s left", ms / 1000.0))
        .unwrap_or_default();
    let nodes: Vec<String> = c["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| s(&n["node"]))
        .collect();
    let mut text = format!(
        "cluster: this node {node} is {role}{lease}; {leader}; nodes {}",
        if nodes.is_empty() {
            "-".to_owned()
        } else {
            nodes.join(", ")
        }
    );
    if let Some(e) = c["etcd_error"].as_str() {
        text.push_str(&format!("\nETCD UNREACHABLE from this node: {e}"));
    }
    if role != "leader" {
        text.push_str("\n(this node's own view; commands are forwarded to the leader)");
    }
    Some(text)
}

/// A host's fence device: where fencing it stands (`-`: it has none).
fn fence_text(f: &serde_json::Value) -> String {
    match f["state"].as_str() {
        None | Some("no_device") => "-".into(),
        Some(state) => state.replace('_', " "),
    }
}

/// How long ago `ms` was, at `at` (both on the daemon's clock).
fn ago(ms: &serde_json::Value, at: u64) -> String {
    ms.as_u64().map_or("-".into(), |t| {
        format!("{:.1}s ago", at.saturating_sub(t) as f64 / 1000.0)
    })
}

/// A host's agent: when it was last heard, and its promise.
fn agent_text(a: &serde_json::Value, at: u64) -> String {
    if a.is_null() {
        return "-".into();
    }
    let timeout = a["isolation_timeout_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let watchdog = if a["watchdog"] == true {
        ", watchdog"
    } else {
        ""
    };
    format!(
        "heard {}, fences in {timeout}s{watchdog}",
        ago(&a["last_heard"], at)
    )
}

/// A host's storage heartbeat: when it last moved, or what it says.
fn storage_text(st: &serde_json::Value, at: u64) -> String {
    if st.is_null() {
        "-".into()
    } else if st["readable"] != true {
        "unreadable".into()
    } else if st["fenced"] == true {
        "fenced".into()
    } else {
        format!("moved {}", ago(&st["last_moved"], at))
    }
}

/// Prints the failure budget: a line per host and site.
pub async fn budget(args: &StatusArgs) -> anyhow::Result<()> {
    let b = get_json(&args.api.base(), "/api/v1/failure-budget").await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{b}")?;
        return Ok(());
    }
    if b["computed_at_ms"].is_null() {
        writeln!(
            out,
            "not computed yet (after the daemon's first look at the inventory)"
        )?;
        return Ok(());
    }
    let mut rows = vec![["IF LOST", "RESTORED", "WORST RTO", "STAY DOWN"]
        .map(str::to_owned)
        .to_vec()];
    for f in b["failures"].as_array().into_iter().flatten() {
        let down: Vec<String> = f["down"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let why = d["decision"]["why"]
                    .as_str()
                    .or(d["decision"]["decision"].as_str())
                    .unwrap_or("?");
                format!("{} ({why})", s(&d["vm"]))
            })
            .collect();
        rows.push(vec![
            format!("{} {}", s(&f["kind"]), s(&f["name"])),
            f["restored"].as_array().map_or(0, Vec::len).to_string(),
            f["worst_rto_ms"]
                .as_f64()
                .map_or("-".to_owned(), |ms| format!("{:.1} s", ms / 1000.0)),
            if down.is_empty() {
                "none".to_owned()
            } else {
                down.join(", ")
            },
        ]);
    }
    table(&mut out, &rows)?;
    if b["single_host_at_risk"] == true {
        writeln!(
            out,
            "\nlosing a single host would leave VMs down (see STAY DOWN)"
        )?;
    }
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

#[cfg(test)]
mod tests {
    use super::cluster_lines;

    #[test]
    fn the_cluster_line_says_who_leads_and_what_a_follower_is_showing() {
        assert_eq!(
            cluster_lines(&serde_json::json!(null)),
            None,
            "a single daemon"
        );
        let follower = serde_json::json!({
            "node": "b", "role": "follower", "lease_left_ms": null, "etcd_error": null,
            "leader": {"node": "a", "api": "http://10.0.0.1:7070", "epoch": 12},
            "nodes": [{"node": "a"}, {"node": "b"}],
        });
        let text = cluster_lines(&follower).expect("a cluster");
        assert!(
            text.starts_with("cluster: this node b is follower; leader a (epoch 12); nodes a, b"),
            "{text}"
        );
        assert!(text.contains("forwarded to the leader"), "{text}");
        let cut = serde_json::json!({
            "node": "a", "role": "unreachable", "leader": null, "nodes": [],
            "etcd_error": "etcd unreachable: connection refused",
        });
        let text = cluster_lines(&cut).expect("a cluster");
        assert!(text.contains("NO LEADER"), "{text}");
        assert!(
            text.contains("ETCD UNREACHABLE from this node: etcd unreachable"),
            "{text}"
        );
        let leader = serde_json::json!({
            "node": "a", "role": "leader", "lease_left_ms": 3300.0, "etcd_error": null,
            "leader": {"node": "a", "epoch": 3}, "nodes": [{"node": "a"}],
        });
        let text = cluster_lines(&leader).expect("a cluster");
        assert_eq!(
            text,
            "cluster: this node a is leader, lease 3.3 s left; leader a (epoch 3); nodes a"
        );
    }
}
