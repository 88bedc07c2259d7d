//! A replica: base disk images at one checkpoint, plus one file per newer
//! checkpoint holding its writes. It only ever shows complete checkpoints:
//! a checkpoint's file is written aside, fsynced and renamed into place in
//! one step, and only then acknowledged.
//!
//! ```text
//! meta                 "base <id> <seq> <time_ms>": the images' checkpoint
//! disk-<n>.img         base images
//! cp-<id>.ckpt         the writes of checkpoint <id>, then its record
//! merging-<id>         a merge of the checkpoints up to <id> into the
//!                      images is under way
//! incoming.tmp         the checkpoint being received (dropped on restart)
//! spare.ckpt           a merged checkpoint's file kept to be written over
//!                      by the next one
//! lock                 held (flock) by the one process that has it open
//! stream               the identity of the stream it holds (see
//!                      [`crate::stream`]), fixed by the first records
//!                      it receives
//! ```
//!
//! The newest `keep` checkpoints stay separate (point-in-time recovery);
//! older ones are merged into the base images, several at a time and after
//! the newest is acknowledged (the receiver calls [`Replica::merge_due`]
//! between frames): a merge costs four fsyncs whatever it folds, and on a
//! slow disk those fsyncs on the acknowledgement path were most of a
//! checkpoint's latency. Writes are absolute, so a merge interrupted by a
//! crash is simply done again.

use crate::error::{io, ReplError};
use crate::record::{self, Record};
use crate::stream::StreamId;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A checkpoint a replica holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its id.
    pub id: u64,
    /// Its record's sequence number.
    pub seq: u64,
    /// When the primary took it, ms since the Unix epoch.
    pub time_ms: u64,
}

/// A checkpoint kept apart from the base.
#[derive(Clone, Debug)]
struct Kept {
    info: CheckpointInfo,
    /// Its file's size.
    bytes: u64,
    /// The disks it writes to.
    disks: BTreeSet<u32>,
}

/// One replica of a protected group of disks.
pub struct Replica {
    dir: PathBuf,
    keep: usize,
    base: CheckpointInfo,
    checkpoints: BTreeMap<u64, Kept>,
    /// The checkpoint being received, streamed to `incoming.tmp` so a large
    /// one does not sit in memory.
    incoming: Option<std::io::BufWriter<File>>,
    /// Bytes of records in `incoming.tmp` (a recycled file may be longer).
    incoming_len: u64,
    /// The disks the checkpoint being received writes to.
    incoming_disks: BTreeSet<u32>,
    /// The disks of the base images.
    base_disks: BTreeSet<u32>,
    /// The stream it holds; `None` until the first records arrive.
    stream: Option<StreamId>,
    pending: u64,
    buf: Vec<u8>,
    next_seq: u64,
    /// Why it stopped (a merge failed part-way), if it did.
    broken: Option<String>,
    /// The directory's lock, held while this replica is open.
    _lock: File,
}

fn sync_dir(dir: &Path) -> Result<(), ReplError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// A merged checkpoint's file, kept to be written over by the next one.
const SPARE: &str = "spare.ckpt";
/// Checkpoints beyond `keep` wait for this many to be merged together...
const MERGE_COUNT: usize = 4;
/// ...or for this many bytes: a large checkpoint (an initial copy) is not
/// left to hold its disk space.
const MERGE_BYTES: u64 = 64 << 20;

/// Larger checkpoint files are not kept as the spare: reusing one for a
/// small checkpoint cuts it down before the fsync, and on ext4 cutting
/// 200 MB off stalled that fsync, and the primary's log fsync on the same
/// disk, for 2 s (`repl-bench`'s RPO phase after its 10 % deltas); a
/// deleted file frees its blocks off that path. On tmpfs a spare also
/// holds its size in memory.
const MAX_SPARE: u64 = 72 << 20;

fn cp_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("cp-{id:020}.ckpt"))
}

/// The marker of a merge through checkpoint `id` under way.
fn marker_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("merging-{id}"))
}

