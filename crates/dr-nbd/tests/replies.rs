//! The client against scripted servers: valid replies in any shape the
//! spec allows give back exactly the export's bytes and extents; replies
//! that break the spec give an error naming the problem, never a panic or
//! a wrong answer.

mod common;

use common::{Scripted, Server};
use dr_nbd::{Client, Extent, NbdError};
use proptest::prelude::*;

const DIRTY: &str = "qemu:dirty-bitmap:backup-vda";

fn client(server: Server) -> Client<Scripted> {
    Client::handshake(Scripted::new(server.bytes), "vda", &[DIRTY]).expect("handshake")
}

#[test]
fn handshake_learns_size_constraints_and_contexts() {
    let c = client(Server::handshake(1 << 30, &[DIRTY], 512, 1 << 20));
    let e = c.export();
    assert_eq!(
        (e.size, e.min_block, e.max_payload),
        (1 << 30, 512, 1 << 20)
    );
    assert_eq!(c.context_id(DIRTY), Some(10));
    assert!(e.structured);
}

#[test]
fn a_context_the_export_lacks_is_named() {
    let mut s = Server::handshake(1 << 20, &[], 1, 1 << 20);
    // The server selects nothing for the query.
    let mut bytes = Server::default();
    bytes
        .u64(0x4e42_444d_4147_4943)
        .u64(0x4948_4156_454f_5054)
        .u16(3);
    bytes.option_reply(8, 1, &[]).option_reply(10, 1, &[]);
    s.bytes = bytes.bytes;
    let err = Client::handshake(Scripted::new(s.bytes), "vda", &[DIRTY]).expect_err("no context");
    assert!(
        matches!(&err, NbdError::NoContext { context, .. } if context == DIRTY),
        "{err}"
    );
}

#[test]
fn an_unknown_export_is_refused_with_the_servers_message() {
    let mut s = Server::default();
    s.u64(0x4e42_444d_4147_4943)
        .u64(0x4948_4156_454f_5054)
        .u16(3);
    s.option_reply(8, 1, &[]);
    s.option_reply(7, (1 << 31) + 6, b"export 'vdb' not present");
    let err = Client::handshake(Scripted::new(s.bytes), "vdb", &[]).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("NBD_REP_ERR_UNKNOWN") && text.contains("not present"),
        "{text}"
    );
}

#[test]
fn an_oldstyle_or_foreign_server_is_named() {
    let mut s = Server::default();
    s.u64(0x4e42_444d_4147_4943)
        .u64(0x0000_4202_8186_1253)
        .u16(0);
    let err = Client::handshake(Scripted::new(s.bytes), "", &[]).expect_err("oldstyle");
    assert!(err.to_string().contains("oldstyle"), "{err}");
    let err = Client::handshake(Scripted::new(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()), "", &[])
        .expect_err("not NBD");
    assert!(err.to_string().contains("not an NBD server"), "{err}");
}

#[test]
fn a_read_error_chunk_is_reported_and_the_connection_stays_usable() {
    let mut s = Server::handshake(1 << 20, &[DIRTY], 1, 1 << 20);
    s.error(true, 1, 5, "Input/output error on vda");
    s.data(true, 2, 0, &[7u8; 512]);
    let mut c = client(s);
    let mut buf = vec![0u8; 512];
    let err = c.read(0, &mut buf).expect_err("EIO");
    let text = err.to_string();
    assert!(
        text.contains("EIO") && text.contains("Input/output error"),
        "{text}"
    );
    c.read(0, &mut buf).expect("the next read");
    assert_eq!(buf, vec![7u8; 512]);
}

#[test]
fn a_failed_read_among_pipelined_ones_is_reported_after_the_rest_drain() {
    let mut s = Server::handshake(1 << 20, &[DIRTY], 1, 1 << 20);
    s.data(true, 1, 0, &[1u8; 512]);
    s.error(true, 2, 5, "bad sector");
    s.data(true, 3, 1024, &[3u8; 512]);
    s.data(true, 4, 0, &[9u8; 512]);
    let mut c = client(s);
    let mut got = Vec::new();
    let err = c
        .read_each(&[(0, 512), (512, 512), (1024, 512)], 3, &mut |i, _| {
            got.push(i);
            true
        })
        .expect_err("EIO on the second");
    assert!(
        err.to_string().contains("EIO") && err.to_string().contains("bad sector"),
        "{err}"
    );
    assert_eq!(got, vec![0], "nothing after the failed one is given");
    let mut buf = vec![0u8; 512];
    c.read(0, &mut buf)
        .expect("the connection is still in step");
    assert_eq!(buf, vec![9u8; 512]);
}

