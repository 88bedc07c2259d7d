//! Shipping to receivers over loopback TCP: two replicas, a wrong key, a
//! tampered frame, a receiver restart.

use dr_replication::net::{self, Progress, ShipConfig};
use dr_replication::{Log, LogConfig, Replica};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

mod common;
use common::TempDir;

struct Receiver {
    addr: SocketAddr,
    replica: Arc<Mutex<Replica>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn receiver(dir: &std::path::Path, psk: &[u8], addr: &str) -> Receiver {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let replica = Arc::new(Mutex::new(Replica::open(dir, 3).expect("replica")));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(net::serve(
        listener,
        replica.clone(),
        Arc::new(psk.to_vec()),
        stopped,
    ));
    Receiver {
        addr,
        replica,
        stop,
        task,
    }
}

/// Writes `n` checkpoints of a deterministic pattern; returns the disk.
fn write(log: &Mutex<Log>, disk: &mut Vec<u8>, n: u64, start: u64) -> u64 {
    let mut last = 0;
    for c in start..start + n {
        let mut l = log.lock().expect("log");
        for k in 0..4u64 {
            let offset = (c * 7919 + k * 104_729) % 200_000;
            let data: Vec<u8> = (0..1000).map(|i| (c * 31 + k * 7 + i) as u8).collect();
            l.append(0, offset, &data).expect("append");
            let end = offset as usize + data.len();
            if disk.len() < end {
                disk.resize(end, 0);
            }
            disk[offset as usize..end].copy_from_slice(&data);
        }
        last = l.checkpoint(c).expect("checkpoint").1;
    }
    last
}

async fn wait_for(p: &watch::Receiver<Progress>, seq: u64) {
    let mut p = p.clone();
    tokio::time::timeout(Duration::from_secs(30), p.wait_for(|x| x.acked_seq >= seq))
        .await
        .expect("acknowledged in time")
        .expect("shipper alive");
}

fn image_equals(r: &Replica, disk: &[u8], out: &std::path::Path) {
    let newest = r.newest().expect("a checkpoint").id;
    r.restore(newest, 0, out).expect("restore");
    let img = std::fs::read(out).expect("read");
    assert_eq!(img.len(), disk.len());
    assert!(img == disk, "replica image differs from the source");
}

fn start_shipper(
    log: &Arc<Mutex<Log>>,
    addr: SocketAddr,
    psk: &[u8],
    wake: &Arc<Notify>,
    stop: &watch::Receiver<bool>,
) -> watch::Receiver<Progress> {
    let (tx, rx) = watch::channel(Progress::default());
    tokio::spawn(net::ship(
        log.clone(),
        addr,
        ShipConfig {
            reconnect: Duration::from_millis(50),
            ..ShipConfig::new(psk.to_vec())
        },
        wake.clone(),
        tx,
        stop.clone(),
    ));
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_get_every_checkpoint_and_the_log_is_trimmed() {
    let (ld, r1d, r2d, out) = (
        TempDir::new("log"),
        TempDir::new("r1"),
        TempDir::new("r2"),
        TempDir::new("out"),
    );
    let psk = b"a shared secret".to_vec();
    let log = Arc::new(Mutex::new(
        Log::open(
            &ld.0,
            LogConfig {
                segment_bytes: 64 << 10,
            },
        )
        .expect("log"),
    ));
    let (r1, r2) = (
        receiver(&r1d.0, &psk, "127.0.0.1:0").await,
        receiver(&r2d.0, &psk, "127.0.0.1:0").await,
    );
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let p1 = start_shipper(&log, r1.addr, &psk, &wake, &stopped);
    let p2 = start_shipper(&log, r2.addr, &psk, &wake, &stopped);
    let mut disk = Vec::new();
    let last = write(&log, &mut disk, 60, 1);
    wake.notify_waiters();
    wait_for(&p1, last).await;
    wait_for(&p2, last).await;
    // A receiver merges after it acknowledges: a frame of many checkpoints
    // is acknowledged before its merge runs. Stopping the receiver lets the
    // frame in hand finish, merge included, so what follows is checked on
    // a receiver at rest, not raced against its merge.
    let _ = stop.send(true);
    for (r, name) in [(r1, "a"), (r2, "b")] {
        let _ = r.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), r.task)
            .await
            .expect("receiver stops in time")
            .expect("receiver task");
        let replica = r.replica.lock().expect("replica");
        image_equals(&replica, &disk, &out.0.join(name));
        // The receiver merges as it goes: of 60 checkpoints, at most the
        // newest 3 (`keep`) and the 4 a merge waits for stay apart.
        assert!(
            replica.merges_waiting() <= 4,
            "{} merges waiting",
            replica.merges_waiting()
        );
    }
    let before = log.lock().expect("log").segment_count();
    let acked = p1.borrow().acked_seq.min(p2.borrow().acked_seq);
    let removed = log.lock().expect("log").trim(acked).expect("trim");
    assert!(
        removed > 0 && removed < before,
        "{removed} of {before} segments trimmed"
    );
    assert_eq!(p1.borrow().checkpoint.map(|c| c.0), Some(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_nothing_is_applied() {
    let (ld, rd) = (TempDir::new("log-k"), TempDir::new("r-k"));
    let log = Arc::new(Mutex::new(
        Log::open(&ld.0, LogConfig::default()).expect("log"),
    ));
    let r = receiver(&rd.0, b"the right key", "127.0.0.1:0").await;
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let mut p = start_shipper(&log, r.addr, b"the wrong key", &wake, &stopped);
    write(&log, &mut Vec::new(), 3, 1);
    tokio::time::timeout(Duration::from_secs(10), p.wait_for(|x| x.failures >= 2))
        .await
        .expect("failures reported")
        .expect("alive");
    assert!(
        r.replica.lock().expect("replica").newest().is_none(),
        "nothing applied"
    );
    assert_eq!(p.borrow().acked_seq, 0);
    let error = p.borrow().error.clone().expect("the failure is named");
    assert!(error.contains("authentication failed"), "{error}");
    assert!(
        p.borrow().refused,
        "a wrong key is not retried into success"
    );
    let _ = stop.send(true);
    let _ = r.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_behind_its_replica_is_refused_not_reported_shipped() {
    let (ld, old, rd) = (
        TempDir::new("log-b"),
        TempDir::new("log-old"),
        TempDir::new("r-b"),
    );
    let psk = b"k".to_vec();
    let log = Arc::new(Mutex::new(
        Log::open(&ld.0, LogConfig::default()).expect("log"),
    ));
    // An older copy of the same log: its stream, two checkpoints of five.
    std::fs::copy(ld.0.join("stream"), old.0.join("stream")).expect("copy identity");
    let behind = Arc::new(Mutex::new(
        Log::open(&old.0, LogConfig::default()).expect("log"),
    ));
    write(&behind, &mut Vec::new(), 2, 1);
    let r = receiver(&rd.0, &psk, "127.0.0.1:0").await;
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let p = start_shipper(&log, r.addr, &psk, &wake, &stopped);
    let last = write(&log, &mut Vec::new(), 5, 1);
    wake.notify_waiters();
    wait_for(&p, last).await;
    let mut q = start_shipper(&behind, r.addr, &psk, &wake, &stopped);
    let progress = tokio::time::timeout(Duration::from_secs(10), q.wait_for(|x| x.refused))
        .await
        .expect("refused in time")
        .expect("alive")
        .clone();
    let error = progress.error.expect("named");
    assert!(error.contains("this log ends at record"), "{error}");
    assert_eq!(
        progress.acked_seq, 0,
        "the replica's sequence is not taken as this log's"
    );
    let _ = stop.send(true);
    let _ = r.stop.send(true);
}

/// A loopback proxy that flips one byte of the first connection's
/// shipper-to-receiver stream after `after` bytes; later connections pass.
async fn tampering_proxy(to: SocketAddr, after: usize) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let tamper = std::mem::replace(&mut first, false);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let mut seen = 0usize;
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if tamper && seen <= after && after < seen + n {
                        buf[after - seen] ^= 0x40;
                    }
                    seen += n;
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_frame_is_refused_and_a_clean_connection_resumes() {
    let (ld, rd, out) = (
        TempDir::new("log-t"),
        TempDir::new("r-t"),
        TempDir::new("out-t"),
    );
    let psk = b"k".to_vec();
    let log = Arc::new(Mutex::new(
        Log::open(&ld.0, LogConfig::default()).expect("log"),
    ));
    let r = receiver(&rd.0, &psk, "127.0.0.1:0").await;
    let proxy = tampering_proxy(r.addr, 3_000).await;
    let mut disk = Vec::new();
    let last = write(&log, &mut disk, 5, 1);
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let p = start_shipper(&log, proxy, &psk, &wake, &stopped);
    wait_for(&p, last).await;
    assert!(p.borrow().failures >= 1, "the tampered connection failed");
    image_equals(
        &r.replica.lock().expect("replica"),
        &disk,
        &out.0.join("img"),
    );
    let _ = stop.send(true);
    let _ = r.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_resumes_where_it_stood() {
    let (ld, rd, out) = (
        TempDir::new("log-r"),
        TempDir::new("r-r"),
        TempDir::new("out-r"),
    );
    let psk = b"k".to_vec();
    let log = Arc::new(Mutex::new(
        Log::open(&ld.0, LogConfig::default()).expect("log"),
    ));
    let r = receiver(&rd.0, &psk, "127.0.0.1:0").await;
    let addr = r.addr;
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let p = start_shipper(&log, addr, &psk, &wake, &stopped);
    let mut disk = Vec::new();
    let first = write(&log, &mut disk, 10, 1);
    wake.notify_waiters();
    wait_for(&p, first).await;
    let _ = r.stop.send(true);
    let Receiver { task, replica, .. } = r;
    task.await.expect("server stopped");
    drop(replica);
    let last = write(&log, &mut disk, 10, 11);
    let r = receiver(&rd.0, &psk, &addr.to_string()).await;
    wake.notify_waiters();
    wait_for(&p, last).await;
    let rep = r.replica.lock().expect("replica");
    assert_eq!(rep.newest().map(|c| c.id), Some(20));
    image_equals(&rep, &disk, &out.0.join("img"));
    drop(rep);
    let _ = stop.send(true);
    let _ = r.stop.send(true);
}
