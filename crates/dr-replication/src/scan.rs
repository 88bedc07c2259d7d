//! Change detection for disks written by something else: block hashes
//! compared with those of the last shipped checkpoint.
//!
//! The hashes (BLAKE3, 128 bits per 4 KiB block) are saved only after the
//! checkpoint that carries the changes is durable in the log. A crash in
//! between makes the next scan find the same blocks changed again and log
//! them again: harmless, writes are absolute.
//!
//! A scan reads the disk in windows: each of a few worker threads reads a
//! slice of the window into a buffer of its own (allocated once per scan)
//! and hashes its blocks into the window's slots; then the runs of changed
//! blocks go to the sink, straight from those buffers. Nothing is
//! allocated per block, and on these 2 cores an unchanged image in the page
//! cache is scanned at several GB/s (`docs/BENCHMARKS.md`).

use crate::capture::Sink;
use crate::error::{io, ReplError};
use crate::log::Log;
use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Block size of change detection.
pub const BLOCK: usize = 4096;
/// Bytes each worker reads and hashes per window.
const SLICE: usize = 4 << 20;
/// Most worker threads per scan.
const MAX_WORKERS: usize = 8;

/// What one scan (or one disk of a captured point) found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Blocks read.
    pub blocks: u64,
    /// Blocks changed since the last saved hashes (and appended to the log).
    pub changed: u64,
    /// Bytes appended.
    pub bytes: u64,
}

type Hash = [u8; 16];

/// The block hashes of one disk.
pub struct Scanner {
    disk: u32,
    state: PathBuf,
    hashes: Vec<Hash>,
    next: Vec<Hash>,
}

/// The size of a disk image or block device.
pub fn disk_size(path: &Path) -> Result<u64, ReplError> {
    let mut f = File::open(path).map_err(io("open", path))?;
    f.seek(SeekFrom::End(0)).map_err(io("size", path))
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS)
}

/// One worker's part of a window: reads its slice at `offset` into `buf`
/// (fewer bytes at the end of the disk) and hashes each block into `out`.
fn read_and_hash(
    f: &File,
    path: &Path,
    offset: u64,
    buf: &mut [u8],
    out: &mut [Hash],
) -> Result<usize, ReplError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = f
            .read_at(&mut buf[filled..], offset + filled as u64)
            .map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    for (chunk, h) in buf[..filled].chunks(BLOCK).zip(out.iter_mut()) {
        h.copy_from_slice(&blake3::hash(chunk).as_bytes()[..16]);
    }
    Ok(filled)
}

impl Scanner {
    /// The scanner of disk number `disk`, its state kept in `state`.
    pub fn open(disk: u32, state: &Path) -> Result<Scanner, ReplError> {
        let hashes = match std::fs::read(state) {
            Ok(bytes) if bytes.len() % 16 == 0 => bytes
                .chunks_exact(16)
                .map(|c| c.try_into().unwrap_or([0; 16]))
                .collect(),
            Ok(bytes) => {
                return Err(ReplError::Corrupt {
                    path: state.to_owned(),
                    offset: bytes.len() as u64,
                    reason: "hash file is not whole 16-byte entries".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(ReplError::Io {
                    op: "read",
                    path: state.to_owned(),
                    cause: e,
                })
            }
        };
        Ok(Scanner {
            disk,
            state: state.to_owned(),
            next: Vec::new(),
            hashes,
        })
    }

    /// Whether no hashes are saved yet (the next scan sends every block).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Reads `image` and appends every block that changed to `log` (not
    /// yet a checkpoint: the caller takes it, then calls [`Scanner::commit`]).
    pub fn scan(&mut self, image: &Path, log: &mut Log) -> Result<ScanStats, ReplError> {
        let disk = self.disk;
        self.scan_into(image, &mut |offset, data| {
            log.append(disk, offset, data).map(|_| ())
        })
    }

    /// Reads `image` and gives every run of changed blocks to `sink`
    /// (offset, bytes), in ascending order.
    pub fn scan_into(&mut self, image: &Path, sink: &mut Sink<'_>) -> Result<ScanStats, ReplError> {
        let f = File::open(image).map_err(io("open", image))?;
        let n = workers();
        let mut bufs: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; SLICE]).collect();
        let per_slice = SLICE / BLOCK;
        let mut window: Vec<Hash> = vec![[0; 16]; n * per_slice];
        let mut stats = ScanStats::default();
        self.next.clear();
        let mut base = 0u64;
        loop {
            // Read and hash the window, a slice per worker.
            let filled: Vec<Result<usize, ReplError>> = std::thread::scope(|s| {
                let jobs: Vec<_> = bufs
                    .iter_mut()
                    .zip(window.chunks_mut(per_slice))
                    .enumerate()
                    .map(|(t, (buf, out))| {
                        let at = base + (t * SLICE) as u64;
                        let f = &f;
                        s.spawn(move || read_and_hash(f, image, at, buf, out))
                    })
                    .collect();
                jobs.into_iter()
                    .map(|j| {
                        j.join().unwrap_or_else(|_| {
                            Err(ReplError::Poisoned("a scan worker panicked".into()))
                        })
                    })
                    .collect()
            });
            let mut window_bytes = 0usize;
            let mut short = false;
            for (t, got) in filled.into_iter().enumerate() {
                let got = got?;
                if short {
                    // A slice after a short one read data the file gained
                    // meanwhile; the next scan has it.
                    break;
                }
                let first_block = self.next.len();
                let blocks = got.div_ceil(BLOCK);
                let hashes = &window[t * per_slice..t * per_slice + blocks];
                self.next.extend_from_slice(hashes);
                self.emit_changes(first_block, hashes, &bufs[t][..got], sink, &mut stats)?;
                stats.blocks += blocks as u64;
                window_bytes += got;
                short = got < SLICE;
            }
            if short || window_bytes == 0 {
                break;
            }
            base += window_bytes as u64;
        }
        Ok(stats)
    }

    /// Gives the runs of blocks of `data` (blocks `first_block`… of the
    /// disk) whose hash differs from the saved one to `sink`.
    fn emit_changes(
        &self,
        first_block: usize,
        hashes: &[Hash],
        data: &[u8],
        sink: &mut Sink<'_>,
        stats: &mut ScanStats,
    ) -> Result<(), ReplError> {
        let mut run: Option<usize> = None;
        for i in 0..=hashes.len() {
            let changed = i < hashes.len() && self.hashes.get(first_block + i) != Some(&hashes[i]);
            match (changed, run) {
                (true, None) => run = Some(i),
                (false, Some(start)) => {
                    let bytes = &data[start * BLOCK..(i * BLOCK).min(data.len())];
                    sink(((first_block + start) * BLOCK) as u64, bytes)?;
                    stats.changed += (i - start) as u64;
                    stats.bytes += bytes.len() as u64;
                    run = None;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Saves the hashes of the last scan, once its checkpoint is durable.
    pub fn commit(&mut self) -> Result<(), ReplError> {
        let tmp = self.state.with_extension("tmp");
        let mut bytes = Vec::with_capacity(self.next.len() * 16);
        for h in &self.next {
            bytes.extend_from_slice(h);
        }
        File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &self.state).map_err(io("rename", &self.state))?;
        self.hashes = std::mem::take(&mut self.next);
        self.next = self.hashes.clone();
        Ok(())
    }
}