#[test]
fn content_outside_or_overlapping_breaks_the_connection() {
    let mut s = Server::handshake(1 << 20, &[DIRTY], 1, 1 << 20);
    s.data(false, 1, 0, &[1u8; 256])
        .data(true, 1, 128, &[2u8; 256]);
    let mut c = client(s);
    let mut buf = vec![0u8; 512];
    let err = c.read(0, &mut buf).expect_err("overlap");
    assert!(err.to_string().contains("overlaps"), "{err}");
    let again = c.read(0, &mut buf).expect_err("broken");
    assert!(matches!(again, NbdError::Broken(_)), "{again}");

    let mut s = Server::handshake(1 << 20, &[DIRTY], 1, 1 << 20);
    s.data(true, 1, 4096, &[1u8; 512]);
    let err = client(s).read(0, &mut buf).expect_err("outside");
    assert!(err.to_string().contains("outside"), "{err}");

    let mut s = Server::handshake(1 << 20, &[DIRTY], 1, 1 << 20);
    s.data(true, 1, 0, &[1u8; 256]);
    let err = client(s).read(0, &mut buf).expect_err("short");
    assert!(err.to_string().contains("covered 256 of the 512"), "{err}");
}

#[test]
fn requests_out_of_bounds_or_unaligned_are_not_sent() {
    let mut c = client(Server::handshake(1 << 20, &[DIRTY], 512, 1 << 20));
    let mut buf = vec![0u8; 512];
    assert!(matches!(
        c.read((1 << 20) - 256, &mut buf),
        Err(NbdError::BadRequest(_))
    ));
    assert!(matches!(
        c.read(100, &mut buf),
        Err(NbdError::BadRequest(_))
    ));
    assert!(matches!(
        c.extents("base:allocation", 0, 512),
        Err(NbdError::BadRequest(_))
    ));
}

#[test]
fn block_status_beyond_the_request_or_for_an_unselected_context_is_refused() {
    let mut s = Server::handshake(1 << 20, &[DIRTY], 1, 1 << 20);
    s.status(true, 1, 10, &[(4096, 0), (4096, 1)]);
    let err = client(s).block_status(0, 4096).expect_err("past");
    assert!(err.to_string().contains("past the 4096 bytes"), "{err}");

    let mut s = Server::handshake(1 << 20, &[DIRTY], 1, 1 << 20);
    s.status(true, 1, 99, &[(4096, 0)]);
    let err = client(s).block_status(0, 4096).expect_err("context");
    assert!(err.to_string().contains("not selected"), "{err}");
}

