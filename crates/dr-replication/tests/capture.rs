//! Capturing points into the log: the parallel hash scan finds exactly the
//! changed blocks wherever they fall (inside a worker's slice, across
//! slices and windows, in a short last block); a point that fails before
//! its checkpoint is durable is abandoned and the next one covers it; the
//! write path's points, taken while a thread writes, are prefixes of what
//! it wrote.

mod common;

use common::TempDir;
use dr_replication::capture::{self, ChangeSource, Consistency, Point, PointDisk, Sink};
use dr_replication::scan::{ScanStats, Scanner, BLOCK};
use dr_replication::{HashScan, Log, LogConfig, ReplError, Replica};
use std::collections::BTreeSet;
use std::sync::Mutex;

const MIB: usize = 1 << 20;

fn changed_blocks(scanner: &mut Scanner, disk: &std::path::Path) -> (BTreeSet<usize>, ScanStats) {
    let mut blocks = BTreeSet::new();
    let mut last_end = 0u64;
    let stats = scanner
        .scan_into(disk, &mut |offset, data| {
            assert!(offset >= last_end, "runs come in ascending order");
            last_end = offset + data.len() as u64;
            assert_eq!(offset % BLOCK as u64, 0);
            for b in 0..data.len().div_ceil(BLOCK) {
                blocks.insert(offset as usize / BLOCK + b);
            }
            Ok(())
        })
        .expect("scan");
    (blocks, stats)
}

#[test]
fn the_parallel_scan_finds_exactly_the_changed_blocks() {
    let d = TempDir::new("capture-scan");
    let disk = d.0.join("disk.img");
    // 21 MiB and a bit: several windows on any core count, a short tail.
    let len = 21 * MIB + 1000;
    let mut bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(&disk, &bytes).expect("write");
    let mut scanner = Scanner::open(0, &d.0.join("hashes")).expect("scanner");
    let (all, s) = changed_blocks(&mut scanner, &disk);
    let n_blocks = len.div_ceil(BLOCK);
    assert_eq!(all.len(), n_blocks, "the first scan sends every block");
    assert_eq!(
        (s.blocks, s.changed, s.bytes),
        (n_blocks as u64, n_blocks as u64, len as u64)
    );
    scanner.commit().expect("commit");

    // Blocks on either side of slice and window boundaries, a run of
    // three, and the short last block.
    let last = n_blocks - 1;
    let want: BTreeSet<usize> = [
        0, 1023, 1024, 2047, 2048, 3300, 3301, 3302, 4095, 4096, last,
    ]
    .into_iter()
    .collect();
    for &b in &want {
        bytes[b * BLOCK] ^= 0x5a;
    }
    std::fs::write(&disk, &bytes).expect("write");
    let (got, s) = changed_blocks(&mut scanner, &disk);
    assert_eq!(got, want);
    assert_eq!(s.changed, want.len() as u64);
    scanner.commit().expect("commit");
    let (none, s) = changed_blocks(&mut scanner, &disk);
    assert!(none.is_empty() && s.changed == 0 && s.blocks == n_blocks as u64);

    // A disk that shrinks and grows: the new tail counts as changed.
    bytes.truncate(5 * MIB);
    bytes.extend(std::iter::repeat_n(9u8, 3 * BLOCK));
    std::fs::write(&disk, &bytes).expect("write");
    let (got, _) = changed_blocks(&mut scanner, &disk);
    let tail: BTreeSet<usize> = (5 * MIB / BLOCK..5 * MIB / BLOCK + 3).collect();
    assert_eq!(got, tail);
}