fn remove_marker(dir: &Path, id: u64) -> Result<(), ReplError> {
    let marker = marker_path(dir, id);
    fs::remove_file(&marker).map_err(io("remove", &marker))
}

fn disk_path(dir: &Path, disk: u32) -> PathBuf {
    dir.join(format!("disk-{disk}.img"))
}

/// One write of a checkpoint file, borrowed from the read buffer.
struct WriteRef<'b> {
    disk: u32,
    offset: u64,
    data: &'b [u8],
}

/// A checkpoint file read in chunks straight into one buffer, handing
/// out each record from there (a buffered reader copied every byte a
/// second time).
struct Chunks<'f> {
    file: &'f File,
    size: u64,
    buf: Vec<u8>,
    /// `buf[pos..filled]` holds the file from the record being read on.
    pos: usize,
    filled: usize,
}

impl<'f> Chunks<'f> {
    fn new(file: &'f File, size: u64) -> Self {
        Chunks {
            file,
            size,
            buf: Vec::new(),
            pos: 0,
            filled: 0,
        }
    }

    /// The record at file offset `at` (where `pos` stands), by its length
    /// field, not yet checked. An error says why, for the caller to locate.
    fn record(&mut self, at: u64) -> Result<&[u8], String> {
        let head = self.get(at, record::HEADER)?;
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let total = record::HEADER + len as usize;
        if total > record::MAX_RECORD {
            return Err("length over the record limit".into());
        }
        self.get(at, total)
    }

    /// Bytes read at a time.
    const CHUNK: usize = 1 << 20;
    /// A partial record up to this size is moved to the buffer's front
    /// before the next read; a larger one has its rest read behind it.
    const MOVE_AT_MOST: usize = 64 << 10;

    /// The `need` bytes from file offset `at` (where `pos` stands), read
    /// if not yet there. An error says why, for the caller to locate.
    fn get(&mut self, at: u64, need: usize) -> Result<&[u8], String> {
        if self.filled - self.pos < need {
            let left = self.size - at;
            if need as u64 > left {
                return Err(format!(
                    "truncated: {need} bytes needed, {left} left in the file"
                ));
            }
            let end = if self.filled - self.pos <= Self::MOVE_AT_MOST {
                self.buf.copy_within(self.pos..self.filled, 0);
                self.filled -= self.pos;
                self.pos = 0;
                need.max(Self::CHUNK)
                    .min(usize::try_from(left).unwrap_or(usize::MAX))
            } else {
                // Only this record's rest: it is then used up, and the
                // next read starts at the buffer's front again.
                self.pos + need
            };
            if self.buf.len() < end {
                self.buf.resize(end, 0);
            }
            let from = at + (self.filled - self.pos) as u64;
            self.file
                .read_exact_at(&mut self.buf[self.filled..end], from)
                .map_err(|e| format!("read: {e}"))?;
            self.filled = end;
        }
        Ok(&self.buf[self.pos..self.pos + need])
    }
}

