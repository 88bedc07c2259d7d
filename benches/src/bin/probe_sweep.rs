//! The prober's sweep benchmark: N addresses answering inside a test network
//! namespace (a whole range routed to its loopback, reached through a veth),
//! swept by `dr-probe` and, in the same run, by `fping -i 0` (its fastest
//! setting) on the same targets. Prints wall time, targets per second, CPU
//! seconds and targets wrongly reported down for each.
//!
//! Then the whole commands, as an operator runs them, in the same run:
//! `drctl probe --count 1 --timeout 500 --file F` (and `--json`) against
//! `fping -q -i 0 -r 0 -t 500 -f F`, on the same targets and with three
//! silent ones added (addresses the namespace drops). Process wall time
//! from spawn to exit, median of seven runs.
//!
//! Needs root, iproute2, fping and a release drctl beside this binary
//! (`cargo build --release -p drctl`). Run:
//! `cargo run --release -p dr-benches --bin probe-sweep [N...]`
//! (default: 1000 10000). Sends only to the namespace it creates.

use dr_core::ports::{ProbeTarget, Prober};
use dr_probe::{IcmpConfig, NetProber, ProbeConfig};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "vmdr-sweep";
const RANGE: &str = "198.19.0.0/16";
/// Routed into the namespace, which drops it: targets that never answer.
const SILENT: &str = "198.20.0.0/24";

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
    let _ = Command::new("ip").args(["route", "del", SILENT]).output();
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
    sh(&["ip", "-n", NS, "route", "add", "blackhole", SILENT])?;
    sh(&["ip", "route", "add", RANGE, "via", "198.18.255.2"])?;
    sh(&["ip", "route", "add", SILENT, "via", "198.18.255.2"])
}

/// One whole command over a target file: its wall time, spawn to exit.
fn command(
    tool: &'static str,
    program: &std::path::Path,
    args: &[&str],
) -> (&'static str, Duration) {
    let start = Instant::now();
    let out = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    // Exit 1 is "some target down" for both.
    assert!(out.code().is_some_and(|c| c <= 1), "{tool}: {out:?}");
    (tool, start.elapsed())
}

/// `drctl probe` against `fping` as whole processes, on `n` answering
/// targets plus `silent` that never answer.
fn commands(
    n: usize,
    silent: usize,
    drctl: &std::path::Path,
    dir: &std::path::Path,
) -> Vec<(String, Duration)> {
    let mut list: String = targets(n).iter().map(|a| format!("{a}\n")).collect();
    for i in 0..silent {
        list.push_str(&format!("198.20.0.{}\n", i + 1));
    }
    let file = dir.join(format!("targets-{n}-{silent}"));
    std::fs::write(&file, list).expect("target file");
    let f = file.to_str().expect("utf-8");
    let fping = std::path::Path::new("fping");
    let mut out = Vec::new();
    // Seven runs each, alternating: a process's wall time is noisy.
    for _ in 0..7 {
        for (tool, program, args) in [
            (
                "drctl probe",
                drctl,
                vec!["probe", "--count", "1", "--timeout", "500", "--file", f],
            ),
            (
                "drctl probe --json",
                drctl,
                vec![
                    "probe",
                    "--count",
                    "1",
                    "--timeout",
                    "500",
                    "--json",
                    "--file",
                    f,
                ],
            ),
            (
                "fping -q -i 0",
                fping,
                vec!["-q", "-i", "0", "-r", "0", "-t", "500", "-f", f],
            ),
        ] {
            let (tool, wall) = command(tool, program, &args);
            out.push((format!("{tool} ({n} + {silent} silent)"), wall));
        }
    }
    out
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
    let drctl = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("drctl")))
        .filter(|p| p.exists());
    let mut whole = Vec::new();
    match &drctl {
        Some(drctl) => {
            let dir = std::env::temp_dir().join(format!("vmdr-probe-sweep-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            for &n in &sizes {
                for silent in [0, 3] {
                    whole.extend(commands(n.min(250 * 256), silent, drctl, &dir));
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        None => eprintln!("probe-sweep: no release drctl beside this binary (cargo build --release -p drctl): whole commands skipped"),
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
    if !whole.is_empty() {
        println!("\nwhole commands (spawn to exit; median of seven):");
        let mut seen = std::collections::BTreeSet::new();
        for name in whole.iter().map(|(n, _)| n) {
            if !seen.insert(name) {
                continue;
            }
            let mut walls: Vec<Duration> = whole
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, w)| *w)
                .collect();
            walls.sort();
            println!(
                "{:<48} {:>8.1} ms",
                name,
                walls[walls.len() / 2].as_secs_f64() * 1e3
            );
        }
    }
}
