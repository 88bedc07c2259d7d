//! vmdr-agent on the KVM lab (`scripts/kvm-lab.sh`, whose `agents` command
//! starts them): an agent in each host's network namespace, heartbeating to
//! drd (in this process) across
//! the host's link and writing its record on the storage the hosts share.
//! A host cut off from drd and from its peers while its guest runs: its
//! agent destroys the guest, says so, and only then is the guest started
//! elsewhere. A host that dies with its agent: its guest moves once the
//! agent's promise has run out. Watched through each host's own libvirt
//! socket, which a cut link does not cut. Needs root and the lab's
//! packages; in CI they must be there.

#[path = "../../drctl/tests/common/mod.rs"]
mod http;
#[path = "../../../crates/dr-libvirt/tests/common/mod.rs"]
mod lab;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const API_TOKEN: &str = "lab-api-token-0123456789";
const LIMIT: Duration = Duration::from_secs(120);

/// drd, in a thread of this process.
struct Drd {
    api: String,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Drd {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drd {
    fn json(&self, path: &str) -> serde_json::Value {
        http::http_get(&self.api, path)
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }

    fn host(&self, name: &str) -> serde_json::Value {
        self.json("/api/v1/hosts")
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["name"] == name).cloned())
            .unwrap_or_default()
    }

    /// The first `action_started` of a restore of `vm`.
    fn restore_of(&self, vm: &str) -> Option<serde_json::Value> {
        self.json("/api/v1/events?limit=10000")
            .as_array()?
            .iter()
            .find(|e| {
                e["type"] == "action_started"
                    && e["action"]["kind"] == "restore"
                    && e["action"]["vm"] == vm
            })
            .cloned()
    }
}

fn start_drd(lab: &lab::Lab, dir: &Path, agents_at: &str) -> Drd {
    std::fs::write(dir.join("token"), API_TOKEN).expect("token");
    let config = dir.join("drd.toml");
    std::fs::write(
        &config,
        format!(
            r#"backend = "libvirt"
{}
[control]
probe_interval = "1s"
probe_timeout = "500ms"
inventory_interval = "2s"
action_timeout = "60s"
action_retries = 1
retry_delay = "1s"
[policy]
failure_threshold = 2
host_down_after = "3s"
boot_grace = "20s"
# The lab's hosts share one kernel: a watchdog armed in one would reset
# the machine. The agents run without one, and their deadline counts.
agent_needs_watchdog = false
[agents]
listen = "{agents_at}"
token_file = "{}"
storage_dir = "{}"
[api]
listen = "127.0.0.1:0"
token_file = "token"
[journal]
path = "journal.redb"
"#,
            lab.libvirt_toml(&[]),
            lab.dir.join("agent-token").display(),
            lab.shared().join("heartbeats").display(),
        ),
    )
    .expect("config");
    let cfg = dr_daemon::DaemonConfig::load(&config).expect("valid config");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
        rt.block_on(dr_daemon::run(cfg, stopped, reload_rx, move |a| {
            let _ = tx.send(a);
        }))
        .expect("drd");
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("drd listening");
    Drd {
        api: addr.to_string(),
        stop,
        thread: Some(thread),
    }
}

