//! One connection to an export: the handshake, then reads and block status
//! queries, one request at a time.
//!
//! The client is generic over the byte stream so that the same code runs
//! over TCP, a Unix socket, and the scripted servers of the tests and the
//! fuzz target. Blocking I/O: it runs on a blocking thread (the caller sets
//! the socket's timeouts; [`connect_tcp`] and [`connect_unix`] do).

use crate::error::{io, NbdError};
use crate::proto::{self, Extent, Info, ReplyHeader};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Largest read sent in one request, whatever the server allows: the
/// spec's default maximum payload.
pub const MAX_READ: u32 = 32 << 20;
/// Largest range asked in one block status request.
pub const MAX_STATUS_RANGE: u32 = 1 << 31;
/// Most bytes of reads in flight at once.
pub const MAX_IN_FLIGHT: u64 = 64 << 20;

/// One read in flight: its buffer and what its reply has covered so far.
struct InFlight {
    index: usize,
    offset: u64,
    len: u32,
    buf: Vec<u8>,
    covered: BTreeMap<u64, u64>,
    total: u64,
    failure: Option<proto::ChunkError>,
}

impl InFlight {
    fn new(index: usize, offset: u64, len: u32, buf: Vec<u8>) -> InFlight {
        InFlight {
            index,
            offset,
            len,
            buf,
            covered: BTreeMap::new(),
            total: 0,
            failure: None,
        }
    }

    /// Its index and bytes, once its reply is complete and whole.
    fn finish(self) -> Result<(usize, Vec<u8>), NbdError> {
        if let Some(e) = self.failure {
            return Err(command_error(
                "read",
                self.offset,
                self.len,
                e.errno,
                &e.message,
            ));
        }
        if self.total != u64::from(self.len) {
            return Err(NbdError::Protocol(format!(
                "read reply covered {} of the {} bytes asked",
                self.total, self.len
            )));
        }
        Ok((self.index, self.buf))
    }
}

/// What the handshake learned of the export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Requests must be aligned to this.
    pub min_block: u32,
    /// Largest payload of one request.
    pub max_payload: u32,
    /// The metadata contexts selected, by name, with their ids.
    pub contexts: Vec<(String, u32)>,
    /// Whether replies are structured.
    pub structured: bool,
}

/// A connection in its transmission phase.
pub struct Client<S> {
    stream: S,
    export: Export,
    cookie: u64,
    broken: Option<String>,
}

