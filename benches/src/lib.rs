//! Workloads for the vmdr benchmarks: deterministic mixed clusters of any
//! size, so every bench (and every run of it) decides over the same facts.
#![forbid(unsafe_code)]

use dr_core::engine::{HostFacts, HostRecovery, OffCause, VmFacts};
use dr_core::model::{Heartbeat, HostLink, PowerState};
use dr_core::Timestamp;

/// Writes `bytes` of pseudo-random data (xorshift from `seed`) to `path`:
/// a disk image whose blocks all differ.
pub fn random_image(path: &std::path::Path, bytes: u64, seed: u64) {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create image"));
    let mut buf = vec![0u8; 8 << 20];
    let mut x = seed | 1;
    let mut left = bytes;
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write image");
        left -= n as u64;
    }
    f.flush().expect("flush");
}

/// RPO as the primary sees it, sampled every 20 ms for each receiver: now
/// minus when the newest checkpoint it acknowledged was taken, on the
/// monotonic clock (a step of the wall clock is not an RPO). The bench
/// records when each checkpoint is taken in `taken`.
pub struct RpoSampler {
    /// When each checkpoint (by id) was taken.
    pub taken: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>>,
    samples: std::sync::Arc<std::sync::Mutex<Vec<Vec<u64>>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RpoSampler {
    /// Starts sampling the receivers whose progress is `progress`.
    pub fn start(
        progress: Vec<tokio::sync::watch::Receiver<dr_replication::net::Progress>>,
    ) -> RpoSampler {
        use std::sync::{Arc, Mutex};
        let taken = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let samples = Arc::new(Mutex::new(vec![Vec::new(); progress.len()]));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = {
            let (taken, samples) = (taken.clone(), samples.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                    }
                    let now = std::time::Instant::now();
                    let taken = taken.lock().expect("taken");
                    let mut all = samples.lock().expect("samples");
                    for (i, p) in progress.iter().enumerate() {
                        // Before the load's first checkpoint arrives there
                        // is nothing to measure.
                        if let Some(at) = p.borrow().checkpoint.and_then(|(id, _)| taken.get(&id)) {
                            all[i].push(now.duration_since(*at).as_millis() as u64);
                        }
                    }
                }
            })
        };
        RpoSampler {
            taken,
            samples,
            stop,
            task,
        }
    }

    /// Records that checkpoint `id` was taken at `at`.
    pub fn taken_at(&self, id: u64, at: std::time::Instant) {
        self.taken.lock().expect("taken").insert(id, at);
    }

    /// Stops; each receiver's samples, in ms, sorted.
    pub async fn finish(self) -> Vec<Vec<u64>> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let mut all = self.samples.lock().expect("samples").clone();
        for s in &mut all {
            s.sort_unstable();
        }
        all
    }
}

/// The `q` quantile of sorted `s` (0 when empty).
pub fn quantile(s: &[u64], q: f64) -> u64 {
    s.get(((s.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or(0)
}

/// CPU seconds (user + system) of this process, and of its waited-for
/// children, from /proc/self/stat (clock ticks of 10 ms).
pub fn cpu_secs() -> (f64, f64) {
    proc_cpu_secs("self")
}

/// [`cpu_secs`] of process `pid` ("self" for this one).
pub fn proc_cpu_secs(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields after the command: state is [0]; utime [11], stime [12],
    // cutime [13], cstime [14].
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    (get(11) + get(12), get(13) + get(14))
}

/// `GET path` on `addr` (HTTP/1.1, the body de-chunked): its status (0
/// when nothing answered) and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
        }
        out
    } else {
        body.to_owned()
    };
    (code, body)
}

/// drd's library (`dr_daemon::run`) on the configuration file at `config`,
/// in a thread of this process with a runtime of its own: its API address,
/// the switch that stops it (send `true`), and the thread to join after.
pub fn start_daemon(
    config: &std::path::Path,
) -> (
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    std::thread::JoinHandle<()>,
) {
    let cfg = dr_daemon::DaemonConfig::load(config).expect("config");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let daemon = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
        rt.block_on(dr_daemon::run(cfg, stopped, reload_rx, move |a| {
            let _ = addr_tx.send(a);
        }))
        .expect("daemon");
    });
    let addr = addr_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("listening");
    (addr, stop, daemon)
}

