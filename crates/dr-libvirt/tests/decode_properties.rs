//! Bytes a daemon sends, as property tests (the fuzz target
//! `libvirt_decode` runs the same decoders coverage-guided): random bytes
//! never panic a decoder; what is encoded decodes back to the same value;
//! a message cut short anywhere is an error, never a wrong value.

use dr_libvirt::remote::{decode_domains, decode_stats, Lifecycle};
use dr_libvirt::wire::{Domain, Header, Param, RemoteError, REMOTE_PROGRAM};
use dr_libvirt::xdr::{Reader, Writer};
use proptest::prelude::*;

fn domain() -> impl Strategy<Value = Domain> {
    ("[a-z0-9-]{0,20}", any::<[u8; 16]>(), -1i32..1000).prop_map(|(name, uuid, id)| Domain {
        name,
        uuid,
        id,
    })
}

fn param() -> impl Strategy<Value = (String, Param)> {
    (
        "[a-z.0-9]{1,24}",
        prop_oneof![
            any::<i32>().prop_map(Param::Int),
            any::<u32>().prop_map(Param::UInt),
            any::<i64>().prop_map(Param::LLong),
            any::<u64>().prop_map(Param::ULLong),
            any::<bool>().prop_map(Param::Bool),
            "[ -~]{0,30}".prop_map(Param::Str),
        ],
    )
}

fn stats_payload(records: &[(Domain, Vec<(String, Param)>)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(records.len() as u32);
    for (d, params) in records {
        d.encode(&mut w);
        w.u32(params.len() as u32);
        for (k, v) in params {
            v.encode(k, &mut w);
        }
    }
    w.into_bytes()
}

proptest! {
    #[test]
    fn random_bytes_never_panic_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Header::decode(&mut Reader::new(&data));
        let _ = RemoteError::decode(&mut Reader::new(&data));
        let _ = Lifecycle::decode(&data);
        let _ = decode_stats(&data);
        let _ = decode_domains(&data);
        let mut r = Reader::new(&data);
        while Param::decode(&mut r).is_ok() {}
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = dr_libvirt::domxml::DomainXml::parse(text);
            let _ = dr_libvirt::domxml::SnapshotXml::parse(text);
        }
    }

    #[test]
    fn stats_decode_to_what_was_sent_and_a_cut_reply_is_an_error(
        records in proptest::collection::vec((domain(), proptest::collection::vec(param(), 0..6)), 0..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let payload = stats_payload(&records);
        let back = decode_stats(&payload).expect("decodes");
        prop_assert_eq!(back.len(), records.len());
        for (got, (d, params)) in back.iter().zip(&records) {
            prop_assert_eq!(&got.domain, d);
            prop_assert_eq!(&got.params, params);
        }
        if !payload.is_empty() {
            let at = cut.index(payload.len());
            prop_assert!(decode_stats(&payload[..at]).is_err(), "cut at {} of {}", at, payload.len());
        }
    }

    #[test]
    fn a_huge_count_is_refused_without_allocating(count in 0x0100_0000u32..) {
        let mut w = Writer::new();
        w.u32(count);
        prop_assert!(decode_stats(&w.into_bytes()).is_err());
        let mut w = Writer::new();
        w.u32(count).u32(0);
        prop_assert!(decode_domains(&w.into_bytes()).is_err());
    }

    #[test]
    fn headers_frame_and_decode_back(procedure in any::<i32>(), serial in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let f = Header::call(REMOTE_PROGRAM, procedure, serial).frame(&payload);
        let len = dr_libvirt::wire::body_len([f[0], f[1], f[2], f[3]]).expect("length");
        prop_assert_eq!(len, f.len() - 4);
        let h = Header::decode(&mut Reader::new(&f[4..])).expect("header");
        prop_assert_eq!(h, Header::call(REMOTE_PROGRAM, procedure, serial));
    }
}
