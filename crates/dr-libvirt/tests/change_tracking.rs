//! libvirt's change tracking as replication's change source, on a real
//! running guest of the KVM lab that writes numbered records to its disk
//! (one per 4 KiB block, in order, each flushed): points captured into a
//! replication log while it writes, applied to a replica, and the image the
//! replica restores at each checkpoint read back.
//!
//! Every restored image must hold an unbroken prefix of the records (one
//! instant of the disk: crash-consistent), each longer than the last; the
//! first point is full, the next ones carry only what the dirty bitmap
//! marks; a lost base checkpoint and a QEMU killed mid-chain each make the
//! next point full again, counted, and the images stay right.
//!
//! Needs root and the lab's packages: in CI (`CI=true`) their absence fails
//! the test; elsewhere it is skipped with the reason printed.

mod common;

use dr_libvirt::changes::{LibvirtChanges, Tracking};
use dr_libvirt::LibvirtSection;
use dr_replication::capture::{capture, Captured, ChangeSource};
use dr_replication::{Log, LogConfig, Replica};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;

fn config(lab: &common::Lab) -> dr_libvirt::LibvirtConfig {
    #[derive(serde::Deserialize)]
    struct File {
        libvirt: LibvirtSection,
    }
    let f: File = toml::from_str(&lab.libvirt_toml(&[])).expect("lab config");
    f.libvirt.into_config().expect("valid")
}

/// The records of a guest that writes record k to block k/2 of disk k%2:
/// how many form an unbroken prefix across both disks. A point that is
/// not one instant of both (one disk read later than the other) shows a
/// record on one disk whose predecessor on the other is missing.
fn alternating_prefix(a: &[u8], b: &[u8]) -> usize {
    let present = |k: usize| {
        let disk = if k.is_multiple_of(2) { a } else { b };
        let at = (k / 2) * BLOCK;
        let block = disk.get(at..at + BLOCK)?;
        if block.iter().all(|&x| x == 0) {
            return Some(false);
        }
        let want = format!("vmdr-record {k:08}\n");
        assert!(
            block.starts_with(want.as_bytes()) && block[want.len()..].iter().all(|&x| x == 0),
            "block {} of disk {} is not record {k} whole",
            k / 2,
            k % 2
        );
        Some(true)
    };
    let mut n = 0;
    while present(n) == Some(true) {
        n += 1;
    }
    let blocks = a.len().min(b.len()) / BLOCK;
    for k in n..2 * blocks {
        assert_ne!(
            present(k),
            Some(true),
            "record {k} is there and record {n} is not: the two disks are not of one instant"
        );
    }
    n
}

struct Run {
    log: Arc<Mutex<Log>>,
    source: Option<LibvirtChanges>,
    replica: Replica,
    shipped: u64,
    out: std::path::PathBuf,
}

impl Run {
    /// A log, a replica and `vm`'s change source, in the lab's directory.
    fn new(lab: &common::Lab, vm: &str) -> Run {
        Run::with_limit(lab, vm, 1 << 30)
    }

    /// [`Run::new`] with the backup's scratch files limited to `limit` bytes.
    fn with_limit(lab: &common::Lab, vm: &str, limit: u64) -> Run {
        Run::with(lab, vm, limit, config(lab).hosts)
    }

    /// [`Run::with_limit`] over `hosts`.
    fn with(
        lab: &common::Lab,
        vm: &str,
        limit: u64,
        hosts: Vec<dr_libvirt::config::HostConfig>,
    ) -> Run {
        let work = lab.dir.join(format!("replication-{vm}"));
        for d in ["log", "replica"] {
            std::fs::create_dir_all(work.join(d)).expect("dirs");
        }
        let tracking = Tracking {
            vm: vm.into(),
            hosts,
            state_dir: work.join("log"),
            nbd_port: 10809,
            scratch_dir: None,
            scratch_limit: limit,
            timeout: Duration::from_secs(30),
        };
        Run {
            log: Arc::new(Mutex::new(
                Log::open(&work.join("log"), LogConfig::default()).expect("log"),
            )),
            source: Some(LibvirtChanges::open(tracking).expect("source")),
            replica: Replica::open(&work.join("replica"), 2).expect("replica"),
            shipped: 0,
            out: work.join("restored.img"),
        }
    }

