//! The write path: a protected group of disks (image files or block
//! devices) written through replication. Each write goes to the log, then
//! to the disk (one that grows an image file, the other way round); a
//! checkpoint marks a crash-consistent point of the whole group.
//!
//! After a crash of the primary, writes after the last checkpoint can be on
//! a disk but not in the log (the log is fsynced at checkpoints only). So a
//! log that was not closed cleanly makes the group resynchronise: every
//! block of every disk goes into the next checkpoint, and the replicas equal
//! the disks again from then on.
//!
//! [`WritePathChanges`] makes such a group a [`ChangeSource`], so the same
//! agent that takes a hypervisor's points on a schedule takes its
//! checkpoints too.

use crate::capture::{ChangeSource, Consistency, Point, PointDisk, Sink};
use crate::error::{io, ReplError};
use crate::log::Log;
use crate::scan::ScanStats;
use crate::scan::Scanner;
use std::fs::{File, OpenOptions};
use std::io::{Seek as _, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One disk of a group.
struct Disk {
    path: PathBuf,
    file: File,
    /// Its length as last seen: an image file grows past it, a block
    /// device cannot (a write past it would fail on the disk after its
    /// record went to the log).
    len: u64,
    block_device: bool,
}

/// A group of disks written through the log.
pub struct WritePath {
    log: Arc<Mutex<Log>>,
    disks: Vec<Disk>,
    clean_marker: PathBuf,
    resynced_blocks: u64,
    /// Why the group refuses further writes and checkpoints: a disk write
    /// or its logging failed, so the log and the disk may differ;
    /// reopening resynchronises every disk.
    poisoned: Option<String>,
}

impl WritePath {
    /// Opens the group: `log` is the group's log, `disks` its images, disk
    /// 0, 1, … in order. If the log was not closed cleanly, every block of
    /// every disk is appended to it now (to go with the next checkpoint).
    pub fn open(
        log: Arc<Mutex<Log>>,
        log_dir: &Path,
        disks: &[PathBuf],
    ) -> Result<WritePath, ReplError> {
        let clean_marker = log_dir.join("clean");
        let clean = clean_marker.exists();
        let mut files = Vec::new();
        for d in disks {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(d)
                .map_err(io("open", d))?;
            let meta = file.metadata().map_err(io("stat", d))?;
            let block_device = meta.file_type().is_block_device();
            let len = if block_device {
                file.seek(SeekFrom::End(0)).map_err(io("size", d))?
            } else {
                meta.len()
            };
            files.push(Disk {
                path: d.clone(),
                file,
                len,
                block_device,
            });
        }
        let mut resynced_blocks = 0;
        let fresh = lock(&log).next_seq() == 1;
        if !clean && !fresh {
            tracing::warn!(log = %log_dir.display(), "replication log was not closed cleanly: resynchronising every disk");
            for (i, disk) in files.iter().enumerate() {
                // Empty hashes: every block counts as changed.
                let mut s = Scanner::open(i as u32, &log_dir.join(format!("resync-{i}.none")))?;
                resynced_blocks += s.scan(&disk.path, &mut lock(&log))?.changed;
            }
        }
        if clean {
            std::fs::remove_file(&clean_marker).map_err(io("remove", &clean_marker))?;
        }
        // The disks are in the log as they are: a stop of an earlier
        // opening no longer holds checkpoints back.
        lock(&log).release_checkpoints();
        Ok(WritePath {
            log,
            disks: files,
            clean_marker,
            resynced_blocks,
            poisoned: None,
        })
    }

    /// Blocks appended by a resynchronisation when the group was opened.
    pub fn resynced_blocks(&self) -> u64 {
        self.resynced_blocks
    }

    /// Writes `data` at `offset` of disk `disk`: to the log, then the disk
    /// (the disk first when it grows an image file).
    pub fn write(&mut self, disk: u32, offset: u64, data: &[u8]) -> Result<(), ReplError> {
        self.usable()?;
        let Some(d) = self.disks.get_mut(disk as usize) else {
            return Err(ReplError::Poisoned(format!("no disk {disk} in this group")));
        };
        let end = offset.saturating_add(data.len() as u64);
        if end > d.len && d.block_device {
            return Err(ReplError::PastEnd {
                path: d.path.clone(),
                offset,
                len: data.len(),
                size: d.len,
            });
        }
        if end > d.len {
            // Growing an image file: the disk first. A write that fails
            // part-way leaves the file part-grown, and the resynchronisation
            // then gives the replica that length; a logged record would
            // have given it the whole write's.
            let written = d.file.write_all_at(data, offset);
            let path = d.path.clone();
            if let Err(e) = written {
                let why = format!(
                    "growing {} failed ({e}); reopen the group to resynchronise",
                    path.display()
                );
                lock(&self.log).hold_checkpoints(why.clone());
                return Err(self.poison(why, path, e));
            }
            d.len = end;
            let mut log = lock(&self.log);
            if let Err(e) = log.append(disk, offset, data) {
                let why = format!(
                    "{} holds a write the log refused ({e}); reopen the group to resynchronise",
                    path.display()
                );
                log.hold_checkpoints(why.clone());
                self.poisoned = Some(why);
                return Err(e);
            }
            return Ok(());
        }
        // The disk write under the log's lock: a checkpoint taken meanwhile
        // (a `WritePathChanges` point) would show the write before it is
        // known to be on the disk.
        let mut log = lock(&self.log);
        log.append(disk, offset, data)?;
        if let Err(e) = d.file.write_all_at(data, offset) {
            let path = d.path.clone();
            let why = format!(
                "writing {} failed ({e}); reopen the group to resynchronise",
                path.display()
            );
            log.hold_checkpoints(why.clone());
            drop(log);
            return Err(self.poison(why, path, e));
        }
        Ok(())
    }

    /// Stops the group after a failed disk write: the log may hold a write
    /// the disk does not, or the disk one the log does not.
    fn poison(&mut self, why: String, path: PathBuf, e: std::io::Error) -> ReplError {
        self.poisoned = Some(why);
        ReplError::Io {
            op: "write",
            path,
            cause: e,
        }
    }

    fn usable(&self) -> Result<(), ReplError> {
        match &self.poisoned {
            Some(why) => Err(ReplError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// A checkpoint of the whole group at `time_ms`: (id, seq) once durable.
    pub fn checkpoint(&mut self, time_ms: u64) -> Result<(u64, u64), ReplError> {
        self.usable()?;
        lock(&self.log).checkpoint(time_ms)
    }

    /// The log (shared with the shippers).
    pub fn log(&self) -> Arc<Mutex<Log>> {
        self.log.clone()
    }

    /// Closes cleanly: a checkpoint of everything written, and the marker
    /// that spares the next open a resynchronisation.
    pub fn close(self, time_ms: u64) -> Result<(), ReplError> {
        // A poisoned group closes without its marker: the next open
        // resynchronises.
        self.usable()?;
        lock(&self.log).checkpoint(time_ms)?;
        for d in &self.disks {
            d.file.sync_all().map_err(io("fsync", &d.path))?;
        }
        File::create(&self.clean_marker)
            .and_then(|f| f.sync_all())
            .map_err(io("create", &self.clean_marker))
    }
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A write-path group as a change source. Its writes are in the log as they
/// happen, so a point hands over no changes: its instant is the checkpoint
/// `capture` appends under the log's lock, between two writes, and it holds
/// exactly the writes appended before (every acknowledged one; a write in
/// progress either whole or not at all). A point-in-time source.
///
/// A stopped group begins no point, and its log refuses checkpoints until
/// the group is reopened (a write that failed on its disk after it was
/// logged stops the group under the log's lock, so no checkpoint ever
/// shows it).
pub struct WritePathChanges {
    group: Arc<Mutex<WritePath>>,
    first: bool,
}

impl WritePathChanges {
    /// The source over `group`, which its writers share.
    pub fn new(group: Arc<Mutex<WritePath>>) -> WritePathChanges {
        WritePathChanges { group, first: true }
    }
}

impl ChangeSource for WritePathChanges {
    fn consistency(&self) -> Consistency {
        Consistency::PointInTime
    }

    fn begin(&mut self) -> Result<Point, ReplError> {
        let g = self.group.lock().unwrap_or_else(PoisonError::into_inner);
        g.usable()?;
        // A resynchronised group's first point carries every block.
        let resynced = self.first && g.resynced_blocks > 0;
        Ok(Point {
            disks: g
                .disks
                .iter()
                .map(|d| PointDisk {
                    name: d.path.display().to_string(),
                    // As of `begin`: a write may grow an image file
                    // before the checkpoint (the point's changes are in
                    // the log already, so none is checked against it).
                    size: d.len,
                })
                .collect(),
            full: resynced,
            full_reason: resynced.then(|| {
                "the log was not closed cleanly: every block of every disk was resynchronised"
                    .to_owned()
            }),
        })
    }

    fn read_changes(&mut self, disk: u32, _sink: &mut Sink<'_>) -> Result<ScanStats, ReplError> {
        let g = self.group.lock().unwrap_or_else(PoisonError::into_inner);
        if disk as usize >= g.disks.len() {
            return Err(ReplError::Source(format!("no disk {disk} in this group")));
        }
        g.usable()?;
        Ok(ScanStats::default())
    }

    fn commit(&mut self) -> Result<(), ReplError> {
        self.first = false;
        Ok(())
    }

    fn abandon(&mut self, why: &str) {
        tracing::debug!(
            why,
            "write path point abandoned; its writes stay in the log"
        );
    }
}
