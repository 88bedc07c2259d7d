//! The log and the replica together: random write sequences and
//! checkpoints; every kept checkpoint of a replica equals the source at that
//! checkpoint, byte for byte, across restarts of both ends; corruption is
//! found and located; a torn tail is cut.

use dr_replication::{Log, LogConfig, Record, ReplError, Replica};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

mod common;
use common::TempDir;

#[derive(Clone, Debug)]
enum Op {
    Write {
        disk: u32,
        offset: u64,
        data: Vec<u8>,
    },
    Checkpoint,
    RestartLog,
    RestartReplica,
    /// Ships what is durable: record by record (0), or in batches of about
    /// this many bytes as the network path does.
    Ship(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..2, 0u64..20_000, prop::collection::vec(any::<u8>(), 1..700)).prop_map(|(disk, offset, data)| Op::Write { disk, offset, data }),
        2 => Just(Op::Checkpoint),
        1 => Just(Op::RestartLog),
        1 => Just(Op::RestartReplica),
        1 => Just(Op::Ship(0)),
        1 => (1usize..3000).prop_map(Op::Ship),
    ]
}

fn image(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Source disks compared with an image: the image may be shorter where the
/// source only has zeros at its end, never different.
fn same(source: &[u8], image: &[u8]) -> bool {
    let n = source.len().max(image.len());
    (0..n).all(|i| source.get(i).copied().unwrap_or(0) == image.get(i).copied().unwrap_or(0))
}

fn shared(log: Log) -> std::sync::Arc<std::sync::Mutex<Log>> {
    std::sync::Arc::new(std::sync::Mutex::new(log))
}

/// Ships record by record; after each checkpoint, merges what is due as
/// the receiver does.
fn ship(log: &mut Log, replica: &mut Replica) {
    let from = replica.acked_seq() + 1;
    for r in log.read_from(from, usize::MAX).expect("read") {
        if replica.apply(&r).expect("apply").is_some() {
            replica.merge_due().expect("merge");
        }
    }
}

/// Ships as the network path does: encoded batches of about `max` bytes
/// (read into one reused buffer), each applied whole, resuming after the
/// replica's acknowledged checkpoint.
fn ship_batches(log: &mut Log, replica: &mut Replica, max: usize) {
    let mut batch = dr_replication::log::Encoded::default();
    let mut next = replica.acked_seq() + 1;
    loop {
        log.read_encoded_into(next, max, &mut batch).expect("read");
        let Some(&(last, _)) = batch.records.last() else {
            return;
        };
        assert_eq!(batch.records[0].0.seq(), next, "a batch starts where asked");
        if !replica
            .apply_batch(&batch.bytes)
            .expect("apply batch")
            .is_empty()
        {
            replica.merge_due().expect("merge");
        }
        next = last.seq() + 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct("tests/log_and_replica.proptest-regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn replicas_equal_the_source_at_every_kept_checkpoint(ops in prop::collection::vec(op(), 1..80), keep in 1usize..4) {
        let (ld, rd, od) = (TempDir::new("log"), TempDir::new("replica"), TempDir::new("out"));
        let cfg = LogConfig { segment_bytes: 4096 };
        let mut log = Log::open(&ld.0, cfg).expect("log");
        let mut replica = Replica::open(&rd.0, keep).expect("replica");
        let mut disks: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut at_checkpoint: BTreeMap<u64, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Write { disk, offset, data } => {
                    log.append(disk, offset, &data).expect("append");
                    let d = disks.entry(disk).or_default();
                    let end = offset as usize + data.len();
                    if d.len() < end {
                        d.resize(end, 0);
                    }
                    d[offset as usize..end].copy_from_slice(&data);
                }
                Op::Checkpoint => {
                    let (id, _) = log.checkpoint(1_000 + at_checkpoint.len() as u64).expect("checkpoint");
                    at_checkpoint.insert(id, disks.clone());
                }
                Op::RestartLog => {
                    // A clean restart (the buffer is flushed on drop): no
                    // write is lost. Crashes that tear the tail are tested
                    // on their own below.
                    drop(log);
                    log = Log::open(&ld.0, cfg).expect("reopen log");
                }
                Op::RestartReplica => {
                    drop(replica);
                    replica = Replica::open(&rd.0, keep).expect("reopen replica");
                }
                Op::Ship(0) => ship(&mut log, &mut replica),
                Op::Ship(max) => ship_batches(&mut log, &mut replica, max),
            }
        }
        // Every durable checkpoint eventually arrives.
        ship_batches(&mut log, &mut replica, 1 << 20);
        // Merges wait for a few checkpoints beyond `keep`, then fold them
        // all; checked before and after the rest are folded.
        prop_assert!(replica.merges_waiting() < 4);
        for merged in [false, true] {
            if merged {
                replica.merge_waiting().expect("merge");
                prop_assert_eq!(replica.merges_waiting(), 0);
            }
            let kept = replica.checkpoints();
            prop_assert!(kept.len() <= keep + 4);
            if let Some(last) = at_checkpoint.keys().next_back() {
                prop_assert_eq!(replica.newest().map(|c| c.id), Some(*last));
            }
            for c in &kept {
                let source = &at_checkpoint[&c.id];
                for (&disk, bytes) in source {
                    let out = od.0.join(format!("c{}-d{disk}", c.id));
                    replica.restore(c.id, disk, &out).expect("restore");
                    prop_assert!(same(bytes, &image(&out)), "checkpoint {} disk {disk} differs", c.id);
                }
            }
        }
    }
}

