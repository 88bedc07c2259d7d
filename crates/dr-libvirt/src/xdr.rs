//! XDR (RFC 4506), as libvirt's remote protocol encodes it: big-endian
//! 4-byte units, strings and variable opaques padded to 4 bytes, optional
//! values as a boolean then the value. The reader is bounded: every length
//! is checked against what is left of the message and against the limit
//! the protocol file gives, so a hostile or broken peer gets an error, never
//! a large allocation or a panic.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The message ended before the value did.
    #[error("message too short: {what} needs {need} bytes at offset {at}, {left} left")]
    Short {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Where.
        at: usize,
        /// Bytes left.
        left: usize,
    },
    /// A length beyond the protocol's limit for that field.
    #[error("{what} of length {len} exceeds the protocol's limit of {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A string that is not UTF-8.
    #[error("{what} is not UTF-8")]
    NotUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A discriminant or boolean outside its range.
    #[error("{what} has invalid value {value}")]
    BadValue {
        /// The field.
        what: &'static str,
        /// The value found.
        value: i64,
    },
    /// Bytes left over after the whole value was read.
    #[error("{left} bytes left after the end of {what}")]
    Trailing {
        /// What was read.
        what: &'static str,
        /// Bytes left.
        left: usize,
    },
}

/// `REMOTE_STRING_MAX`: the longest string libvirt sends or accepts.
pub const STRING_MAX: usize = 1 << 20;

/// Writes XDR into a growing buffer.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// A signed 32-bit integer.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An unsigned 64-bit integer (`unsigned hyper`).
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A signed 64-bit integer (`hyper`).
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A boolean (an int of 0 or 1).
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    fn pad(&mut self, len: usize) {
        let pad = (4 - len % 4) % 4;
        self.buf.extend_from_slice(&[0; 3][..pad]);
    }

    /// Fixed-length opaque data (a UUID).
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad(bytes.len());
        self
    }

    /// Variable-length opaque data.
    pub fn opaque(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(bytes.len() as u32);
        self.fixed(bytes)
    }

    /// A non-null string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.opaque(s.as_bytes())
    }

    /// A string that may be null.
    pub fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.bool(false),
            Some(s) => self.bool(true).str(s),
        }
    }
}

/// Reads XDR from a message's payload, checking every length.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless everything was read.
    pub fn finish(&self, what: &'static str) -> Result<(), XdrError> {
        match self.left() {
            0 => Ok(()),
            left => Err(XdrError::Trailing { what, left }),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], XdrError> {
        if n > self.left() {
            return Err(XdrError::Short {
                what,
                need: n,
                at: self.pos,
                left: self.left(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn word(&mut self, what: &'static str) -> Result<[u8; 4], XdrError> {
        let b = self.take(4, what)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// A signed 32-bit integer.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, XdrError> {
        Ok(i32::from_be_bytes(self.word(what)?))
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, XdrError> {
        Ok(u32::from_be_bytes(self.word(what)?))
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, XdrError> {
        let b = self.take(8, what)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A signed 64-bit integer.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, XdrError> {
        Ok(self.u64(what)? as i64)
    }

    /// A double.
    pub fn f64(&mut self, what: &'static str) -> Result<f64, XdrError> {
        Ok(f64::from_bits(self.u64(what)?))
    }

    /// A boolean: 0 or 1, anything else is an error.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, XdrError> {
        match self.u32(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadValue {
                what,
                value: i64::from(v),
            }),
        }
    }

    fn skip_pad(&mut self, len: usize, what: &'static str) -> Result<(), XdrError> {
        let pad = (4 - len % 4) % 4;
        self.take(pad, what).map(drop)
    }

    /// Fixed-length opaque data of `n` bytes.
    pub fn fixed(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], XdrError> {
        let b = self.take(n, what)?;
        self.skip_pad(n, what)?;
        Ok(b)
    }

    /// A count or length, checked against `max` and against what is left
    /// (each element takes at least `min_size` bytes).
    pub fn len(
        &mut self,
        max: usize,
        min_size: usize,
        what: &'static str,
    ) -> Result<usize, XdrError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(XdrError::TooLong {
                what,
                len: n as u64,
                max: max as u64,
            });
        }
        if n.saturating_mul(min_size) > self.left() {
            return Err(XdrError::Short {
                what,
                need: n.saturating_mul(min_size),
                at: self.pos,
                left: self.left(),
            });
        }
        Ok(n)
    }

    /// Variable-length opaque data of at most `max` bytes.
    pub fn opaque(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], XdrError> {
        let n = self.len(max, 1, what)?;
        self.fixed(n, what)
    }

    /// A non-null string of at most [`STRING_MAX`] bytes.
    pub fn string(&mut self, what: &'static str) -> Result<String, XdrError> {
        let b = self.opaque(STRING_MAX, what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| XdrError::NotUtf8 { what })
    }

    /// A string that may be null.
    pub fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, XdrError> {
        if self.bool(what)? {
            self.string(what).map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_padded_to_four_bytes() {
        let mut w = Writer::new();
        w.str("abcde").u32(7).opt_str(None).opt_str(Some("x"));
        let b = w.into_bytes();
        assert_eq!(&b[..4], &[0, 0, 0, 5]);
        assert_eq!(&b[4..12], b"abcde\0\0\0");
        let mut r = Reader::new(&b);
        assert_eq!(r.string("s").as_deref(), Ok("abcde"));
        assert_eq!(r.u32("n"), Ok(7));
        assert_eq!(r.opt_string("o"), Ok(None));
        assert_eq!(r.opt_string("o"), Ok(Some("x".to_owned())));
        assert_eq!(r.finish("all"), Ok(()));
    }

    #[test]
    fn a_length_past_the_end_is_an_error_not_an_allocation() {
        let b = [0x7f, 0xff, 0xff, 0xff];
        let mut r = Reader::new(&b);
        assert!(matches!(r.string("s"), Err(XdrError::TooLong { .. })));
        let b = [0, 0, 0x10, 0, 1, 2];
        let mut r = Reader::new(&b);
        assert!(matches!(r.string("s"), Err(XdrError::Short { .. })));
        let mut r = Reader::new(&[0, 0, 0, 2]);
        assert!(matches!(r.bool("b"), Err(XdrError::BadValue { .. })));
    }
}
