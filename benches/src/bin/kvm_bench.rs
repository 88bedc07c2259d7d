//! Recovery of real guests on the KVM lab (`scripts/kvm-lab.sh`), vmdr
//! against Pacemaker, in one run, alternating:
//!
//! - a guest whose QEMU is SIGKILLed: vmdr (drd in this process, 1 s
//!   probes) against Pacemaker's `VirtualDomain` resource agent (a
//!   one-node corosync cluster on loopback, monitor every 1 s) on a guest
//!   of its own, which vmdr leaves alone (paused through the API);
//! - a host that dies (its daemon and QEMUs SIGKILLed, its link down):
//!   vmdr's restore of its guest on the other host (Pacemaker's one-node
//!   cluster has no other node).
//!
//! Each run: from the kill to vmdr's action (detection), to the guest
//! running again (libvirt's state, polled every 50 ms), and to its first
//! answered ping (RTO); the guest's own boot is the time between the last
//! two. Median and worst per measure.
//!
//! Run as root, after the test command installed the lab's packages:
//! `cargo run --release -p dr-benches --bin kvm-bench [RUNS]` (10). Without
//! Pacemaker (`apt-get install pacemaker corosync resource-agents`) its
//! runs are left out and said so.

#[path = "../../../crates/dr-libvirt/tests/common/mod.rs"]
#[allow(missing_docs)]
mod lab;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "a-token-for-the-kvm-bench";
const LIMIT: Duration = Duration::from_secs(120);

fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_str(&http(addr, "GET", path)).unwrap_or(serde_json::Value::Null)
}

/// The id of the newest event, to look for what comes after it.
fn last_event(addr: SocketAddr) -> u64 {
    json(addr, "/api/v1/events?limit=10000")
        .as_array()
        .and_then(|v| v.last())
        .and_then(|e| e["id"].as_u64())
        .unwrap_or(0)
}

fn action_started_since(addr: SocketAddr, since: u64, vm: &str) -> bool {
    json(addr, &format!("/api/v1/events?since={since}&limit=10000"))
        .as_array()
        .is_some_and(|v| {
            v.iter()
                .any(|e| e["type"] == "action_started" && e["action"]["vm"] == vm)
        })
}

fn vm_host(addr: SocketAddr, vm: &str) -> Option<String> {
    json(addr, "/api/v1/vms")
        .as_array()?
        .iter()
        .find(|v| v["name"] == vm)
        .and_then(|v| v["host"].as_str().map(str::to_owned))
}

fn running_on(lab: &lab::Lab, host: &str, vm: &str) -> bool {
    let uri = format!(
        "qemu+unix:///system?socket={}",
        lab.dir.join(host).join("libvirt-sock").display()
    );
    Command::new("virsh")
        .args(["-q", "-c", &uri, "domstate", vm])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "running")
}