#[test]
fn a_torn_tail_is_cut_and_corruption_is_located() {
    let ld = TempDir::new("torn");
    let cfg = LogConfig::default();
    let mut log = Log::open(&ld.0, cfg).expect("log");
    log.append(0, 0, b"first").expect("append");
    log.checkpoint(1).expect("checkpoint");
    log.append(0, 8, b"second").expect("append");
    drop(log); // flushed on drop: "second" is on disk after the checkpoint
    let seg = std::fs::read_dir(&ld.0)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .next()
        .expect("a segment");
    let len = std::fs::metadata(&seg).expect("stat").len();
    // Tear the last record.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 3)
        .expect("truncate");
    let mut log = Log::open(&ld.0, cfg).expect("a torn tail is not corruption");
    let recs = log.read_from(1, usize::MAX).expect("read");
    assert_eq!(
        recs.len(),
        2,
        "the torn write is gone, the checkpoint stays"
    );
    assert!(matches!(recs[1], Record::Checkpoint { id: 1, .. }));
    assert_eq!(
        log.append(0, 8, b"again").expect("append"),
        3,
        "sequence continues"
    );
    log.checkpoint(2).expect("checkpoint");
    drop(log);
    // Flip one byte inside the first record: corruption, with its place.
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[12] ^= 0x20;
    std::fs::write(&seg, &bytes).expect("write");
    match Log::open(&ld.0, cfg) {
        Err(ReplError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, 0);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("corruption not detected: {:?}", other.err()),
    }
}

#[test]
fn a_corrupt_replica_checkpoint_is_detected_and_nothing_is_presented_from_it() {
    let (ld, rd) = (TempDir::new("log2"), TempDir::new("rep2"));
    let mut log = Log::open(&ld.0, LogConfig::default()).expect("log");
    let mut replica = Replica::open(&rd.0, 3).expect("replica");
    log.append(0, 0, &[7u8; 100]).expect("append");
    log.checkpoint(10).expect("cp");
    ship(&mut log, &mut replica);
    drop(replica);
    let cp = std::fs::read_dir(&rd.0)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .expect("checkpoint file");
    let mut bytes = std::fs::read(&cp).expect("read");
    bytes[40] ^= 1;
    std::fs::write(&cp, bytes).expect("write");
    assert!(matches!(
        Replica::open(&rd.0, 3),
        Err(ReplError::Corrupt { .. })
    ));
}

#[test]
fn resending_is_harmless_and_gaps_are_refused() {
    let (ld, rd) = (TempDir::new("log3"), TempDir::new("rep3"));
    let mut log = Log::open(&ld.0, LogConfig::default()).expect("log");
    let mut replica = Replica::open(&rd.0, 2).expect("replica");
    for i in 0..5u64 {
        log.append(0, i * 10, &[i as u8; 10]).expect("append");
    }
    log.checkpoint(5).expect("cp");
    let recs = log.read_from(1, usize::MAX).expect("read");
    for r in recs.iter().chain(recs.iter()) {
        replica.apply(r).expect("twice is fine");
    }
    assert_eq!(replica.checkpoints().len(), 1);
    log.append(0, 0, b"x").expect("append");
    log.checkpoint(6).expect("cp");
    let more = log.read_from(8, usize::MAX).expect("read");
    assert!(matches!(
        replica.apply(&more[0]),
        Err(ReplError::Gap {
            expected: 7,
            got: 8
        })
    ));
    assert_eq!(replica.rpo_ms(1_000), Some(995));
}

