//! Replication errors, with where they happened.

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// A file operation failed (disk full is one: it stops replication, it
    /// does not corrupt anything).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes failed their checks. Nothing after this point was used.
    #[error("corrupt {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Records arrived out of order.
    #[error("sequence gap: expected record {expected}, got {got}")]
    Gap {
        /// Expected sequence number.
        expected: u64,
        /// Received.
        got: u64,
    },
    /// A checkpoint that is not (or no longer) kept.
    #[error("checkpoint {0} is not available")]
    NoCheckpoint(u64),
    /// Another process holds the directory (a receiver serving a replica, a
    /// shipper using a log); opening it too would corrupt it.
    #[error("{0} is in use by another process (a running receiver or shipper); stop it first")]
    InUse(PathBuf),
    /// A replica stopped after a merge into its base images failed part-way
    /// (a checkpoint file damaged on disk since it was checked): it shows
    /// nothing until reopened, and opening it finishes the merge or names
    /// the damage.
    #[error("replica unusable until reopened: {0}")]
    Broken(String),
    /// The log, or a group written through it, refused further work after
    /// an earlier failure; reopen it.
    #[error("unusable after an earlier failure: {0}")]
    Poisoned(String),
    /// A write past the end of a disk that cannot grow (a block device).
    #[error("write of {len} bytes at offset {offset} is past the end of {path} ({size} bytes)")]
    PastEnd {
        /// The disk.
        path: PathBuf,
        /// Where the write started.
        offset: u64,
        /// Its length.
        len: usize,
        /// The disk's size.
        size: u64,
    },
}

pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ReplError {
    let path = path.into();
    move |source| ReplError::Io { op, path, source }
}

/// Takes the exclusive lock of directory `dir` (its `lock` file), held as
/// long as the returned file lives; the kernel drops it when the process
/// dies, so a crash never leaves it stale.
pub(crate) fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File, ReplError> {
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(ReplError::InUse(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(ReplError::Io {
            op: "lock",
            path,
            source: e,
        }),
    }
}
