//! The NBD wire format (`doc/proto.md` of the NBD project): constants,
//! encoders of what the client sends, and parsers of what the server sends.
//! Every integer is big-endian. The parsers take bytes already read and
//! return an error naming the problem; none of them panics or allocates
//! more than the bytes it was given.

use crate::error::NbdError;

/// `NBDMAGIC`, first of the server's greeting.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle greeting's second magic, and the client's
/// option magic.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The second magic of an oldstyle server.
pub const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Magic of an option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flag: fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: no zeroes.
pub const FLAG_C_NO_ZEROES: u32 = 2;

/// Transmission flag: the flags field is valid.
pub const TFLAG_HAS_FLAGS: u16 = 1;
/// Transmission flag: read-only export.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: the export may be read by several connections at once.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Option: end negotiation the old way.
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: abort.
pub const OPT_ABORT: u32 = 2;
/// Option: end negotiation, with errors and information.
pub const OPT_GO: u32 = 7;
/// Option: structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: information about the export.
pub const REP_INFO: u32 = 3;
/// Option reply: a selected metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Option replies with this bit set are errors.
pub const REP_ERR_BIT: u32 = 1 << 31;
/// Option error: unsupported.
pub const REP_ERR_UNSUP: u32 = REP_ERR_BIT + 1;

/// Information: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Information: size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: disconnect.
pub const CMD_DISC: u16 = 2;
/// Command: block status.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Structured reply flag: last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1;
/// Chunk: nothing (a final chunk).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk: a run of zeroes at an offset.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk: block status descriptors of one context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk types with this bit set are errors.
pub const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
/// Chunk: an error.
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_ERROR_BIT + 1;
/// Chunk: an error at an offset.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT + 2;

