//! Replication of a running guest of the KVM lab through libvirt's change
//! tracking, against the hash scan and against `rsync -I --inplace
//! --no-whole-file` of the same disk image, in one run:
//!
//! - a guest with a SIZE disk (default 2 GiB, every block written with
//!   random data), replicated to two receivers on loopback; the guest
//!   writes 1 % and then 10 % of its disk (64 KiB units at random offsets,
//!   on its agent's command); each time: how long until a checkpoint with
//!   those changes is acknowledged by both receivers through the change
//!   tracking (a pull-mode backup, the dirty extents read over NBD), the
//!   same through the hash scan of the image file (two receivers of its
//!   own), and rsync of the image file to a copy;
//! - RPO while the guest writes steadily (1 MiB writes at random offsets,
//!   each flushed, at a rate the machine's disk sustains three times over:
//!   the log and two replicas share it), a checkpoint every second:
//!   median, p99 and worst, sampled every 20 ms.
//!
//! Run as root, after the test command installed the lab's packages:
//! `cargo run --release -p dr-benches --bin kvm-repl-bench [SIZE_MiB [RPO_SECONDS [MB/s]]]`
//! (2048, 30, the guest writing at most 20 MB/s for the RPO). Needs rsync. Traffic only inside the lab and on 127.0.0.1.

#[path = "../../../crates/dr-libvirt/tests/common/mod.rs"]
#[allow(missing_docs)]
mod lab;

use dr_libvirt::changes::{LibvirtChanges, Tracking};
use dr_replication::capture::{capture, ChangeSource};
use dr_replication::net::{self, Progress, ShipConfig};
use dr_replication::{HashScan, Log, LogConfig, Replica};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

const KEY: &[u8] = b"the kvm replication bench's key";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// A raw image of `bytes` of random data, converted to the qcow2 at `out`.
fn make_disk(raw: &Path, out: &Path, bytes: u64) {
    dr_benches::random_image(raw, bytes, 0x2545_f491_4f6c_dd1d);
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out)
        .status()
        .expect("qemu-img");
    assert!(st.success(), "qemu-img convert failed");
    let _ = std::fs::remove_file(raw);
}

/// `rsync -I --inplace --no-whole-file`: always the delta transfer.
fn rsync(src: &Path, dst: &Path) -> Duration {
    let t = Instant::now();
    let st = std::process::Command::new("rsync")
        .args(["-I", "--inplace", "--no-whole-file"])
        .arg(src)
        .arg(dst)
        .status()
        .expect("rsync (apt-get install rsync)");
    assert!(st.success(), "rsync failed");
    t.elapsed()
}

/// A log shipped to two receivers on loopback.
struct Pipeline {
    log: Arc<Mutex<Log>>,
    wake: Arc<Notify>,
    progress: Vec<watch::Receiver<Progress>>,
    replicas: Vec<Arc<Mutex<Replica>>>,
}

