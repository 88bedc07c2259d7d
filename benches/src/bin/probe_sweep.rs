//! The prober's sweep benchmark: N addresses answering inside a test network
//! namespace (a whole range routed to its loopback, reached through a veth),
//! swept by `dr-probe` and, in the same run, by `fping -i 0` (its fastest
//! setting) on the same targets. Prints wall time, targets per second, CPU
//! seconds and targets wrongly reported down for each.
//!
//! Needs root, iproute2 and fping. Run:
//! `cargo run --release -p dr-benches --bin probe-sweep [N...]`
//! (default: 1000 10000). Sends only to the namespace it creates.

use dr_core::ports::{ProbeTarget, Prober};
use dr_probe::{IcmpConfig, NetProber, ProbeConfig};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "vmdr-sweep";
const RANGE: &str = "198.19.0.0/16";

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn teardown() {
    let _ = Command::new("ip").args(["route", "del", RANGE]).output();
    let _ = Command::new("ip").args(["netns", "del", NS]).output();
    let _ = Command::new("ip")
        .args(["link", "del", "vmdr-sw0"])
        .output();
}

fn setup() -> Result<(), String> {
    teardown();
    sh(&["ip", "netns", "add", NS])?;
    sh(&[
        "ip", "link", "add", "vmdr-sw0", "type", "veth", "peer", "name", "vmdr-sw1",
    ])?;
    sh(&["ip", "link", "set", "vmdr-sw1", "netns", NS])?;
    sh(&["ip", "addr", "add", "198.18.255.1/30", "dev", "vmdr-sw0"])?;
    sh(&["ip", "link", "set", "vmdr-sw0", "up"])?;
    sh(&[
        "ip",
        "-n",
        NS,
        "addr",
        "add",
        "198.18.255.2/30",
        "dev",
        "vmdr-sw1",
    ])?;
    sh(&["ip", "-n", NS, "link", "set", "vmdr-sw1", "up"])?;
    sh(&["ip", "-n", NS, "link", "set", "lo", "up"])?;
    sh(&["ip", "-n", NS, "route", "add", "local", RANGE, "dev", "lo"])?;
    sh(&["ip", "route", "add", RANGE, "via", "198.18.255.2"])
}

fn targets(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8)))
        .collect()
}

struct Row {
    tool: &'static str,
    n: usize,
    wall: Duration,
    cpu: f64,
    down: usize,
}

fn ours(rt: &tokio::runtime::Runtime, addrs: &[IpAddr], timeout: Duration) -> Row {
    let p = NetProber::new(ProbeConfig {
        icmp: IcmpConfig {
            attempts: 1,
            ..IcmpConfig::default()
        },
        ..ProbeConfig::default()
    });
    let t: Vec<ProbeTarget> = addrs.iter().copied().map(ProbeTarget::icmp).collect();
    // Open the socket outside the measurement.
    let _ = rt.block_on(p.probe(&t[..1], timeout));
    let (c0, _) = dr_benches::cpu_secs();
    let start = Instant::now();
    let r = rt.block_on(p.probe(&t, timeout)).expect("probe");
    let wall = start.elapsed();
    let (c1, _) = dr_benches::cpu_secs();
    Row {
        tool: "dr-probe",
        n: addrs.len(),
        wall,
        cpu: c1 - c0,
        down: r.iter().filter(|r| !r.reachable).count(),
    }
}

fn fping(addrs: &[IpAddr], timeout: Duration) -> Row {
    let list: String = addrs.iter().map(|a| format!("{a}\n")).collect();
    let (_, c0) = dr_benches::cpu_secs();
    let start = Instant::now();
    let mut child = Command::new("fping")
        .args([
            "-i",
            "0",
            "-r",
            "0",
            "-t",
            &timeout.as_millis().to_string(),
            "-u",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fping (apt-get install fping)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(list.as_bytes()).expect("write targets");
    }
    let out = child.wait_with_output().expect("fping ran");
    let wall = start.elapsed();
    let (_, c1) = dr_benches::cpu_secs();
    let down = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    Row {
        tool: "fping -i 0",
        n: addrs.len(),
        wall,
        cpu: c1 - c0,
        down,
    }
}

fn main() {
    let sizes: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if args.is_empty() {
            vec![1_000, 10_000]
        } else {
            args
        }
    };
    if let Err(e) = setup() {
        teardown();
        eprintln!("probe-sweep: cannot set up the test namespace (root and iproute2 needed): {e}");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let timeout = Duration::from_millis(1000);
    let mut rows = Vec::new();
    for &n in &sizes {
        let addrs = targets(n.min(250 * 256));
        // Warm the namespace's neighbour and route caches.
        let _ = ours(&rt, &addrs, timeout);
        for _ in 0..3 {
            rows.push(ours(&rt, &addrs, timeout));
            rows.push(fping(&addrs, timeout));
        }
    }
    teardown();
    println!(
        "{:<11} {:>7} {:>10} {:>14} {:>9} {:>13}",
        "tool", "targets", "wall ms", "targets/s", "cpu s", "wrongly down"
    );
    for r in &rows {
        println!(
            "{:<11} {:>7} {:>10.1} {:>14.0} {:>9.2} {:>13}",
            r.tool,
            r.n,
            r.wall.as_secs_f64() * 1e3,
            r.n as f64 / r.wall.as_secs_f64(),
            r.cpu,
            r.down
        );
    }
}
