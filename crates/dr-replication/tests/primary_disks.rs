//! Primary disks that are not plain image files: block devices (loop
//! devices over files of the test's own) protected through the write path
//! and the hash scan and restored onto another block device; a write past a
//! device's end refused before it is logged; and a disk that fills up in
//! the middle of a write, which stops the group until it is reopened and
//! resynchronised.
//!
//! Needs root (loop devices, a small tmpfs mount): in CI (`CI=true`) a
//! missing capability fails the test; elsewhere it is skipped with the
//! reason.

use dr_replication::scan::Scanner;
use dr_replication::write_path::WritePath;
use dr_replication::{Log, LogConfig, ReplError, Replica};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

mod common;
use common::TempDir;

/// What `cmd args` printed, or why it failed.
fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What a test needing root set up: panics in CI when it could not,
/// returns `None` (after saying why) elsewhere.
fn can_run<T>(test: &str, needs: Result<T, String>) -> Option<T> {
    match needs {
        Ok(t) => Some(t),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: cannot run in CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// A group's log, its replica and the write path over `image`.
fn group(d: &Path, image: &Path) -> (Arc<Mutex<Log>>, Replica, WritePath) {
    let logd = d.join("log");
    let log = Arc::new(Mutex::new(
        Log::open(&logd, LogConfig::default()).expect("log"),
    ));
    let replica = Replica::open(&d.join("replica"), 2).expect("replica");
    let wp = WritePath::open(log.clone(), &logd, &[image.to_owned()]).expect("open");
    (log, replica, wp)
}

/// After a failed write: the group reopened resynchronises, and its next
/// checkpoint, restored from the replica, equals the disk in length and
/// bytes, whatever part of the failed write landed.
/// Returns the blocks resynchronised.
fn resynchronised_replica_equals(
    d: &Path,
    image: &Path,
    log: &Arc<Mutex<Log>>,
    replica: &mut Replica,
) -> u64 {
    let mut wp = WritePath::open(log.clone(), &d.join("log"), &[image.to_owned()]).expect("reopen");
    let id = wp.checkpoint(4).expect("checkpoint").0;
    ship(log, replica);
    let out = d.join("restored.img");
    replica.restore(id, 0, &out).expect("restore");
    let (restored, disk) = (read(&out), read(image));
    assert_eq!(
        restored.len(),
        disk.len(),
        "the replica has the disk's length"
    );
    assert!(restored == disk, "and its bytes");
    wp.resynced_blocks()
}

/// A loop device over a file, detached when dropped.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(file: &Path) -> Result<LoopDevice, String> {
        let file = file.to_str().ok_or("a temp path that is not UTF-8")?;
        run("losetup", &["--find", "--show", file]).map(|dev| LoopDevice(PathBuf::from(dev)))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Some(dev) = self.0.to_str() {
            let _ = run("losetup", &["--detach", dev]);
        }
    }
}

/// A tmpfs of a fixed size, unmounted when dropped.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn mount(at: &Path, size: &str) -> Result<SmallTmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let dir = at.to_str().ok_or("a temp path that is not UTF-8")?;
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir],
        )
        .map(|_| SmallTmpfs(at.to_owned()))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.0.to_str() {
            let _ = run("umount", &[dir]);
        }
    }
}