#[test]
fn a_hash_scan_source_captures_points_a_replica_restores() {
    let (ld, rd, dd, od) = (
        TempDir::new("capture-log"),
        TempDir::new("capture-rep"),
        TempDir::new("capture-disk"),
        TempDir::new("capture-out"),
    );
    let images = vec![dd.0.join("a.img"), dd.0.join("b.img")];
    let mut a: Vec<u8> = (0..9 * MIB).map(|i| (i % 249) as u8).collect();
    let b: Vec<u8> = vec![7u8; 3 * BLOCK + 17];
    std::fs::write(&images[0], &a).expect("write");
    std::fs::write(&images[1], &b).expect("write");
    let log = Mutex::new(Log::open(&ld.0, LogConfig::default()).expect("log"));
    let mut src = HashScan::open(images.clone(), &ld.0).expect("source");
    assert_eq!(src.consistency(), Consistency::Fuzzy);
    let c = capture::capture(&mut src, &log, 1).expect("capture");
    assert!(c.point.full);
    assert_eq!(c.disks[1].bytes, b.len() as u64);
    a[5 * MIB] = 0;
    std::fs::write(&images[0], &a).expect("write");
    let c = capture::capture(&mut src, &log, 2).expect("capture");
    assert!(!c.point.full);
    assert_eq!((c.disks[0].changed, c.disks[1].changed), (1, 0));

    let mut replica = Replica::open(&rd.0, 2).expect("replica");
    let mut log = log.into_inner().expect("log");
    for r in log.read_from(1, usize::MAX).expect("read") {
        replica.apply(&r).expect("apply");
    }
    let out = od.0.join("a");
    replica.restore(c.checkpoint.0, 0, &out).expect("restore");
    assert_eq!(std::fs::read(&out).expect("read"), a);
    replica.restore(c.checkpoint.0, 1, &out).expect("restore");
    assert_eq!(std::fs::read(&out).expect("read"), b);
}

/// A source of one 64 KiB disk whose point fails on demand, recording
/// what the capture told it.
struct Flaky {
    fail_read: bool,
    committed: u32,
    abandoned: Vec<String>,
    data: Vec<u8>,
}

impl ChangeSource for Flaky {
    fn consistency(&self) -> Consistency {
        Consistency::PointInTime
    }
    fn begin(&mut self) -> Result<Point, ReplError> {
        Ok(Point {
            disks: vec![PointDisk {
                name: "vda".into(),
                size: self.data.len() as u64,
            }],
            full: self.committed == 0,
            full_reason: None,
        })
    }
    fn read_changes(&mut self, _disk: u32, sink: &mut Sink<'_>) -> Result<ScanStats, ReplError> {
        sink(0, &self.data[..BLOCK])?;
        if self.fail_read {
            return Err(ReplError::Source("vda: the export went away".into()));
        }
        sink(BLOCK as u64, &self.data[BLOCK..2 * BLOCK])?;
        Ok(ScanStats {
            blocks: 2,
            changed: 2,
            bytes: 2 * BLOCK as u64,
        })
    }
    fn commit(&mut self) -> Result<(), ReplError> {
        self.committed += 1;
        Ok(())
    }
    fn abandon(&mut self, why: &str) {
        self.abandoned.push(why.to_owned());
    }
}

#[test]
fn a_failed_point_is_abandoned_and_the_next_one_covers_it() {
    let (ld, rd) = (TempDir::new("flaky-log"), TempDir::new("flaky-rep"));
    let log = Mutex::new(Log::open(&ld.0, LogConfig::default()).expect("log"));
    let mut src = Flaky {
        fail_read: true,
        committed: 0,
        abandoned: Vec::new(),
        data: (0..64 << 10).map(|i| (i % 241) as u8).collect(),
    };
    let err = capture::capture(&mut src, &log, 1).expect_err("the read fails");
    assert!(err.to_string().contains("the export went away"), "{err}");
    assert_eq!(src.committed, 0);
    assert_eq!(src.abandoned.len(), 1);
    assert!(
        log.lock().expect("log").last_checkpoint().is_none(),
        "no checkpoint for it"
    );

    src.fail_read = false;
    src.data[BLOCK] = 0xee;
    let c = capture::capture(&mut src, &log, 2).expect("the next point");
    assert_eq!(src.committed, 1);
    let mut replica = Replica::open(&rd.0, 2).expect("replica");
    let mut log = log.into_inner().expect("log");
    for r in log.read_from(1, usize::MAX).expect("read") {
        replica.apply(&r).expect("apply");
    }
    let out = rd.0.join("out");
    replica.restore(c.checkpoint.0, 0, &out).expect("restore");
    assert_eq!(std::fs::read(&out).expect("read"), src.data[..2 * BLOCK]);
}

/// A source that claims a change beyond its frozen disk.
struct PastEnd;

impl ChangeSource for PastEnd {
    fn consistency(&self) -> Consistency {
        Consistency::PointInTime
    }
    fn begin(&mut self) -> Result<Point, ReplError> {
        Ok(Point {
            disks: vec![PointDisk {
                name: "vdb".into(),
                size: 8192,
            }],
            full: true,
            full_reason: None,
        })
    }
    fn read_changes(&mut self, _disk: u32, sink: &mut Sink<'_>) -> Result<ScanStats, ReplError> {
        sink(8192, &[1u8; 512]).map(|()| ScanStats::default())
    }
    fn commit(&mut self) -> Result<(), ReplError> {
        panic!("a refused point must not be committed")
    }
    fn abandon(&mut self, _why: &str) {}
}