/// `base:allocation` status: a hole.
pub const STATE_HOLE: u32 = 1;
/// `base:allocation` status: reads as zeroes.
pub const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:…` status: changed.
pub const STATE_DIRTY: u32 = 1;

/// Longest option reply accepted: strings are at most 4 KiB by the spec.
pub const MAX_OPTION_REPLY: u32 = 16 << 10;
/// Longest error chunk accepted.
pub const MAX_ERROR_CHUNK: u32 = 4096 + 14;
/// Longest block status chunk accepted: 2^20 descriptors, as the spec bounds it.
pub const MAX_BLOCK_STATUS_CHUNK: u32 = 4 + 8 * (1 << 20);
/// Bytes of a structured reply header after its magic.
pub const STRUCTURED_HEADER_REST: usize = 16;
/// Bytes of a simple reply header after its magic.
pub const SIMPLE_HEADER_REST: usize = 12;

/// A run of blocks with one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the export.
    pub offset: u64,
    /// Length in bytes (nonzero).
    pub len: u64,
    /// Status flags, as the context defines them.
    pub flags: u32,
}

impl Extent {
    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The name of an option, for messages.
pub fn option_name(option: u32) -> &'static str {
    match option {
        OPT_EXPORT_NAME => "NBD_OPT_EXPORT_NAME",
        OPT_ABORT => "NBD_OPT_ABORT",
        OPT_GO => "NBD_OPT_GO",
        OPT_STRUCTURED_REPLY => "NBD_OPT_STRUCTURED_REPLY",
        OPT_SET_META_CONTEXT => "NBD_OPT_SET_META_CONTEXT",
        _ => "an option",
    }
}

/// The name of an option error reply.
pub fn rep_error_name(reply: u32) -> String {
    match reply.wrapping_sub(REP_ERR_BIT) {
        1 => "NBD_REP_ERR_UNSUP".into(),
        2 => "NBD_REP_ERR_POLICY".into(),
        3 => "NBD_REP_ERR_INVALID".into(),
        4 => "NBD_REP_ERR_PLATFORM".into(),
        5 => "NBD_REP_ERR_TLS_REQD (the server wants TLS)".into(),
        6 => "NBD_REP_ERR_UNKNOWN (no such export)".into(),
        7 => "NBD_REP_ERR_SHUTDOWN".into(),
        8 => "NBD_REP_ERR_BLOCK_SIZE_REQD".into(),
        9 => "NBD_REP_ERR_TOO_BIG".into(),
        10 => "NBD_REP_ERR_EXT_HEADER_REQD".into(),
        n => format!("error reply {n:#x}"),
    }
}

/// The name of an NBD errno.
pub fn errno_name(errno: u32) -> String {
    match errno {
        1 => "EPERM".into(),
        5 => "EIO".into(),
        12 => "ENOMEM".into(),
        22 => "EINVAL".into(),
        28 => "ENOSPC".into(),
        75 => "EOVERFLOW".into(),
        95 => "ENOTSUP".into(),
        108 => "ESHUTDOWN".into(),
        n => format!("error {n}"),
    }
}

fn protocol(msg: impl Into<String>) -> NbdError {
    NbdError::Protocol(msg.into())
}

/// Big-endian reads from a slice the caller has checked is long enough.
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The server's greeting (18 bytes): its handshake flags, once it is known
/// to speak fixed newstyle.
pub fn parse_greeting(b: &[u8; 18]) -> Result<u16, NbdError> {
    if be64(b, 0) != NBDMAGIC {
        return Err(protocol(format!(
            "greeting does not start with NBDMAGIC (got {:#018x}): not an NBD server",
            be64(b, 0)
        )));
    }
    match be64(b, 8) {
        IHAVEOPT => {}
        CLISERV_MAGIC => {
            return Err(protocol(
                "the server speaks the oldstyle handshake, which has no options",
            ))
        }
        m => return Err(protocol(format!("unknown second greeting magic {m:#018x}"))),
    }
    let flags = be16(b, 16);
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(protocol(
            "the server does not speak fixed newstyle (needed for options)",
        ));
    }
    Ok(flags)
}

/// An option as the client sends it.
pub fn encode_option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn push_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The data of `NBD_OPT_GO` for `export`, asking for `infos`.
pub fn go_data(export: &str, infos: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    push_string(&mut out, export);
    out.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        out.extend_from_slice(&i.to_be_bytes());
    }
    out
}

/// The data of `NBD_OPT_SET_META_CONTEXT` for `export` and `queries`.
pub fn set_meta_context_data(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    push_string(&mut out, export);
    out.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        push_string(&mut out, q);
    }
    out
}

/// An option reply's header (20 bytes) for `sent`: its type and length.
pub fn parse_option_reply_header(b: &[u8; 20], sent: u32) -> Result<(u32, u32), NbdError> {
    if be64(b, 0) != OPTION_REPLY_MAGIC {
        return Err(protocol(format!(
            "option reply with bad magic {:#018x}",
            be64(b, 0)
        )));
    }
    let option = be32(b, 8);
    if option != sent {
        return Err(protocol(format!(
            "reply to option {option} while {} ({sent}) was asked",
            option_name(sent)
        )));
    }
    let (kind, len) = (be32(b, 12), be32(b, 16));
    if len > MAX_OPTION_REPLY {
        return Err(protocol(format!(
            "option reply of {len} bytes (at most {MAX_OPTION_REPLY} accepted)"
        )));
    }
    Ok((kind, len))
}

/// What an `NBD_REP_INFO` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Info {
    /// Size and transmission flags.
    Export {
        /// Bytes.
        size: u64,
        /// Transmission flags.
        flags: u16,
    },
    /// Size constraints.
    BlockSize {
        /// Minimum block size.
        min: u32,
        /// Preferred block size.
        preferred: u32,
        /// Largest payload.
        max: u32,
    },
    /// Another kind, ignored.
    Other(u16),
}

/// Parses the data of an `NBD_REP_INFO`.
pub fn parse_info(b: &[u8]) -> Result<Info, NbdError> {
    if b.len() < 2 {
        return Err(protocol("NBD_REP_INFO shorter than its type"));
    }
    match be16(b, 0) {
        INFO_EXPORT if b.len() == 12 => {
            let flags = be16(b, 10);
            if flags & TFLAG_HAS_FLAGS == 0 {
                return Err(protocol("transmission flags without NBD_FLAG_HAS_FLAGS"));
            }
            Ok(Info::Export {
                size: be64(b, 2),
                flags,
            })
        }
        INFO_EXPORT => Err(protocol(format!(
            "NBD_INFO_EXPORT of {} bytes (12 expected)",
            b.len()
        ))),
        INFO_BLOCK_SIZE if b.len() == 14 => {
            let (min, preferred, max) = (be32(b, 2), be32(b, 6), be32(b, 10));
            let power_of_two = |x: u32| x != 0 && x & (x - 1) == 0;
            if !power_of_two(min) || min > 65536 || !power_of_two(preferred) || preferred < min {
                return Err(protocol(format!(
                    "block sizes min {min}, preferred {preferred} are not powers of two in order"
                )));
            }
            if max < min {
                return Err(protocol(format!(
                    "maximum payload {max} below the minimum block size {min}"
                )));
            }
            Ok(Info::BlockSize {
                min,
                preferred,
                max,
            })
        }
        INFO_BLOCK_SIZE => Err(protocol(format!(
            "NBD_INFO_BLOCK_SIZE of {} bytes (14 expected)",
            b.len()
        ))),
        other => Ok(Info::Other(other)),
    }
}

/// Parses the data of an `NBD_REP_META_CONTEXT`: its id and name.
pub fn parse_meta_context(b: &[u8]) -> Result<(u32, String), NbdError> {
    if b.len() < 4 {
        return Err(protocol("NBD_REP_META_CONTEXT shorter than its id"));
    }
    let name =
        std::str::from_utf8(&b[4..]).map_err(|_| protocol("metadata context name is not UTF-8"))?;
    Ok((be32(b, 0), name.to_owned()))
}

/// The text of an error reply's data, for a message.
pub fn message_text(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(&b[..b.len().min(4096)]);
    text.chars().filter(|c| !c.is_control()).collect()
}

/// A request as the client sends it (28 bytes).
pub fn encode_request(flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut out = [0u8; 28];
    out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&kind.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..24].copy_from_slice(&offset.to_be_bytes());
    out[24..28].copy_from_slice(&len.to_be_bytes());
    out
}

/// The header of a reply, after its magic told which kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyHeader {
    /// A simple reply.
    Simple {
        /// Nonzero on failure.
        error: u32,
        /// The request's cookie.
        cookie: u64,
    },
    /// One chunk of a structured reply.
    Chunk {
        /// Flags (`REPLY_FLAG_DONE`).
        flags: u16,
        /// Chunk type.
        kind: u16,
        /// The request's cookie.
        cookie: u64,
        /// Payload bytes that follow.
        len: u32,
    },
}

/// How many more header bytes follow a reply magic.
pub fn reply_header_rest(magic: u32) -> Result<usize, NbdError> {
    match magic {
        SIMPLE_REPLY_MAGIC => Ok(SIMPLE_HEADER_REST),
        STRUCTURED_REPLY_MAGIC => Ok(STRUCTURED_HEADER_REST),
        m => Err(protocol(format!("reply with unknown magic {m:#010x}"))),
    }
}

/// Parses the header bytes after the magic (`rest` as long as
/// [`reply_header_rest`] said).
pub fn parse_reply_header(magic: u32, rest: &[u8]) -> Result<ReplyHeader, NbdError> {
    match (magic, rest.len()) {
        (SIMPLE_REPLY_MAGIC, SIMPLE_HEADER_REST) => Ok(ReplyHeader::Simple {
            error: be32(rest, 0),
            cookie: be64(rest, 4),
        }),
        (STRUCTURED_REPLY_MAGIC, STRUCTURED_HEADER_REST) => Ok(ReplyHeader::Chunk {
            flags: be16(rest, 0),
            kind: be16(rest, 2),
            cookie: be64(rest, 4),
            len: be32(rest, 12),
        }),
        _ => Err(protocol(format!(
            "reply header of {} bytes after magic {magic:#010x}",
            rest.len()
        ))),
    }
}

/// An error chunk's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkError {
    /// The errno (nonzero).
    pub errno: u32,
    /// The server's message.
    pub message: String,
    /// Where, for `NBD_REPLY_TYPE_ERROR_OFFSET`.
    pub offset: Option<u64>,
}

/// Parses the payload of an error chunk of type `kind`.
pub fn parse_error_chunk(kind: u16, b: &[u8]) -> Result<ChunkError, NbdError> {
    if b.len() < 6 {
        return Err(protocol(format!(
            "error chunk of {} bytes (6 at least)",
            b.len()
        )));
    }
    let errno = be32(b, 0);
    let msg_len = be16(b, 4) as usize;
    if 6 + msg_len > b.len() {
        return Err(protocol(format!(
            "error chunk's message of {msg_len} bytes does not fit its {} bytes",
            b.len()
        )));
    }
    let message = message_text(&b[6..6 + msg_len]);
    let tail = &b[6 + msg_len..];
    let offset = match kind {
        REPLY_TYPE_ERROR_OFFSET if tail.len() == 8 => Some(be64(tail, 0)),
        REPLY_TYPE_ERROR_OFFSET => {
            return Err(protocol(format!(
                "NBD_REPLY_TYPE_ERROR_OFFSET with {} bytes after its message (8 expected)",
                tail.len()
            )))
        }
        _ => None,
    };
    if errno == 0 {
        return Err(protocol("error chunk with errno 0"));
    }
    Ok(ChunkError {
        errno,
        message,
        offset,
    })
}

/// Parses the payload of a block status chunk for a request at `offset` of
/// `len` bytes: its context id and the extents, with absolute offsets, as
/// the spec bounds them (each nonzero; all but the last inside the request).
pub fn parse_block_status(b: &[u8], offset: u64, len: u32) -> Result<(u32, Vec<Extent>), NbdError> {
    if b.len() < 12 || !(b.len() - 4).is_multiple_of(8) {
        return Err(protocol(format!(
            "block status chunk of {} bytes (4 + a positive multiple of 8 expected)",
            b.len()
        )));
    }
    let context = be32(b, 0);
    let n = (b.len() - 4) / 8;
    let mut extents = Vec::with_capacity(n);
    let mut at = offset;
    for i in 0..n {
        let (elen, flags) = (be32(b, 4 + 8 * i), be32(b, 8 + 8 * i));
        if elen == 0 {
            return Err(protocol(format!("block status extent {i} has length 0")));
        }
        if at - offset >= u64::from(len) {
            return Err(protocol(format!(
                "block status goes on past the {len} bytes asked at extent {i}"
            )));
        }
        extents.push(Extent {
            offset: at,
            len: u64::from(elen),
            flags,
        });
        at += u64::from(elen);
    }
    Ok((context, extents))
}
