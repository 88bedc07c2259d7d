//! libvirt's RPC messages (`virnetprotocol.x`): a 4-byte length that counts
//! itself, a 24-byte header (program, version, procedure, type, serial,
//! status) and the payload; the error a failed call returns; and the types
//! every procedure shares (domain and snapshot references, typed
//! parameters).

use crate::xdr::{Reader, Writer, XdrError};

/// The remote program (`REMOTE_PROGRAM`).
pub const REMOTE_PROGRAM: u32 = 0x2000_8086;
/// The QEMU-specific program (`QEMU_PROGRAM`): the guest agent.
pub const QEMU_PROGRAM: u32 = 0x2000_8087;
/// The keepalive program (`KEEPALIVE_PROGRAM`, "keep").
pub const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
/// Every program's version.
pub const PROTOCOL_VERSION: u32 = 1;
/// `VIR_NET_MESSAGE_MAX`: the largest message after its length word.
pub const MESSAGE_MAX: usize = 16 << 20;
/// The header's size.
pub const HEADER_LEN: usize = 24;

/// `virNetMessageType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// A call from the client.
    Call,
    /// The server's reply to a call.
    Reply,
    /// An asynchronous message (an event, a keepalive).
    Message,
    /// Stream data.
    Stream,
    /// A call carrying file descriptors.
    CallWithFds,
    /// A reply carrying file descriptors.
    ReplyWithFds,
}

impl MessageType {
    fn code(self) -> i32 {
        match self {
            MessageType::Call => 0,
            MessageType::Reply => 1,
            MessageType::Message => 2,
            MessageType::Stream => 3,
            MessageType::CallWithFds => 4,
            MessageType::ReplyWithFds => 5,
        }
    }

    fn from_code(c: i32) -> Result<MessageType, XdrError> {
        Ok(match c {
            0 => MessageType::Call,
            1 => MessageType::Reply,
            2 => MessageType::Message,
            3 => MessageType::Stream,
            4 => MessageType::CallWithFds,
            5 => MessageType::ReplyWithFds,
            v => {
                return Err(XdrError::BadValue {
                    what: "message type",
                    value: i64::from(v),
                })
            }
        })
    }
}

/// `virNetMessageStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Success (always, for calls and events).
    Ok,
    /// The call failed: the payload is a [`RemoteError`].
    Error,
    /// More stream data follows.
    Continue,
}

/// `virNetMessageHeader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The program.
    pub program: u32,
    /// Its version.
    pub version: u32,
    /// The procedure.
    pub procedure: i32,
    /// The kind of message.
    pub kind: MessageType,
    /// The call's serial (replies carry their call's; events 0).
    pub serial: u32,
    /// The outcome.
    pub status: Status,
}

impl Header {
    /// A call's header.
    pub fn call(program: u32, procedure: i32, serial: u32) -> Header {
        Header {
            program,
            version: PROTOCOL_VERSION,
            procedure,
            kind: MessageType::Call,
            serial,
            status: Status::Ok,
        }
    }

    /// A whole message: length word, this header, then `payload`.
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32((4 + HEADER_LEN + payload.len()) as u32)
            .u32(self.program)
            .u32(self.version)
            .i32(self.procedure)
            .i32(self.kind.code())
            .u32(self.serial)
            .i32(match self.status {
                Status::Ok => 0,
                Status::Error => 1,
                Status::Continue => 2,
            });
        let mut b = w.into_bytes();
        b.extend_from_slice(payload);
        b
    }

    /// Reads a header from the first [`HEADER_LEN`] bytes of a message
    /// (after its length word).
    pub fn decode(r: &mut Reader<'_>) -> Result<Header, XdrError> {
        let program = r.u32("header program")?;
        let version = r.u32("header version")?;
        let procedure = r.i32("header procedure")?;
        let kind = MessageType::from_code(r.i32("header type")?)?;
        let serial = r.u32("header serial")?;
        let status = match r.i32("header status")? {
            0 => Status::Ok,
            1 => Status::Error,
            2 => Status::Continue,
            v => {
                return Err(XdrError::BadValue {
                    what: "header status",
                    value: i64::from(v),
                })
            }
        };
        Ok(Header {
            program,
            version,
            procedure,
            kind,
            serial,
            status,
        })
    }
}