impl Pipeline {
    async fn start(root: &Path, name: &str, stopped: &watch::Receiver<bool>) -> Pipeline {
        let log = Arc::new(Mutex::new(
            Log::open(&root.join(format!("{name}-log")), LogConfig::default()).expect("log"),
        ));
        let wake = Arc::new(Notify::new());
        let (mut progress, mut replicas) = (Vec::new(), Vec::new());
        for i in 0..2 {
            let replica = Arc::new(Mutex::new(
                Replica::open(&root.join(format!("{name}-replica-{i}")), 2).expect("replica"),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(net::serve(
                listener,
                replica.clone(),
                Arc::new(KEY.to_vec()),
                stopped.clone(),
            ));
            let (tx, rx) = watch::channel(Progress::default());
            tokio::spawn(net::ship(
                log.clone(),
                addr,
                ShipConfig::new(KEY.to_vec()),
                wake.clone(),
                tx,
                stopped.clone(),
            ));
            progress.push(rx);
            replicas.push(replica);
        }
        Pipeline {
            log,
            wake,
            progress,
            replicas,
        }
    }

    /// One point of `source`, until both receivers acknowledged it: the
    /// time, the bytes appended, and the source back.
    async fn point<S: ChangeSource + 'static>(&mut self, source: S) -> (Duration, u64, S) {
        let t = Instant::now();
        let log = self.log.clone();
        let (source, seq, bytes) = tokio::task::spawn_blocking(move || {
            let mut source = source;
            let c = capture(&mut source, &log, now_ms()).expect("capture");
            let bytes = c.disks.iter().map(|d| d.bytes).sum::<u64>();
            (source, c.checkpoint.1, bytes)
        })
        .await
        .expect("capture task");
        self.wake.notify_waiters();
        for p in &mut self.progress {
            p.wait_for(|p| p.acked_seq >= seq)
                .await
                .expect("shipper alive");
        }
        (t.elapsed(), bytes, source)
    }

    /// Lets the receivers fold acknowledged checkpoints into their base
    /// images, and trims the log: that work belongs to the phase before.
    async fn settle(&self) {
        for r in &self.replicas {
            let r = r.clone();
            tokio::task::spawn_blocking(move || r.lock().expect("replica").merge_waiting())
                .await
                .expect("merge task")
                .expect("merge");
        }
        let acked = self
            .progress
            .iter()
            .map(|p| p.borrow().acked_seq)
            .min()
            .unwrap_or(0);
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.lock().expect("log").detach(acked).remove())
            .await
            .expect("trim task")
            .expect("trim");
    }
}

fn agent(lab: &lab::Lab, vm: &str, command: &str) {
    lab.virsh(
        "kvm-a1",
        &["qemu-agent-command", "--timeout", "900", vm, command],
    );
}