/// Reads a checkpoint file record by record, handing each write to
/// `on_write`, and returns its closing checkpoint record. Any damage is an
/// error naming the file and offset.
fn read_checkpoint(
    path: &Path,
    mut on_write: impl FnMut(WriteRef<'_>) -> Result<(), ReplError>,
) -> Result<CheckpointInfo, ReplError> {
    let file = File::open(path).map_err(io("open", path))?;
    let size = file.metadata().map_err(io("stat", path))?.len();
    let corrupt = |offset: u64, reason: String| ReplError::Corrupt {
        path: path.to_owned(),
        offset,
        reason,
    };
    let mut chunks = Chunks::new(&file, size);
    let mut at = 0u64;
    while at < size {
        let rec = chunks.record(at).map_err(|e| corrupt(at, e))?;
        let (header, n) = record::check(rec).map_err(|e| corrupt(at, e.to_string()))?;
        match header {
            record::Header::Write { disk, offset, .. } => on_write(WriteRef {
                disk,
                offset,
                data: record::write_data(rec, header),
            })?,
            record::Header::Checkpoint { seq, id, time_ms } => {
                if at + n as u64 != size {
                    return Err(corrupt(
                        at + n as u64,
                        "data after the checkpoint record".into(),
                    ));
                }
                return Ok(CheckpointInfo { id, seq, time_ms });
            }
        }
        chunks.pos += n;
        at += n as u64;
    }
    Err(corrupt(at, "no closing checkpoint record".into()))
}

/// The checkpoint a checkpoint file closes with (checks the whole file).
pub fn read_checkpoint_info(path: &Path) -> Result<CheckpointInfo, ReplError> {
    read_checkpoint(path, |_| Ok(()))
}

/// How many bytes of a checkpoint being received (`incoming.tmp`, read
/// while a receiver writes it) hold its records, from sequence `next_seq`
/// on: a recycled file still holds an older checkpoint's records behind
/// them, and the last record may be half-written, so its length says
/// nothing.
pub fn received_bytes(path: &Path, next_seq: u64) -> Result<u64, ReplError> {
    let file = File::open(path).map_err(io("open", path))?;
    let size = file.metadata().map_err(io("stat", path))?.len();
    let mut chunks = Chunks::new(&file, size);
    let (mut at, mut seq) = (0u64, next_seq);
    while at < size {
        let checked = chunks
            .record(at)
            .ok()
            .and_then(|rec| record::check(rec).ok());
        match checked {
            Some((header, n)) if header.seq() == seq => {
                seq += 1;
                chunks.pos += n;
                at += n as u64;
            }
            _ => break,
        }
    }
    Ok(at)
}

/// Disk images of a replica directory, opened on first use.
struct Images<'a> {
    dir: &'a Path,
    files: BTreeMap<u32, File>,
}

impl<'a> Images<'a> {
    fn new(dir: &'a Path) -> Self {
        Images {
            dir,
            files: BTreeMap::new(),
        }
    }

    fn write(&mut self, w: WriteRef<'_>) -> Result<(), ReplError> {
        let path = disk_path(self.dir, w.disk);
        let f = match self.files.entry(w.disk) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io("open", &path))?,
            ),
        };
        f.write_all_at(w.data, w.offset).map_err(io("write", &path))
    }

    fn sync(self) -> Result<(), ReplError> {
        for (disk, f) in self.files {
            f.sync_data()
                .map_err(io("fsync", disk_path(self.dir, disk)))?;
        }
        Ok(())
    }
}