/// A log of small segments in `dir`: 20 writes of 300 bytes, each with a
/// checkpoint (40 records, about 7 segments).
fn small_segments(dir: &Path) -> Log {
    let mut log = Log::open(
        dir,
        LogConfig {
            segment_bytes: 1_000,
        },
    )
    .expect("log");
    for i in 0..20u64 {
        log.append(0, 0, &[1u8; 300]).expect("append");
        log.checkpoint(i).expect("cp");
    }
    log
}

#[test]
fn acknowledged_segments_are_trimmed() {
    let ld = TempDir::new("trim");
    let mut log = small_segments(&ld.0);
    let before = log.segment_count();
    assert!(before > 5, "{before} segments");
    // The shipping path keeps segments it read open.
    let mut batch = dr_replication::log::Encoded::default();
    log.read_encoded_into(1, 4_000, &mut batch).expect("read");
    let removed = log.trim(30).expect("trim");
    assert!(removed > 0);
    // A removed segment still open would keep its blocks.
    let open_deleted: Vec<_> = std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with(&ld.0) && t.to_string_lossy().ends_with(" (deleted)"))
        .collect();
    assert!(open_deleted.is_empty(), "{open_deleted:?}");
    assert!(
        log.read_from(31, usize::MAX)
            .expect("read")
            .first()
            .is_some_and(|r| r.seq() == 31),
        "records after the trim point stay"
    );
    assert_eq!(
        log.trim(u64::MAX).expect("trim"),
        before - removed - 1,
        "the active segment stays"
    );
}

#[test]
fn a_merge_interrupted_by_a_crash_is_finished_on_open() {
    let (ld, rd, od) = (
        TempDir::new("log4"),
        TempDir::new("rep4"),
        TempDir::new("out4"),
    );
    let mut log = Log::open(&ld.0, LogConfig::default()).expect("log");
    let mut replica = Replica::open(&rd.0, 1).expect("replica");
    for i in 0..3u8 {
        log.append(0, u64::from(i) * 4, &[i + 1; 4])
            .expect("append");
        log.checkpoint(u64::from(i)).expect("cp");
    }
    ship(&mut log, &mut replica);
    let kept: Vec<u64> = replica.checkpoints().iter().map(|c| c.id).collect();
    assert_eq!(kept, [1, 2, 3], "two wait beyond `keep`, not yet merged");
    assert_eq!(replica.merges_waiting(), 2);
    drop(replica);
    // A crash in the middle of merging checkpoints 1 and 2 together: the
    // marker names the last, the images may hold any part of either, there
    // is no meta yet.
    std::fs::write(rd.0.join("merging-2"), b"").expect("marker");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(rd.0.join("disk-0.img"))
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&[2, 2], 4)
        })
        .expect("half a merge");
    let status = dr_replication::agent::inspect(&rd.0).expect("status");
    assert_eq!(status.merging_through, Some(2), "an operator sees it");
    let replica = Replica::open(&rd.0, 1).expect("reopen finishes the merge");
    let kept: Vec<u64> = replica.checkpoints().iter().map(|c| c.id).collect();
    assert_eq!(kept, [2, 3]);
    let out = od.0.join("img");
    replica.restore(3, 0, &out).expect("restore");
    assert_eq!(
        std::fs::read(&out).expect("read"),
        [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    );
    assert!(
        matches!(replica.restore(1, 0, &out), Err(ReplError::NoCheckpoint(1))),
        "merged away"
    );
    assert!(!rd.0.join("merging-2").exists());
    drop(replica);
    // A crash after a merge wrote the meta and removed (or recycled) its
    // file, before its marker went: reopening only clears the marker.
    // An older marker beside it goes too.
    std::fs::write(rd.0.join("merging-2"), b"").expect("marker");
    std::fs::write(rd.0.join("merging-1"), b"").expect("marker");
    let replica = Replica::open(&rd.0, 1).expect("reopen after the merge's end");
    assert!(!rd.0.join("merging-2").exists());
    assert!(!rd.0.join("merging-1").exists());
    let kept: Vec<u64> = replica.checkpoints().iter().map(|c| c.id).collect();
    assert_eq!(kept, [2, 3]);
    replica.restore(3, 0, &out).expect("restore");
    assert_eq!(
        std::fs::read(&out).expect("read"),
        [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    );
}

#[test]
fn a_hash_scan_logs_exactly_the_changed_blocks() {
    use dr_replication::scan::{Scanner, BLOCK};
    let (ld, rd, dd, od) = (
        TempDir::new("log5"),
        TempDir::new("rep5"),
        TempDir::new("disk5"),
        TempDir::new("out5"),
    );
    let disk = dd.0.join("disk.img");
    let mut bytes: Vec<u8> = (0..BLOCK * 64 + 100).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&disk, &bytes).expect("write");
    let mut log = Log::open(&ld.0, LogConfig::default()).expect("log");
    let mut replica = Replica::open(&rd.0, 2).expect("replica");
    let mut scanner = Scanner::open(0, &ld.0.join("disk-0.hashes")).expect("scanner");
    let s = scanner.scan(&disk, &mut log).expect("scan");
    assert_eq!(
        (s.blocks, s.changed),
        (65, 65),
        "the first scan ships everything"
    );
    log.checkpoint(1).expect("cp");
    scanner.commit().expect("commit");
    // Change three blocks (one of them the short last one).
    for b in [3usize, 40, 64] {
        bytes[b * BLOCK] ^= 0xff;
    }
    std::fs::write(&disk, &bytes).expect("write");
    let s = scanner.scan(&disk, &mut log).expect("scan");
    assert_eq!(s.changed, 3);
    log.checkpoint(2).expect("cp");
    scanner.commit().expect("commit");
    let s = Scanner::open(0, &ld.0.join("disk-0.hashes"))
        .expect("reopen")
        .scan(&disk, &mut log)
        .expect("scan");
    assert_eq!(s.changed, 0, "saved hashes survive a restart");
    ship(&mut log, &mut replica);
    let out = od.0.join("img");
    replica.restore(2, 0, &out).expect("restore");
    assert_eq!(std::fs::read(&out).expect("read"), bytes);
}