fn main() {
    if !lab::can_run("kvm-repl-bench") {
        return;
    }
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2048);
    let rpo_secs: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    // The guest's steady writes during the RPO phase, at most: each MB is
    // written three times on this machine's one disk (the log and two
    // replicas), and the disk sustains about 110 MB/s of durable writes.
    let churn_mbps: u64 = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let lab = lab::Lab::up(&["kvm-a1"]);
    let root = lab.dir.join("bench");
    std::fs::create_dir_all(&root).expect("bench dir");
    let disk = lab.shared().join("bench.qcow2");
    let size = mib << 20;
    let t = Instant::now();
    make_disk(&root.join("seed.raw"), &disk, size);
    println!(
        "kvm-repl-bench: a {mib} MiB qcow2 of random data ({} to make)",
        secs(t.elapsed())
    );
    let ip = lab.guest("kvm-a1", "bench", 1);
    assert!(
        lab::wait_for_ping(ip, Duration::from_secs(120)).is_some(),
        "the guest did not boot"
    );
    let cfg = {
        #[derive(serde::Deserialize)]
        struct File {
            libvirt: dr_libvirt::LibvirtSection,
        }
        let f: File = toml::from_str(&lab.libvirt_toml(&[])).expect("lab config");
        f.libvirt.into_config().expect("valid")
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (stop, stopped) = watch::channel(false);
        let mut cbt = Pipeline::start(&root, "cbt", &stopped).await;
        let mut scan = Pipeline::start(&root, "scan", &stopped).await;
        let tracking = Tracking {
            vm: "bench".into(),
            hosts: cfg.hosts.clone(),
            state_dir: root.join("cbt-log"),
            nbd_port: 10809,
            scratch_dir: None,
            scratch_limit: 4 << 30,
            timeout: Duration::from_secs(60),
        };
        let mut tracked = LibvirtChanges::open(tracking).expect("change source");
        let mut scanned = HashScan::open(vec![disk.clone()], &root.join("scan-log")).expect("scan");
        // The first points: every allocated block.
        let (d, bytes, src) = cbt.point(tracked).await;
        tracked = src;
        println!("first point, change tracking: {} for {:.0} MB", secs(d), bytes as f64 / 1e6);
        let (d, bytes, src) = scan.point(scanned).await;
        scanned = src;
        println!("first point, hash scan:       {} for {:.0} MB", secs(d), bytes as f64 / 1e6);
        let mirror = root.join("rsync-copy.qcow2");
        std::fs::copy(&disk, &mirror).expect("copy for rsync");
        println!();
        println!("| {mib} MiB disk, changed by the guest | change tracking | hash scan | rsync | rsync / tracking | scan / tracking |");
        println!("|---|---:|---:|---:|---:|---:|");
        for (pct, seed) in [(1u32, 11u32), (10, 23)] {
            cbt.settle().await;
            scan.settle().await;
            // Bring the scan's hashes and the copy up to the image as it is.
            let (_, _, src) = scan.point(scanned).await;
            scanned = src;
            rsync(&disk, &mirror);
            let (_, _, src) = cbt.point(tracked).await;
            tracked = src;
            let t = Instant::now();
            agent(&lab, "bench", &format!(r#"{{"execute":"vmdr-fill","arguments":{{"percent":{pct},"seed":{seed}}}}}"#));
            let fill = t.elapsed();
            let (d_cbt, b_cbt, src) = cbt.point(tracked).await;
            tracked = src;
            let (d_scan, b_scan, src) = scan.point(scanned).await;
            scanned = src;
            let d_rsync = tokio::task::spawn_blocking({
                let (disk, mirror) = (disk.clone(), mirror.clone());
                move || rsync(&disk, &mirror)
            })
            .await
            .expect("rsync task");
            println!(
                "| {pct} % ({} MB sent by tracking, {} MB by the scan; the guest's writes took {}) | {} | {} | {} | {:.1}× | {:.1}× |",
                b_cbt / 1_000_000,
                b_scan / 1_000_000,
                secs(fill),
                secs(d_cbt),
                secs(d_scan),
                secs(d_rsync),
                d_rsync.as_secs_f64() / d_cbt.as_secs_f64(),
                d_scan.as_secs_f64() / d_cbt.as_secs_f64()
            );
        }
        // RPO under the guest's steady writes, a checkpoint every second.
        cbt.settle().await;
        let sampler = dr_benches::RpoSampler::start(cbt.progress.clone());
        agent(
            &lab,
            "bench",
            &format!(r#"{{"execute":"vmdr-churn","arguments":{{"mbps":{churn_mbps}}}}}"#),
        );
        let started = Instant::now();
        let mut changed = 0u64;
        let mut points = 0u64;
        let mut next = Instant::now();
        while started.elapsed() < Duration::from_secs(rpo_secs) {
            tokio::time::sleep_until(next.into()).await;
            next += Duration::from_secs(1);
            let at = Instant::now();
            let log = cbt.log.clone();
            let (src, c) = tokio::task::spawn_blocking(move || {
                let mut s = tracked;
                let c = capture(&mut s, &log, now_ms()).expect("capture");
                (s, c)
            })
            .await
            .expect("capture task");
            tracked = src;
            sampler.taken_at(c.checkpoint.0, at);
            cbt.wake.notify_waiters();
            changed += c.disks.iter().map(|d| d.bytes).sum::<u64>();
            points += 1;
            if points.is_multiple_of(10) {
                cbt.settle().await;
            }
        }
        agent(&lab, "bench", r#"{"execute":"vmdr-churn-stop"}"#);
        let all = sampler.finish().await;
        println!();
        println!(
            "RPO for {rpo_secs} s while the guest writes ({:.1} MB/s of changes captured, {points} points, one a second; sampled every 20 ms):",
            changed as f64 / rpo_secs as f64 / 1e6
        );
        for (i, s) in all.iter().enumerate() {
            println!(
                "  receiver {i}: median {} ms, p99 {} ms, max {} ms over {} samples",
                dr_benches::quantile(s, 0.5),
                dr_benches::quantile(s, 0.99),
                s.last().copied().unwrap_or(0),
                s.len()
            );
        }
        println!("chains dropped: {}", tracked.resets());
        let _ = stop.send(true);
    });
    let _ = std::fs::remove_dir_all(&root);
}
