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

/// How many records, from record 0, an image holds as an unbroken prefix;
/// panics on a torn record or anything after the gap.
fn prefix(image: &[u8]) -> usize {
    let mut n = 0;
    for (k, block) in image.chunks(BLOCK).enumerate() {
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let want = format!("vmdr-record {k:08}\n");
        assert!(
            block.starts_with(want.as_bytes()) && block[want.len()..].iter().all(|&b| b == 0),
            "block {k} is not record {k} whole"
        );
        n = k + 1;
    }
    assert!(
        image[n * BLOCK..].iter().all(|&b| b == 0),
        "something follows the gap after record {n}"
    );
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
        self.replica
            .restore(captured.checkpoint.0, 0, &self.out)
            .expect("restore");
        let image = std::fs::read(&self.out).expect("restored image");
        assert_eq!(
            image.len() as u64,
            captured.point.disks[0].size,
            "the image has the disk's size"
        );
        (captured, prefix(&image))
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
    let work = lab.dir.join("replication");
    for d in ["log", "replica"] {
        std::fs::create_dir_all(work.join(d)).expect("dirs");
    }
    let cfg = config(&lab);
    let tracking = Tracking {
        vm: "rec-2".into(),
        hosts: cfg.hosts.clone(),
        state_dir: work.join("log"),
        nbd_port: 10809,
        scratch_dir: None,
        scratch_limit: 1 << 30,
        timeout: Duration::from_secs(30),
    };
    let mut run = Run {
        log: Arc::new(Mutex::new(
            Log::open(&work.join("log"), LogConfig::default()).expect("log"),
        )),
        source: Some(LibvirtChanges::open(tracking.clone()).expect("source")),
        replica: Replica::open(&work.join("replica"), 2).expect("replica"),
        shipped: 0,
        out: work.join("restored.img"),
    };

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