/// A read of `data` at `offset`, answered in `pieces` shuffled by `order`;
/// all-zero pieces sent as holes when `holes`.
fn scripted_read(data: &[u8], cuts: &[usize], order: &[usize], holes: bool) -> Server {
    let mut s = Server::handshake(1 << 30, &[DIRTY], 1, 1 << 25);
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % data.len()).collect();
    bounds.push(0);
    bounds.push(data.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut pieces: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let n = pieces.len();
    for (i, o) in order.iter().enumerate() {
        pieces.swap(i % n, o % n);
    }
    let last = pieces.len() - 1;
    for (i, (a, b)) in pieces.into_iter().enumerate() {
        let at = 4096 + a as u64;
        if holes && data[a..b].iter().all(|&x| x == 0) {
            s.hole(i == last, 1, at, (b - a) as u32);
        } else {
            s.data(i == last, 1, at, &data[a..b]);
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_valid_chunking_of_a_read_gives_the_bytes(
        data in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 1..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        order in proptest::collection::vec(any::<usize>(), 0..12),
        holes in any::<bool>(),
    ) {
        let mut c = client(scripted_read(&data, &cuts, &order, holes));
        let mut got = vec![0xeeu8; data.len()];
        c.read(4096, &mut got).expect("valid reply");
        prop_assert_eq!(got, data);
    }

    #[test]
    fn pipelined_reads_give_each_range_in_order_however_the_replies_interleave(
        sizes in proptest::collection::vec(1usize..3000, 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        order in proptest::collection::vec(any::<usize>(), 0..64),
        window in 1usize..6,
    ) {
        // Range i is `sizes[i]` bytes at 8192 * i, its bytes i-patterned.
        let data: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|k| (k * 7 + i * 31) as u8).collect())
            .collect();
        let ranges: Vec<(u64, u32)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (8192 * i as u64, n as u32))
            .collect();
        // Each reply in pieces; the pieces of all replies shuffled, each
        // reply's last piece (DONE) kept after its others. A reply can only
        // come once its request was sent: with `window` in flight, request
        // i goes out once i - window + 1 replies are complete, so no piece
        // of reply i comes before that.
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        for (i, d) in data.iter().enumerate() {
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % d.len()).collect();
            bounds.push(0);
            bounds.push(d.len());
            bounds.sort_unstable();
            bounds.dedup();
            for w in bounds.windows(2) {
                pieces.push((i, w[0], w[1]));
            }
        }
        let n = pieces.len();
        for (k, o) in order.iter().enumerate() {
            let (a, b) = (k % n, o % n);
            // Swap only what stays valid: a reply's last piece after its
            // others, and no reply earlier than one a window before it.
            let ok = |list: &[(usize, usize, usize)]| {
                let mut got = vec![0usize; data.len()];
                let mut complete = 0;
                for &(i, s, e) in list {
                    if got[i] == data[i].len() || i >= window + complete {
                        return false;
                    }
                    got[i] += e - s;
                    if got[i] == data[i].len() {
                        complete += 1;
                    }
                }
                true
            };
            pieces.swap(a, b);
            if !ok(&pieces) {
                pieces.swap(a, b);
            }
        }
        let mut s = Server::handshake(1 << 30, &[DIRTY], 1, 1 << 25);
        let mut left: Vec<usize> = data.iter().map(Vec::len).collect();
        for (i, a, b) in pieces {
            left[i] -= b - a;
            s.data(left[i] == 0, i as u64 + 1, ranges[i].0 + a as u64, &data[i][a..b]);
        }
        let mut c = client(s);
        let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
        c.read_each(&ranges, window, &mut |i, bytes| {
            got.push((i, bytes.to_vec()));
            true
        })
        .expect("valid replies");
        prop_assert_eq!(got.len(), data.len());
        for (k, (i, bytes)) in got.into_iter().enumerate() {
            prop_assert_eq!(i, k, "in the order of the ranges");
            prop_assert_eq!(&bytes, &data[k]);
        }
    }

    #[test]
    fn extents_cover_exactly_the_range_asked(
        runs in proptest::collection::vec((1u32..200_000, 0u32..2), 1..40),
        start in 0u64..4096,
        len in 1u64..2_000_000,
    ) {
        // The server answers one request per call with the runs it has from
        // where it was asked, as the spec allows (fewer than asked, the
        // last one running past the end).
        let size = 1u64 << 32;
        let mut s = Server::handshake(size, &[DIRTY], 1, 1 << 25);
        let mut at = start;
        let mut cookie = 0;
        let mut expected: Vec<Extent> = Vec::new();
        let end = start + len;
        let mut i = 0;
        while at < end {
            cookie += 1;
            // Up to three runs per reply, from run i on; beyond the runs,
            // one clean run to the end.
            let mut reply = Vec::new();
            for _ in 0..3 {
                if at >= end { break; }
                let (l, f) = if i < runs.len() { runs[i] } else { ((end - at) as u32, 0) };
                i += 1;
                reply.push((l, f));
                let e = Extent { offset: at, len: u64::from(l).min(end - at), flags: f };
                match expected.last_mut() {
                    Some(last) if last.flags == e.flags && last.end() == e.offset => last.len += e.len,
                    _ => expected.push(e),
                }
                at += u64::from(l);
            }
            s.status(true, cookie, 10, &reply);
        }
        let mut c = client(s);
        let got = c.extents(DIRTY, start, len).expect("valid replies");
        prop_assert_eq!(got.first().map(|e| e.offset), Some(start));
        prop_assert_eq!(got.last().map(Extent::end), Some(end));
        prop_assert!(got.windows(2).all(|w| w[0].end() == w[1].offset && w[0].flags != w[1].flags));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn a_damaged_server_stream_never_panics(
        data in proptest::collection::vec(any::<u8>(), 1..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut_at in any::<usize>(),
    ) {
        let mut s = scripted_read(&data, &cuts, &[], true);
        s.status(true, 2, 10, &[(512, 1), (512, 0)]);
        let mut bytes = s.bytes;
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x | 1;
        }
        bytes.truncate(cut_at % (bytes.len() + 1));
        if let Ok(mut c) = Client::handshake(Scripted::new(bytes), "vda", &[DIRTY]) {
            let mut got = vec![0u8; data.len()];
            let _ = c.read(4096, &mut got);
            let _ = c.block_status(0, 1024);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut s = Server::handshake(1 << 20, &[DIRTY], 1, 1 << 20);
        s.bytes.extend_from_slice(&bytes);
        if let Ok(mut c) = Client::handshake(Scripted::new(s.bytes), "vda", &[DIRTY]) {
            let mut got = vec![0u8; 512];
            let _ = c.read(0, &mut got);
            let _ = c.extents(DIRTY, 0, 1 << 20);
        }
    }
}
