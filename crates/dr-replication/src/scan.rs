//! Change detection for disks written by something else: block hashes
//! compared with those of the last shipped checkpoint.
//!
//! The hashes (BLAKE3, 128 bits per 4 KiB block) are saved only after the
//! checkpoint that carries the changes is durable in the log. A crash in
//! between makes the next scan find the same blocks changed again and log
//! them again: harmless, writes are absolute.

use crate::error::{io, ReplError};
use crate::log::Log;
use std::fs::File;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};

/// Block size of change detection.
pub const BLOCK: usize = 4096;

/// What one scan found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Blocks read.
    pub blocks: u64,
    /// Blocks changed since the last saved hashes (and appended to the log).
    pub changed: u64,
    /// Bytes appended.
    pub bytes: u64,
}

/// The block hashes of one disk.
pub struct Scanner {
    disk: u32,
    state: PathBuf,
    hashes: Vec<[u8; 16]>,
    next: Vec<[u8; 16]>,
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
            next: hashes.clone(),
            hashes,
        })
    }

    /// Reads `image` and appends every block that changed to `log` (not
    /// yet a checkpoint: the caller takes it, then calls [`Scanner::commit`]).
    pub fn scan(&mut self, image: &Path, log: &mut Log) -> Result<ScanStats, ReplError> {
        let mut f = File::open(image).map_err(io("open", image))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut stats = ScanStats::default();
        let mut block_no = 0usize;
        self.next = self.hashes.clone();
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = f.read(&mut buf[filled..]).map_err(io("read", image))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            for chunk in buf[..filled].chunks(BLOCK) {
                let h: [u8; 16] = blake3::hash(chunk).as_bytes()[..16]
                    .try_into()
                    .unwrap_or([0; 16]);
                if self.hashes.get(block_no) != Some(&h) {
                    log.append(self.disk, (block_no * BLOCK) as u64, chunk)?;
                    stats.changed += 1;
                    stats.bytes += chunk.len() as u64;
                }
                if block_no < self.next.len() {
                    self.next[block_no] = h;
                } else {
                    self.next.push(h);
                }
                stats.blocks += 1;
                block_no += 1;
            }
            if filled < buf.len() {
                break;
            }
        }
        self.next.truncate(block_no);
        Ok(stats)
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
        self.hashes = self.next.clone();
        Ok(())
    }
}