/// The length word of a message, checked: at least a header, at most
/// [`MESSAGE_MAX`] after the word. Returns the bytes that follow it.
pub fn body_len(word: [u8; 4]) -> Result<usize, XdrError> {
    let len = u32::from_be_bytes(word) as usize;
    if len < 4 + HEADER_LEN {
        return Err(XdrError::Short {
            what: "message",
            need: 4 + HEADER_LEN,
            at: 0,
            left: len,
        });
    }
    if len - 4 > MESSAGE_MAX {
        return Err(XdrError::TooLong {
            what: "message",
            len: len as u64,
            max: (MESSAGE_MAX + 4) as u64,
        });
    }
    Ok(len - 4)
}

/// `remote_error`: what a failed call says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError {
    /// `virErrorNumber` (42: no such domain, 55: invalid operation, ...).
    pub code: i32,
    /// `virErrorDomain`: the part of libvirt that failed.
    pub domain: i32,
    /// The message.
    pub message: Option<String>,
}

impl RemoteError {
    /// Decodes the payload of an error reply.
    pub fn decode(r: &mut Reader<'_>) -> Result<RemoteError, XdrError> {
        let code = r.i32("error code")?;
        let domain = r.i32("error domain")?;
        let message = r.opt_string("error message")?;
        let _level = r.i32("error level")?;
        if r.bool("error domain ref")? {
            Domain::decode(r)?;
        }
        for what in ["error str1", "error str2", "error str3"] {
            r.opt_string(what)?;
        }
        let _int1 = r.i32("error int1")?;
        let _int2 = r.i32("error int2")?;
        if r.bool("error network ref")? {
            r.string("error network name")?;
            r.fixed(16, "error network uuid")?;
        }
        Ok(RemoteError {
            code,
            domain,
            message,
        })
    }
}

/// `virErrorNumber` values vmdr tells apart.
pub mod code {
    /// `VIR_ERR_NO_SUPPORT`.
    pub const NO_SUPPORT: i32 = 3;
    /// `VIR_ERR_OPERATION_FAILED`.
    pub const OPERATION_FAILED: i32 = 9;
    /// `VIR_ERR_DOM_EXIST`.
    pub const DOM_EXIST: i32 = 28;
    /// `VIR_ERR_NO_DOMAIN`.
    pub const NO_DOMAIN: i32 = 42;
    /// `VIR_ERR_AUTH_FAILED`.
    pub const AUTH_FAILED: i32 = 45;
    /// `VIR_ERR_OPERATION_INVALID`.
    pub const OPERATION_INVALID: i32 = 55;
    /// `VIR_ERR_OPERATION_TIMEOUT`.
    pub const OPERATION_TIMEOUT: i32 = 68;
    /// `VIR_ERR_NO_DOMAIN_SNAPSHOT`.
    pub const NO_DOMAIN_SNAPSHOT: i32 = 72;
    /// `VIR_ERR_NO_DOMAIN_METADATA`.
    pub const NO_DOMAIN_METADATA: i32 = 80;
    /// `VIR_ERR_OPERATION_UNSUPPORTED`.
    pub const OPERATION_UNSUPPORTED: i32 = 84;
    /// `VIR_ERR_AGENT_UNRESPONSIVE`.
    pub const AGENT_UNRESPONSIVE: i32 = 86;
    /// `VIR_ERR_AGENT_COMMAND_TIMEOUT`.
    pub const AGENT_COMMAND_TIMEOUT: i32 = 112;
}

/// `remote_nonnull_domain`: a domain as the protocol names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// Its running instance's id, -1 when it is not running.
    pub id: i32,
}

impl Domain {
    /// Writes the reference.
    pub fn encode(&self, w: &mut Writer) {
        w.str(&self.name).fixed(&self.uuid).i32(self.id);
    }

    /// Reads a reference.
    pub fn decode(r: &mut Reader<'_>) -> Result<Domain, XdrError> {
        let name = r.string("domain name")?;
        let mut uuid = [0; 16];
        uuid.copy_from_slice(r.fixed(16, "domain uuid")?);
        let id = r.i32("domain id")?;
        Ok(Domain { name, uuid, id })
    }
}

/// `remote_nonnull_domain_checkpoint`: laid out as a snapshot's reference
/// (a name and its domain).
pub type Checkpoint = Snapshot;

/// `remote_nonnull_domain_snapshot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Its name.
    pub name: String,
    /// Its domain.
    pub domain: Domain,
}