impl Replica {
    /// Opens (or creates) a replica in `dir` keeping `keep` checkpoints
    /// apart from the base. Finishes an interrupted merge, drops a partly
    /// received checkpoint, and checks every kept checkpoint file.
    pub fn open(dir: &Path, keep: usize) -> Result<Replica, ReplError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let lock = crate::error::lock_dir(dir)?;
        let _ = fs::remove_file(dir.join("incoming.tmp"));
        let meta_path = dir.join("meta");
        let base = match fs::read_to_string(&meta_path) {
            Ok(text) => {
                let f: Vec<u64> = text
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                match (text.starts_with("base "), f.as_slice()) {
                    (true, [id, seq, time_ms]) => CheckpointInfo {
                        id: *id,
                        seq: *seq,
                        time_ms: *time_ms,
                    },
                    _ => {
                        return Err(ReplError::Corrupt {
                            path: meta_path,
                            offset: 0,
                            reason: format!("unreadable meta {text:?}"),
                        })
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CheckpointInfo {
                id: 0,
                seq: 0,
                time_ms: 0,
            },
            Err(e) => {
                return Err(ReplError::Io {
                    op: "read",
                    path: meta_path,
                    cause: e,
                })
            }
        };
        let stream = StreamId::load(dir)?;
        let mut r = Replica {
            dir: dir.to_owned(),
            keep: keep.max(1),
            base,
            checkpoints: BTreeMap::new(),
            incoming: None,
            incoming_len: 0,
            incoming_disks: BTreeSet::new(),
            base_disks: BTreeSet::new(),
            stream,
            pending: 0,
            buf: Vec::new(),
            next_seq: base.seq + 1,
            broken: None,
            _lock: lock,
        };
        let mut markers = Vec::new();
        let mut ids = Vec::new();
        for e in fs::read_dir(dir)
            .map_err(io("list", dir))?
            .filter_map(|e| e.ok())
        {
            let name = e.file_name().into_string().unwrap_or_default();
            if let Some(id) = name
                .strip_prefix("merging-")
                .and_then(|x| x.parse::<u64>().ok())
            {
                markers.push(id);
            } else if let Some(disk) = name
                .strip_prefix("disk-")
                .and_then(|x| x.strip_suffix(".img"))
                .and_then(|x| x.parse::<u32>().ok())
            {
                r.base_disks.insert(disk);
            } else if let Some(id) = name
                .strip_prefix("cp-")
                .and_then(|x| x.strip_suffix(".ckpt"))
                .and_then(|x| x.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        for id in ids {
            let path = cp_path(dir, id);
            if id <= r.base.id {
                // Merged already; the delete did not happen before a crash.
                fs::remove_file(&path).map_err(io("remove", &path))?;
                continue;
            }
            let mut disks = BTreeSet::new();
            let info = read_checkpoint(&path, |w| {
                disks.insert(w.disk);
                Ok(())
            })?;
            if info.id != id {
                return Err(ReplError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("holds checkpoint {} under the name of {id}", info.id),
                });
            }
            let bytes = fs::metadata(&path).map_err(io("stat", &path))?.len();
            r.checkpoints.insert(id, Kept { info, bytes, disks });
        }
        // One marker at most survives a crash (the next merge's fsync of
        // the directory follows the last one's removal); an older one
        // belongs to a merge that ended before the newest began.
        markers.sort_unstable();
        let newest = markers.pop();
        for id in markers {
            remove_marker(dir, id)?;
        }
        match newest {
            Some(id) if id > r.base.id => {
                // Every file it folds was checked just above, before the
                // images are touched again.
                tracing::warn!(through = id, "finishing an interrupted merge");
                r.merge_through(id)?;
            }
            // Stopped after the meta was written, which follows the images'
            // fsync: only its clean-up was left (the merged files went
            // above).
            Some(id) => remove_marker(dir, id)?,
            None => {}
        }
        r.next_seq = r.newest().map_or(r.base.seq, |c| c.seq) + 1;
        Ok(r)
    }

    /// The stream it holds, once it has received records.
    pub fn stream_id(&self) -> Option<StreamId> {
        self.stream
    }

    /// Takes the records of stream `id` from now on: a replica that holds
    /// another stream refuses (nothing is written); one that holds none yet
    /// (new, or made before stream identities) is bound to `id` for good.
    /// The receiver calls this before it applies a connection's first
    /// records.
    pub fn bind(&mut self, id: StreamId) -> Result<(), ReplError> {
        match self.stream {
            Some(ours) if ours == id => Ok(()),
            Some(ours) => Err(ReplError::OtherStream {
                replica: ours,
                shipper: id,
            }),
            None => {
                if self.newest().is_some() {
                    tracing::warn!(dir = %self.dir.display(), stream = %id,
                        "a replica without a stream identity (made by an older vmdr) takes the stream it receives");
                }
                id.store(&self.dir)?;
                self.stream = Some(id);
                Ok(())
            }
        }
    }

    /// Refuses stream `id` if this replica holds another one (the check
    /// [`Replica::bind`] makes, without binding).
    pub fn check_stream(&self, id: StreamId) -> Result<(), ReplError> {
        match self.stream {
            Some(ours) if ours != id => Err(ReplError::OtherStream {
                replica: ours,
                shipper: id,
            }),
            _ => Ok(()),
        }
    }

    /// The disks it holds at checkpoint `id`.
    pub fn disks_at(&self, id: u64) -> BTreeSet<u32> {
        let mut disks = self.base_disks.clone();
        for k in self.checkpoints.range(..=id).map(|(_, k)| k) {
            disks.extend(&k.disks);
        }
        disks
    }

    /// The newest complete checkpoint.
    pub fn newest(&self) -> Option<CheckpointInfo> {
        self.checkpoints
            .values()
            .next_back()
            .map(|k| k.info)
            .or((self.base.id > 0).then_some(self.base))
    }

    /// The sequence up to which everything is durable here: a sender resumes
    /// after it.
    pub fn acked_seq(&self) -> u64 {
        self.next_seq
            .saturating_sub(1)
            .min(self.newest().map_or(0, |c| c.seq))
    }

    /// Checkpoints that can be presented, oldest first.
    pub fn checkpoints(&self) -> Vec<CheckpointInfo> {
        let base = (self.base.id > 0).then_some(self.base);
        base.into_iter()
            .chain(self.checkpoints.values().map(|k| k.info))
            .collect()
    }

    /// Recovery point objective now: how old the newest complete checkpoint
    /// is. `None` before the first one.
    pub fn rpo_ms(&self, now_ms: u64) -> Option<u64> {
        self.newest().map(|c| now_ms.saturating_sub(c.time_ms))
    }

    /// Bytes received for the checkpoint in progress (the lag it holds).
    pub fn pending_bytes(&self) -> u64 {
        self.pending
    }

    /// Drops the checkpoint in progress after a failure: the sender resends
    /// from the last acknowledged checkpoint.
    fn abandon(&mut self) {
        self.incoming = None;
        self.incoming_disks.clear();
        let _ = fs::remove_file(self.dir.join("incoming.tmp"));
        self.pending = 0;
        self.next_seq = self.acked_seq() + 1;
    }

    /// Takes one record from the stream. A record already applied is
    /// ignored (resending is harmless); a gap is an error. Returns the
    /// checkpoint that became durable, if this record completed one.
    pub fn apply(&mut self, r: &Record) -> Result<Option<CheckpointInfo>, ReplError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        r.encode(&mut buf);
        // A batch of one: it completes at most one checkpoint.
        let result = self.apply_batch(&buf).map(|mut done| done.pop());
        self.buf = buf;
        result
    }

    /// Takes a batch of encoded records as a shipper sends them (a frame's
    /// payload): each is checked, the ones already here are skipped, and
    /// the rest are written out in runs, one write per run up to each
    /// checkpoint. Returns the checkpoints that became durable (merging
    /// older ones into the base is [`Replica::merge_due`]'s). A bad record
    /// fails the batch at its offset after the good ones before it.
    pub fn apply_batch(&mut self, batch: &[u8]) -> Result<Vec<CheckpointInfo>, ReplError> {
        self.usable()?;
        let mut done = Vec::new();
        let mut at = 0;
        // The records accepted and not yet written out: batch[run..at].
        let mut run = 0;
        while at < batch.len() {
            let checked = record::check(&batch[at..]).map_err(|e| ReplError::Corrupt {
                path: PathBuf::from("<received batch>"),
                offset: at as u64,
                reason: e.to_string(),
            });
            let (header, n) = match checked {
                Ok(c) => c,
                Err(e) => {
                    self.stream(&batch[run..at])?;
                    return Err(e);
                }
            };
            let seq = header.seq();
            if seq != self.next_seq {
                self.stream(&batch[run..at])?;
                if seq > self.next_seq {
                    return Err(ReplError::Gap {
                        expected: self.next_seq,
                        got: seq,
                    });
                }
                // Already here: resending is harmless.
                at += n;
                run = at;
                continue;
            }
            self.next_seq += 1;
            at += n;
            if let record::Header::Write { disk, .. } = header {
                self.incoming_disks.insert(disk);
            }
            if let record::Header::Checkpoint { seq, id, time_ms } = header {
                self.stream(&batch[run..at])?;
                run = at;
                done.push(self.complete(CheckpointInfo { id, seq, time_ms })?);
            }
        }
        self.stream(&batch[run..at])?;
        Ok(done)
    }

    /// Appends accepted records to the checkpoint being received.
    fn stream(&mut self, bytes: &[u8]) -> Result<(), ReplError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let tmp = self.dir.join("incoming.tmp");
        let streamed = (|| -> std::io::Result<()> {
            if self.incoming.is_none() {
                // Writing over a merged checkpoint's file instead of a new
                // one spares allocating and then freeing every page of
                // every checkpoint (a third of a receiver's system time on
                // tmpfs); PostgreSQL recycles its WAL segments likewise.
                let spare = self.dir.join(SPARE);
                let file = match fs::rename(&spare, &tmp) {
                    Ok(()) => OpenOptions::new().write(true).open(&tmp)?,
                    Err(_) => File::create(&tmp)?,
                };
                self.incoming = Some(std::io::BufWriter::with_capacity(1 << 20, file));
                self.incoming_len = 0;
            }
            if let Some(f) = self.incoming.as_mut() {
                f.write_all(bytes)?;
            }
            Ok(())
        })();
        if let Err(e) = streamed {
            // Disk full or worse: nothing half-written is ever shown.
            self.abandon();
            return Err(ReplError::Io {
                op: "write",
                path: tmp,
                cause: e,
            });
        }
        self.pending += bytes.len() as u64;
        self.incoming_len += bytes.len() as u64;
        Ok(())
    }

    /// Makes the checkpoint just received durable and visible: fsync,
    /// rename into place, fsync the directory. Merging is left to
    /// [`Replica::merge_due`].
    fn complete(&mut self, info: CheckpointInfo) -> Result<CheckpointInfo, ReplError> {
        let tmp = self.dir.join("incoming.tmp");
        let len = self.incoming_len;
        let finished = match self.incoming.take() {
            Some(f) => f
                .into_inner()
                .map_err(|e| e.into_error())
                // A recycled file may hold an older, longer checkpoint.
                .and_then(|f| f.set_len(len).and_then(|()| f.sync_all())),
            None => Ok(()),
        };
        if let Err(e) = finished {
            self.abandon();
            return Err(ReplError::Io {
                op: "fsync",
                path: tmp,
                cause: e,
            });
        }
        let path = cp_path(&self.dir, info.id);
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        sync_dir(&self.dir)?;
        self.pending = 0;
        let bytes = len;
        let disks = std::mem::take(&mut self.incoming_disks);
        self.checkpoints
            .insert(info.id, Kept { info, bytes, disks });
        Ok(info)
    }

    /// The checkpoints beyond `keep`, oldest first: the ones a merge folds.
    fn beyond_keep(&self) -> impl Iterator<Item = &Kept> {
        let n = self.checkpoints.len().saturating_sub(self.keep);
        self.checkpoints.values().take(n)
    }

    /// How many checkpoints beyond `keep` wait to be merged into the base.
    pub fn merges_waiting(&self) -> usize {
        self.beyond_keep().count()
    }

    /// Merges the checkpoints beyond `keep` into the base if enough of them
    /// wait (by count or by size); returns how many it merged. The receiver
    /// calls this after acknowledging, so a merge's fsyncs are not on the
    /// acknowledgement path.
    pub fn merge_due(&mut self) -> Result<usize, ReplError> {
        let (count, bytes) = self
            .beyond_keep()
            .fold((0, 0), |(n, b), k| (n + 1, b + k.bytes));
        if count >= MERGE_COUNT || (count > 0 && bytes >= MERGE_BYTES) {
            self.merge_waiting()
        } else {
            Ok(0)
        }
    }

    /// Merges every checkpoint beyond `keep` into the base now; returns how
    /// many.
    pub fn merge_waiting(&mut self) -> Result<usize, ReplError> {
        self.usable()?;
        let Some(last) = self.beyond_keep().last().map(|k| k.info.id) else {
            return Ok(0);
        };
        // The files were checked record by record as they arrived (or when
        // the replica opened): not read twice here. Damage since then stops
        // the merge part-way, and this replica with it.
        self.merge_through(last)
            .inspect_err(|e| self.broken = Some(e.to_string()))
    }

    fn usable(&self) -> Result<(), ReplError> {
        match &self.broken {
            Some(why) => Err(ReplError::Broken(why.clone())),
            None => Ok(()),
        }
    }

    /// Folds the checkpoints up to `last` into the base images, in order,
    /// with one fsync of the images for all of them. The `merging-` marker
    /// makes a merge stopped part-way (crash or damage) redo itself at the
    /// next open, which checks every file first and refuses to open,
    /// naming a damaged one.
    fn merge_through(&mut self, last: u64) -> Result<usize, ReplError> {
        let ids: Vec<u64> = self.checkpoints.range(..=last).map(|(&id, _)| id).collect();
        let marker = marker_path(&self.dir, last);
        File::create(&marker).map_err(io("create", &marker))?;
        sync_dir(&self.dir)?;
        let mut images = Images::new(&self.dir);
        let mut info = self.base;
        for &id in &ids {
            info = read_checkpoint(&cp_path(&self.dir, id), |w| images.write(w))?;
        }
        images.sync()?;
        let meta = self.dir.join("meta");
        let tmp = self.dir.join("meta.tmp");
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("base {} {} {}\n", info.id, info.seq, info.time_ms).as_bytes())
                    .and_then(|()| f.sync_all())
            })
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &meta).map_err(io("rename", &meta))?;
        // The new base is durable before any merged file goes; their
        // removal is made durable by the next fsync of the directory (one
        // found again at open is removed there).
        sync_dir(&self.dir)?;
        self.base = info;
        for &id in &ids {
            let path = cp_path(&self.dir, id);
            let spare = self.dir.join(SPARE);
            let kept = self.checkpoints.remove(&id);
            let small = kept.as_ref().is_some_and(|k| k.bytes <= MAX_SPARE);
            self.base_disks.extend(kept.iter().flat_map(|k| &k.disks));
            if small && !spare.exists() {
                fs::rename(&path, &spare).map_err(io("rename", &path))?;
            } else {
                fs::remove_file(&path).map_err(io("remove", &path))?;
            }
        }
        remove_marker(&self.dir, last)?;
        Ok(ids.len())
    }

    /// Writes disk `disk` as it was at checkpoint `id` to `out`.
    pub fn restore(&self, id: u64, disk: u32, out: &Path) -> Result<(), ReplError> {
        self.usable()?;
        if id < self.base.id
            || (id > self.base.id && !self.checkpoints.contains_key(&id))
            || (id == 0 && self.base.id == 0)
        {
            return Err(ReplError::NoCheckpoint(id));
        }
        let have = self.disks_at(id);
        if !have.contains(&disk) {
            // Before `out` is created: no empty image is left behind that
            // could pass for the disk.
            return Err(ReplError::NoDisk {
                disk,
                checkpoint: id,
                have: have.into_iter().collect(),
            });
        }
        let mut o = File::create(out).map_err(io("create", out))?;
        let base = disk_path(&self.dir, disk);
        match File::open(&base) {
            Ok(mut b) => {
                std::io::copy(&mut b, &mut o).map_err(io("copy", &base))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ReplError::Io {
                    op: "open",
                    path: base,
                    cause: e,
                })
            }
        }
        for &cid in self.checkpoints.range(..=id).map(|(cid, _)| cid) {
            read_checkpoint(&cp_path(&self.dir, cid), |w| {
                if w.disk != disk {
                    return Ok(());
                }
                o.write_all_at(w.data, w.offset).map_err(io("write", out))
            })?;
        }
        o.sync_all().map_err(io("fsync", out))
    }
}
