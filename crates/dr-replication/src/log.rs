//! The primary's durable, append-only change log: checksummed records in
//! segment files.
//!
//! Durability: records are buffered and reach the disk, fsynced, at every
//! checkpoint; a checkpoint returned by [`Log::checkpoint`] survives a crash
//! with every write before it. A crash between checkpoints can leave a torn
//! record at the end of the last segment: it is cut off when the log is
//! opened again. A bad record anywhere else is corruption, reported with its
//! file and offset, never skipped.

use crate::error::{io, ReplError};
use crate::record::{self, DecodeError, Record, Write};
use crate::stream::StreamId;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write as _};
use std::path::{Path, PathBuf};

/// How the log is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment starts after a checkpoint once the active one is this
    /// large.
    pub segment_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
        }
    }
}

#[derive(Clone, Debug)]
struct Segment {
    first_seq: u64,
    /// Sequence of its last record (`first_seq - 1` when empty).
    last_seq: u64,
    path: PathBuf,
    /// (seq, byte offset) of a record every `INDEX_EVERY` records or
    /// `INDEX_BYTES` bytes, whichever comes first, so a reader starts at
    /// most that far before where it wants instead of at the segment's
    /// start (with large records a count alone left whole segments to skip).
    index: Vec<(u64, u64)>,
    /// Bytes of records in it.
    len: u64,
    /// (seq, byte offset after it) of every checkpoint record in it: a
    /// replica acknowledges checkpoints, so its lag is counted from these
    /// exactly (the sparse index alone overstated it by up to 64 records
    /// and grew with every checkpoint until the next index entry).
    checkpoints: Vec<(u64, u64)>,
}

/// An index entry at least every this many records...
const INDEX_EVERY: u64 = 64;
/// ...and every this many bytes.
const INDEX_BYTES: u64 = 1 << 20;

impl Segment {
    /// Indexes the record `seq` at byte `at` if it is due.
    fn note(&mut self, seq: u64, at: u64) {
        let due = self
            .index
            .last()
            .is_none_or(|&(s, off)| seq - s >= INDEX_EVERY || at - off >= INDEX_BYTES);
        if due {
            self.index.push((seq, at));
        }
    }

    /// Byte offset of the last indexed record at or before `seq`.
    fn start_for(&self, seq: u64) -> u64 {
        self.index
            .iter()
            .rev()
            .find(|(q, _)| *q <= seq)
            .map_or(0, |(_, off)| *off)
    }
}

