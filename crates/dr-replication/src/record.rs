//! The record format shared by the primary's log, the wire and the
//! replicas' checkpoint files.
//!
//! ```text
//! u32 crc32c   of everything after this field
//! u32 len      bytes after this field
//! u8  kind     1 = write, 2 = checkpoint
//! u64 seq      position in the log
//! write:       u32 disk, u64 offset, data (len - 21 bytes)
//! checkpoint:  u64 id, u64 time (ms since the Unix epoch)
//! ```
//! All integers little-endian. A record is never applied unless its checksum
//! and its length agree.

/// Bytes before the payload: crc and len.
pub const HEADER: usize = 8;
/// Largest record accepted: 64 MiB of data plus headers.
pub const MAX_RECORD: usize = (64 << 20) + 64;

const KIND_WRITE: u8 = 1;
const KIND_CHECKPOINT: u8 = 2;

/// One change to one disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Which disk of the protected group.
    pub disk: u32,
    /// Byte offset.
    pub offset: u64,
    /// The bytes written there.
    pub data: Vec<u8>,
}

/// A record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A write.
    Write {
        /// Log position.
        seq: u64,
        /// The write.
        write: Write,
    },
    /// Every write before it in the log belongs to checkpoint `id`: a
    /// crash-consistent point in time of all the group's disks.
    Checkpoint {
        /// Log position.
        seq: u64,
        /// Checkpoint number, increasing by one.
        id: u64,
        /// When it was taken, ms since the Unix epoch.
        time_ms: u64,
    },
}

impl Record {
    /// Its log position.
    pub fn seq(&self) -> u64 {
        match self {
            Record::Write { seq, .. } | Record::Checkpoint { seq, .. } => *seq,
        }
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        HEADER
            + 1
            + 8
            + match self {
                Record::Write { write, .. } => 4 + 8 + write.data.len(),
                Record::Checkpoint { .. } => 16,
            }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        match self {
            Record::Write { seq, write } => {
                out.push(KIND_WRITE);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&write.disk.to_le_bytes());
                out.extend_from_slice(&write.offset.to_le_bytes());
                out.extend_from_slice(&write.data);
            }
            Record::Checkpoint { seq, id, time_ms } => {
                out.push(KIND_CHECKPOINT);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&time_ms.to_le_bytes());
            }
        }
        let len = (out.len() - start - HEADER) as u32;
        out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&out[start + 4..]);
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends inside the record (a torn tail, or more to read).
    #[error("truncated record: {have} of {need} bytes")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes the record needs.
        need: usize,
    },
    /// The checksum does not match: the bytes are corrupt.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// A length or kind that no writer produces.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// What a record is, without its data: enough to route it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// A write of `len` bytes at `offset` of disk `disk`.
    Write {
        /// Log position.
        seq: u64,
        /// Which disk.
        disk: u32,
        /// Byte offset.
        offset: u64,
        /// Bytes of data.
        len: usize,
    },
    /// A checkpoint.
    Checkpoint {
        /// Log position.
        seq: u64,
        /// Checkpoint number.
        id: u64,
        /// When it was taken, ms since the Unix epoch.
        time_ms: u64,
    },
}

impl Header {
    /// Its log position.
    pub fn seq(&self) -> u64 {
        match self {
            Header::Write { seq, .. } | Header::Checkpoint { seq, .. } => *seq,
        }
    }
}

/// Checks the record at the start of `buf` (length, checksum, kind) and
/// returns its header and encoded length, without copying its data: the
/// shipping path forwards records as they lie in the log.
pub fn check(buf: &[u8]) -> Result<(Header, usize), DecodeError> {
    if buf.len() < HEADER {
        return Err(DecodeError::Truncated {
            have: buf.len(),
            need: HEADER,
        });
    }
    let stored = u32_at(buf, 0);
    let len = u32_at(buf, 4) as usize;
    if len < 9 {
        return Err(DecodeError::Malformed(
            "length shorter than kind and sequence",
        ));
    }
    if HEADER + len > MAX_RECORD {
        return Err(DecodeError::Malformed("length over the record limit"));
    }
    let total = HEADER + len;
    if buf.len() < total {
        return Err(DecodeError::Truncated {
            have: buf.len(),
            need: total,
        });
    }
    let computed = crc32c::crc32c(&buf[4..total]);
    if computed != stored {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let p = &buf[HEADER..total];
    let seq = u64_at(p, 1);
    let header = match p[0] {
        KIND_WRITE => {
            if p.len() < 21 {
                return Err(DecodeError::Malformed("write record too short"));
            }
            Header::Write {
                seq,
                disk: u32_at(p, 9),
                offset: u64_at(p, 13),
                len: p.len() - 21,
            }
        }
        KIND_CHECKPOINT => {
            if p.len() != 25 {
                return Err(DecodeError::Malformed(
                    "checkpoint record of the wrong size",
                ));
            }
            Header::Checkpoint {
                seq,
                id: u64_at(p, 9),
                time_ms: u64_at(p, 17),
            }
        }
        _ => return Err(DecodeError::Malformed("unknown record kind")),
    };
    Ok((header, total))
}

/// The data of a checked write record (`buf` starts with the record).
pub fn write_data(buf: &[u8], header: Header) -> &[u8] {
    match header {
        Header::Write { len, .. } => &buf[HEADER + 21..HEADER + 21 + len],
        Header::Checkpoint { .. } => &[],
    }
}

/// Decodes the record at the start of `buf`; returns it and its length.
pub fn decode(buf: &[u8]) -> Result<(Record, usize), DecodeError> {
    let (header, total) = check(buf)?;
    let rec = match header {
        Header::Write {
            seq, disk, offset, ..
        } => Record::Write {
            seq,
            write: Write {
                disk,
                offset,
                data: write_data(buf, header).to_vec(),
            },
        },
        Header::Checkpoint { seq, id, time_ms } => Record::Checkpoint { seq, id, time_ms },
    };
    Ok((rec, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let recs = [
            Record::Write {
                seq: 7,
                write: Write {
                    disk: 2,
                    offset: 4096,
                    data: vec![1, 2, 3],
                },
            },
            Record::Checkpoint {
                seq: 8,
                id: 3,
                time_ms: 1_700_000_000_000,
            },
            Record::Write {
                seq: 9,
                write: Write {
                    disk: 0,
                    offset: 0,
                    data: vec![],
                },
            },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            r.encode(&mut buf);
        }
        let mut at = 0;
        for r in &recs {
            let (got, n) = decode(&buf[at..]).unwrap();
            assert_eq!(&got, r);
            assert_eq!(n, r.encoded_len());
            at += n;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        Record::Write {
            seq: 1,
            write: Write {
                disk: 0,
                offset: 512,
                data: b"hello".to_vec(),
            },
        }
        .encode(&mut buf);
        for i in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode(&b).is_err(), "flipping bit {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_reported_as_such() {
        let mut buf = Vec::new();
        Record::Checkpoint {
            seq: 1,
            id: 1,
            time_ms: 2,
        }
        .encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(
                matches!(
                    decode(&buf[..cut]),
                    Err(DecodeError::Truncated { .. }) | Err(DecodeError::Malformed(_))
                ),
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn writes_round_trip(seq in any::<u64>(), disk in any::<u32>(), offset in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let r = Record::Write { seq, write: Write { disk, offset, data } };
            let mut buf = Vec::new();
            r.encode(&mut buf);
            prop_assert_eq!(decode(&buf).unwrap(), (r, buf.len()));
        }
    }
}
