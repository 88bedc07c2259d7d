//! The daemon's benchmark: drd on the simulated datacenter in real time,
//! VMs crashing on a schedule; from each crash to its detection and to its
//! recovery (RTO), median and 99th percentile, with the daemon's CPU and
//! peak memory, for 10 and for 10,000 VMs.
//!
//! Run: `cargo run --release -p dr-benches --bin drd-bench [COUNTS]`, e.g.
//! `-- 10,10000` (the default). The daemon runs in this process (its API on
//! 127.0.0.1); CPU is this process's over the measured window, in which the
//! benchmark itself only sleeps.

use std::path::Path;
use std::time::{Duration, Instant};

use dr_benches::http_get as get;

/// Peak resident memory of this process, MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + (i >> 16), (i >> 8) & 255, i & 255)
}

/// The datacenter and its crash schedule: (VM, crash time in ms).
fn scenario(n: usize, crashes: usize, first_ms: u64, gap_ms: u64) -> (String, Vec<(String, u64)>) {
    let hosts = (n / 100).max(2);
    let mut s = String::from(
        "name = \"drd bench\"\nseed = 1\nduration = \"1h\"\n[latency]\nread = \"1ms\"\npower = \"1s\"\n",
    );
    for h in 0..hosts {
        s.push_str(&format!(
            "[[host]]\nname = \"h{h}\"\nip = \"10.0.{}.{}\"\nmemory_mb = 10000000\ncpu_mhz = 10000000\n",
            h >> 8,
            h & 255
        ));
    }
    for v in 0..n {
        s.push_str(&format!(
            "[[vm]]\nname = \"v{v}\"\nip = \"{}\"\nhost = \"h{}\"\nmemory_mb = 1024\ncpu_mhz = 100\n",
            ip(v),
            v % hosts
        ));
    }
    // Distinct VMs, spread over the set (a step coprime with n).
    let step = if n > 7 && !n.is_multiple_of(7) { 7 } else { 1 };
    let mut schedule = Vec::new();
    for k in 0..crashes.min(n) {
        let vm = format!("v{}", (k * step) % n);
        let at = first_ms + k as u64 * gap_ms;
        s.push_str(&format!(
            "[[fault]]\nat = \"{at}ms\"\nkind = \"vm_crash\"\nvm = \"{vm}\"\n"
        ));
        schedule.push((vm, at));
    }
    (s, schedule)
}

fn pick(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn run(n: usize, root: &Path) {
    let dir = root.join(format!("n{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (crashes, gap_ms) = if n <= 10 { (n, 3000) } else { (200, 250) };
    let first_ms = 10_000;
    let (text, schedule) = scenario(n, crashes, first_ms, gap_ms);
    std::fs::write(dir.join("dc.toml"), text).expect("scenario");
    std::fs::write(
        dir.join("drd.toml"),
        "backend = \"sim\"\n[sim]\nscenario = \"dc.toml\"\n[control]\nprobe_interval = \"1s\"\nprobe_timeout = \"500ms\"\ninventory_interval = \"60s\"\naction_timeout = \"1m\"\n[policy]\nfailure_threshold = 3\n[api]\nlisten = \"127.0.0.1:0\"\n[journal]\npath = \"journal.redb\"\n",
    )
    .expect("config");
    let (addr, stop, daemon) = dr_benches::start_daemon(&dir.join("drd.toml"));
    let started = Instant::now();
    while get(addr, "/readyz").0 != 200 {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The measured window: from the first tick to 20 s after the last crash.
    let last_ms = schedule.last().map_or(first_ms, |s| s.1);
    let window_end = Duration::from_millis(last_ms + 20_000);
    let (cpu0, t0) = (dr_benches::cpu_secs().0, Instant::now());
    std::thread::sleep(window_end.saturating_sub(started.elapsed()));
    let (cpu, wall) = (dr_benches::cpu_secs().0 - cpu0, t0.elapsed().as_secs_f64());
    let peak = peak_rss_mb();

    // Every event, page by page.
    let mut events: Vec<serde_json::Value> = Vec::new();
    let mut since = 0;
    loop {
        let (_, body) = get(addr, &format!("/api/v1/events?since={since}&limit=10000"));
        let page: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        if page.is_empty() {
            break;
        }
        since = page.last().and_then(|e| e["id"].as_u64()).unwrap_or(since);
        events.extend(page);
    }
    let _ = stop.send(true);
    let _ = daemon.join();

    let mut detect = Vec::new();
    let mut rto = Vec::new();
    let mut missed = 0;
    for (vm, at) in &schedule {
        let down = events.iter().find(|e| {
            e["type"] == "observation"
                && e["subject"]["vm"] == vm.as_str()
                && e["field"] == "down"
                && e["to"] == "yes"
                && e["at_ms"].as_u64() >= Some(*at)
        });
        let back = events.iter().find(|e| {
            e["type"] == "action_finished"
                && e["ok"] == true
                && e["action"]["vm"] == vm.as_str()
                && e["at_ms"].as_u64() >= Some(*at)
        });
        match (down, back) {
            (Some(d), Some(b)) => {
                detect.push((d["at_ms"].as_u64().unwrap_or(0) - at) as f64 / 1000.0);
                rto.push((b["at_ms"].as_u64().unwrap_or(0) - at) as f64 / 1000.0);
            }
            _ => missed += 1,
        }
    }
    detect.sort_by(f64::total_cmp);
    rto.sort_by(f64::total_cmp);
    println!(
        "{n:>6} VMs, {} crashes: detection median {:.2} s, p99 {:.2} s · RTO median {:.2} s, p99 {:.2} s · not recovered {missed} · CPU {:.3} cores over {:.0} s · peak RSS {:.0} MB",
        schedule.len(),
        pick(&detect, 0.5),
        pick(&detect, 0.99),
        pick(&rto, 0.5),
        pick(&rto, 0.99),
        cpu / wall,
        wall,
        peak
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "10,10000".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/drd-bench");
    println!("drd on the simulated datacenter in real time: probe interval 1 s, 3 failed probes to judge a VM down, power-on takes 1 s");
    for n in counts {
        run(n, &root);
    }
}