#[test]
fn a_change_past_the_frozen_disk_is_refused() {
    let ld = TempDir::new("pastend-log");
    let log = Mutex::new(Log::open(&ld.0, LogConfig::default()).expect("log"));
    let err = capture::capture(&mut PastEnd, &log, 1).expect_err("past the end");
    assert!(
        err.to_string().contains("vdb") && err.to_string().contains("past the disk"),
        "{err}"
    );
}

/// The write path as a source, captured while a thread writes numbered
/// blocks in order (each acknowledged before the next): every checkpoint
/// restores as an unbroken prefix of them, holding at least every write
/// acknowledged before its capture began and none begun after it ended.
#[test]
fn write_path_points_taken_during_writes_are_prefixes_of_the_acknowledged_writes() {
    use dr_replication::write_path::{WritePath, WritePathChanges};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (ld, rd, dd, od) = (
        TempDir::new("wp-src-log"),
        TempDir::new("wp-src-rep"),
        TempDir::new("wp-src-disk"),
        TempDir::new("wp-src-out"),
    );
    const BLOCKS: u64 = 2000;
    let disk = dd.0.join("d0.img");
    std::fs::write(&disk, vec![0u8; BLOCKS as usize * BLOCK]).expect("disk");
    let log = Arc::new(Mutex::new(
        Log::open(&ld.0, LogConfig::default()).expect("log"),
    ));
    let group = Arc::new(Mutex::new(
        WritePath::open(log.clone(), &ld.0, std::slice::from_ref(&disk)).expect("group"),
    ));
    let mut src = WritePathChanges::new(group.clone());
    assert_eq!(src.consistency(), Consistency::PointInTime);
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (group, acked) = (group.clone(), acked.clone());
        std::thread::spawn(move || {
            for k in 0..BLOCKS {
                let block = vec![(k % 251 + 1) as u8; BLOCK];
                group
                    .lock()
                    .expect("group")
                    .write(0, k * BLOCK as u64, &block)
                    .expect("write");
                acked.store(k + 1, Ordering::SeqCst);
            }
        })
    };
    let mut points = Vec::new();
    while points.len() < 2 || !writer.is_finished() {
        let before = acked.load(Ordering::SeqCst);
        let c = capture::capture(&mut src, &log, points.len() as u64 + 1).expect("capture");
        let after = acked.load(Ordering::SeqCst);
        assert!(
            c.disks[0] == ScanStats::default(),
            "the writes are in the log already"
        );
        points.push((c.checkpoint.0, before, after));
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    writer.join().expect("writer");
    let c = capture::capture(&mut src, &log, 1_000).expect("capture");
    points.push((c.checkpoint.0, BLOCKS, BLOCKS));
    let mut replica = Replica::open(&rd.0, points.len()).expect("replica");
    let records = log
        .lock()
        .expect("log")
        .read_from(1, usize::MAX)
        .expect("read");
    for r in &records {
        replica.apply(r).expect("apply");
    }
    let out = od.0.join("img");
    let mut partial = 0;
    for &(id, before, after) in &points {
        let image = match replica.restore(id, 0, &out) {
            Ok(()) => std::fs::read(&out).expect("image"),
            // Taken before the first write: nothing of the disk yet.
            Err(ReplError::NoDisk { .. }) if before == 0 => Vec::new(),
            Err(e) => panic!("checkpoint {id}: {e}"),
        };
        let n = image.chunks(BLOCK).take_while(|b| b[0] != 0).count() as u64;
        for (k, b) in image.chunks(BLOCK).enumerate() {
            let want = if (k as u64) < n {
                (k as u64 % 251 + 1) as u8
            } else {
                0
            };
            assert!(
                b.iter().all(|&x| x == want),
                "checkpoint {id}: block {k} is not {} whole",
                if want == 0 { "empty" } else { "its record" }
            );
        }
        assert!(
            (before..=after + 1).contains(&n),
            "checkpoint {id} holds {n} writes; {before} were acknowledged before its capture, {after} after"
        );
        if 0 < n && n < BLOCKS {
            partial += 1;
        }
    }
    eprintln!("{} points, {partial} among the writes", points.len());
    assert!(
        partial >= 1,
        "no checkpoint fell among the writes: {points:?}"
    );
}
