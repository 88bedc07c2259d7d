//! The replication benchmark: a disk image of SIZE (default 2 GiB) with 1 %
//! and 10 % of its 4 KiB blocks changed; time to bring a replica over
//! loopback TCP up to date, with changes from the write path and from the
//! hash scan, against `rsync --inplace --no-whole-file` on the same files in
//! the same run; shipping throughput; the machine's sequential read; and RPO
//! under a steady 50 MB/s write load.
//!
//! Run: `cargo run --release -p dr-benches --bin repl-bench [SIZE_MiB [LOAD_SECONDS [rpo|all [LOAD_MB/s]]]]`
//! (needs rsync; `rpo` skips the delta phases and rsync, for repeated RPO
//! runs; the load is 50 MB/s unless given). Files go to target/repl-bench (about 4x SIZE); traffic
//! only on 127.0.0.1.

use dr_replication::net::{self, Progress, ShipConfig};
use dr_replication::scan::{Scanner, BLOCK};
use dr_replication::write_path::WritePath;
use dr_replication::{Log, LogConfig, Replica};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn make_image(path: &Path, bytes: u64, rng: &mut Rng) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create image"));
    let mut buf = vec![0u8; 8 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write image");
        left -= n as u64;
    }
    f.flush().expect("flush");
}

/// `count` distinct random block numbers.
fn blocks(rng: &mut Rng, total: u64, count: u64) -> Vec<u64> {
    let mut set = std::collections::BTreeSet::new();
    while (set.len() as u64) < count {
        set.insert(rng.next() % total);
    }
    set.into_iter().collect()
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

async fn acked(p: &mut watch::Receiver<Progress>, seq: u64) {
    p.wait_for(|x| x.acked_seq >= seq)
        .await
        .expect("shipper alive");
}

/// `rsync --inplace --no-whole-file`, with `-I` so that its quick check
/// (size and whole-second mtime) never skips a file changed within the same
/// second: it always does the delta transfer it would do on a changed file.
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

/// One receiver of the benchmark and what its shipper reports.
struct Receiver {
    name: &'static str,
    progress: watch::Receiver<Progress>,
    replica: Arc<Mutex<Replica>>,
}

/// Lets each replica finish merging earlier checkpoints into its base
/// (a receiver merges after acknowledging): that work belongs to the phase
/// that shipped them, not to the next one timed.
async fn settle(receivers: &[Receiver]) {
    for r in receivers {
        let replica = r.replica.clone();
        tokio::task::spawn_blocking(move || replica.lock().expect("replica").merge_waiting())
            .await
            .expect("settle task")
            .expect("merge");
    }
}

/// How long each receiver took to acknowledge `seq`, measured from `t`.
async fn acked_all(receivers: &[Receiver], seq: u64, t: Instant) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for r in receivers {
        let mut p = r.progress.clone();
        tasks.push(tokio::spawn(async move {
            acked(&mut p, seq).await;
            t.elapsed()
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("waiter"));
    }
    out
}

fn per_receiver(receivers: &[Receiver], times: &[Duration]) -> String {
    receivers
        .iter()
        .zip(times)
        .map(|(r, t)| format!("{} {}", r.name, secs(*t)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Durable write bandwidth of the bench directory's disk: 256 MiB written
/// and fsynced.
fn disk_write(dir: &Path) -> f64 {
    let path = dir.join("dd.tmp");
    let buf = vec![0x5au8; 8 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).expect("create");
    for _ in 0..32 {
        f.write_all(&buf).expect("write");
    }
    f.sync_all().expect("fsync");
    let bw = (256u64 << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let _ = std::fs::remove_file(&path);
    bw
}

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2048);
    let load_secs: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let rpo_only = std::env::args().nth(3).as_deref() == Some("rpo");
    // The steady load's rate, MB/s: 50 is the goal's; more shows the margin.
    let load_mbps: u64 = std::env::args()
        .nth(4)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let size = mib << 20;
    let total_blocks = size / BLOCK as u64;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/repl-bench");
    // A second replica in memory (tmpfs) shows what the pipeline itself
    // carries when the disk is not the limit.
    let shm = Path::new("/dev/shm")
        .is_dir()
        .then(|| Path::new("/dev/shm/vmdr-repl-bench").to_owned());
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");
    if let Some(d) = &shm {
        let _ = std::fs::remove_dir_all(d);
    }
    let (src, mirror, logd) = (
        root.join("source.img"),
        root.join("rsync-dest.img"),
        root.join("log"),
    );
    let mut rng = Rng(42);
    println!("image: {mib} MiB, {total_blocks} blocks of 4 KiB");
    make_image(&src, size, &mut rng);
    if !rpo_only {
        std::fs::copy(&src, &mirror).expect("copy for rsync");
    }

    // The machine's sequential read (page cache warm: the image was just
    // written) and the disk's durable write bandwidth.
    let t = Instant::now();
    let mut f = std::fs::File::open(&src).expect("open");
    std::io::copy(&mut f, &mut std::io::sink()).expect("read");
    let read = t.elapsed();
    println!(
        "machine: sequential read of the image {} ({:.0} MB/s); disk write + fsync {:.0} MB/s",
        secs(read),
        size as f64 / read.as_secs_f64() / 1e6,
        disk_write(&root)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let psk = b"benchmark pre-shared key".to_vec();
        let (stop, stopped) = watch::channel(false);
        let log = Arc::new(Mutex::new(Log::open(&logd, LogConfig::default()).expect("log")));
        let wake = Arc::new(Notify::new());
        let mut receivers = Vec::new();
        let dirs = [("disk", Some(root.join("replica"))), ("tmpfs", shm.clone().map(|d| d.join("replica")))];
        // REPL_BENCH_REPLICAS=tmpfs (or disk) keeps only that replica.
        let only = std::env::var("REPL_BENCH_REPLICAS").ok();
        for (name, dir) in dirs {
            let Some(dir) = dir else { continue };
            if only.as_deref().is_some_and(|o| !o.split(',').any(|x| x == name)) {
                continue;
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let replica = Arc::new(Mutex::new(Replica::open(&dir, 2).expect("replica")));
            tokio::spawn(net::serve(listener, replica.clone(), Arc::new(psk.clone()), stopped.clone()));
            let (ptx, progress) = watch::channel(Progress::default());
            tokio::spawn(net::ship(log.clone(), addr, ShipConfig::new(psk.clone()), wake.clone(), ptx, stopped.clone()));
            receivers.push(Receiver { name, progress, replica });
        }
        let trim = |receivers: &[Receiver]| {
            let acked = receivers.iter().map(|r| r.progress.borrow().acked_seq).min().unwrap_or(0);
            log.lock().expect("log").trim(acked).expect("trim");
        };
        // The group is opened on a fresh log (nothing to resynchronise),
        // then seeded with a full copy by a scan against empty hashes.
        let mut wp = WritePath::open(log.clone(), &logd, std::slice::from_ref(&src)).expect("write path");
        let mut scanner = Scanner::open(0, &logd.join("disk-0.hashes")).expect("scanner");
        let scan_checkpoint = |mut scanner: Scanner| {
            let (l, s) = (log.clone(), src.clone());
            tokio::task::spawn_blocking(move || {
                let mut log = l.lock().expect("log");
                scanner.scan(&s, &mut log).expect("scan");
                let seq = log.checkpoint(now_ms()).expect("checkpoint").1;
                scanner.commit().expect("commit");
                (scanner, seq)
            })
        };
        let t = Instant::now();
        let (sc, seq) = scan_checkpoint(scanner).await.expect("scan task");
        scanner = sc;
        let scanned = t.elapsed();
        wake.notify_waiters();
        let t2 = Instant::now();
        let cpu = dr_benches::cpu_secs().0;
        let times = acked_all(&receivers, seq, t2).await;
        let cpu = dr_benches::cpu_secs().0 - cpu;
        println!(
            "initial copy: scan + log + fsync {}; then shipped and durable on {} ({:.1} CPU seconds for the shipping, both ends)",
            secs(scanned),
            per_receiver(&receivers, &times),
            cpu
        );
        for (r, t) in receivers.iter().zip(&times) {
            println!("  shipping throughput to {}: {:.0} MB/s", r.name, size as f64 / t.as_secs_f64() / 1e6);
        }
        trim(&receivers);

        let deltas: &[u64] = if rpo_only { &[] } else { &[1, 10] };
        for &pct in deltas {
            let n = total_blocks * pct / 100;
            // Changes through the write path.
            let mut data = vec![0u8; BLOCK];
            for b in blocks(&mut rng, total_blocks, n) {
                rng.fill(&mut data);
                wp.write(0, b * BLOCK as u64, &data).expect("write");
            }
            settle(&receivers).await;
            let t = Instant::now();
            let seq = wp.checkpoint(now_ms()).expect("checkpoint").1;
            wake.notify_waiters();
            let via_write_path = acked_all(&receivers, seq, t).await;
            let rsync_write_path = rsync(&src, &mirror);
            // The hash state must follow what the write path changed (this
            // rescan ships those blocks again; not timed).
            let (sc, seq) = scan_checkpoint(scanner).await.expect("scan");
            scanner = sc;
            wake.notify_waiters();
            acked_all(&receivers, seq, Instant::now()).await;
            trim(&receivers);
            // Changes written by something else, found by the hash scan.
            let file = std::fs::OpenOptions::new().write(true).open(&src).expect("open");
            for b in blocks(&mut rng, total_blocks, n) {
                rng.fill(&mut data);
                file.write_all_at(&data, b * BLOCK as u64).expect("write");
            }
            drop(file);
            settle(&receivers).await;
            let t = Instant::now();
            let (sc, seq) = scan_checkpoint(scanner).await.expect("scan");
            scanner = sc;
            wake.notify_waiters();
            let via_scan = acked_all(&receivers, seq, t).await;
            let rsync_scan = rsync(&src, &mirror);
            let slowest = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
            println!("{pct:>2} % of blocks changed ({n} blocks, {:.1} MB):", (n * BLOCK as u64) as f64 / 1e6);
            println!(
                "  write path: {} · rsync {} → {:.1}x faster",
                per_receiver(&receivers, &via_write_path),
                secs(rsync_write_path),
                rsync_write_path.as_secs_f64() / slowest(&via_write_path).as_secs_f64()
            );
            println!(
                "  hash scan:  {} · rsync {} → {:.1}x faster",
                per_receiver(&receivers, &via_scan),
                secs(rsync_scan),
                rsync_scan.as_secs_f64() / slowest(&via_scan).as_secs_f64()
            );
            trim(&receivers);
        }

        // RPO under a steady 50 MB/s write load, checkpoints every 100 ms.
        // First the replicas settle: two empty checkpoints leave the large
        // ones of the phases above beyond `keep`, to be folded into the
        // base images, work that belongs to those phases, not to the
        // steady load.
        for _ in 0..2 {
            let seq = wp.checkpoint(now_ms()).expect("checkpoint").1;
            wake.notify_waiters();
            acked_all(&receivers, seq, Instant::now()).await;
        }
        settle(&receivers).await;
        trim(&receivers);
        // RPO as the primary sees it (what an operator's status shows): now
        // minus the time of the newest checkpoint each replica acknowledged.
        // Reading it takes no lock a receiver holds.
        // Ages are measured on the monotonic clock, from when each
        // checkpoint was taken: a step of the wall clock (seen once here:
        // 11 s on both replicas at once, for five samples) is not an RPO.
        let sampler =
            dr_benches::RpoSampler::start(receivers.iter().map(|r| r.progress.clone()).collect());
        let taken = sampler.taken.clone();
        let (load_stop, load_stopped) = watch::channel(false);
        let writer = {
            let wake = wake.clone();
            let taken = taken.clone();
            let load_stopped = load_stopped.clone();
            tokio::task::spawn_blocking(move || {
                let chunk = vec![7u8; 64 << 10];
                let per_sec = load_mbps * 1_000_000;
                let start = Instant::now();
                let mut written = 0u64;
                let mut next_cp = Instant::now();
                let mut off = 0u64;
                while !*load_stopped.borrow() {
                    let due = Duration::from_secs_f64(written as f64 / per_sec as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    wp.write(0, off % (size - chunk.len() as u64), &chunk).expect("write");
                    off += chunk.len() as u64 * 7;
                    written += chunk.len() as u64;
                    if Instant::now() >= next_cp {
                        let at = Instant::now();
                        let (id, _) = wp.checkpoint(now_ms()).expect("checkpoint");
                        taken.lock().expect("taken").insert(id, at);
                        wake.notify_waiters();
                        next_cp += Duration::from_millis(100);
                    }
                }
                written
            })
        };
        let trimmer = {
            let mut stopped = load_stopped.clone();
            let log = log.clone();
            let progress: Vec<_> = receivers.iter().map(|r| r.progress.clone()).collect();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    let acked = progress.iter().map(|p| p.borrow().acked_seq).min().unwrap_or(0);
                    // As the agent trims: off the async threads, the files
                    // removed without the log's lock.
                    let log = log.clone();
                    tokio::task::spawn_blocking(move || {
                        let detached = log.lock().expect("log").detach(acked);
                        detached.remove().expect("trim")
                    })
                    .await
                    .expect("trim task");
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(load_secs)).await;
        let _ = load_stop.send(true);
        let written = writer.await.expect("writer");
        let _ = trimmer.await;
        let all = sampler.finish().await;
        println!(
            "RPO with {:.1} MB/s of writes for {load_secs} s (checkpoint every 100 ms, sampled every 20 ms):",
            written as f64 / load_secs as f64 / 1e6
        );
        for (r, s) in receivers.iter().zip(all) {
            let pick = |q: f64| dr_benches::quantile(&s, q);
            println!(
                "  {}: median {} ms, p99 {} ms, max {} ms over {} samples; {} reconnects in the whole run",
                r.name,
                pick(0.5),
                pick(0.99),
                s.last().copied().unwrap_or(0),
                s.len(),
                r.progress.borrow().failures
            );
        }
        let _ = stop.send(true);
    });
    let _ = std::fs::remove_dir_all(&root);
    if let Some(d) = &shm {
        let _ = std::fs::remove_dir_all(d);
    }
}
