//! Bytes from a libvirt daemon: whatever arrives, every decoder returns a
//! value or an error, never panics or allocates past the protocol's limits;
//! a header it accepts frames back to the same bytes.
#![no_main]

use dr_libvirt::domxml::{DomainXml, SnapshotXml};
use dr_libvirt::wire::{self, Header, Param, RemoteError};
use dr_libvirt::xdr::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = wire::body_len([data[0], data[1], data[2], data[3]]);
    }
    let mut r = Reader::new(data);
    if let Ok(h) = Header::decode(&mut r) {
        let framed = h.frame(&[]);
        assert_eq!(&framed[4..], &data[..wire::HEADER_LEN]);
    }
    let _ = RemoteError::decode(&mut Reader::new(data));
    let _ = dr_libvirt::remote::Lifecycle::decode(data);
    let _ = dr_libvirt::remote::decode_stats(data);
    let _ = dr_libvirt::remote::decode_domains(data);
    let mut r = Reader::new(data);
    while Param::decode(&mut r).is_ok() {}
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DomainXml::parse(text);
        let _ = SnapshotXml::parse(text);
        let _ = dr_libvirt::host::agent_address(text);
    }
});
