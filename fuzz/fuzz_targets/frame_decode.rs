//! Fuzzes the replication frame decoder, in both of its modes (the
//! handshake's MAC over clear text, the session's AES-256-GCM): arbitrary
//! bytes must never panic it nor authenticate, an authentic frame must come
//! back unchanged, and an authentic frame with any one byte changed must be
//! refused.
//! Run: `cargo fuzz run frame_decode` (in `fuzz/`).
#![no_main]

use dr_replication::wire::{self, Auth, Kind};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const KEY: &[u8] = b"fuzzing pre-shared key";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn auth(sealed: bool) -> Auth {
    if sealed {
        Auth::sealed(&wire::session_key(KEY, &[1; 16], &[2; 16]), 0)
    } else {
        Auth::new(KEY, 0)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sealed = mode & 2 != 0;
    runtime().block_on(async {
        if mode % 2 == 0 {
            // Raw bytes off the wire: refused or (never) accepted, no panic.
            let mut r = rest;
            let got = wire::recv(&mut r, &mut auth(sealed)).await;
            assert!(got.is_err(), "random bytes authenticated");
            return;
        }
        // An authentic frame, then the same frame with one byte flipped.
        let Some((&flip, payload)) = rest.split_first() else {
            return;
        };
        let mut frame = Vec::new();
        wire::send(&mut frame, &mut auth(sealed), Kind::Records, &mut payload.to_vec())
            .await
            .expect("send to memory");
        let mut r = &frame[..];
        let (kind, back) = wire::recv(&mut r, &mut auth(sealed))
            .await
            .expect("an authentic frame is accepted");
        assert_eq!((kind, &back[..]), (Kind::Records, payload));
        let at = flip as usize % frame.len();
        frame[at] ^= 0x01;
        let mut r = &frame[..];
        assert!(
            wire::recv(&mut r, &mut auth(sealed)).await.is_err(),
            "a frame with byte {at} changed was accepted"
        );
    });
});