#[test]
fn after_a_primary_crash_the_write_path_resynchronises() {
    use dr_replication::write_path::WritePath;
    let (ld, rd, dd, od) = (
        TempDir::new("log6"),
        TempDir::new("rep6"),
        TempDir::new("disk6"),
        TempDir::new("out6"),
    );
    let disk = dd.0.join("d0.img");
    std::fs::write(&disk, vec![0u8; 64 * 1024]).expect("disk");
    let mut replica = Replica::open(&rd.0, 2).expect("replica");
    let mut wp = WritePath::open(
        shared(Log::open(&ld.0, LogConfig::default()).expect("log")),
        &ld.0,
        std::slice::from_ref(&disk),
    )
    .expect("group");
    wp.write(0, 0, &[1u8; 4096]).expect("write");
    wp.checkpoint(1).expect("cp");
    ship(&mut wp.log().lock().expect("log"), &mut replica);
    // Writes after the checkpoint reach the disk, then the primary crashes
    // before the log's buffer does: the log loses them.
    wp.write(0, 8192, &[2u8; 4096]).expect("write");
    wp.write(0, 16384, &[3u8; 4096]).expect("write");
    drop(wp); // no close: the log buffer is flushed on drop, so cut it back
    let seg = std::fs::read_dir(&ld.0)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("segment");
    let keep = std::fs::metadata(&seg).expect("stat").len() - 2 * (4096 + 29);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(keep)
        .expect("cut");
    // Reopen: not closed cleanly, so every block goes out again.
    let mut wp = WritePath::open(
        shared(Log::open(&ld.0, LogConfig::default()).expect("log")),
        &ld.0,
        std::slice::from_ref(&disk),
    )
    .expect("group");
    assert_eq!(wp.resynced_blocks(), 16, "the whole 64 KiB disk");
    wp.checkpoint(2).expect("cp");
    ship(&mut wp.log().lock().expect("log"), &mut replica);
    let out = od.0.join("img");
    replica.restore(2, 0, &out).expect("restore");
    assert_eq!(
        std::fs::read(&out).expect("read"),
        std::fs::read(&disk).expect("disk"),
        "replica equals the disk again"
    );
    wp.close(3).expect("close");
    let wp = WritePath::open(
        shared(Log::open(&ld.0, LogConfig::default()).expect("log")),
        &ld.0,
        std::slice::from_ref(&disk),
    )
    .expect("group");
    assert_eq!(wp.resynced_blocks(), 0, "a clean close needs no resync");
}

