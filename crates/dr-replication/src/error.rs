//! Replication errors, with where they happened.

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// A file operation failed (disk full is one: it stops replication, it
    /// does not corrupt anything).
    // The cause is in the text and not also a `source`: printed as a
    // chain (`{:#}`), it came out twice.
    #[error("{op} {path}: {cause}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
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
    /// A replica was offered the records of another stream than the one it
    /// holds: another group of disks, or a log that was created anew.
    #[error(
        "this replica holds stream {replica}, and the shipper sends stream {shipper} \
         (another group of disks, or a log created anew): give it a replica directory of its own"
    )]
    OtherStream {
        /// The stream the replica holds.
        replica: crate::stream::StreamId,
        /// The stream offered.
        shipper: crate::stream::StreamId,
    },
    /// A disk the replica does not hold.
    #[error("the replica has no disk {disk} at checkpoint {checkpoint}; it has {}", disk_list(.have))]
    NoDisk {
        /// The disk asked for.
        disk: u32,
        /// At this checkpoint.
        checkpoint: u64,
        /// The disks it has there.
        have: Vec<u32>,
    },
    /// A one-off checkpoint that did not reach every receiver; names each
    /// one that lacks it and why.
    #[error("{0}")]
    NotShipped(String),
    /// A change source (the hypervisor's change tracking, a scan) failed
    /// to give a point; the text names the disk and what went wrong.
    #[error("change source: {0}")]
    Source(String),
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

fn disk_list(disks: &[u32]) -> String {
    match disks {
        [] => "no disk".to_owned(),
        [d] => format!("disk {d} only"),
        _ => {
            let list: Vec<String> = disks.iter().map(u32::to_string).collect();
            format!("disks {}", list.join(", "))
        }
    }
}

pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ReplError {
    let path = path.into();
    move |cause| ReplError::Io { op, path, cause }
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
            cause: e,
        }),
    }
}
