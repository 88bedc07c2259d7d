//! The write path: a protected group of disk images written through
//! replication. Each write goes to the log, then to the disk; a checkpoint
//! marks a crash-consistent point of the whole group.
//!
//! After a crash of the primary, writes after the last checkpoint can be on
//! a disk but not in the log (the log is fsynced at checkpoints only). So a
//! log that was not closed cleanly makes the group resynchronise: every
//! block of every disk goes into the next checkpoint, and the replicas equal
//! the disks again from then on.

use crate::error::{io, ReplError};
use crate::log::Log;
use crate::scan::Scanner;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A group of disks written through the log.
pub struct WritePath {
    log: Arc<Mutex<Log>>,
    disks: Vec<(PathBuf, File)>,
    clean_marker: PathBuf,
    resynced_blocks: u64,
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
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(d)
                .map_err(io("open", d))?;
            files.push((d.clone(), f));
        }
        let mut resynced_blocks = 0;
        let fresh = lock(&log).next_seq() == 1;
        if !clean && !fresh {
            tracing::warn!(log = %log_dir.display(), "replication log was not closed cleanly: resynchronising every disk");
            for (i, (path, _)) in files.iter().enumerate() {
                // Empty hashes: every block counts as changed.
                let mut s = Scanner::open(i as u32, &log_dir.join(format!("resync-{i}.none")))?;
                resynced_blocks += s.scan(path, &mut lock(&log))?.changed;
            }
        }
        if clean {
            std::fs::remove_file(&clean_marker).map_err(io("remove", &clean_marker))?;
        }
        Ok(WritePath {
            log,
            disks: files,
            clean_marker,
            resynced_blocks,
        })
    }

    /// Blocks appended by a resynchronisation when the group was opened.
    pub fn resynced_blocks(&self) -> u64 {
        self.resynced_blocks
    }

    /// Writes `data` at `offset` of disk `disk`: to the log, then the disk.
    pub fn write(&mut self, disk: u32, offset: u64, data: &[u8]) -> Result<(), ReplError> {
        let Some((path, f)) = self.disks.get(disk as usize) else {
            return Err(ReplError::Poisoned(format!("no disk {disk} in this group")));
        };
        let path = path.clone();
        let f = f.try_clone().map_err(io("clone", &path))?;
        lock(&self.log).append(disk, offset, data)?;
        f.write_all_at(data, offset).map_err(io("write", &path))
    }

    /// A checkpoint of the whole group at `time_ms`: (id, seq) once durable.
    pub fn checkpoint(&mut self, time_ms: u64) -> Result<(u64, u64), ReplError> {
        lock(&self.log).checkpoint(time_ms)
    }

    /// The log (shared with the shippers).
    pub fn log(&self) -> Arc<Mutex<Log>> {
        self.log.clone()
    }

    /// Closes cleanly: a checkpoint of everything written, and the marker
    /// that spares the next open a resynchronisation.
    pub fn close(self, time_ms: u64) -> Result<(), ReplError> {
        lock(&self.log).checkpoint(time_ms)?;
        for (path, f) in &self.disks {
            f.sync_all().map_err(io("fsync", path))?;
        }
        File::create(&self.clean_marker)
            .and_then(|f| f.sync_all())
            .map_err(io("create", &self.clean_marker))
    }
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}