/// `vm`'s state on `host` through the host's own socket; `unreachable`
/// when its libvirt does not answer (a dead host).
fn state_on(lab: &lab::Lab, host: &str, vm: &str) -> String {
    Command::new("virsh")
        .args(["-q", "-c", &lab.unix_uri(host), "domstate", vm])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unreachable".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        })
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + LIMIT;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn agent_logs(lab: &lab::Lab) -> String {
    let mut out = String::new();
    for h in ["kvm-a1", "kvm-a2", "kvm-a3"] {
        let p: PathBuf = lab.dir.join(h).join("agent.log");
        out.push_str(&format!(
            "--- {h}\n{}\n",
            std::fs::read_to_string(p).unwrap_or_default()
        ));
    }
    out
}

#[test]
fn a_cut_off_hosts_agent_destroys_its_guest_before_it_runs_elsewhere_and_a_dead_hosts_guest_moves_at_its_deadline(
) {
    let test = "a_cut_off_hosts_agent_destroys_its_guest_before_it_runs_elsewhere";
    if !lab::can_run(test) {
        return;
    }
    let hosts = ["kvm-a1", "kvm-a2", "kvm-a3"];
    let lab = lab::Lab::up(&hosts);
    lab.guest("kvm-a1", "on-dead-host", 1);
    lab.guest("kvm-a2", "on-cut-host", 2);
    let dir = lab.dir.join("agent-test");
    std::fs::create_dir_all(&dir).expect("dir");
    // The agents as the lab script starts them (as `kvm-lab.sh demo` does):
    // 6 s isolation timeout, 500 ms interval, the gateway as isolation
    // address, records on the shared storage, drd at the gateway's :7171.
    lab.run(&["agents", env!("CARGO_BIN_EXE_vmdr-agent"), "6s", "500ms"]);
    let agents_at = format!("{}:7171", lab.gateway());
    let drd = start_drd(&lab, &dir, &agents_at);
    wait(
        "every agent heard and writing its record, both guests answering",
        || {
            let heard = hosts.iter().all(|h| {
                let host = drd.host(h);
                !host["agent"].is_null() && host["storage"]["readable"] == true
            });
            let vms = drd.json("/api/v1/vms");
            heard
                && vms
                    .as_array()
                    .is_some_and(|v| v.len() == 2 && v.iter().all(|v| v["reachable"] == true))
        },
    );

    // kvm-a2 is cut off: from drd, its peers and its gateway. Its guest
    // runs on until its agent destroys it; only then does it start
    // elsewhere, and never on two hosts at once.
    let cut = Instant::now();
    lab.run(&["cut", "kvm-a2"]);
    let (mut destroyed, mut elsewhere) = (None, None);
    wait("on-cut-host running on another host", || {
        let running: Vec<&str> = hosts
            .iter()
            .copied()
            .filter(|h| state_on(&lab, h, "on-cut-host") == "running")
            .collect();
        assert!(running.len() <= 1, "on-cut-host runs on {running:?}");
        if destroyed.is_none() && state_on(&lab, "kvm-a2", "on-cut-host") != "running" {
            destroyed = Some(cut.elapsed());
        }
        if running.iter().any(|&h| h != "kvm-a2") {
            elsewhere = Some(cut.elapsed());
        }
        elsewhere.is_some()
    });
    let (destroyed, elsewhere) = (
        destroyed.expect("destroyed on kvm-a2"),
        elsewhere.unwrap_or_default(),
    );
    assert!(
        destroyed <= elsewhere,
        "started elsewhere at {elsewhere:?} before kvm-a2's copy was destroyed at {destroyed:?}"
    );
    // Its promise: gone within 6 s + 5 s of its last acknowledgement (this
    // watch sees it up to a second late).
    assert!(
        destroyed <= Duration::from_millis(12_000),
        "kvm-a2's guest still ran {destroyed:?} after the cut\n{}",
        agent_logs(&lab)
    );
    assert!(
        destroyed >= Duration::from_millis(5_000),
        "kvm-a2's agent destroyed its guest {destroyed:?} after the cut, before its 6 s timeout\n{}",
        agent_logs(&lab)
    );
    eprintln!(
        "cut kvm-a2: its guest destroyed by its agent after {destroyed:?}, running elsewhere after {elsewhere:?}"
    );
    let log = std::fs::read_to_string(lab.dir.join("kvm-a2").join("agent.log")).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains("isolated") || l.contains("fenced:") || l.contains("cannot"))
    {
        eprintln!("  kvm-a2's agent: {line}");
    }
    let restore = drd
        .restore_of("on-cut-host")
        .expect("a restore of on-cut-host");
    assert_eq!(restore["action"]["evidence"], "self_fenced", "{restore}");
    assert_eq!(drd.host("kvm-a2")["storage"]["fenced"], true);
    // Healed: its agent hears drd again and resumes; the guest, now on
    // another host, does not come back on kvm-a2.
    lab.run(&["heal", "kvm-a2"]);
    wait("kvm-a2's agent resumed", || {
        let h = drd.host("kvm-a2");
        h["storage"]["fenced"] == false && h["evidence"] == "not_down"
    });
    assert_ne!(state_on(&lab, "kvm-a2", "on-cut-host"), "running");

    // kvm-a1 dies, its agent with it: no record says "fenced"; its guest
    // moves once the agent's promise (6 s + 5 s to destroy, + margins)
    // has run out since it was last heard.
    let killed = Instant::now();
    lab.run(&["kill", "kvm-a1"]);
    wait("on-dead-host restored elsewhere", || {
        drd.restore_of("on-dead-host").is_some()
    });
    let moved_after = killed.elapsed();
    eprintln!("killed kvm-a1: its guest's restore started after {moved_after:?}");
    let restore = drd.restore_of("on-dead-host").expect("restore");
    assert_eq!(restore["action"]["evidence"], "deadline", "{restore}");
    assert!(
        moved_after >= Duration::from_millis(10_000),
        "on-dead-host moved {moved_after:?} after the kill, before the agent's deadline"
    );
    wait("on-dead-host running elsewhere", || {
        ["kvm-a2", "kvm-a3"]
            .iter()
            .any(|h| state_on(&lab, h, "on-dead-host") == "running")
    });
}
