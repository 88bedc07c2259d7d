//! Fuzzes the replication record decoder: it must never panic, and whatever
//! it accepts must encode back to the same bytes.
//! Run: `cargo fuzz run record_decode` (in `fuzz/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match dr_replication::record::decode(&data[at..]) {
            Ok((record, n)) => {
                let mut again = Vec::new();
                record.encode(&mut again);
                assert_eq!(
                    &again[..],
                    &data[at..at + n],
                    "a record decoded but does not re-encode to the same bytes"
                );
                at += n;
            }
            Err(_) => break,
        }
    }
});
