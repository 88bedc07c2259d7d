//! A scripted NBD server for the client's tests: the bytes a server sends,
//! built up front (the client's requests are deterministic: cookies count
//! from 1), replayed to the client, and what the client sent kept.

#![allow(dead_code)]

use std::io::{Cursor, Read, Write};

/// The stream the client talks to.
pub struct Scripted {
    input: Cursor<Vec<u8>>,
    /// What the client wrote.
    pub sent: Vec<u8>,
}

impl Scripted {
    pub fn new(server: Vec<u8>) -> Scripted {
        Scripted {
            input: Cursor::new(server),
            sent: Vec::new(),
        }
    }
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sent.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds what a server sends.
#[derive(Default)]
pub struct Server {
    pub bytes: Vec<u8>,
}

impl Server {
    /// The greeting and the replies to the client's handshake: structured
    /// replies agreed, `contexts` selected with ids 10, 11, …, the export
    /// of `size` bytes with `min`/`max` block sizes.
    pub fn handshake(size: u64, contexts: &[&str], min: u32, max: u32) -> Server {
        let mut s = Server::default();
        s.u64(0x4e42_444d_4147_4943)
            .u64(0x4948_4156_454f_5054)
            .u16(3);
        s.option_reply(8, 1, &[]);
        if !contexts.is_empty() {
            for (i, c) in contexts.iter().enumerate() {
                let mut d = (10 + i as u32).to_be_bytes().to_vec();
                d.extend_from_slice(c.as_bytes());
                s.option_reply(10, 4, &d);
            }
            s.option_reply(10, 1, &[]);
        }
        let mut info = 0u16.to_be_bytes().to_vec();
        info.extend_from_slice(&size.to_be_bytes());
        info.extend_from_slice(&(1u16 | 2 | 256).to_be_bytes());
        s.option_reply(7, 3, &info);
        let mut bs = 3u16.to_be_bytes().to_vec();
        for x in [min, 4096, max] {
            bs.extend_from_slice(&x.to_be_bytes());
        }
        s.option_reply(7, 3, &bs);
        s.option_reply(7, 1, &[]);
        s
    }

    pub fn u16(&mut self, x: u16) -> &mut Self {
        self.bytes.extend_from_slice(&x.to_be_bytes());
        self
    }
    pub fn u32(&mut self, x: u32) -> &mut Self {
        self.bytes.extend_from_slice(&x.to_be_bytes());
        self
    }
    pub fn u64(&mut self, x: u64) -> &mut Self {
        self.bytes.extend_from_slice(&x.to_be_bytes());
        self
    }

    pub fn option_reply(&mut self, option: u32, kind: u32, data: &[u8]) -> &mut Self {
        self.u64(0x0003_e889_0455_65a9)
            .u32(option)
            .u32(kind)
            .u32(data.len() as u32);
        self.bytes.extend_from_slice(data);
        self
    }

    pub fn chunk(&mut self, done: bool, kind: u16, cookie: u64, payload: &[u8]) -> &mut Self {
        self.u32(0x668e_33ef)
            .u16(u16::from(done))
            .u16(kind)
            .u64(cookie)
            .u32(payload.len() as u32);
        self.bytes.extend_from_slice(payload);
        self
    }

    pub fn data(&mut self, done: bool, cookie: u64, offset: u64, data: &[u8]) -> &mut Self {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(data);
        self.chunk(done, 1, cookie, &p)
    }

    pub fn hole(&mut self, done: bool, cookie: u64, offset: u64, len: u32) -> &mut Self {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(&len.to_be_bytes());
        self.chunk(done, 2, cookie, &p)
    }

    pub fn status(
        &mut self,
        done: bool,
        cookie: u64,
        context: u32,
        extents: &[(u32, u32)],
    ) -> &mut Self {
        let mut p = context.to_be_bytes().to_vec();
        for (len, flags) in extents {
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&flags.to_be_bytes());
        }
        self.chunk(done, 5, cookie, &p)
    }

    pub fn error(&mut self, done: bool, cookie: u64, errno: u32, message: &str) -> &mut Self {
        let mut p = errno.to_be_bytes().to_vec();
        p.extend_from_slice(&(message.len() as u16).to_be_bytes());
        p.extend_from_slice(message.as_bytes());
        self.chunk(done, 0x8001, cookie, &p)
    }
}