    /// One point: captured, shipped to the replica, restored and checked;
    /// its record count.
    async fn point(&mut self, t: u64) -> (Captured, usize) {
        let (log, mut src) = (self.log.clone(), self.source.take().expect("source"));
        let (src, captured) = tokio::task::spawn_blocking(move || {
            let c = capture(&mut src, &log, t);
            (src, c)
        })
        .await
        .expect("capture task");
        self.source = Some(src);
        let captured = captured.expect("capture");
        let records = self
            .log
            .lock()
            .expect("log")
            .read_from(self.shipped + 1, usize::MAX)
            .expect("read log");
        for r in &records {
            self.replica.apply(r).expect("apply");
            self.shipped = r.seq();
        }
        let images = self.images(&captured);
        let n = match images.as_slice() {
            // The writer's 4096 records fill 16 MiB at most; a test may
            // put something of its own past them.
            [one] => common::records_prefix(&one[..one.len().min(16 << 20)], "the restored disk"),
            [a, b] => alternating_prefix(a, b),
            _ => panic!("{} disks", images.len()),
        };
        (captured, n)
    }

    /// Each disk's image at the point's checkpoint, as the replica restores it.
    fn images(&self, captured: &Captured) -> Vec<Vec<u8>> {
        (0..captured.point.disks.len())
            .map(|d| {
                self.replica
                    .restore(captured.checkpoint.0, d as u32, &self.out)
                    .expect("restore");
                let image = std::fs::read(&self.out).expect("restored image");
                assert_eq!(
                    image.len() as u64,
                    captured.point.disks[d].size,
                    "disk {d}'s image has the disk's size"
                );
                image
            })
            .collect()
    }

    fn resets(&self) -> u64 {
        self.source.as_ref().map_or(0, LibvirtChanges::resets)
    }
}

