//! The identity of a replication stream: which protected group of disks a
//! log records and a replica holds.
//!
//! A log draws a random identity when it is created; a replica takes the
//! identity of the first stream whose records it receives and from then on
//! refuses every other one (DRBD's generation identifiers do the same job).
//! Without it, a replica that holds group A up to record 4135 answers a
//! shipper of group B, whose new log is at record 5, "I have everything up
//! to 4135": the shipper sends nothing and reports success, and the replica
//! keeps A's disks under B's name.
//!
//! ```text
//! stream      "<32 hex digits>\n", in the log's and the replica's directory
//! ```

use crate::error::{io, ReplError};
use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;

/// A stream's identity: 128 random bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(pub [u8; 16]);

/// The file holding it.
const FILE: &str = "stream";

impl StreamId {
    /// A new random identity.
    pub fn random() -> Result<StreamId, ReplError> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|e| {
            ReplError::Poisoned(format!("no randomness for a stream identity: {e}"))
        })?;
        Ok(StreamId(id))
    }

    /// Parses the 32 hex digits [`StreamId`]'s `Display` writes.
    pub fn parse(text: &str) -> Option<StreamId> {
        let text = text.trim();
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(StreamId(id))
    }

    /// The identity stored in `dir`, if there is one; damage is an error
    /// naming the file.
    pub fn load(dir: &Path) -> Result<Option<StreamId>, ReplError> {
        let path = dir.join(FILE);
        match fs::read_to_string(&path) {
            Ok(text) => StreamId::parse(&text)
                .map(Some)
                .ok_or_else(|| ReplError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("not a stream identity: {:?}", text.trim()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ReplError::Io {
                op: "read",
                path,
                cause: e,
            }),
        }
    }

    /// Stores it in `dir`, durably and in one step (written aside, fsynced,
    /// renamed, the directory fsynced).
    pub fn store(&self, dir: &Path) -> Result<(), ReplError> {
        let tmp = dir.join("stream.tmp");
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("{self}\n").as_bytes())
                    .and_then(|()| f.sync_all())
            })
            .map_err(io("write", &tmp))?;
        let path = dir.join(FILE);
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync directory", dir))
    }

    /// The identity stored in `dir`, or a new one stored there.
    pub fn load_or_create(dir: &Path) -> Result<StreamId, ReplError> {
        match StreamId::load(dir)? {
            Some(id) => Ok(id),
            None => {
                let id = StreamId::random()?;
                id.store(dir)?;
                Ok(id)
            }
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip_and_bad_text_is_refused() {
        let id = StreamId([0xab; 16]);
        assert_eq!(StreamId::parse(&id.to_string()), Some(id));
        assert_eq!(StreamId::parse(&format!("{id}\n")), Some(id));
        for bad in ["", "abc", &"g".repeat(32), &"é".repeat(16), &"0".repeat(33)] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stored_once_and_loaded_again_and_damage_is_named() {
        let dir = std::env::temp_dir().join(format!("vmdr-stream-id-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        assert_eq!(StreamId::load(&dir).expect("load"), None);
        let id = StreamId::load_or_create(&dir).expect("create");
        assert_eq!(StreamId::load_or_create(&dir).expect("again"), id);
        fs::write(dir.join(FILE), "not hex\n").expect("damage");
        let err = StreamId::load(&dir).expect_err("damaged");
        assert!(err.to_string().contains("stream"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