impl<S> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("export", &self.export)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// A TCP stream to `addr` as the client wants it: no Nagle delay, every
/// read and write waiting at most `timeout`.
pub fn tcp_stream(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<std::net::TcpStream, NbdError> {
    let s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(io("connect"))?;
    s.set_nodelay(true).map_err(io("set TCP_NODELAY"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    Ok(s)
}

/// A stream to the Unix socket at `path`, as [`tcp_stream`] makes one.
pub fn unix_stream(
    path: &Path,
    timeout: Duration,
) -> Result<std::os::unix::net::UnixStream, NbdError> {
    let s = std::os::unix::net::UnixStream::connect(path).map_err(io("connect"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    Ok(s)
}

/// Connects over TCP to `addr` and opens `export` with `contexts` selected;
/// every read and write waits at most `timeout`.
pub fn connect_tcp(
    addr: std::net::SocketAddr,
    export: &str,
    contexts: &[&str],
    timeout: Duration,
) -> Result<Client<std::net::TcpStream>, NbdError> {
    Client::handshake(tcp_stream(addr, timeout)?, export, contexts)
}

/// Connects to the Unix socket at `path`, as [`connect_tcp`] does.
pub fn connect_unix(
    path: &Path,
    export: &str,
    contexts: &[&str],
    timeout: Duration,
) -> Result<Client<std::os::unix::net::UnixStream>, NbdError> {
    Client::handshake(unix_stream(path, timeout)?, export, contexts)
}

fn read_exact<S: Read>(s: &mut S, buf: &mut [u8], op: &'static str) -> Result<(), NbdError> {
    s.read_exact(buf).map_err(io(op))
}

/// Reads `len` bytes into a new buffer (the caller has bounded `len`).
fn read_vec<S: Read>(s: &mut S, len: u32, op: &'static str) -> Result<Vec<u8>, NbdError> {
    let mut v = vec![0u8; len as usize];
    read_exact(s, &mut v, op)?;
    Ok(v)
}

/// Handshake state: the stream and what was negotiated so far.
struct Haggle<S> {
    stream: S,
}

impl<S: Read + Write> Haggle<S> {
    fn send(&mut self, option: u32, data: &[u8]) -> Result<(), NbdError> {
        self.stream
            .write_all(&proto::encode_option(option, data))
            .and_then(|()| self.stream.flush())
            .map_err(io("send option"))
    }

    /// One reply to `option`: its type and data.
    fn reply(&mut self, option: u32) -> Result<(u32, Vec<u8>), NbdError> {
        let mut h = [0u8; 20];
        read_exact(&mut self.stream, &mut h, "read option reply")?;
        let (kind, len) = proto::parse_option_reply_header(&h, option)?;
        let data = read_vec(&mut self.stream, len, "read option reply")?;
        Ok((kind, data))
    }

    fn refused(option: u32, kind: u32, data: &[u8]) -> NbdError {
        NbdError::Refused {
            option: proto::option_name(option),
            reply: proto::rep_error_name(kind),
            message: proto::message_text(data),
        }
    }

    /// `NBD_OPT_STRUCTURED_REPLY`: whether the server agreed.
    fn structured(&mut self) -> Result<bool, NbdError> {
        self.send(proto::OPT_STRUCTURED_REPLY, &[])?;
        match self.reply(proto::OPT_STRUCTURED_REPLY)? {
            (proto::REP_ACK, _) => Ok(true),
            (proto::REP_ERR_UNSUP, _) => Ok(false),
            (k, d) if k & proto::REP_ERR_BIT != 0 => {
                Err(Self::refused(proto::OPT_STRUCTURED_REPLY, k, &d))
            }
            (k, _) => Err(NbdError::Protocol(format!(
                "reply type {k} to NBD_OPT_STRUCTURED_REPLY"
            ))),
        }
    }

    /// `NBD_OPT_SET_META_CONTEXT`: the id of every context asked for.
    fn meta_contexts(
        &mut self,
        export: &str,
        asked: &[&str],
    ) -> Result<Vec<(String, u32)>, NbdError> {
        let opt = proto::OPT_SET_META_CONTEXT;
        self.send(opt, &proto::set_meta_context_data(export, asked))?;
        let mut got: Vec<(String, u32)> = Vec::new();
        loop {
            match self.reply(opt)? {
                (proto::REP_META_CONTEXT, d) => {
                    let (id, name) = proto::parse_meta_context(&d)?;
                    if got.len() > asked.len() || got.iter().any(|(n, _)| *n == name) {
                        return Err(NbdError::Protocol(format!(
                            "metadata context {name:?} selected twice or unasked"
                        )));
                    }
                    got.push((name, id));
                }
                (proto::REP_ACK, _) => break,
                (k, d) if k & proto::REP_ERR_BIT != 0 => return Err(Self::refused(opt, k, &d)),
                (k, _) => {
                    return Err(NbdError::Protocol(format!(
                        "reply type {k} to NBD_OPT_SET_META_CONTEXT"
                    )))
                }
            }
        }
        for a in asked {
            if !got.iter().any(|(n, _)| n == a) {
                return Err(NbdError::NoContext {
                    export: export.to_owned(),
                    context: (*a).to_owned(),
                    offered: got
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(got)
    }

    /// `NBD_OPT_GO`: size, flags and size constraints, then transmission.
    /// `None` if the server has no `NBD_OPT_GO` (then the old way is used).
    fn go(&mut self, export: &str) -> Result<Option<(u64, u16, u32, u32)>, NbdError> {
        let opt = proto::OPT_GO;
        self.send(opt, &proto::go_data(export, &[proto::INFO_BLOCK_SIZE]))?;
        let (mut size_flags, mut sizes) = (None, None);
        loop {
            match self.reply(opt)? {
                (proto::REP_INFO, d) => match proto::parse_info(&d)? {
                    Info::Export { size, flags } => size_flags = Some((size, flags)),
                    Info::BlockSize { min, max, .. } => sizes = Some((min, max)),
                    Info::Other(_) => {}
                },
                (proto::REP_ACK, _) => break,
                (proto::REP_ERR_UNSUP, _) => return Ok(None),
                (k, d) if k & proto::REP_ERR_BIT != 0 => return Err(Self::refused(opt, k, &d)),
                (k, _) => return Err(NbdError::Protocol(format!("reply type {k} to NBD_OPT_GO"))),
            }
        }
        let Some((size, flags)) = size_flags else {
            return Err(NbdError::Protocol(
                "NBD_OPT_GO succeeded without NBD_INFO_EXPORT".into(),
            ));
        };
        let (min, max) = sizes.unwrap_or((1, MAX_READ));
        Ok(Some((size, flags, min, max)))
    }

    /// `NBD_OPT_EXPORT_NAME`, for a server without `NBD_OPT_GO`.
    fn export_name(&mut self, export: &str, no_zeroes: bool) -> Result<(u64, u16), NbdError> {
        self.send(proto::OPT_EXPORT_NAME, export.as_bytes())?;
        let mut b = [0u8; 10];
        read_exact(&mut self.stream, &mut b, "read export")?;
        if !no_zeroes {
            let mut zeroes = [0u8; 124];
            read_exact(&mut self.stream, &mut zeroes, "read export")?;
        }
        let size = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        Ok((size, u16::from_be_bytes([b[8], b[9]])))
    }
}

impl<S: Read + Write> Client<S> {
    /// The fixed newstyle handshake on `stream`: structured replies, the
    /// metadata `contexts` (each must be offered, or [`NbdError::NoContext`]),
    /// then `export` opened with its size constraints.
    pub fn handshake(mut stream: S, export: &str, contexts: &[&str]) -> Result<Self, NbdError> {
        if export.len() > 4096 {
            return Err(NbdError::BadRequest("export name over 4096 bytes".into()));
        }
        let mut greeting = [0u8; 18];
        read_exact(&mut stream, &mut greeting, "read greeting")?;
        let server_flags = proto::parse_greeting(&greeting)?;
        let no_zeroes = server_flags & proto::FLAG_NO_ZEROES != 0;
        let mut client_flags = proto::FLAG_C_FIXED_NEWSTYLE;
        if no_zeroes {
            client_flags |= proto::FLAG_C_NO_ZEROES;
        }
        stream
            .write_all(&client_flags.to_be_bytes())
            .map_err(io("send client flags"))?;
        let mut h = Haggle { stream };
        match Self::negotiate(&mut h, export, contexts, no_zeroes) {
            Ok((selected, structured, (size, flags, min_block, max_payload))) => {
                tracing::debug!(export, size, min_block, max_payload, "NBD export opened");
                Ok(Client {
                    stream: h.stream,
                    export: Export {
                        name: export.to_owned(),
                        size,
                        flags,
                        min_block,
                        max_payload,
                        contexts: selected,
                        structured,
                    },
                    cookie: 0,
                    broken: None,
                })
            }
            Err(e) => {
                // A refusal leaves the server waiting for options: say
                // goodbye rather than drop the connection on it.
                if matches!(e, NbdError::Refused { .. } | NbdError::NoContext { .. }) {
                    let _ = h.send(proto::OPT_ABORT, &[]);
                }
                Err(e)
            }
        }
    }

    /// The options of the handshake, in order.
    #[allow(clippy::type_complexity)]
    fn negotiate(
        h: &mut Haggle<S>,
        export: &str,
        contexts: &[&str],
        no_zeroes: bool,
    ) -> Result<(Vec<(String, u32)>, bool, (u64, u16, u32, u32)), NbdError> {
        let structured = h.structured()?;
        let selected = match (contexts.is_empty(), structured) {
            (true, _) => Vec::new(),
            (false, true) => h.meta_contexts(export, contexts)?,
            (false, false) => {
                return Err(NbdError::Refused {
                    option: "NBD_OPT_STRUCTURED_REPLY",
                    reply: proto::rep_error_name(proto::REP_ERR_UNSUP),
                    message: "block status needs structured replies".into(),
                })
            }
        };
        let opened = match h.go(export)? {
            Some(x) => x,
            None => {
                let (size, flags) = h.export_name(export, no_zeroes)?;
                (size, flags, 1, MAX_READ)
            }
        };
        Ok((selected, structured, opened))
    }

    /// What the handshake learned.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// The id of a selected context.
    pub fn context_id(&self, name: &str) -> Option<u32> {
        self.export
            .contexts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    fn usable(&self) -> Result<(), NbdError> {
        match &self.broken {
            Some(why) => Err(NbdError::Broken(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs `f`, and marks the connection unusable if it failed in a way
    /// that leaves the stream out of step (anything but a command error).
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, NbdError>,
    ) -> Result<T, NbdError> {
        self.usable()?;
        let r = f(self);
        if let Err(e) = &r {
            if !matches!(e, NbdError::Command { .. } | NbdError::BadRequest(_)) {
                self.broken = Some(e.to_string());
            }
        }
        r
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), NbdError> {
        let min = u64::from(self.export.min_block);
        let end = offset.checked_add(len);
        if end.is_none_or(|e| e > self.export.size) {
            return Err(NbdError::BadRequest(format!(
                "{len} bytes at {offset} go past the export's {} bytes",
                self.export.size
            )));
        }
        if !offset.is_multiple_of(min)
            || (!len.is_multiple_of(min) && end != Some(self.export.size))
        {
            return Err(NbdError::BadRequest(format!(
                "{len} bytes at {offset} are not aligned to the export's {min}-byte blocks"
            )));
        }
        Ok(())
    }

    fn send_request(&mut self, kind: u16, offset: u64, len: u32) -> Result<u64, NbdError> {
        self.cookie += 1;
        let req = proto::encode_request(0, kind, self.cookie, offset, len);
        self.stream
            .write_all(&req)
            .and_then(|()| self.stream.flush())
            .map_err(io("send request"))?;
        Ok(self.cookie)
    }

    /// The next reply header (a simple reply's, or a chunk's) and the
    /// cookie it answers.
    fn any_header(&mut self) -> Result<(ReplyHeader, u64), NbdError> {
        let mut m = [0u8; 4];
        read_exact(&mut self.stream, &mut m, "read reply")?;
        let magic = u32::from_be_bytes(m);
        let mut rest = [0u8; proto::STRUCTURED_HEADER_REST];
        let n = proto::reply_header_rest(magic)?;
        read_exact(&mut self.stream, &mut rest[..n], "read reply")?;
        let h = proto::parse_reply_header(magic, &rest[..n])?;
        let cookie = match h {
            ReplyHeader::Simple { cookie, .. } | ReplyHeader::Chunk { cookie, .. } => cookie,
        };
        Ok((h, cookie))
    }

    /// The next reply header, checked to answer `cookie`.
    fn header(&mut self, cookie: u64) -> Result<ReplyHeader, NbdError> {
        let (h, got) = self.any_header()?;
        if got != cookie {
            return Err(NbdError::Protocol(format!(
                "reply for cookie {got} while only {cookie} is outstanding"
            )));
        }
        Ok(h)
    }

    /// Reads `buf.len()` bytes at `offset` (aligned to the export's minimum
    /// block size), in requests of at most the export's maximum payload,
    /// a few in flight at once.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        self.check_range(offset, buf.len() as u64)?;
        let step = self.step() as u64;
        let end = offset + buf.len() as u64;
        let ranges: Vec<(u64, u32)> = (offset..end)
            .step_by(step as usize)
            .map(|at| (at, (end - at).min(step) as u32))
            .collect();
        self.read_each(&ranges, 4, &mut |i, data| {
            let at = (ranges[i].0 - offset) as usize;
            buf[at..at + data.len()].copy_from_slice(data);
            true
        })
    }

    /// The largest read of one request.
    pub fn step(&self) -> u32 {
        let max = self
            .export
            .max_payload
            .clamp(self.export.min_block, MAX_READ);
        max - max % self.export.min_block
    }

    /// Reads each of `ranges` (offset, length: inside the export, aligned,
    /// each at most [`Client::step`]) with up to `window` requests in
    /// flight (and at most [`MAX_IN_FLIGHT`] bytes), and gives each range's
    /// bytes to `each` with its index, in the order of `ranges`. Many small
    /// extents cost one round trip per `window` of them instead of one
    /// each. `each` returns false to stop: what is in flight is drained,
    /// nothing more is asked.
    pub fn read_each(
        &mut self,
        ranges: &[(u64, u32)],
        window: usize,
        each: &mut dyn FnMut(usize, &[u8]) -> bool,
    ) -> Result<(), NbdError> {
        let step = self.step();
        for &(offset, len) in ranges {
            if len == 0 || len > step {
                return Err(NbdError::BadRequest(format!(
                    "a read of {len} bytes (1 to {step} in one request)"
                )));
            }
            self.check_range(offset, u64::from(len))?;
        }
        self.guarded(|c| c.read_each_unchecked(ranges, window.max(1), each))
    }

    fn read_each_unchecked(
        &mut self,
        ranges: &[(u64, u32)],
        window: usize,
        each: &mut dyn FnMut(usize, &[u8]) -> bool,
    ) -> Result<(), NbdError> {
        let mut flight: HashMap<u64, InFlight> = HashMap::new();
        let mut ready: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let (mut next_send, mut next_give, mut bytes) = (0usize, 0usize, 0u64);
        let mut stop = false;
        let mut failed: Option<NbdError> = None;
        loop {
            while !stop && next_send < ranges.len() && flight.len() < window {
                let (offset, len) = ranges[next_send];
                if !flight.is_empty() && bytes + u64::from(len) > MAX_IN_FLIGHT {
                    break;
                }
                let cookie = self.send_request(proto::CMD_READ, offset, len)?;
                let mut buf = pool.pop().unwrap_or_default();
                buf.clear();
                buf.resize(len as usize, 0);
                flight.insert(cookie, InFlight::new(next_send, offset, len, buf));
                bytes += u64::from(len);
                next_send += 1;
            }
            if flight.is_empty() {
                break;
            }
            let Some((cookie, done)) = self.next_read_chunk(&mut flight)? else {
                continue;
            };
            if !done {
                continue;
            }
            let Some(f) = flight.remove(&cookie) else {
                continue;
            };
            bytes -= u64::from(f.len);
            match f.finish() {
                Ok((index, buf)) => {
                    ready.insert(index, buf);
                }
                Err(e) => {
                    stop = true;
                    failed.get_or_insert(e);
                    continue;
                }
            }
            while let Some(buf) = ready.remove(&next_give) {
                if !stop && !each(next_give, &buf) {
                    stop = true;
                }
                pool.push(buf);
                next_give += 1;
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads one reply message (a simple reply, or one chunk of a
    /// structured one) for a read in `flight`, into its buffer: the cookie,
    /// and whether that read's reply is complete.
    fn next_read_chunk(
        &mut self,
        flight: &mut HashMap<u64, InFlight>,
    ) -> Result<Option<(u64, bool)>, NbdError> {
        let (h, cookie) = self.any_header()?;
        let Some(f) = flight.get_mut(&cookie) else {
            return Err(NbdError::Protocol(format!(
                "reply for cookie {cookie}, which no read in flight has"
            )));
        };
        let (flags, kind, clen) = match (h, self.export.structured) {
            (ReplyHeader::Simple { error: 0, .. }, false) => {
                read_exact(&mut self.stream, &mut f.buf, "read data")?;
                f.total = u64::from(f.len);
                return Ok(Some((cookie, true)));
            }
            (ReplyHeader::Simple { error, .. }, false) => {
                f.failure = Some(proto::ChunkError {
                    errno: error,
                    message: String::new(),
                    offset: None,
                });
                return Ok(Some((cookie, true)));
            }
            (ReplyHeader::Simple { error, .. }, true) => {
                return Err(NbdError::Protocol(format!(
                    "simple reply (error {error}) to a structured read"
                )))
            }
            (ReplyHeader::Chunk { .. }, false) => {
                return Err(NbdError::Protocol(
                    "structured reply that was not negotiated".into(),
                ))
            }
            (
                ReplyHeader::Chunk {
                    flags, kind, len, ..
                },
                true,
            ) => (flags, kind, len),
        };
        // Content chunks may come in any order; each must lie inside the
        // request and overlap no other, and together cover it.
        match kind {
            proto::REPLY_TYPE_OFFSET_DATA => {
                if clen < 9 {
                    return Err(NbdError::Protocol(format!("data chunk of {clen} bytes")));
                }
                let mut o = [0u8; 8];
                read_exact(&mut self.stream, &mut o, "read data")?;
                let at = u64::from_be_bytes(o);
                let n = u64::from(clen - 8);
                let start = claim(&mut f.covered, f.offset, f.len, at, n)?;
                read_exact(
                    &mut self.stream,
                    &mut f.buf[start..start + n as usize],
                    "read data",
                )?;
                f.total += n;
            }
            proto::REPLY_TYPE_OFFSET_HOLE => {
                if clen != 12 {
                    return Err(NbdError::Protocol(format!("hole chunk of {clen} bytes")));
                }
                let mut b = [0u8; 12];
                read_exact(&mut self.stream, &mut b, "read hole")?;
                let at = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                let n = u64::from(u32::from_be_bytes([b[8], b[9], b[10], b[11]]));
                if n == 0 {
                    return Err(NbdError::Protocol("hole of 0 bytes".into()));
                }
                let start = claim(&mut f.covered, f.offset, f.len, at, n)?;
                f.buf[start..start + n as usize].fill(0);
                f.total += n;
            }
            proto::REPLY_TYPE_NONE if clen == 0 => {}
            k if k & proto::REPLY_TYPE_ERROR_BIT != 0 => {
                let e = self.error_chunk(k, clen)?;
                if let Some(f) = flight.get_mut(&cookie) {
                    f.failure.get_or_insert(e);
                }
            }
            k => {
                return Err(NbdError::Protocol(format!(
                    "chunk type {k} of {clen} bytes in a read reply"
                )))
            }
        }
        Ok(Some((cookie, flags & proto::REPLY_FLAG_DONE != 0)))
    }

    /// The chunks of the structured reply to `cookie`, until the one marked
    /// done: `content` handles the kinds its command expects (returning
    /// false for any other); an empty final chunk is accepted, error chunks
    /// are collected, and the first of them fails the command once the
    /// reply is whole. A simple reply carrying an error fails it too.
    fn each_chunk(
        &mut self,
        cookie: u64,
        (command, offset, len): (&'static str, u64, u32),
        mut content: impl FnMut(&mut Self, u16, u32) -> Result<bool, NbdError>,
    ) -> Result<(), NbdError> {
        let mut failure = None;
        loop {
            let (flags, kind, clen) = match self.header(cookie)? {
                ReplyHeader::Chunk {
                    flags, kind, len, ..
                } => (flags, kind, len),
                ReplyHeader::Simple { error, .. } if error != 0 => {
                    return Err(command_error(command, offset, len, error, ""))
                }
                ReplyHeader::Simple { error, .. } => {
                    return Err(NbdError::Protocol(format!(
                        "simple reply (error {error}) to a structured {command}"
                    )))
                }
            };
            if !content(self, kind, clen)? {
                match kind {
                    proto::REPLY_TYPE_NONE if clen == 0 => {}
                    k if k & proto::REPLY_TYPE_ERROR_BIT != 0 => {
                        let e = self.error_chunk(k, clen)?;
                        failure.get_or_insert(e);
                    }
                    k => {
                        return Err(NbdError::Protocol(format!(
                            "chunk type {k} of {clen} bytes in a {command} reply"
                        )))
                    }
                }
            }
            if flags & proto::REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        match failure {
            Some(e) => Err(command_error(command, offset, len, e.errno, &e.message)),
            None => Ok(()),
        }
    }

    fn error_chunk(&mut self, kind: u16, len: u32) -> Result<proto::ChunkError, NbdError> {
        if len > proto::MAX_ERROR_CHUNK {
            return Err(NbdError::Protocol(format!("error chunk of {len} bytes")));
        }
        let b = read_vec(&mut self.stream, len, "read error")?;
        proto::parse_error_chunk(kind, &b)
    }

    /// One `NBD_CMD_BLOCK_STATUS` for `len` bytes at `offset`: the extents
    /// of every selected context, by id. The server may describe less than
    /// asked (at least one extent per context).
    pub fn block_status(
        &mut self,
        offset: u64,
        len: u32,
    ) -> Result<BTreeMap<u32, Vec<Extent>>, NbdError> {
        if self.export.contexts.is_empty() {
            return Err(NbdError::BadRequest(
                "block status without a selected metadata context".into(),
            ));
        }
        if len == 0 {
            return Err(NbdError::BadRequest("block status of 0 bytes".into()));
        }
        self.check_range(offset, u64::from(len))?;
        self.guarded(|c| c.block_status_one(offset, len))
    }

    fn block_status_one(
        &mut self,
        offset: u64,
        len: u32,
    ) -> Result<BTreeMap<u32, Vec<Extent>>, NbdError> {
        let cookie = self.send_request(proto::CMD_BLOCK_STATUS, offset, len)?;
        let mut out = BTreeMap::new();
        self.each_chunk(cookie, ("block status", offset, len), |c, kind, clen| {
            if kind != proto::REPLY_TYPE_BLOCK_STATUS {
                return Ok(false);
            }
            if clen > proto::MAX_BLOCK_STATUS_CHUNK {
                return Err(NbdError::Protocol(format!(
                    "block status chunk of {clen} bytes"
                )));
            }
            let b = read_vec(&mut c.stream, clen, "read block status")?;
            let (ctx, extents) = proto::parse_block_status(&b, offset, len)?;
            if !c.export.contexts.iter().any(|(_, id)| *id == ctx) {
                return Err(NbdError::Protocol(format!(
                    "block status for context {ctx}, which was not selected"
                )));
            }
            if out.insert(ctx, extents).is_some() {
                return Err(NbdError::Protocol(format!(
                    "two block status chunks for context {ctx}"
                )));
            }
            Ok(true)
        })?;
        if out.len() != self.export.contexts.len() {
            return Err(NbdError::Protocol(format!(
                "block status answered {} of the {} selected contexts",
                out.len(),
                self.export.contexts.len()
            )));
        }
        Ok(out)
    }

    /// The extents of `context` covering exactly `len` bytes at `offset`:
    /// as many requests as the server needs, runs with one status merged,
    /// the last clipped to the range.
    pub fn extents(
        &mut self,
        context: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<Extent>, NbdError> {
        let Some(id) = self.context_id(context) else {
            return Err(NbdError::BadRequest(format!(
                "metadata context {context:?} was not selected"
            )));
        };
        self.check_range(offset, len)?;
        let end = offset + len;
        let min = u64::from(self.export.min_block);
        let step = u64::from(MAX_STATUS_RANGE) - u64::from(MAX_STATUS_RANGE) % min;
        let mut out: Vec<Extent> = Vec::new();
        let mut at = offset;
        while at < end {
            let ask = (end - at).min(step) as u32;
            let mut got = self.block_status(at, ask)?;
            let extents = got.remove(&id).unwrap_or_default();
            for mut e in extents {
                if e.offset >= end {
                    break;
                }
                e.len = e.len.min(end - e.offset);
                match out.last_mut() {
                    Some(last) if last.flags == e.flags && last.end() == e.offset => {
                        last.len += e.len;
                    }
                    _ => out.push(e),
                }
            }
            at = out.last().map_or(end, Extent::end);
        }
        Ok(out)
    }

    /// Ends the session politely (`NBD_CMD_DISC`).
    pub fn disconnect(mut self) -> Result<(), NbdError> {
        self.usable()?;
        self.send_request(proto::CMD_DISC, 0, 0).map(|_| ())
    }
}

/// Marks `n` bytes at `at` of a read at `offset` of `len` bytes as received:
/// their index in the caller's buffer, or an error if they fall outside the
/// request or overlap earlier content.
fn claim(
    covered: &mut BTreeMap<u64, u64>,
    offset: u64,
    len: u32,
    at: u64,
    n: u64,
) -> Result<usize, NbdError> {
    let end = at.checked_add(n);
    if at < offset || end.is_none_or(|e| e > offset + u64::from(len)) {
        return Err(NbdError::Protocol(format!(
            "content of {n} bytes at {at} outside the read of {len} bytes at {offset}"
        )));
    }
    let end = at + n;
    let before = covered.range(..end).next_back();
    if before.is_some_and(|(_, &e)| e > at) {
        return Err(NbdError::Protocol(format!(
            "content of {n} bytes at {at} overlaps earlier content"
        )));
    }
    covered.insert(at, end);
    Ok((at - offset) as usize)
}

fn command_error(
    command: &'static str,
    offset: u64,
    len: u32,
    errno: u32,
    message: &str,
) -> NbdError {
    NbdError::Command {
        command,
        offset,
        len: u64::from(len),
        errno: proto::errno_name(errno),
        message: message.to_owned(),
    }
}