fn wait_for_records(image: &Path) {
    let t0 = Instant::now();
    loop {
        // grep: fast on a large image, where the first record's cluster
        // may lie anywhere in the qcow2 file.
        let found = std::process::Command::new("grep")
            .args(["-q", "-a", "-F", "vmdr-record "])
            .arg(image)
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the guest's writer never wrote"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_of_a_writing_guest_restore_as_growing_prefixes_of_its_records() {
    if !common::can_run("change_tracking") {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1"]);
    lab.guest_with("kvm-a1", "rec-2", 1, "vmdr.writer=50000");
    wait_for_records(&lab.shared().join("rec-2.qcow2"));
    let mut run = Run::new(&lab, "rec-2");

    // The first point is full; the next ones carry only the changes.
    let (first, mut records) = run.point(1).await;
    assert!(first.point.full && first.point.full_reason.is_none());
    assert!(records >= 1);
    for t in 2..=3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (c, n) = run.point(t).await;
        assert!(!c.point.full, "point {t} should be incremental");
        assert!(n > records, "point {t}: {n} records, not past {records}");
        let bound = ((n - records + 1) * BLOCK) as u64 + 2 * 65536;
        assert!(
            c.disks[0].bytes <= bound,
            "point {t} sent {} bytes for {} new records",
            c.disks[0].bytes,
            n - records
        );
        records = n;
    }
    let cps = lab.virsh("kvm-a1", &["checkpoint-list", "rec-2", "--name"]);
    assert_eq!(cps.lines().count(), 1, "only the base is kept: {cps}");

    // The base checkpoint lost (its metadata deleted behind vmdr's back):
    // the next point is full, and the image still right.
    lab.virsh(
        "kvm-a1",
        &["checkpoint-delete", "rec-2", cps.trim(), "--metadata"],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (c, n) = run.point(4).await;
    assert!(c.point.full, "a lost base makes a full point");
    assert!(
        c.point
            .full_reason
            .as_deref()
            .is_some_and(|r| r.contains("gone")),
        "{:?}",
        c.point.full_reason
    );
    assert!(n >= records);
    records = n;
    let (c, n) = run.point(5).await;
    assert!(!c.point.full && n >= records);
    records = n;

    // QEMU killed mid-chain, the VM started again: its bitmaps cannot be
    // trusted; the chain is dropped and the next point is full.
    lab.kill_qemu("rec-2");
    let t0 = Instant::now();
    while lab.virsh("kvm-a1", &["domstate", "rec-2"]) != "shut off" {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "libvirt never saw QEMU die"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lab.virsh("kvm-a1", &["start", "rec-2"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c, n) = run.point(6).await;
    assert!(
        c.point.full,
        "after a QEMU crash the point is full: {:?}",
        c.point.full_reason
    );
    eprintln!(
        "after the crash: {:?}, chains dropped: {}",
        c.point.full_reason,
        run.resets()
    );
    assert_eq!(run.resets(), 1, "the dropped chain is counted");
    assert!(c
        .point
        .full_reason
        .as_deref()
        .is_some_and(|r| r.contains("incremental backup")));
    // The writer starts over from record 0 after the restart, writing the
    // same records again: the image is still an unbroken prefix.
    assert!(n >= 1);
    let _ = records;
    let (c, _) = run.point(7).await;
    assert!(!c.point.full, "the chain goes on after the full point");
    // Nothing is left on the host: no scratch file, one checkpoint.
    let scratch: Vec<_> = std::fs::read_dir(lab.shared())
        .expect("shared")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("vmdr-scratch-"))
        .collect();
    assert!(scratch.is_empty(), "scratch files left: {scratch:?}");
    let cps = lab.virsh("kvm-a1", &["checkpoint-list", "rec-2", "--name"]);
    assert_eq!(cps.lines().count(), 1, "{cps}");
}

/// Two disks written alternately: each point holds both as of one instant
/// (every record up to some k, on whichever disk it went to, and none
/// after), so a database with its log on one disk and its data on the
/// other comes back consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_disks_of_a_point_are_of_one_instant() {
    if !common::can_run("both_disks_of_a_point_are_of_one_instant") {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1"]);
    lab.guest_with("kvm-a1", "rec-3", 1, "vmdr.writer=20000 vmdr.disks=2");
    wait_for_records(&lab.shared().join("rec-3-b.qcow2"));
    let mut run = Run::new(&lab, "rec-3");
    let mut last = 0;
    for t in 1..=4 {
        let (c, n) = run.point(t).await;
        assert_eq!(c.point.disks.len(), 2, "both disks are in the point");
        assert_eq!(c.point.full, t == 1);
        assert!(n >= last, "point {t}: {n} records, fewer than {last}");
        eprintln!("point {t}: {n} records across both disks");
        last = n;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        last >= 4,
        "the writer wrote too little to tell: {last} records"
    );
}

/// A qcow2 of `size_mb` MiB at `disk`: zero for the writer's 16 MiB of
/// records, then the byte 0x5a to the end.
fn patterned_disk(disk: &Path, size_mb: u64) {
    let path = disk.to_string_lossy();
    let (size, pattern) = (
        format!("{size_mb}M"),
        format!("write -q -P 0x5a 16M {}M", size_mb - 16),
    );
    for cmd in [
        vec!["qemu-img", "create", "-q", "-f", "qcow2", &*path, &*size],
        vec!["qemu-io", "-f", "qcow2", "-c", &*pattern, &*path],
    ] {
        let out = std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .expect(cmd[0]);
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The scratch files left in the lab's shared directory.
fn scratch_files(lab: &common::Lab) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(lab.shared())
        .expect("shared")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("vmdr-scratch-"))
        .collect()
}

/// Holds a point open for `held` while the guest does what it does, takes
/// a `look` at the host meanwhile, then reads disk 0; the point is
/// abandoned either way (a probe is not stored anywhere, so it must not
/// become the next point's base).
async fn held_point<T: Send + 'static>(
    src: LibvirtChanges,
    held: Duration,
    look: impl FnOnce() -> T + Send + 'static,
) -> (LibvirtChanges, Result<(), String>, T) {
    tokio::task::spawn_blocking(move || {
        let mut src = src;
        src.begin().expect("begin");
        let seen = look();
        std::thread::sleep(held);
        let r = src.read_changes(0, &mut |_, _| Ok(()));
        src.abandon(
            match &r {
                Ok(_) => "a probe".to_owned(),
                Err(e) => e.to_string(),
            }
            .as_str(),
        );
        (src, r.map(|_| ()).map_err(|e| e.to_string()), seen)
    })
    .await
    .expect("task")
}

/// While a point is read, QEMU copies each block the guest overwrites into
/// the backup's scratch file first. A quiet guest's point stays well under
/// a 4 MiB limit; the same guest overwriting its disk at 20 MB/s passes it:
/// that point is abandoned, its checkpoint deleted and no scratch file
/// left on the host; once the guest calms down the next point, under the
/// same limit, is full and right, and the one after it incremental.
///
/// The host is reached through its Unix socket, as a local host is: the
/// export is then a Unix socket beside the scratch files, nothing listens
/// on the host's network while a point is open, and the socket goes with
/// the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_whose_scratch_passes_its_limit_is_abandoned_and_retried() {
    if !common::can_run("a_point_whose_scratch_passes_its_limit_is_abandoned_and_retried") {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1"]);
    patterned_disk(&lab.shared().join("scr-1.qcow2"), 64);
    let ip = lab.guest("kvm-a1", "scr-1", 1);
    assert!(
        common::wait_for_ping(ip, Duration::from_secs(120)).is_some(),
        "the guest booted"
    );
    const LIMIT: u64 = 4 << 20;
    let mut hosts = config(&lab).hosts;
    hosts[0].uri = dr_libvirt::uri::Uri::parse(&lab.unix_uri("kvm-a1")).expect("unix uri");
    let mut run = Run::with(&lab, "scr-1", LIMIT, hosts);
    let held = Duration::from_millis(1500);
    let socket = lab.shared().join("vmdr-nbd-scr-1.sock");
    // What listens on TCP in the host's network namespace, and whether the
    // socket is there, while the point is open.
    let mut ss = lab.in_host("kvm-a1", Path::new("ss"));
    ss.arg("-ltnH");
    let look = {
        let socket = socket.clone();
        move || {
            let out = ss.output().expect("ss");
            assert!(out.status.success(), "ss: {out:?}");
            (
                socket.exists(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let (src, quiet, (socket_there, listening)) =
        held_point(run.source.take().expect("source"), held, look).await;
    quiet.expect("a quiet guest's point stays under the limit");
    assert!(
        socket_there,
        "no socket at {} while the point was open",
        socket.display()
    );
    assert!(
        !listening.contains(":10809"),
        "the export listens on the host's network: {listening}"
    );
    assert!(!socket.exists(), "the socket outlived its job");
    let agent = |command: &str| {
        lab.virsh(
            "kvm-a1",
            &["qemu-agent-command", "--timeout", "60", "scr-1", command],
        )
    };
    agent(r#"{"execute":"vmdr-churn","arguments":{"mbps":20}}"#);
    let (src, busy, ()) = held_point(src, held, || ()).await;
    agent(r#"{"execute":"vmdr-churn-stop"}"#);
    let err = busy.expect_err("over the scratch limit");
    assert!(
        err.contains("scratch") && err.contains(&format!("over the limit of {LIMIT}")),
        "{err}"
    );
    assert_eq!(
        lab.virsh("kvm-a1", &["checkpoint-list", "scr-1", "--name"]),
        "",
        "the abandoned point's checkpoint is deleted"
    );
    assert_eq!(scratch_files(&lab), Vec::<std::ffi::OsString>::new());
    // The churn stops within one of its 1 MiB writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.source = Some(src);
    let (c, _) = run.point(1).await;
    assert!(c.point.full, "no base was kept: the point is full");
    let (c, _) = run.point(2).await;
    assert!(!c.point.full, "the next point is incremental");
    assert_eq!(
        lab.virsh("kvm-a1", &["checkpoint-list", "scr-1", "--name"])
            .lines()
            .count(),
        1
    );
    assert_eq!(scratch_files(&lab), Vec::<std::ffi::OsString>::new());
    assert!(!socket.exists(), "the socket outlived its job");
}

/// A disk that is not a qcow2 cannot carry checkpoints' bitmaps: the
/// point is refused, naming the disk and what to convert it with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_is_not_qcow2_is_named_with_what_to_convert() {
    if !common::can_run("a_disk_that_is_not_qcow2_is_named_with_what_to_convert") {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1"]);
    lab.guest("kvm-a1", "raw-1", 1);
    lab.virsh("kvm-a1", &["destroy", "raw-1"]);
    lab.virsh("kvm-a1", &["undefine", "raw-1"]);
    let raw = lab.shared().join("raw-1.img");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&raw)
        .arg("16M")
        .output()
        .expect("qemu-img");
    assert!(out.status.success());
    let xml = std::fs::read_to_string(lab.dir.join("guests/raw-1.xml"))
        .expect("the guest's definition")
        .replace("type='qcow2'", "type='raw'")
        .replace("raw-1.qcow2", "raw-1.img");
    let file = lab.dir.join("guests/raw-1-raw.xml");
    std::fs::write(&file, xml).expect("xml");
    lab.virsh("kvm-a1", &["define", &file.display().to_string()]);
    lab.virsh("kvm-a1", &["start", "raw-1"]);
    let mut run = Run::new(&lab, "raw-1");
    let log = run.log.clone();
    let mut src = run.source.take().expect("source");
    let err = tokio::task::spawn_blocking(move || capture(&mut src, &log, 1).map(|_| ()))
        .await
        .expect("task")
        .expect_err("a raw disk");
    let text = err.to_string();
    assert!(
        text.contains("disk vda of raw-1")
            && text.contains("is raw")
            && text.contains("qemu-img convert -O qcow2"),
        "{text}"
    );
    assert_eq!(
        lab.virsh("kvm-a1", &["checkpoint-list", "raw-1", "--name"]),
        ""
    );
}

const RECEIVER_KEY: &[u8] = b"the change tracking test's key";

/// Not a test on its own: the receiver process that the next test
/// SIGKILLs mid-checkpoint (it runs this binary with `VMDR_TEST_RECEIVER`
/// set to a replica directory). Without that variable it does nothing.
#[test]
fn receiver_process() {
    let Ok(dir) = std::env::var("VMDR_TEST_RECEIVER") else {
        return;
    };
    let port: u16 = std::env::var("VMDR_TEST_RECEIVER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        println!("receiver listening on {port}");
        let replica = Arc::new(Mutex::new(
            Replica::open(Path::new(&dir), 2).expect("replica"),
        ));
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        dr_replication::net::serve(listener, replica, Arc::new(RECEIVER_KEY.to_vec()), stopped)
            .await;
    });
}

/// The receiver process: its port once it listens.
fn spawn_receiver(dir: &Path, port: u16) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "receiver_process",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("VMDR_TEST_RECEIVER", dir)
        .env("VMDR_TEST_RECEIVER_PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("receiver process");
    let out = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(out).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("the receiver said nothing")
            .expect("line");
        // libtest writes "test receiver_process ... " first, on the same line.
        if let Some((_, p)) = line.split_once("receiver listening on ") {
            break p.trim().parse().expect("port");
        }
    };
    (child, port)
}

/// A receiver SIGKILLed in the middle of a checkpoint (a full point of a
/// 256 MiB disk, shipped at 20 MB/s) and started again on its directory:
/// the shipper resumes, the replica never shows a part of the checkpoint,
/// and what it restores is one instant of the guest's disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_mid_checkpoint_comes_back_whole() {
    if !common::can_run("a_receiver_killed_mid_checkpoint_comes_back_whole") {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1"]);
    // 256 MiB: the records' 16 MiB, then 240 MiB of a pattern.
    let disk = lab.shared().join("rec-5.qcow2");
    patterned_disk(&disk, 256);
    lab.guest_with("kvm-a1", "rec-5", 1, "vmdr.writer=20000");
    wait_for_records(&disk);
    let work = lab.dir.join("receiver-crash");
    let replica_dir = work.join("replica");
    std::fs::create_dir_all(&replica_dir).expect("dirs");
    let mut run = Run::new(&lab, "rec-5");
    let (mut receiver, port) = spawn_receiver(&replica_dir, 0);
    let (progress_tx, mut progress) =
        tokio::sync::watch::channel(dr_replication::net::Progress::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wake = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(dr_replication::net::ship(
        run.log.clone(),
        ([127, 0, 0, 1], port).into(),
        dr_replication::net::ShipConfig {
            bandwidth: Some(20_000_000),
            reconnect: Duration::from_millis(200),
            ..dr_replication::net::ShipConfig::new(RECEIVER_KEY.to_vec())
        },
        wake.clone(),
        progress_tx,
        stopped,
    ));
    let (first, _) = run.point(1).await;
    assert!(first.point.full);
    wake.notify_waiters();
    // Mid-checkpoint: 256 MiB at 20 MB/s takes about 13 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        progress.borrow().acked_seq < first.checkpoint.1,
        "it was not mid-checkpoint"
    );
    receiver.kill().expect("SIGKILL the receiver");
    let _ = receiver.wait();
    let (mut receiver, _) = spawn_receiver(&replica_dir, port);
    // Two more points while it catches up.
    let mut last = first.checkpoint;
    for t in 2..=3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (c, _) = run.point(t).await;
        wake.notify_waiters();
        last = c.checkpoint;
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        progress.wait_for(|p| p.acked_seq >= last.1),
    )
    .await
    .expect("the restarted receiver caught up")
    .expect("shipper alive");
    assert!(
        progress.borrow().failures >= 1,
        "the shipper saw the receiver go"
    );
    let _ = stop.send(true);
    receiver.kill().expect("stop the receiver");
    let _ = receiver.wait();
    let replica = Replica::open(&replica_dir, 2).expect("the replica reopens");
    let newest = replica.newest().expect("a checkpoint");
    assert_eq!(newest.id, last.0, "the receiver holds the newest point");
    let out = work.join("restored.img");
    replica.restore(newest.id, 0, &out).expect("restore");
    let image = std::fs::read(&out).expect("image");
    let (records, tail) = image.split_at(16 << 20);
    let n = common::records_prefix(records, "the restored disk");
    assert!(n >= 1);
    assert!(
        tail.iter().all(|&b| b == 0x5a),
        "the pattern past the records is whole"
    );
}
