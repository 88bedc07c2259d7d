//! Shipping throughput of dr-replication over loopback TCP, isolated from
//! change detection: a log of SIZE MiB (writes of RECORD KiB, a checkpoint
//! every 64 MiB, fsynced; the page cache holds it as it would hold a
//! primary's recent writes) is shipped to N receivers, each with its own
//! shipper. Each receiver is a process of its own (this binary re-run as
//! `ship-bench receiver DIR`), as on a secondary site, so the CPU of each end
//! is measured apart; all of them share this machine's cores. Timed from
//! the shippers' start to each receiver's acknowledgement of the last
//! checkpoint (durable there: fsynced and renamed into place).
//!
//! MODE `shipper` measures the shipping side with the other end doing as
//! little as the protocol allows, as when it has cores of its own: it ships
//! to one sink process that opens each frame and checks its records as a
//! receiver does, and acknowledges its checkpoints at once, writing
//! nothing.
//!
//! MODE `steady` is `both` against replicas that already hold the disk,
//! as after their initial copy: each one's base image is written in full
//! before the timer starts, so the shipped writes land on allocated blocks,
//! as changes do in steady replication. In `both` the images start empty:
//! an initial copy, where the replica's file system allocates every block
//! (on tmpfs that alone costs about as much as copying the data).
//!
//! Every run ends with the ceiling of this machine in the same run: the
//! same number of bytes through one bare loopback TCP connection (4 MiB
//! writes from one buffer, read into one buffer, by another process), with
//! no log, cipher or check, best of three; shipping is reported as a share
//! of it.
//!
//! Run: `cargo run --release -p dr-benches --bin ship-bench [SIZE_MiB [RECORD_KiB [N [DIR [MODE [BATCH_KiB]]]]]]`
//! (defaults 2048, 1024, 1, /dev/shm, `both` (or `steady`, `shipper`), the
//! shipper's default frame of 4096). Traffic only on 127.0.0.1.

use dr_replication::net::{self, Progress, ShipConfig};
use dr_replication::{record, wire};
use dr_replication::{CheckpointInfo, Log, LogConfig, Replica};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{watch, Notify};

const PSK: &[u8] = b"benchmark pre-shared key";

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The receiver process: serves a replica in `dir` until its stdin closes.
fn serve(dir: &Path) {
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        let replica = Replica::open(dir, 2).expect("replica");
        let (stop, stopped) = watch::channel(false);
        tokio::task::spawn_blocking(move || {
            let _ = std::io::stdin().read_line(&mut String::new());
            let _ = stop.send(true);
        });
        net::serve(
            listener,
            Arc::new(Mutex::new(replica)),
            Arc::new(PSK.to_vec()),
            stopped,
        )
        .await;
    });
}

/// The sink process: takes one shipper's stream at a time, opens each
/// frame (its tag checked as a receiver's is), checks its records and
/// acknowledges every checkpoint among them at once, writing nothing.
fn sink() {
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_line(&mut String::new());
            std::process::exit(0);
        });
        while let Ok((stream, _)) = listener.accept().await {
            let (mut s, _) = net::accept(stream, PSK, Box::new(|_| Ok(0)))
                .await
                .expect("handshake");
            let mut frame = Vec::new();
            while wire::recv_into(&mut s.reader, &mut s.inbound, &mut frame)
                .await
                .is_ok()
            {
                let mut at = 0;
                while let Ok((header, n)) = record::check(&frame[at..]) {
                    if let record::Header::Checkpoint { seq, id, time_ms } = header {
                        let c = CheckpointInfo { seq, id, time_ms };
                        net::send_ack(&mut s.writer, &mut s.outbound, &c)
                            .await
                            .expect("ack");
                    }
                    at += n;
                }
            }
        }
    });
}

/// The bare-TCP process: reads one connection to its end into one
/// buffer, then exits.
fn tcp_sink() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    let (mut s, _) = listener.accept().expect("accept");
    let mut buf = vec![0u8; 4 << 20];
    while s.read(&mut buf).is_ok_and(|n| n > 0) {}
}

/// Sends `size` bytes over bare loopback TCP to a process of its own;
/// returns the rate and both ends' CPU seconds per GB.
fn bare_tcp(size: u64) -> (f64, f64, f64) {
    use std::io::Write;
    let (mut child, addr) = spawn_receiver("tcp-sink", Path::new("."));
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let buf: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    // The sink's CPU is counted when it has exited and been waited for,
    // as this process's children's (every earlier child was waited for).
    let (cpu_s, cpu_children) = dr_benches::cpu_secs();
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < size {
        let n = buf.len().min((size - sent) as usize);
        s.write_all(&buf[..n]).expect("send");
        sent += n as u64;
    }
    drop(s);
    let _ = child.wait();
    let elapsed = t.elapsed().as_secs_f64();
    let (cpu_s_end, cpu_children_end) = dr_benches::cpu_secs();
    let gb = size as f64 / 1e9;
    (
        size as f64 / elapsed / 1e6,
        (cpu_s_end - cpu_s) / gb,
        (cpu_children_end - cpu_children) / gb,
    )
}