/// Builds govmomi's vCenter simulator (`crates/dr-vsphere/tests/vcsim`)
/// and starts it with `args`; returns it and its SDK URL, or why it cannot
/// run here.
pub fn start_vcsim(args: &[&str]) -> Result<(std::process::Child, String), String> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let src = root.join("crates/dr-vsphere/tests/vcsim");
    let out = root.join("target/vcsim-bench");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", root.join("target/gocache"))
        .status();
    if !built.is_ok_and(|s| s.success()) {
        return Err("cannot build the simulator (apt-get install golang-go golang-github-vmware-govmomi-dev)".into());
    }
    // Its stdin is a lifeline: closed (by [`stop_vcsim`], or this
    // process's end), it removes its datastores' directories and exits.
    let mut child = Command::new(&out)
        .arg("-stdin-lifeline")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the simulator: {e}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("the simulator's stdout")?;
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("the simulator's URL: {e}"))?;
    let url = line
        .split("\"url\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or_else(|| format!("the simulator said {line:?}"))?
        .to_owned();
    Ok((child, url))
}

/// The configuration to log in to a simulator [`start_vcsim`] started at
/// `url` (its password in this process's environment).
pub fn vcsim_config(url: String) -> dr_vsphere::VsphereConfig {
    std::env::set_var("VMDR_BENCH_PW", "s3cret");
    dr_vsphere::VsphereConfig {
        url,
        user: "vmdr".into(),
        password: dr_vsphere::PasswordSource::Env("VMDR_BENCH_PW".into()),
        tls: dr_vsphere::TlsMode::Verify,
        timeout: std::time::Duration::from_secs(120),
        limits: dr_vsphere::xml::Limits::default(),
        spares: Vec::new(),
    }
}

/// Stops a simulator [`start_vcsim`] started, letting it remove its
/// datastores' directories first.
pub fn stop_vcsim(mut child: std::process::Child) {
    drop(child.stdin.take());
    for _ in 0..250 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// VMs per host in the generated clusters.
pub const VMS_PER_HOST: usize = 50;

/// "Now" for the generated facts.
pub const NOW: Timestamp = Timestamp(10_000_000);

fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A cluster of `vms` VMs on `vms / VMS_PER_HOST` hosts (plus spares):
/// 1 % of hosts confirmed down (half with a host snapshot to try, half
/// whose recovery failed), 1 % unreachable but not yet confirmed; of the
/// VMs, about 5 % suspect (one failed probe), 3 % crashed, 2 % hung, 1 %
/// stopped by a user, 1 % in back-off, 1 % with a recovery in flight, the
/// rest healthy.
pub fn cluster(vms: usize) -> (Vec<VmFacts>, Vec<HostFacts>) {
    let n_hosts = (vms / VMS_PER_HOST).max(2);
    let mut hosts = Vec::with_capacity(n_hosts + n_hosts / 100 + 1);
    for h in 0..n_hosts {
        let r = mix(h as u64 ^ 0xA5A5) % 1000;
        let mut f = HostFacts::connected((h % 2) as u16, 200_000, 100_000);
        if r < 10 {
            f.link = HostLink::NotResponding;
            f.probe_failures = 100;
            f.unreachable_since = Some(Timestamp(0));
            f.has_snapshot = r < 5;
            f.recovery = if r < 5 {
                HostRecovery::NotTried
            } else {
                HostRecovery::Failed
            };
        } else if r < 20 {
            f.link = HostLink::NotResponding;
            f.probe_failures = 2;
        }
        hosts.push(f);
    }
    for _ in 0..=n_hosts / 100 {
        let mut spare = HostFacts::connected(0, 262_144, 128_000);
        spare.link = HostLink::Standby;
        hosts.push(spare);
    }
    let mut out = Vec::with_capacity(vms);
    for i in 0..vms {
        let r = mix(i as u64) % 100;
        let host = (i % n_hosts) as u32;
        let mut vm = VmFacts::running_on(host);
        vm.memory_mb = 2048 << (r % 3);
        vm.has_snapshot = r.is_multiple_of(2);
        vm.has_replica = !r.is_multiple_of(3);
        let down_host = hosts[host as usize].link != HostLink::Connected;
        match r {
            _ if down_host => {
                vm.probe_failures = 50;
                vm.power = PowerState::Unknown;
                vm.heartbeat = Heartbeat::Unknown;
            }
            0..=4 => vm.probe_failures = 1,
            5..=7 => {
                vm.probe_failures = 5;
                vm.power = PowerState::Off;
                vm.off_cause = OffCause::System;
                vm.heartbeat = Heartbeat::Unknown;
            }
            8..=9 => {
                vm.probe_failures = 5;
                vm.heartbeat = Heartbeat::Missing;
            }
            10 => {
                vm.power = PowerState::Off;
                vm.off_cause = OffCause::User;
                vm.probe_failures = 40;
            }
            11 => {
                vm.probe_failures = 5;
                vm.failed_attempts = 2;
                vm.retry_at = Timestamp(NOW.0 + 5_000);
            }
            12 => {
                vm.probe_failures = 5;
                vm.in_flight = true;
            }
            _ => {}
        }
        out.push(vm);
    }
    (out, hosts)
}
