//! Where a replication point's changes come from, and how one point goes
//! into the log.
//!
//! A [`ChangeSource`] freezes a point in time of a group of disks, hands
//! over each disk's changed extents with their bytes, and is told whether
//! the point became durable. The hypervisor's change tracking is one
//! (libvirt: a checkpoint created with a pull-mode backup, the dirty
//! bitmap read over NBD; vSphere's CBT fits the same four steps: a
//! snapshot, `QueryChangedDiskAreas`, reads of the frozen disk, the
//! snapshot removed), and the block-hash scan of [`crate::scan`] is the
//! fallback for disks nobody tracks ([`HashScan`]). The write path records
//! writes as they happen: as a source
//! ([`crate::write_path::WritePathChanges`]) it hands over nothing and its
//! checkpoint is the point.
//!
//! [`capture`] runs one point: begin, every disk's changes appended to the
//! log, the checkpoint fsynced, then `commit`. A failure before the
//! checkpoint is durable abandons the point; the writes it already
//! appended stay in the log ahead of the next point, which covers every
//! change since the last committed one again (writes are absolute, so the
//! next checkpoint shows the disks as of the next point exactly).

use crate::error::ReplError;
use crate::log::Log;
use crate::scan::{ScanStats, Scanner};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// Largest piece of an extent appended as one record.
pub const PIECE: usize = 4 << 20;

/// What one capture of a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Every disk of the group as of one instant: a crash-consistent point.
    PointInTime,
    /// Each block as it was when it was read, while the disks may be
    /// written meanwhile: consistent only if nothing writes them.
    Fuzzy,
}

/// One disk of a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointDisk {
    /// Its name, for messages (`vda`, an image path).
    pub name: String,
    /// Its size in bytes at the point.
    pub size: u64,
}

/// What [`ChangeSource::begin`] froze.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// The disks, in group order (disk 0, 1, …).
    pub disks: Vec<PointDisk>,
    /// Whether every allocated block is sent (the first point, or one after
    /// the change tracking was lost), not only the changes.
    pub full: bool,
    /// Why it is full, when it is and this is not the first point.
    pub full_reason: Option<String>,
}

/// Receives a disk's changes: (offset, bytes), in ascending offsets.
pub type Sink<'a> = dyn FnMut(u64, &[u8]) -> Result<(), ReplError> + 'a;

/// Where a point's changed extents and their bytes come from. Called from a
/// blocking thread: an implementation may block (and may use a runtime
/// handle's `block_on` for its hypervisor's calls).
pub trait ChangeSource: Send {
    /// What a capture of this source is.
    fn consistency(&self) -> Consistency;

    /// Freezes the next point in time of every disk of the group.
    fn begin(&mut self) -> Result<Point, ReplError>;

    /// Feeds every changed extent of `disk` in the point begun to `sink`;
    /// returns what it read.
    fn read_changes(&mut self, disk: u32, sink: &mut Sink<'_>) -> Result<ScanStats, ReplError>;

    /// The point is durable in the log: it becomes the base of the next.
    fn commit(&mut self) -> Result<(), ReplError>;

    /// The point will not become durable (`why`): release what `begin`
    /// holds; the next point covers its changes again.
    fn abandon(&mut self, why: &str);
}

/// What one captured point did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The checkpoint: its id and log sequence.
    pub checkpoint: (u64, u64),
    /// What the point was.
    pub point: Point,
    /// What was read and appended, per disk.
    pub disks: Vec<ScanStats>,
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Captures one point of `source` into `log` as one checkpoint at
/// `time_ms`. The log's lock is taken per record, so shippers go on
/// reading it meanwhile.
pub fn capture(
    source: &mut dyn ChangeSource,
    log: &Mutex<Log>,
    time_ms: u64,
) -> Result<Captured, ReplError> {
    let point = source.begin()?;
    // A frozen point has a size; a scanned image file may grow meanwhile.
    let bounded = source.consistency() == Consistency::PointInTime;
    let mut disks = Vec::with_capacity(point.disks.len());
    let logged = (|| {
        for (i, d) in point.disks.iter().enumerate() {
            let mut sink = |offset: u64, data: &[u8]| -> Result<(), ReplError> {
                if bounded && offset.saturating_add(data.len() as u64) > d.size {
                    return Err(ReplError::Source(format!(
                        "{}: a change of {} bytes at {offset} is past the disk's {} bytes",
                        d.name,
                        data.len(),
                        d.size
                    )));
                }
                for (k, piece) in data.chunks(PIECE).enumerate() {
                    lock(log).append(i as u32, offset + (k * PIECE) as u64, piece)?;
                }
                Ok(())
            };
            disks.push(source.read_changes(i as u32, &mut sink)?);
        }
        lock(log).checkpoint(time_ms)
    })();
    match logged {
        Ok(checkpoint) => {
            source.commit()?;
            Ok(Captured {
                checkpoint,
                point,
                disks,
            })
        }
        Err(e) => {
            source.abandon(&e.to_string());
            Err(e)
        }
    }
}

/// The block-hash scan as a source: image files (or block devices) read
/// whole each point, blocks whose hash changed sent.
pub struct HashScan {
    images: Vec<PathBuf>,
    scanners: Vec<Scanner>,
    first: bool,
}

impl HashScan {
    /// The scan of `images`, disk 0, 1, … in order, their hashes kept in
    /// `state_dir` (`disk-N.hashes`).
    pub fn open(images: Vec<PathBuf>, state_dir: &std::path::Path) -> Result<HashScan, ReplError> {
        let mut scanners = Vec::with_capacity(images.len());
        for i in 0..images.len() {
            scanners.push(Scanner::open(
                i as u32,
                &state_dir.join(format!("disk-{i}.hashes")),
            )?);
        }
        let first = scanners.iter().all(Scanner::is_empty);
        Ok(HashScan {
            images,
            scanners,
            first,
        })
    }
}

impl ChangeSource for HashScan {
    fn consistency(&self) -> Consistency {
        Consistency::Fuzzy
    }

    fn begin(&mut self) -> Result<Point, ReplError> {
        let mut disks = Vec::with_capacity(self.images.len());
        for p in &self.images {
            disks.push(PointDisk {
                name: p.display().to_string(),
                size: crate::scan::disk_size(p)?,
            });
        }
        Ok(Point {
            disks,
            full: self.first,
            full_reason: None,
        })
    }

    fn read_changes(&mut self, disk: u32, sink: &mut Sink<'_>) -> Result<ScanStats, ReplError> {
        let (Some(s), Some(image)) = (
            self.scanners.get_mut(disk as usize),
            self.images.get(disk as usize),
        ) else {
            return Err(ReplError::Source(format!("no disk {disk} in this group")));
        };
        s.scan_into(image, sink)
    }

    fn commit(&mut self) -> Result<(), ReplError> {
        for s in &mut self.scanners {
            s.commit()?;
        }
        self.first = false;
        Ok(())
    }

    fn abandon(&mut self, why: &str) {
        tracing::debug!(
            why,
            "scan point abandoned; the next scan finds its blocks again"
        );
    }
}