/// Starts a receiver or sink process for `dir`; returns it and
/// its address.
fn spawn_receiver(role: &str, dir: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg(role)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("receiver process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("receiver address");
    (child, line.trim().parse().expect("an address"))
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("receiver") => {
            return serve(&arg(2, PathBuf::from("/dev/shm/vmdr-ship-bench/replica")))
        }
        Some("sink") => return sink(),
        Some("tcp-sink") => return tcp_sink(),
        _ => {}
    }
    let mib: u64 = arg(1, 2048);
    let record_kib: usize = arg(2, 1024);
    let n: usize = arg(3, 1);
    let base: PathBuf = arg(4, PathBuf::from("/dev/shm"));
    let mode: String = arg(5, "both".to_string());
    let batch_bytes = arg(6, ShipConfig::new(Vec::new()).batch_bytes >> 10) << 10;
    let (n, role) = match mode.as_str() {
        "shipper" => (1, "sink"),
        "both" | "steady" => (n, "receiver"),
        other => panic!("unknown MODE {other:?}: both, steady or shipper"),
    };
    let root = base.join("vmdr-ship-bench");
    let logd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ship-bench-log");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&logd);
    let size = mib << 20;
    let record = record_kib << 10;

    let mut log = Log::open(&logd, LogConfig::default()).expect("log");
    let mut data = vec![0u8; record];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut written = 0u64;
    let mut last = 0;
    let t = Instant::now();
    while written < size {
        // Data that does not compress and differs per record.
        for c in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        log.append(0, written % (1 << 30), &data).expect("append");
        written += record as u64;
        if written.is_multiple_of(64 << 20) || written >= size {
            last = log.checkpoint(0).expect("checkpoint").1;
        }
    }
    println!(
        "log: {mib} MiB in {record_kib} KiB writes written and fsynced in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let log = Arc::new(Mutex::new(log));
    if mode == "steady" {
        // The disk's whole extent (writes wrap at 1 GiB), written.
        let image = size.min(1 << 30);
        let chunk = vec![0x5au8; 4 << 20];
        for i in 0..n {
            let dir = root.join(format!("replica-{i}"));
            std::fs::create_dir_all(&dir).expect("replica dir");
            let mut f = std::fs::File::create(dir.join("disk-0.img")).expect("image");
            let mut left = image;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                std::io::Write::write_all(&mut f, &chunk[..k]).expect("fill image");
                left -= k as u64;
            }
            f.sync_all().expect("fsync image");
        }
    }
    let mut children = Vec::new();
    for i in 0..n {
        children.push(spawn_receiver(role, &root.join(format!("replica-{i}"))));
    }
    let pids: Vec<String> = children.iter().map(|(c, _)| c.id().to_string()).collect();
    let receivers_cpu = || -> f64 { pids.iter().map(|p| dr_benches::proc_cpu_secs(p).0).sum() };

    let mut shipped = 0.0;
    runtime().block_on(async {
        let (stop, stopped) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let mut waiters = Vec::new();
        let (cpu_s, cpu_r) = (dr_benches::cpu_secs().0, receivers_cpu());
        let t = Instant::now();
        for (_, addr) in &children {
            let (ptx, mut progress) = watch::channel(Progress::default());
            tokio::spawn(net::ship(
                log.clone(),
                *addr,
                ShipConfig {
                    batch_bytes,
                    ..ShipConfig::new(PSK.to_vec())
                },
                wake.clone(),
                ptx,
                stopped.clone(),
            ));
            waiters.push(tokio::spawn(async move {
                progress
                    .wait_for(|p| p.acked_seq >= last)
                    .await
                    .expect("shipper alive");
                t.elapsed()
            }));
        }
        let mut times = Vec::new();
        for w in waiters {
            times.push(w.await.expect("waiter"));
        }
        let gb = size as f64 / 1e9;
        let cpu_s = (dr_benches::cpu_secs().0 - cpu_s) / gb / n as f64;
        let cpu_r = (receivers_cpu() - cpu_r) / gb / n as f64;
        let slowest = times.iter().max().copied().unwrap_or_default();
        shipped = size as f64 / slowest.as_secs_f64() / 1e6;
        for (i, t) in times.iter().enumerate() {
            println!(
                "replica {i}: {:.3} s, {:.0} MB/s",
                t.as_secs_f64(),
                size as f64 / t.as_secs_f64() / 1e6
            );
        }
        println!(
            "shipped {mib} MiB to {n} replica(s) under {}: {:.0} MB/s per replica (slowest), {:.0} MB/s in all",
            base.display(),
            size as f64 / slowest.as_secs_f64() / 1e6,
            (size * n as u64) as f64 / slowest.as_secs_f64() / 1e6,
        );
        println!(
            "CPU per GB per replica: shipper {cpu_s:.2} s ({:.2} GB/s per core), {role} {cpu_r:.2} s ({:.2} GB/s per core)",
            1.0 / cpu_s,
            1.0 / cpu_r
        );
        let _ = stop.send(true);
    });
    for (mut c, _) in children {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&logd);
    // A ceiling: the best of three (one pass is short, and noisy).
    let (rate, cpu_s, cpu_r) =
        (0..3).map(|_| bare_tcp(size)).fold(
            (0.0, 0.0, 0.0),
            |best, r| if r.0 > best.0 { r } else { best },
        );
    println!(
        "bare loopback TCP, same run (best of 3): {rate:.0} MB/s; CPU per GB: sender {cpu_s:.2} s, receiver {cpu_r:.2} s"
    );
    println!(
        "shipping reached {:.0} % of bare TCP (slowest replica)",
        100.0 * shipped / rate
    );
}
