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
use dr_replication::capture::{capture, Captured};
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
        let work = lab.dir.join(format!("replication-{vm}"));
        for d in ["log", "replica"] {
            std::fs::create_dir_all(work.join(d)).expect("dirs");
        }
        let tracking = Tracking {
            vm: vm.into(),
            hosts: config(lab).hosts,
            state_dir: work.join("log"),
            nbd_port: 10809,
            scratch_dir: None,
            scratch_limit: 1 << 30,
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
            [one] => common::records_prefix(one, "the restored disk"),
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
        let img = std::fs::read(image).unwrap_or_default();
        if img.windows(12).any(|w| w == b"vmdr-record ") {
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