/// Deterministic bytes that do not repeat per block.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Ships everything after the replica's acknowledged checkpoint, record by
/// record, merging as a receiver does.
fn ship(log: &Mutex<Log>, replica: &mut Replica) {
    let from = replica.acked_seq() + 1;
    let records = log
        .lock()
        .expect("log")
        .read_from(from, usize::MAX)
        .expect("read");
    for r in records {
        if replica.apply(&r).expect("apply").is_some() {
            replica.merge_due().expect("merge");
        }
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

const MIB: usize = 1 << 20;

#[test]
fn block_devices_are_protected_and_restored_onto_a_block_device() {
    let d = TempDir::new("blockdev");
    let (source_file, target_file) = (d.0.join("source.img"), d.0.join("target.img"));
    std::fs::write(&source_file, pattern(8 * MIB, 1)).expect("source");
    std::fs::write(&target_file, vec![0u8; 8 * MIB]).expect("target");
    let devices = LoopDevice::attach(&source_file)
        .and_then(|s| LoopDevice::attach(&target_file).map(|t| (s, t)));
    let Some((source, target)) = can_run("block_devices_are_protected…", devices) else {
        return;
    };
    let logd = d.0.join("log");
    let log = Arc::new(Mutex::new(
        Log::open(&logd, LogConfig::default()).expect("log"),
    ));
    let mut replica = Replica::open(&d.0.join("replica"), 2).expect("replica");
    let mut wp = WritePath::open(log.clone(), &logd, std::slice::from_ref(&source.0))
        .expect("a block device opens as a disk");
    // The initial copy: a scan of the whole device against empty hashes.
    let mut scanner = Scanner::open(0, &logd.join("disk-0.hashes")).expect("scanner");
    let stats = scanner
        .scan(&source.0, &mut log.lock().expect("log"))
        .expect("scan a block device");
    assert_eq!(stats.bytes, 8 * MIB as u64, "the device read to its end");
    let first = wp.checkpoint(1).expect("checkpoint").0;
    scanner.commit().expect("commit");
    let at_first = read(&source.0);

    // Through the write path, up to the device's last byte.
    for (i, offset) in [0usize, 3 * MIB + 4096, 8 * MIB - 4096]
        .into_iter()
        .enumerate()
    {
        wp.write(0, offset as u64, &pattern(4096, 10 + i as u64))
            .expect("write");
    }
    // Past the end: refused before anything is logged.
    let before = log.lock().expect("log").next_seq();
    let past = wp.write(0, (8 * MIB - 100) as u64, &[1u8; 200]);
    assert!(
        matches!(&past, Err(ReplError::PastEnd { size, .. }) if *size == 8 * MIB as u64),
        "{past:?}"
    );
    assert_eq!(
        log.lock().expect("log").next_seq(),
        before,
        "nothing logged"
    );
    let second = wp
        .checkpoint(2)
        .expect("checkpoint after a refused write")
        .0;
    // The scan's hashes follow the write path's changes (it logs them again).
    let seen = scanner
        .scan(&source.0, &mut log.lock().expect("log"))
        .expect("rescan");
    assert_eq!(seen.changed, 3);
    wp.checkpoint(2).expect("checkpoint");
    scanner.commit().expect("commit");

    // Behind replication's back, found by the scan.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&source.0)
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&pattern(3 * 4096, 99), (5 * MIB) as u64)
                .and_then(|()| f.sync_all())
        })
        .expect("write the device directly");
    let found = scanner
        .scan(&source.0, &mut log.lock().expect("log"))
        .expect("rescan");
    assert_eq!(found.changed, 3, "exactly the three blocks written");
    let third = wp.checkpoint(3).expect("checkpoint").0;
    scanner.commit().expect("commit");
    ship(&log, &mut replica);

    replica
        .restore(third, 0, &target.0)
        .expect("restore onto a block device");
    assert!(
        read(&target.0) == read(&source.0),
        "the target device equals the source"
    );
    let out = d.0.join("first.img");
    replica.restore(first, 0, &out).expect("restore the first");
    assert!(read(&out) == at_first, "the first checkpoint as it was");
    assert!(replica.checkpoints().iter().any(|c| c.id == second));
}

#[test]
fn a_disk_that_fills_up_mid_write_stops_the_group_until_it_resynchronises() {
    let d = TempDir::new("full");
    let Some(mount) = can_run(
        "a_disk_that_fills_up…",
        SmallTmpfs::mount(&d.0.join("small"), "1m"),
    ) else {
        return;
    };
    // A 2 MiB image with holes on a 1 MiB file system: its first 768 KiB
    // written, the rest unallocated.
    let image = mount.0.join("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(2 * MIB as u64))
        .expect("image");
    let (log, mut replica, mut wp) = group(&d.0, &image);
    wp.write(0, 0, &pattern(768 << 10, 5)).expect("fits");
    wp.checkpoint(1).expect("checkpoint");

    // Into a hole the file system has no room for: logged, then refused by
    // the disk.
    let err = wp
        .write(0, MIB as u64, &pattern(512 << 10, 6))
        .expect_err("the disk is full");
    assert!(
        matches!(&err, ReplError::Io { cause, .. } if cause.raw_os_error() == Some(28)),
        "{err}"
    );
    // The log holds a write the disk may not: no checkpoint may show it.
    assert!(matches!(wp.checkpoint(2), Err(ReplError::Poisoned(_))));
    assert!(matches!(wp.write(0, 0, b"x"), Err(ReplError::Poisoned(_))));
    assert!(matches!(wp.close(3), Err(ReplError::Poisoned(_))));
    // Nor may a checkpoint taken beside the group (a source's point).
    let held = log.lock().expect("log").checkpoint(2);
    assert!(
        matches!(&held, Err(ReplError::Poisoned(why)) if why.contains("reopen the group")),
        "{held:?}"
    );

    // Reopened, the group resynchronises every block.
    let resynced = resynchronised_replica_equals(&d.0, &image, &log, &mut replica);
    assert_eq!(resynced, (2 * MIB / 4096) as u64);
}

#[test]
fn a_write_that_grows_a_full_disk_s_image_leaves_the_replica_its_length() {
    let d = TempDir::new("grow");
    let Some(mount) = can_run(
        "a_write_that_grows…",
        SmallTmpfs::mount(&d.0.join("small"), "1m"),
    ) else {
        return;
    };
    let image = mount.0.join("disk.img");
    std::fs::write(&image, pattern(512 << 10, 7)).expect("image");
    let (log, mut replica, mut wp) = group(&d.0, &image);
    let mut scanner = Scanner::open(0, &d.0.join("log/disk-0.hashes")).expect("scanner");
    scanner
        .scan(&image, &mut log.lock().expect("log"))
        .expect("scan");
    wp.checkpoint(1).expect("checkpoint");
    // 1 MiB past the image's end, on a file system with less than that
    // left: the file grows part of the way.
    let err = wp
        .write(0, 512 << 10, &pattern(MIB, 8))
        .expect_err("the disk is full");
    assert!(
        matches!(&err, ReplError::Io { cause, .. } if cause.raw_os_error() == Some(28)),
        "{err}"
    );
    assert!(matches!(wp.checkpoint(2), Err(ReplError::Poisoned(_))));
    drop(wp);
    resynchronised_replica_equals(&d.0, &image, &log, &mut replica);
}