#[test]
fn merged_checkpoint_files_are_written_over_and_cut_to_size() {
    let (ld, rd, od) = (
        TempDir::new("log5"),
        TempDir::new("rep5"),
        TempDir::new("out5"),
    );
    let mut log = Log::open(&ld.0, LogConfig::default()).expect("log");
    let mut replica = Replica::open(&rd.0, 1).expect("replica");
    // A large checkpoint, then ever smaller ones: each is received into the
    // previous merged file, which must end where its records end.
    let mut expected = vec![0u8; 64 << 10];
    for (i, len) in [60_000usize, 20_000, 5_000, 100, 30_000]
        .into_iter()
        .enumerate()
    {
        let byte = i as u8 + 1;
        log.append(0, 0, &vec![byte; len]).expect("append");
        expected[..len].fill(byte);
        log.checkpoint(i as u64).expect("cp");
        ship_batches(&mut log, &mut replica, 4096);
        replica.merge_waiting().expect("merge");
        let out = od.0.join(format!("img{i}"));
        let newest = replica.newest().expect("a checkpoint").id;
        replica.restore(newest, 0, &out).expect("restore");
        assert!(same(&expected, &image(&out)), "after checkpoint {}", i + 1);
        // From the second on, the merged previous one is kept for reuse.
        assert_eq!(rd.0.join("spare.ckpt").exists(), i > 0);
    }
    drop(replica);
    // Every kept file holds exactly its checkpoint: reopening checks them.
    let replica = Replica::open(&rd.0, 1).expect("reopen");
    assert_eq!(replica.newest().map(|c| c.id), Some(5));
}

#[test]
fn a_checkpoint_damaged_before_its_merge_stops_the_replica() {
    let (ld, rd, od) = (
        TempDir::new("log6"),
        TempDir::new("rep6"),
        TempDir::new("out6"),
    );
    let mut log = Log::open(&ld.0, LogConfig::default()).expect("log");
    let mut replica = Replica::open(&rd.0, 1).expect("replica");
    for i in 0..2u8 {
        log.append(0, 0, &[i + 1; 5000]).expect("append");
        log.checkpoint(u64::from(i)).expect("cp");
    }
    ship_batches(&mut log, &mut replica, usize::MAX);
    // Checkpoint 2 is kept apart; damage it on disk, then let a third one
    // arrive, and merge the ones beyond `keep` (1 and 2) into the base.
    let cp2 = rd.0.join(format!("cp-{:020}.ckpt", 2));
    let mut bytes = std::fs::read(&cp2).expect("read");
    bytes[3000] ^= 0x10;
    std::fs::write(&cp2, bytes).expect("write");
    log.append(0, 0, &[3; 10]).expect("append");
    log.checkpoint(2).expect("cp");
    let mut batch = dr_replication::log::Encoded::default();
    log.read_encoded_into(replica.acked_seq() + 1, usize::MAX, &mut batch)
        .expect("read");
    replica.apply_batch(&batch.bytes).expect("received");
    let err = replica
        .merge_waiting()
        .expect_err("the merge finds the damage");
    assert!(matches!(err, ReplError::Corrupt { .. }), "{err}");
    // Nothing is shown from a half-merged base.
    let out = od.0.join("img");
    assert!(matches!(
        replica.restore(1, 0, &out),
        Err(ReplError::Broken(_))
    ));
    assert!(matches!(
        replica.apply_batch(&batch.bytes),
        Err(ReplError::Broken(_))
    ));
    drop(replica);
    let again = Replica::open(&rd.0, 1)
        .err()
        .expect("reopening names the damage");
    assert!(
        matches!(&again, ReplError::Corrupt { path, .. } if path.ends_with(format!("cp-{:020}.ckpt", 2))),
        "{again}"
    );
}

