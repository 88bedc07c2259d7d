//! The console with a large datacenter, in headless Chromium: drd on an
//! embedded simulated datacenter of HOSTS × PER_HOST VMs (default 100 ×
//! 100: 10,000), where five VMs crash, one every 2 s, after a while. Prints the time to the
//! overview's first render (from navigation), the page's JS heap and DOM
//! node count, and, for the changes drd streams, how late the page shows
//! them (from drd publishing to the page having applied it, and to the next
//! frame) and what applying one costs.
//!
//! `cargo bench -p drd --bench console [-- HOSTS PER_HOST]`

#[path = "../tests/common/mod.rs"]
mod common;

use common::browser::{chromium_or_skip, Browser};
use common::{Daemon, Dir};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// When the first VM crashes, from drd's start: after the page has
/// loaded. The others follow 2 s apart.
const CRASH_AT_S: u64 = 25;

/// The VMs that crash (the smallest datacenter has 100).
const CRASHED: [&str; 5] = ["vm-00042", "vm-00007", "vm-00063", "vm-00018", "vm-00099"];

fn scenario(hosts: usize, per_host: usize) -> String {
    let mut s = String::from(
        "name = \"console bench\"\nseed = 1\nduration = \"1h\"\n\n[latency]\nread = \"5ms\"\npower = \"300ms\"\n\n[[site]]\nname = \"primary\"\n",
    );
    for h in 0..hosts {
        let _ = write!(
            s,
            "[[host]]\nname = \"esx-{h}\"\nip = \"10.0.{}.{}\"\nmemory_mb = 1048576\n",
            h / 250,
            h % 250 + 1
        );
    }
    for h in 0..hosts {
        for v in 0..per_host {
            let n = h * per_host + v;
            let _ = write!(
                s,
                "[[vm]]\nname = \"vm-{n:05}\"\nip = \"10.{}.{}.{}\"\nhost = \"esx-{h}\"\nmemory_mb = 1024\n",
                1 + n / 62_500,
                (n / 250) % 250,
                n % 250 + 1
            );
        }
    }
    for (i, vm) in CRASHED.iter().enumerate() {
        let at = CRASH_AT_S + 2 * i as u64;
        let _ = write!(
            s,
            "[[fault]]\nat = \"{at}s\"\nkind = \"vm_crash\"\nvm = \"{vm}\"\n"
        );
    }
    s
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let hosts = args.first().copied().unwrap_or(100);
    let per_host = args.get(1).copied().unwrap_or(100);
    let Some(chromium) = chromium_or_skip("the console bench") else {
        return;
    };
    let dir = Dir::new("console-bench");
    let fixture = dir.0.join("dc.toml");
    std::fs::write(&fixture, scenario(hosts, per_host)).expect("scenario");
    let config = common::write_config_on(
        &dir.0,
        &format!("scenario = \"{}\"", fixture.display()),
        "1s",
    );
    let started = Instant::now();
    let daemon = Daemon::start(&config);
    let total = hosts * per_host;
    daemon.wait_for(Duration::from_secs(60), "the first tick", |d| {
        d.get("/readyz").0 == 200
    });
    println!(
        "console bench: {total} VMs on {hosts} hosts; drd ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut browser = Browser::launch(&chromium, &dir.0);
    let page = &mut browser.page;
    page.call("Performance.enable", serde_json::json!({}));
    page.goto(&format!("http://{}/", daemon.addr));
    let first = page.wait_for(
        "the overview's first render",
        "window.vmdrConsole?.firstRenderMs",
        Duration::from_secs(60),
    );
    let tiles = page.eval("document.querySelectorAll('#sites [data-vm]').length");
    assert_eq!(tiles.as_u64(), Some(total as u64), "one tile per VM");
    let painted = page.wait_for(
        "the first frame after it",
        "window.vmdrConsole?.firstPaintMs",
        Duration::from_secs(60),
    );
    println!(
        "first render of the overview: {:.0} ms from navigation, on screen by {:.0} ms",
        first.as_f64().unwrap_or(f64::NAN),
        painted.as_f64().unwrap_or(f64::NAN)
    );
    let metrics = page.call("Performance.getMetrics", serde_json::json!({}));
    let metric = |name: &str| {
        metrics["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|x| x["name"] == name))
            .and_then(|x| x["value"].as_f64())
            .unwrap_or(f64::NAN)
    };
    println!(
        "page: JS heap {:.1} MiB used, {:.0} DOM nodes",
        metric("JSHeapUsedSize") / 1_048_576.0,
        metric("Nodes")
    );

    // The crash and its recovery, as streamed changes.
    let wait = Duration::from_secs(CRASH_AT_S + 40).saturating_sub(started.elapsed());
    page.wait_for(
        "the crashed VMs down and back",
        &format!(
            "(() => {{ const d = window.vmdrConsole.deltas.filter(d => d.vms > 0); return d.length >= {} && {}; }})()",
            2 * CRASHED.len(),
            CRASHED
                .iter()
                .map(|vm| format!("document.querySelector('[data-vm=\"{vm}\"]').dataset.state === 'healthy'"))
                .collect::<Vec<_>>()
                .join(" && ")
        ),
        wait + Duration::from_secs(2 * CRASHED.len() as u64),
    );
    // Those published once the overview was on screen: one that came while
    // the page was still drawing its first frame waited for it.
    let deltas = page.eval(
        "JSON.stringify(window.vmdrConsole.deltas.filter(d => d.vms > 0 && d.paintedMs \
         && d.wallMs > performance.timeOrigin + window.vmdrConsole.firstPaintMs))",
    );
    let deltas: Vec<serde_json::Value> =
        serde_json::from_str(deltas.as_str().unwrap_or("[]")).unwrap_or_default();
    let mut shown: Vec<f64> = Vec::new();
    let mut on_screen: Vec<f64> = Vec::new();
    let mut apply: Vec<f64> = Vec::new();
    for d in &deltas {
        let wall = d["wallMs"].as_f64().unwrap_or(f64::NAN);
        shown.push(d["shownMs"].as_f64().unwrap_or(f64::NAN) - wall);
        on_screen.push(d["paintedMs"].as_f64().unwrap_or(f64::NAN) - wall);
        apply.push(d["applyMs"].as_f64().unwrap_or(f64::NAN));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let worst = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    println!(
        "{} changes of VMs streamed: applied {:.1} ms after drd published them (median; worst {:.1}), on screen {:.1} ms after (worst {:.1}); applying one cost {:.2} ms (median; worst {:.2})",
        deltas.len(),
        median(&mut shown.clone()),
        worst(&shown),
        median(&mut on_screen.clone()),
        worst(&on_screen),
        median(&mut apply.clone()),
        worst(&apply)
    );
    assert!(
        page.problems.is_empty(),
        "the browser reported: {:#?}",
        page.problems
    );
}
