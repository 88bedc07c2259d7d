//! The cluster's benchmark: three drd on a three-member etcd (loopback),
//! over a simulated datacenter; at each round a VM crashes and, at the
//! same moment, the leader dies (its runtime dropped: no lease revoked, as
//! a SIGKILL). Measured: the takeover (from the death to another node
//! leading, its takeover done), the crashed VM's RTO, and, in the same run
//! on a twin datacenter with the same crashes, a single drd's RTO; etcd's
//! raft proposals (its writes) while nothing changes and per round.
//!
//! Run: `cargo run --release -p dr-benches --bin cluster-takeover [ROUNDS]`
//! (default 5). Needs Debian's etcd-server (`/usr/bin/etcd`).

#[path = "../../../crates/dr-cluster/tests/support/mod.rs"]
mod etcd;

use dr_benches::http_get;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const TTL_S: u64 = 5;
const FIRST_CRASH_S: u64 = 20;
const ROUND_S: u64 = 25;

/// A daemon in this process, on a runtime of its own that `kill` drops
/// without letting anything finish.
struct Node {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
    _stop: tokio::sync::watch::Sender<bool>,
    _reload: tokio::sync::mpsc::Sender<()>,
}

impl Node {
    fn start(config: &Path) -> Node {
        let cfg = dr_daemon::DaemonConfig::load(config).expect("config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (reload, reload_rx) = tokio::sync::mpsc::channel(1);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            if let Err(e) = dr_daemon::run(cfg, stopped, reload_rx, move |a| {
                let _ = addr_tx.send(a);
            })
            .await
            {
                eprintln!("daemon: {e}");
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("listening");
        Node {
            addr,
            rt: Some(rt),
            _stop: stop,
            _reload: reload,
        }
    }

    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.addr, "/api/v1/status");
        if code != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or_default()
    }

    fn leads(&self) -> bool {
        self.rt.is_some() && self.status()["cluster"]["role"] == "leader"
    }
}

fn scenario(rounds: u64) -> String {
    let mut s = String::from(
        "name = \"cluster bench\"\nseed = 1\nduration = \"2h\"\n[latency]\nread = \"2ms\"\npower = \"1s\"\n\
         [[host]]\nname = \"h1\"\nip = \"10.9.0.1\"\n[[host]]\nname = \"h2\"\nip = \"10.9.0.2\"\n",
    );
    for k in 0..rounds {
        s.push_str(&format!(
            "[[vm]]\nname = \"vm-{k}\"\nip = \"10.9.1.{}\"\nhost = \"h{}\"\n",
            k + 1,
            k % 2 + 1
        ));
        s.push_str(&format!(
            "[[fault]]\nat = \"{}s\"\nkind = \"vm_crash\"\nvm = \"vm-{k}\"\n",
            FIRST_CRASH_S + k * ROUND_S
        ));
    }
    s
}

/// A datacenter served as `drctl sim-server` serves it; its URL.
fn serve(rt: &tokio::runtime::Runtime, text: &str) -> (String, tokio::sync::watch::Sender<bool>) {
    let scenario = dr_sim::Scenario::parse(text).expect("scenario");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    rt.spawn(dr_sim::remote::serve(listener, scenario, stopped));
    (url, stop)
}

fn config(dir: &Path, name: &str, url: &str, cluster: Option<&[String]>) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("dir");
    let mut text = format!(
        "backend = \"sim\"\n[sim]\nurl = \"{url}\"\n[control]\nprobe_interval = \"1s\"\nprobe_timeout = \"500ms\"\n\
         inventory_interval = \"5s\"\n[api]\nlisten = \"127.0.0.1:0\"\n[journal]\npath = \"journal.redb\"\n"
    );
    if let Some(eps) = cluster {
        let eps: Vec<String> = eps.iter().map(|e| format!("{e:?}")).collect();
        text.push_str(&format!(
            "[cluster]\nnode = \"{name}\"\nendpoints = [{}]\nprefix = \"/bench\"\nlease_ttl = \"{TTL_S}s\"\n",
            eps.join(", ")
        ));
    }
    let path = d.join("drd.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Whether `vm` went down and runs again on the datacenter at `url`.
fn back(url: &str, vm: &str) -> bool {
    let addr: SocketAddr = url.trim_start_matches("http://").parse().expect("addr");
    let (_, body) = http_get(addr, "/sim/v1/report");
    let r: dr_sim::remote::SimReport = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(_) => return false,
    };
    r.vms
        .iter()
        .any(|v| v.name == vm && v.outages > 0 && !v.running_on.is_empty())
}