fn quick_ping(ip: std::net::IpAddr) -> bool {
    Command::new("ping")
        .args(["-c", "1", "-W", "0.2", &ip.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One run's figures, seconds from the kill.
#[derive(Default, Clone, Copy)]
struct Run {
    detected: Option<f64>,
    running: f64,
    answers: f64,
}

/// Waits for `done` (polled every 50 ms), seconds since `t0`.
fn until(t0: Instant, what: &str, mut done: impl FnMut() -> bool) -> f64 {
    while !done() {
        assert!(t0.elapsed() < LIMIT, "no {what} within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed().as_secs_f64()
}

/// Kills `vm`'s QEMU and times its way back: on `host`, or where vmdr
/// says it is.
fn crash_run(
    lab: &lab::Lab,
    host: Option<&str>,
    vm: &str,
    ip: std::net::IpAddr,
    drd: Option<SocketAddr>,
) -> Run {
    let host = match (host, drd) {
        (Some(h), _) => h.to_owned(),
        (None, Some(d)) => vm_host(d, vm).expect("the guest's host"),
        (None, None) => panic!("a crash run needs a host or vmdr"),
    };
    let host = host.as_str();
    until(Instant::now(), "answering guest before the run", || {
        running_on(lab, host, vm) && quick_ping(ip)
    });
    let since = drd.map(last_event);
    let t0 = Instant::now();
    lab.kill_qemu(vm);
    until(t0, "stop seen", || !running_on(lab, host, vm));
    let mut detected = None;
    let running = until(t0, "guest running again", || {
        if let (None, Some(a), Some(s)) = (detected, drd, since) {
            if action_started_since(a, s, vm) {
                detected = Some(t0.elapsed().as_secs_f64());
            }
        }
        running_on(lab, host, vm)
    });
    let answers = until(t0, "guest answering again", || quick_ping(ip));
    Run {
        detected,
        running,
        answers,
    }
}

/// Kills the host `vm` runs on and times its restore on another; revives
/// the host after.
fn host_run(
    lab: &lab::Lab,
    drd: SocketAddr,
    hosts: &[&str],
    vm: &str,
    ip: std::net::IpAddr,
) -> Run {
    let home = vm_host(drd, vm).expect("the guest's host");
    until(Instant::now(), "answering guest before the run", || {
        running_on(lab, &home, vm) && quick_ping(ip)
    });
    let since = last_event(drd);
    let t0 = Instant::now();
    lab.run(&["kill", &home]);
    let others: Vec<&str> = hosts.iter().copied().filter(|h| *h != home).collect();
    let mut detected = None;
    let running = until(t0, "guest running on another host", || {
        if detected.is_none() && action_started_since(drd, since, vm) {
            detected = Some(t0.elapsed().as_secs_f64());
        }
        others.iter().any(|h| running_on(lab, h, vm))
    });
    let answers = until(t0, "guest answering on another host", || quick_ping(ip));
    lab.run(&["revive", &home]);
    until(Instant::now(), "the dead host back in vmdr's view", || {
        json(drd, "/api/v1/hosts").as_array().is_some_and(|v| {
            v.iter()
                .any(|h| h["name"] == home.as_str() && h["link"] == "Connected")
        })
    });
    Run {
        detected,
        running,
        answers,
    }
}

/// A one-node Pacemaker cluster on loopback with one `VirtualDomain`
/// resource, monitored every second.
struct Pacemaker {
    dir: std::path::PathBuf,
    /// corosync and pacemakerd, reaped when the cluster goes.
    children: Vec<std::process::Child>,
}

impl Pacemaker {
    fn available() -> bool {
        ["corosync", "pacemakerd", "cibadmin", "crm_mon"]
            .iter()
            .all(|t| {
                Command::new("sh")
                    .args(["-c", &format!("command -v {t}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            && std::path::Path::new("/usr/lib/ocf/resource.d/heartbeat/VirtualDomain").exists()
    }

    fn start(lab: &lab::Lab, host: &str, vm: &str) -> Pacemaker {
        let dir = lab.dir.join("pacemaker");
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("corosync.conf");
        std::fs::write(
            &conf,
            format!(
                "totem {{\n version: 2\n cluster_name: vmdrbench\n transport: knet\n crypto_cipher: none\n crypto_hash: none\n}}\n\
                 nodelist {{\n node {{\n  ring0_addr: 127.0.0.1\n  name: bench1\n  nodeid: 1\n }}\n}}\n\
                 quorum {{\n provider: corosync_votequorum\n}}\n\
                 logging {{\n to_logfile: yes\n logfile: {}\n to_syslog: no\n to_stderr: no\n}}\n",
                dir.join("corosync.log").display()
            ),
        )
        .expect("corosync.conf");
        let spawn = |cmd: &mut Command, log: &str| {
            cmd.stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(log)).expect("log"))
                .spawn()
                .expect("spawn")
        };
        let mut children = vec![spawn(
            Command::new("corosync").args(["-f", "-c"]).arg(&conf),
            "corosync.out",
        )];
        std::thread::sleep(Duration::from_secs(2));
        children.push(spawn(
            Command::new("pacemakerd").arg("-f"),
            "pacemakerd.out",
        ));
        until(Instant::now(), "a Pacemaker DC", || {
            Command::new("crm_mon")
                .args(["-1"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Current DC: bench1"))
        });
        for (name, value) in [("stonith-enabled", "false"), ("no-quorum-policy", "ignore")] {
            let ok = Command::new("crm_attribute")
                .args(["-t", "crm_config", "-n", name, "-v", value])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "crm_attribute {name}");
        }
        let xml = lab.dir.join("guests").join(format!("{vm}.xml"));
        let uri = format!(
            "qemu+unix:///system?socket={}",
            lab.dir.join(host).join("libvirt-sock").display()
        );
        let primitive = format!(
            "<primitive id=\"vd\" class=\"ocf\" provider=\"heartbeat\" type=\"VirtualDomain\">\
             <instance_attributes id=\"vd-ia\">\
             <nvpair id=\"vd-config\" name=\"config\" value=\"{}\"/>\
             <nvpair id=\"vd-hv\" name=\"hypervisor\" value=\"{uri}\"/>\
             </instance_attributes><operations>\
             <op id=\"vd-monitor\" name=\"monitor\" interval=\"1s\" timeout=\"30s\"/>\
             <op id=\"vd-start\" name=\"start\" interval=\"0\" timeout=\"60s\"/>\
             <op id=\"vd-stop\" name=\"stop\" interval=\"0\" timeout=\"60s\"/>\
             </operations></primitive>",
            xml.display()
        );
        let ok = Command::new("cibadmin")
            .args(["--create", "-o", "resources", "--xml-text", &primitive])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cibadmin --create");
        until(Instant::now(), "the VirtualDomain resource started", || {
            Command::new("crm_mon")
                .args(["-1"])
                .output()
                .is_ok_and(|o| {
                    let out = String::from_utf8_lossy(&o.stdout);
                    out.contains("Started bench1")
                })
        });
        Pacemaker { dir, children }
    }
}

impl Drop for Pacemaker {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-9", "-x", "pacemakerd"])
            .status();
        // Its daemons' names are longer than pkill's 15 characters.
        let _ = Command::new("pkill")
            .args(["-9", "-f", "/usr/lib/pacemaker/"])
            .status();
        let _ = Command::new("pkill")
            .args(["-9", "-x", "corosync"])
            .status();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The cluster's configuration and state, so the next run starts new.
        let _ = std::fs::remove_dir_all("/var/lib/pacemaker/cib");
        let _ = std::fs::create_dir_all("/var/lib/pacemaker/cib");
        let _ = Command::new("chown")
            .args(["hacluster:haclient", "/var/lib/pacemaker/cib"])
            .status();
        let _ = &self.dir;
    }
}

fn median_max(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[s.len() - 1])
}

fn report(who: &str, runs: &[Run]) {
    if runs.is_empty() {
        return;
    }
    let pick = |f: fn(&Run) -> Option<f64>| -> Vec<f64> { runs.iter().filter_map(f).collect() };
    let show = |what: &str, v: Vec<f64>| {
        if v.is_empty() {
            return;
        }
        let (m, w) = median_max(&v);
        println!("  {who:<28} {what:<22} median {m:6.2} s   worst {w:6.2} s");
    };
    show("detected (action)", pick(|r| r.detected));
    show("running again", pick(|r| Some(r.running)));
    show("answers ping (RTO)", pick(|r| Some(r.answers)));
    show("of which guest boot", pick(|r| Some(r.answers - r.running)));
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    if !lab::can_run("kvm-bench") {
        return;
    }
    // kvm-b1 is another site: vmdr never restores onto it, and the host
    // runs kill only kvm-a1 and kvm-a2, so the crash runs' guests there
    // (vmdr's and Pacemaker's) are never caught by a host run.
    let hosts = ["kvm-a1", "kvm-a2", "kvm-b1"];
    let lab = lab::Lab::up(&hosts);
    // The crash runs' guest lives on kvm-b1, which no host run kills: a
    // restore by a host run would put it in its boot grace for the next.
    let crash_ip = lab.guest("kvm-b1", "vmdr-crash", 1);
    let host_ip = lab.guest("kvm-a2", "vmdr-host", 2);
    let pm_ip = lab.guest("kvm-b1", "pcmk-crash", 3);

    let dir = lab.dir.join("drd");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("token"), TOKEN).expect("token");
    std::fs::write(
        dir.join("drd.toml"),
        format!(
            "backend = \"libvirt\"\n{}\n[control]\nprobe_interval = \"1s\"\nprobe_timeout = \"500ms\"\n\
             inventory_interval = \"5s\"\naction_timeout = \"60s\"\naction_retries = 1\nretry_delay = \"1s\"\n\
             [policy]\nfailure_threshold = 2\nhost_down_after = \"1s\"\nboot_grace = \"15s\"\nbackoff_base = \"1s\"\nstable_after = \"20s\"\n\
             [policy.sites.primary]\ntrust_unreachable = true\n\
             [api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[journal]\npath = \"journal.redb\"\n",
            lab.libvirt_toml(&[])
        ),
    )
    .expect("config");
    let (drd, stop, daemon) = dr_benches::start_daemon(&dir.join("drd.toml"));
    until(Instant::now(), "drd seeing every guest answer", || {
        json(drd, "/api/v1/vms")
            .as_array()
            .is_some_and(|v| v.len() == 3 && v.iter().all(|v| v["reachable"] == true))
    });
    // The lab's hosts run no vmdr-agent and Pacemaker here runs without
    // STONITH: both take a silent host as dead (vmdr by its site trusting
    // unreachability), so the host runs compare like with like.
    // Each run crashes the same guest again within a minute: with the
    // default stable_after (60 s) vmdr would rightly treat that as a
    // flapping VM and back off; 20 s lets every run be a first failure.
    // Pacemaker's guest is Pacemaker's alone.
    http(drd, "POST", "/api/v1/vms/pcmk-crash/pause");
    let pacemaker = if Pacemaker::available() {
        Some(Pacemaker::start(&lab, "kvm-b1", "pcmk-crash"))
    } else {
        println!("Pacemaker is not installed: its runs are left out");
        None
    };

    let (mut vc, mut pc, mut vh) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        vc.push(crash_run(&lab, None, "vmdr-crash", crash_ip, Some(drd)));
        if pacemaker.is_some() {
            pc.push(crash_run(&lab, Some("kvm-b1"), "pcmk-crash", pm_ip, None));
        }
        vh.push(host_run(&lab, drd, &hosts[..2], "vmdr-host", host_ip));
        eprintln!("run {} of {runs} done", i + 1);
    }
    println!(
        "kvm-bench: {runs} runs each, guests under {}, 1 s probes / monitor",
        std::fs::read_to_string("/var/cache/vmdr-lab/accel")
            .unwrap_or_default()
            .trim()
    );
    println!("a guest's QEMU SIGKILLed, from the kill:");
    report("vmdr", &vc);
    report("Pacemaker VirtualDomain", &pc);
    println!("its host killed (daemon, QEMUs, link), from the kill:");
    report("vmdr (restore elsewhere)", &vh);
    drop(pacemaker);
    let _ = stop.send(true);
    let _ = daemon.join();
}
