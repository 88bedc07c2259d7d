//! Fuzzes the NBD client with whatever a server might send: the handshake,
//! then a block status query and a read. It must never panic, never hang,
//! and never allocate more than the bounds the protocol sets.
//! Run: `cargo fuzz run nbd_client` (in `fuzz/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, Read, Write};

struct Server(Cursor<Vec<u8>>);

impl Read for Server {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Server {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let stream = Server(Cursor::new(data.to_vec()));
    let contexts = ["qemu:dirty-bitmap:backup-vda", "base:allocation"];
    if let Ok(mut c) = dr_nbd::Client::handshake(stream, "vda", &contexts) {
        let size = c.export().size.min(1 << 20);
        let _ = c.extents(contexts[0], 0, size);
        let mut buf = vec![0u8; size.min(65536) as usize];
        let _ = c.read(0, &mut buf);
    }
});