impl Snapshot {
    /// Writes the reference.
    pub fn encode(&self, w: &mut Writer) {
        w.str(&self.name);
        self.domain.encode(w);
    }

    /// Reads a reference.
    pub fn decode(r: &mut Reader<'_>) -> Result<Snapshot, XdrError> {
        let name = r.string("snapshot name")?;
        let domain = Domain::decode(r)?;
        Ok(Snapshot { name, domain })
    }
}

/// A typed parameter's value (`remote_typed_param_value`).
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// `VIR_TYPED_PARAM_INT`.
    Int(i32),
    /// `VIR_TYPED_PARAM_UINT`.
    UInt(u32),
    /// `VIR_TYPED_PARAM_LLONG`.
    LLong(i64),
    /// `VIR_TYPED_PARAM_ULLONG`.
    ULLong(u64),
    /// `VIR_TYPED_PARAM_DOUBLE`.
    Double(f64),
    /// `VIR_TYPED_PARAM_BOOLEAN`.
    Bool(bool),
    /// `VIR_TYPED_PARAM_STRING`.
    Str(String),
}

impl Param {
    /// As an unsigned number, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Param::Int(v) => u64::try_from(v).ok(),
            Param::UInt(v) => Some(u64::from(v)),
            Param::LLong(v) => u64::try_from(v).ok(),
            Param::ULLong(v) => Some(v),
            _ => None,
        }
    }

    /// Writes `field` and this value (`remote_typed_param`).
    pub fn encode(&self, field: &str, w: &mut Writer) {
        w.str(field);
        match self {
            Param::Int(v) => w.i32(1).i32(*v),
            Param::UInt(v) => w.i32(2).u32(*v),
            Param::LLong(v) => w.i32(3).i64(*v),
            Param::ULLong(v) => w.i32(4).u64(*v),
            Param::Double(v) => w.i32(5).u64(v.to_bits()),
            Param::Bool(v) => w.i32(6).bool(*v),
            Param::Str(v) => w.i32(7).str(v),
        };
    }

    /// Reads one `remote_typed_param`.
    pub fn decode(r: &mut Reader<'_>) -> Result<(String, Param), XdrError> {
        let field = r.string("typed parameter name")?;
        let value = match r.i32("typed parameter type")? {
            1 => Param::Int(r.i32("typed parameter")?),
            2 => Param::UInt(r.u32("typed parameter")?),
            3 => Param::LLong(r.i64("typed parameter")?),
            4 => Param::ULLong(r.u64("typed parameter")?),
            5 => Param::Double(r.f64("typed parameter")?),
            6 => Param::Bool(r.i32("typed parameter")? != 0),
            7 => Param::Str(r.string("typed parameter")?),
            v => {
                return Err(XdrError::BadValue {
                    what: "typed parameter type",
                    value: i64::from(v),
                })
            }
        };
        Ok((field, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_frames_with_a_length_that_counts_itself() {
        let f = Header::call(REMOTE_PROGRAM, 1, 7).frame(&[1, 2, 3, 4]);
        assert_eq!(f.len(), 32);
        assert_eq!(body_len([f[0], f[1], f[2], f[3]]), Ok(28));
        let mut r = Reader::new(&f[4..]);
        let h = Header::decode(&mut r).expect("header");
        assert_eq!(h, Header::call(REMOTE_PROGRAM, 1, 7));
        assert_eq!(r.left(), 4);
    }

    #[test]
    fn lengths_outside_the_protocol_are_refused() {
        assert!(body_len([0, 0, 0, 8]).is_err());
        assert!(body_len([0xff, 0xff, 0xff, 0xff]).is_err());
        assert_eq!(
            body_len(((MESSAGE_MAX + 4) as u32).to_be_bytes()),
            Ok(MESSAGE_MAX)
        );
    }

    #[test]
    fn typed_parameters_round_trip() {
        for p in [
            Param::Int(-3),
            Param::UInt(3),
            Param::LLong(-1 << 40),
            Param::ULLong(1 << 40),
            Param::Double(1.5),
            Param::Bool(true),
            Param::Str("x".into()),
        ] {
            let mut w = Writer::new();
            p.encode("f", &mut w);
            let b = w.into_bytes();
            let mut r = Reader::new(&b);
            assert_eq!(Param::decode(&mut r), Ok(("f".to_owned(), p)));
            assert_eq!(r.left(), 0);
        }
    }
}