#[test]
fn two_shippers_reading_in_turns_get_every_record_once_in_order() {
    let dir = TempDir::new("cursors");
    // Records of 300 KiB in segments of about 1 MiB: index entries are
    // records apart, and batches cross segments.
    let mut log = Log::open(
        &dir.0,
        LogConfig {
            segment_bytes: 1 << 20,
        },
    )
    .expect("log");
    let record = |i: u64| -> Vec<u8> { (0..300u64 << 10).map(|x| (x * 7 + i) as u8).collect() };
    let mut written = Vec::new();
    let mut append = |log: &mut Log, n: u64| {
        for _ in 0..n {
            let i = written.len() as u64;
            log.append(0, i << 20, &record(i)).expect("append");
            written.push(i);
            if i % 3 == 2 {
                log.checkpoint(0).expect("checkpoint");
            }
        }
    };
    append(&mut log, 10);
    let mut next = [1u64, 1];
    let mut seen: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut batch = dr_replication::log::Encoded::default();
    // After round 40, no more appends: both read to the end.
    for round in 0..100 {
        if round % 5 == 4 && round < 40 {
            // The active segment grows, and new ones start, between reads.
            append(&mut log, 2);
        }
        // Shipper 1 reads more per turn: their positions differ.
        for (s, max) in [(0, 200 << 10), (1, 700 << 10)] {
            log.read_encoded_into(next[s], max, &mut batch)
                .expect("read");
            let mut at = 0;
            for &(h, end) in &batch.records {
                assert_eq!(h.seq(), next[s], "shipper {s} gets record {}", next[s]);
                let (rec, _) =
                    dr_replication::record::decode(&batch.bytes[at..end]).expect("decode");
                if let Record::Write { write, .. } = rec {
                    seen[s].push(write.data);
                }
                next[s] += 1;
                at = end;
            }
        }
    }
    for (s, got) in seen.iter().enumerate() {
        assert_eq!(got.len(), written.len(), "shipper {s} read every write");
        for (i, data) in got.iter().enumerate() {
            assert!(*data == record(i as u64), "shipper {s}, write {i}");
        }
    }
}

#[test]
fn detached_segments_go_when_removed_and_the_log_goes_on_meanwhile() {
    let ld = TempDir::new("detach");
    let mut log = small_segments(&ld.0);
    let files = || std::fs::read_dir(&ld.0).expect("dir").count();
    let before = files();
    let detached = log.detach(30);
    // The log goes on without them before their files are removed.
    log.append(0, 0, &[2u8; 300]).expect("append meanwhile");
    log.checkpoint(99).expect("checkpoint meanwhile");
    assert!(
        log.read_from(31, usize::MAX)
            .expect("read")
            .first()
            .is_some_and(|r| r.seq() == 31),
        "records after the trim point stay"
    );
    assert!(files() >= before, "nothing removed yet");
    let removed = detached.remove().expect("remove");
    assert!(removed > 0);
    assert!(files() < before, "their files are gone");
    // Reopened, the log holds the records after the trim point.
    drop(log);
    let log = Log::open(
        &ld.0,
        LogConfig {
            segment_bytes: 1_000,
        },
    )
    .expect("reopen");
    assert!(log.segment_count() > 0);
}

#[test]
fn status_counts_only_the_records_of_the_checkpoint_being_received() {
    let (ld, rd) = (TempDir::new("log9"), TempDir::new("rep9"));
    let mut log = Log::open(&ld.0, LogConfig::default()).expect("log");
    let mut replica = Replica::open(&rd.0, 1).expect("replica");
    // A 3 MiB checkpoint, then a small one; merging the first leaves its
    // file as the spare the next checkpoint is received into.
    for (i, len) in [3usize << 20, 10].into_iter().enumerate() {
        log.append(0, 0, &vec![i as u8 + 1; len]).expect("append");
        log.checkpoint(i as u64).expect("cp");
    }
    ship_batches(&mut log, &mut replica, usize::MAX);
    replica.merge_waiting().expect("merge");
    assert!(rd.0.join("spare.ckpt").exists());
    // Half of the next one (1.5 MiB, more than the receiver buffers), no
    // checkpoint record yet.
    log.append(0, 0, &vec![7u8; 1536 << 10]).expect("append");
    let mut batch = dr_replication::log::Encoded::default();
    log.read_encoded_into(replica.acked_seq() + 1, usize::MAX, &mut batch)
        .expect("read");
    assert!(replica.apply_batch(&batch.bytes).expect("apply").is_empty());
    let incoming = rd.0.join("incoming.tmp");
    let on_disk = std::fs::metadata(&incoming).expect("incoming").len();
    assert!(on_disk > 3 << 20, "received into the recycled 3 MiB file");
    let status = dr_replication::agent::inspect(&rd.0).expect("status");
    assert_eq!(status.receiving_bytes, replica.pending_bytes());
    assert_eq!(status.receiving_bytes, batch.bytes.len() as u64);
}