/// The log.
pub struct Log {
    dir: PathBuf,
    cfg: LogConfig,
    segments: Vec<Segment>,
    out: BufWriter<File>,
    active_len: u64,
    next_seq: u64,
    next_checkpoint: u64,
    last_checkpoint: Option<(u64, u64, u64)>,
    buf: Vec<u8>,
    poisoned: Option<String>,
    /// Why checkpoints are refused for now: a group writing through the
    /// log stopped with a record its disk may not hold (appends go on).
    held: Option<String>,
    /// Where recent reads of the shipping path ended, as (the next record's
    /// sequence, its segment's first sequence, its byte offset there), the
    /// newest last: the next batch of each shipper starts exactly there,
    /// not at an index entry up to a MiB before (whose records it would
    /// read, check and drop: 2.5 times the reads with 256 KiB records).
    resume: Vec<(u64, u64, u64)>,
    /// Segments open for the shipping path's reads, by first sequence, the
    /// most recently used last: kept for the next batch (an open per batch
    /// was 3 % of a shipper's time with 256 KiB frames), a few at most
    /// (a far-behind replica reads through many segments). They see what
    /// is appended later.
    readers: Vec<(u64, File)>,
    /// Which stream this log records (drawn when it was created).
    stream: StreamId,
    /// The directory's lock: one process per log.
    _lock: File,
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

fn sync_dir(dir: &Path) -> Result<(), ReplError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// Reads every record of a segment file. A bad record at the very end of
/// the file is a torn tail when `tail_ok`: the records before it and the
/// offset to cut at are returned. Anything else bad is corruption.
fn scan(path: &Path, tail_ok: bool) -> Result<(Vec<Record>, Option<u64>), ReplError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io("read", path))?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match record::decode(&bytes[at..]) {
            Ok((r, n)) => {
                out.push(r);
                at += n;
            }
            Err(e) => {
                let claimed_end = (bytes.len() - at >= record::HEADER).then(|| {
                    at + record::HEADER
                        + u32::from_le_bytes([
                            bytes[at + 4],
                            bytes[at + 5],
                            bytes[at + 6],
                            bytes[at + 7],
                        ]) as usize
                });
                let is_tail = matches!(e, DecodeError::Truncated { .. })
                    || claimed_end.is_some_and(|end| end >= bytes.len());
                if tail_ok && is_tail {
                    return Ok((out, Some(at as u64)));
                }
                return Err(ReplError::Corrupt {
                    path: path.to_owned(),
                    offset: at as u64,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok((out, None))
}

/// Read-ahead of the shipping path, so small records do not cost a system
/// call each.
const READ_AHEAD: usize = 1 << 20;

/// Where a read of the shipping path stopped in a segment.
struct Stop {
    /// `out` holds `max` bytes.
    full: bool,
    /// The sequence and byte offset of the record after the last one taken.
    next: Option<(u64, u64)>,
}

/// Appends to `out` the records of segment `s` from sequence `from` on,
/// each checked, read straight into `out`'s buffer (one copy out of the
/// page cache), until `out` holds `max` bytes or the segment ends.
/// `exact`: the byte offset where record `from` starts, if known.
fn read_segment(
    s: &Segment,
    mut f: &File,
    from: u64,
    exact: Option<u64>,
    max: usize,
    out: &mut Encoded,
) -> Result<Stop, ReplError> {
    use std::io::{Seek, SeekFrom};
    let path = &s.path;
    let start = exact.unwrap_or_else(|| s.start_for(from));
    f.seek(SeekFrom::Start(start)).map_err(io("seek", path))?;
    let corrupt = |offset: u64, reason: String| ReplError::Corrupt {
        path: path.clone(),
        offset,
        reason,
    };
    // Bytes of whole records from `start` to the segment's end.
    let mut unread = s.len.saturating_sub(start);
    let base = out.bytes.len();
    // `out.bytes[base..checked]` are checked records; records before
    // `skip_to` precede `from` and are dropped; `at` is the file offset of
    // `checked`.
    let (mut checked, mut skip_to, mut at) = (base, base, start);
    let mut next = None;
    let full = loop {
        let have = out.bytes.len() - checked;
        let need = if have < record::HEADER {
            record::HEADER
        } else {
            let b = &out.bytes[checked..];
            record::HEADER + u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize
        };
        if need > record::MAX_RECORD {
            return Err(corrupt(at, "record length over the limit".into()));
        }
        if have < need {
            if unread == 0 {
                if have > 0 {
                    return Err(corrupt(at, "a record runs past the segment's end".into()));
                }
                break false;
            }
            // Read ahead, but not past the batch: what a read brings
            // beyond the record that fills it is dropped, and read again
            // for the next batch (a quarter of all reads with 1 MiB
            // records in 4 MiB batches).
            let room = max.saturating_sub(out.bytes.len());
            let want = (need - have).max(READ_AHEAD.min(room)).min(unread as usize);
            // `read_to_end` fills spare capacity without zeroing it first.
            out.bytes.reserve(want);
            let got = (&mut f)
                .take(want as u64)
                .read_to_end(&mut out.bytes)
                .map_err(io("read", path))?;
            if got < want {
                return Err(corrupt(
                    at + (have + got) as u64,
                    "segment shorter than its records".into(),
                ));
            }
            unread -= want as u64;
            continue;
        }
        let (header, n) =
            record::check(&out.bytes[checked..]).map_err(|e| corrupt(at, e.to_string()))?;
        if exact == Some(at) && header.seq() != from {
            return Err(corrupt(
                at,
                format!(
                    "record {} where the last read left record {from}",
                    header.seq()
                ),
            ));
        }
        if header.seq() < from {
            skip_to = checked + n;
        } else {
            if skip_to > base {
                // The index starts a little before `from`: drop that part.
                out.bytes.drain(base..skip_to);
                checked -= skip_to - base;
                skip_to = base;
            }
            out.records.push((header, checked + n));
            next = Some((header.seq() + 1, at + n as u64));
        }
        checked += n;
        at += n as u64;
        if out.records.last().is_some_and(|&(_, end)| end >= max) {
            break true;
        }
    };
    // Read-ahead past the last record taken, and skipped records, go.
    let keep = out.records.last().map_or(base, |&(_, end)| end.max(base));
    out.bytes.truncate(keep);
    Ok(Stop { full, next })
}

/// How many shippers' read positions are kept.
const RESUME_SLOTS: usize = 8;
/// How many segments stay open for reading.
const OPEN_READERS: usize = 4;

/// Segments taken out of the log by [`Log::detach`], their files not yet
/// removed.
#[derive(Debug)]
#[must_use = "the segments' files stay until removed"]
pub struct Detached {
    dir: PathBuf,
    paths: Vec<PathBuf>,
    /// The shipping path's open files of them: closed after the removal
    /// (an open file keeps its blocks).
    readers: Vec<File>,
}

impl Detached {
    /// Removes the files and makes that durable; returns how many.
    pub fn remove(self) -> Result<usize, ReplError> {
        for p in &self.paths {
            fs::remove_file(p).map_err(io("remove", p))?;
        }
        drop(self.readers);
        if !self.paths.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(self.paths.len())
    }
}

/// Records as they lie in the log, checked: what a shipper sends.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The records' encodings, back to back.
    pub bytes: Vec<u8>,
    /// Each record's header and the end of its encoding in `bytes`.
    pub records: Vec<(record::Header, usize)>,
}

impl Encoded {
    /// Empty, reusing `buf`'s memory for the bytes.
    pub fn reusing(mut buf: Vec<u8>) -> Encoded {
        buf.clear();
        Encoded {
            bytes: buf,
            records: Vec::new(),
        }
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, checking every record and
    /// cutting a torn tail.
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<Log, ReplError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let lock = crate::error::lock_dir(dir)?;
        // A log from before stream identities gets one now: its replicas
        // take it with the next records they receive.
        let stream = StreamId::load_or_create(dir)?;
        let mut firsts: Vec<u64> = fs::read_dir(dir)
            .map_err(io("list", dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = Vec::new();
        let mut next_seq = 1;
        let mut next_checkpoint = 1;
        let mut last_checkpoint = None;
        for (i, &first) in firsts.iter().enumerate() {
            let path = dir.join(segment_name(first));
            let last = i + 1 == firsts.len();
            let (records, cut) = scan(&path, last)?;
            if let Some(at) = cut {
                tracing::warn!(path = %path.display(), offset = at, "cutting a torn record off the end of the log");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io("open", &path))?;
                f.set_len(at)
                    .and_then(|()| f.sync_all())
                    .map_err(io("truncate", &path))?;
            }
            if i > 0 && first != next_seq {
                return Err(ReplError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("segment starts at record {first}, expected {next_seq}"),
                });
            }
            let mut expect = first;
            let mut offset = 0u64;
            let mut seg = Segment {
                first_seq: first,
                last_seq: first - 1,
                path,
                index: Vec::new(),
                len: 0,
                checkpoints: Vec::new(),
            };
            for r in &records {
                seg.note(r.seq(), offset);
                if r.seq() != expect {
                    return Err(ReplError::Corrupt {
                        path: seg.path.clone(),
                        offset,
                        reason: format!("record {} where {expect} was expected", r.seq()),
                    });
                }
                expect += 1;
                offset += r.encoded_len() as u64;
                if let Record::Checkpoint { seq, id, time_ms } = r {
                    next_checkpoint = id + 1;
                    last_checkpoint = Some((*id, *seq, *time_ms));
                    seg.checkpoints.push((*seq, offset));
                }
            }
            next_seq = expect;
            seg.last_seq = expect - 1;
            seg.len = offset;
            segments.push(seg);
        }
        if segments.is_empty() {
            let path = dir.join(segment_name(1));
            File::create(&path).map_err(io("create", &path))?;
            sync_dir(dir)?;
            segments.push(Segment {
                first_seq: 1,
                last_seq: 0,
                path,
                index: Vec::new(),
                len: 0,
                checkpoints: Vec::new(),
            });
        }
        let active = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let file = OpenOptions::new()
            .append(true)
            .open(&active)
            .map_err(io("open", &active))?;
        let active_len = file.metadata().map_err(io("stat", &active))?.len();
        Ok(Log {
            dir: dir.to_owned(),
            cfg,
            segments,
            out: BufWriter::with_capacity(1 << 20, file),
            active_len,
            next_seq,
            next_checkpoint,
            last_checkpoint,
            buf: Vec::new(),
            poisoned: None,
            held: None,
            resume: Vec::new(),
            readers: Vec::new(),
            stream,
            _lock: lock,
        })
    }

    /// Which stream this log records: its replicas hold this one and refuse
    /// any other.
    pub fn stream_id(&self) -> StreamId {
        self.stream
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Refuses checkpoints (with `why`) until [`Log::release_checkpoints`]:
    /// the log holds a record that a disk may not (a write path's disk
    /// write failed after it was logged), and no checkpoint may show it.
    pub fn hold_checkpoints(&mut self, why: String) {
        self.held = Some(why);
    }

    /// Takes checkpoints again (the group resynchronised every disk).
    pub fn release_checkpoints(&mut self) {
        self.held = None;
    }

    /// The newest durable checkpoint: (id, seq, time_ms).
    pub fn last_checkpoint(&self) -> Option<(u64, u64, u64)> {
        self.last_checkpoint
    }

    fn check(&self) -> Result<(), ReplError> {
        match &self.poisoned {
            Some(why) => Err(ReplError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn push(&mut self, r: &Record) -> Result<(), ReplError> {
        self.check()?;
        self.buf.clear();
        r.encode(&mut self.buf);
        let path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        if let Err(e) = self.out.write_all(&self.buf) {
            // The file may now end in a partial record: no more appends
            // until it is reopened (which cuts it off).
            self.poisoned = Some(e.to_string());
            return Err(ReplError::Io {
                op: "append",
                path,
                cause: e,
            });
        }
        let at = self.active_len;
        self.active_len += self.buf.len() as u64;
        self.next_seq += 1;
        if let Some(s) = self.segments.last_mut() {
            s.last_seq = r.seq();
            s.len += self.buf.len() as u64;
            s.note(r.seq(), at);
            if let Record::Checkpoint { seq, .. } = r {
                s.checkpoints.push((*seq, s.len));
            }
        }
        Ok(())
    }

    /// Appends a write. Durable at the next checkpoint.
    pub fn append(&mut self, disk: u32, offset: u64, data: &[u8]) -> Result<u64, ReplError> {
        if data.len() > record::MAX_RECORD - 64 {
            return Err(ReplError::Corrupt {
                path: self.dir.clone(),
                offset: 0,
                reason: format!("a {}-byte write is over the record limit", data.len()),
            });
        }
        let seq = self.next_seq;
        self.push(&Record::Write {
            seq,
            write: Write {
                disk,
                offset,
                data: data.to_vec(),
            },
        })?;
        Ok(seq)
    }

    /// Ends a checkpoint: every write appended so far belongs to it. Returns
    /// (id, seq) once it is on disk.
    pub fn checkpoint(&mut self, time_ms: u64) -> Result<(u64, u64), ReplError> {
        if let Some(why) = &self.held {
            return Err(ReplError::Poisoned(why.clone()));
        }
        let (id, seq) = (self.next_checkpoint, self.next_seq);
        self.push(&Record::Checkpoint { seq, id, time_ms })?;
        let path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        let flushed = self
            .out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data());
        if let Err(e) = flushed {
            self.poisoned = Some(e.to_string());
            return Err(ReplError::Io {
                op: "fsync",
                path,
                cause: e,
            });
        }
        self.next_checkpoint += 1;
        self.last_checkpoint = Some((id, seq, time_ms));
        if self.active_len >= self.cfg.segment_bytes {
            self.roll()?;
        }
        Ok((id, seq))
    }

    fn roll(&mut self) -> Result<(), ReplError> {
        let path = self.dir.join(segment_name(self.next_seq));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io("create", &path))?;
        sync_dir(&self.dir)?;
        self.out = BufWriter::with_capacity(1 << 20, file);
        self.active_len = 0;
        self.segments.push(Segment {
            first_seq: self.next_seq,
            last_seq: self.next_seq - 1,
            path,
            index: Vec::new(),
            len: 0,
            checkpoints: Vec::new(),
        });
        Ok(())
    }

    /// Records from `from` on, up to about `max_bytes` (at least one if any),
    /// as written to disk (buffered writes after the last checkpoint are
    /// flushed first).
    pub fn read_from(&mut self, from: u64, max_bytes: usize) -> Result<Vec<Record>, ReplError> {
        let encoded = self.read_encoded_from(from, max_bytes)?;
        let mut out = Vec::with_capacity(encoded.records.len());
        let mut at = 0;
        for &(_, end) in &encoded.records {
            // Checked as it was read: decoding cannot fail.
            let (rec, _) = record::decode(&encoded.bytes[at..end]).map_err(|e| {
                ReplError::Poisoned(format!("a checked record no longer decodes: {e}"))
            })?;
            out.push(rec);
            at = end;
        }
        Ok(out)
    }

    /// Like [`Log::read_from`], but the records stay encoded (checked, not
    /// copied apart): the shipping path forwards them as they are.
    pub fn read_encoded_from(&mut self, from: u64, max_bytes: usize) -> Result<Encoded, ReplError> {
        let mut out = Encoded::default();
        self.read_encoded_into(from, max_bytes, &mut out)?;
        Ok(out)
    }

    /// [`Log::read_encoded_from`] into `out` (emptied first; its memory is
    /// reused).
    pub fn read_encoded_into(
        &mut self,
        from: u64,
        max_bytes: usize,
        out: &mut Encoded,
    ) -> Result<(), ReplError> {
        self.check()?;
        out.bytes.clear();
        out.records.clear();
        let path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        self.out.flush().map_err(io("flush", path))?;
        let mut stopped = None;
        for s in self
            .segments
            .iter()
            .filter(|s| s.last_seq >= from && s.last_seq >= s.first_seq)
        {
            let exact = self
                .resume
                .iter()
                .find(|&&(seq, first, _)| seq == from && first == s.first_seq)
                .map(|&(_, _, off)| off);
            let at = match self
                .readers
                .iter()
                .position(|(first, _)| *first == s.first_seq)
            {
                Some(i) => {
                    let r = self.readers.remove(i);
                    self.readers.push(r);
                    self.readers.len() - 1
                }
                None => {
                    let f = File::open(&s.path).map_err(io("open", &s.path))?;
                    if self.readers.len() >= OPEN_READERS {
                        self.readers.remove(0);
                    }
                    self.readers.push((s.first_seq, f));
                    self.readers.len() - 1
                }
            };
            let stop = read_segment(s, &self.readers[at].1, from, exact, max_bytes, out)?;
            if let Some((seq, off)) = stop.next {
                stopped = Some((seq, s.first_seq, off));
            }
            if stop.full {
                break;
            }
        }
        if let Some(at) = stopped {
            self.resume
                .retain(|&(seq, _, _)| seq != from && seq != at.0);
            if self.resume.len() >= RESUME_SLOTS {
                self.resume.remove(0);
            }
            self.resume.push(at);
        }
        Ok(())
    }

    /// Removes the segments whose records are all at or before `acked` (the
    /// lowest sequence every replica has acknowledged). The active segment
    /// stays. Returns how many were removed. [`Log::detach`] and
    /// [`Detached::remove`] do the same in two steps, the second without
    /// the log.
    pub fn trim(&mut self, acked: u64) -> Result<usize, ReplError> {
        self.detach(acked).remove()
    }

    /// Takes the segments [`Log::trim`] would remove out of the log, for
    /// their files to be removed by [`Detached::remove`] once the caller
    /// has let go of the log: freeing a segment's blocks and syncing the
    /// directory can take a while on a busy disk, and under the log's lock
    /// they held up the write path and every shipper. A crash in between
    /// leaves their files to the next trim (reopened, they are segments
    /// again, all acknowledged).
    pub fn detach(&mut self, acked: u64) -> Detached {
        let mut out = Detached {
            dir: self.dir.clone(),
            paths: Vec::new(),
            readers: Vec::new(),
        };
        while self.segments.len() > 1 && self.segments[0].last_seq <= acked {
            let s = self.segments.remove(0);
            if let Some(i) = self
                .readers
                .iter()
                .position(|(first, _)| *first == s.first_seq)
            {
                out.readers.push(self.readers.remove(i).1);
            }
            out.paths.push(s.path);
        }
        out
    }
    /// Bytes of the records after `seq` (what a replica that acknowledged
    /// `seq` still lacks: its lag). Exact when `seq` is a checkpoint's (what
    /// replicas acknowledge) or 0; otherwise counted from the sparse index,
    /// so at most `INDEX_EVERY` records or `INDEX_BYTES` bytes too many.
    pub fn bytes_after(&self, seq: u64) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.last_seq > seq && s.last_seq >= s.first_seq)
            .map(|s| {
                if seq < s.first_seq {
                    return s.len;
                }
                let start = match s.checkpoints.binary_search_by_key(&seq, |c| c.0) {
                    Ok(i) => s.checkpoints[i].1,
                    Err(_) => s.start_for(seq + 1),
                };
                s.len.saturating_sub(start)
            })
            .sum()
    }

    /// Segment files now on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}