fn double_runs(url: &str) -> u32 {
    let addr: SocketAddr = url.trim_start_matches("http://").parse().expect("addr");
    let (_, body) = http_get(addr, "/sim/v1/report");
    serde_json::from_str::<dr_sim::remote::SimReport>(&body)
        .map(|r| r.vms.iter().map(|v| v.double_runs).sum())
        .unwrap_or(u32::MAX)
}

/// etcd's committed raft proposals (every write: puts, transactions with
/// a write branch, lease grants and revokes), from one member.
fn proposals(port: u16) -> f64 {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (_, text) = http_get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("etcd_server_proposals_committed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    if !Path::new(etcd::ETCD).exists() {
        eprintln!("{} is missing: apt-get install etcd-server", etcd::ETCD);
        std::process::exit(2);
    }
    let cluster = etcd::EtcdCluster::start(3, "bench");
    let eps = cluster.endpoints();
    let dir = std::env::temp_dir().join(format!("cluster-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sims = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let text = scenario(rounds);
    // Both datacenters start now: their crashes come at the same moments.
    let t0 = Instant::now();
    let (cluster_url, _s1) = serve(&sims, &text);
    let (single_url, _s2) = serve(&sims, &text);
    let names = ["a", "b", "c"];
    let configs: Vec<_> = names
        .iter()
        .map(|n| config(&dir, n, &cluster_url, Some(&eps)))
        .collect();
    let mut nodes: Vec<Node> = configs.iter().map(|c| Node::start(c)).collect();
    let _single = Node::start(&config(&dir, "single", &single_url, None));

    // Idle: a leader, nothing failing. Its writes per tick.
    while !nodes.iter().any(Node::leads) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let idle_from = proposals(cluster.client_port(0));
    let idle_s = 10.0;
    std::thread::sleep(Duration::from_secs_f64(idle_s));
    let idle = proposals(cluster.client_port(0)) - idle_from;
    println!(
        "idle, 3 nodes, probe interval 1 s: {idle} etcd writes in {idle_s} s ({:.2} per tick)",
        idle / idle_s
    );

    let (mut takeovers, mut rto_cluster, mut rto_single) = (Vec::new(), Vec::new(), Vec::new());
    println!("| round | takeover | RTO, cluster | RTO, single drd | etcd writes in the round |");
    println!("|---:|---:|---:|---:|---:|");
    for k in 0..rounds {
        let crash_at = t0 + Duration::from_secs(FIRST_CRASH_S + k * ROUND_S);
        let leader = loop {
            if let Some(i) = (0..nodes.len()).find(|&i| nodes[i].leads()) {
                break i;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let before = proposals(cluster.client_port(0));
        std::thread::sleep(crash_at.saturating_duration_since(Instant::now()));
        let killed = Instant::now();
        nodes[leader].kill();
        let vm = format!("vm-{k}");
        let (mut took, mut rc, mut rs) = (None, None, None);
        while took.is_none() || rc.is_none() || rs.is_none() {
            if took.is_none() && (0..nodes.len()).any(|i| i != leader && nodes[i].leads()) {
                took = Some(killed.elapsed().as_secs_f64());
            }
            if rc.is_none() && back(&cluster_url, &vm) {
                rc = Some(crash_at.elapsed().as_secs_f64());
            }
            if rs.is_none() && back(&single_url, &vm) {
                rs = Some(crash_at.elapsed().as_secs_f64());
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "round {k} never ended"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The dead node comes back (a new lease, a follower) for the next
        // round.
        nodes[leader] = Node::start(&configs[leader]);
        std::thread::sleep(Duration::from_secs(2));
        let writes = proposals(cluster.client_port(0)) - before;
        let (t, c, s) = (
            took.unwrap_or(f64::NAN),
            rc.unwrap_or(f64::NAN),
            rs.unwrap_or(f64::NAN),
        );
        println!("| {k} | {t:.2} s | {c:.2} s | {s:.2} s | {writes} |");
        takeovers.push(t);
        rto_cluster.push(c);
        rto_single.push(s);
    }
    let (t, c, s) = (
        median(&mut takeovers),
        median(&mut rto_cluster),
        median(&mut rto_single),
    );
    println!(
        "median: takeover {t:.2} s (goal: under TTL {TTL_S} s + 1 probe interval = {} s), RTO {c:.2} s in the cluster against {s:.2} s for a single drd (ratio {:.2})",
        TTL_S + 1,
        c / s
    );
    println!(
        "double runs: {} in the cluster, {} with the single drd",
        double_runs(&cluster_url),
        double_runs(&single_url)
    );
    for n in &mut nodes {
        n.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
