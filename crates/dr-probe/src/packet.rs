//! ICMP echo packets: building requests and recognising our replies.
//!
//! Every request carries a payload that identifies it beyond the ICMP
//! identifier and sequence number (which the kernel rewrites on datagram
//! sockets, and which other pingers on the same host share on raw sockets):
//! an 8-byte token chosen per prober, the batch number, the target's index in
//! the batch and the attempt. A reply is ours only if all of that checks out.

use std::fmt;

/// ICMPv4 echo request / reply types.
const V4_ECHO_REQUEST: u8 = 8;
const V4_ECHO_REPLY: u8 = 0;
/// ICMPv6 echo request / reply types.
const V6_ECHO_REQUEST: u8 = 128;
const V6_ECHO_REPLY: u8 = 129;

/// ICMP header length.
pub const HEADER_LEN: usize = 8;
/// Our payload length.
pub const PAYLOAD_LEN: usize = 24;
/// A whole echo request as we send it.
pub const PACKET_LEN: usize = HEADER_LEN + PAYLOAD_LEN;

/// Which ICMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// ICMP over IPv4.
    V4,
    /// ICMPv6.
    V6,
}

/// What identifies one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// ICMP identifier (raw sockets; the kernel sets it on datagram sockets).
    pub ident: u16,
    /// ICMP sequence number.
    pub seq: u16,
    /// The prober's token.
    pub token: u64,
    /// Batch number.
    pub batch: u32,
    /// Index of the target in the batch.
    pub index: u32,
    /// Attempt number, 0-based.
    pub attempt: u8,
}

/// Why bytes are not a reply of ours. Counted, never fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than an ICMP echo with our payload (or a broken IP header).
    Truncated,
    /// Not an echo reply (our own request looped back, an error, ...).
    NotEchoReply,
    /// The ICMPv4 checksum is wrong.
    BadChecksum,
    /// An echo reply, but not to us (another pinger, or forged).
    Foreign,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reject::Truncated => "truncated",
            Reject::NotEchoReply => "not an echo reply",
            Reject::BadChecksum => "bad checksum",
            Reject::Foreign => "foreign",
        })
    }
}

/// The Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an echo request into `buf`. ICMPv6 checksums are the kernel's job
/// (it must know the addresses); ICMPv4's is ours.
pub fn encode_request(family: Family, p: &Probe, buf: &mut [u8; PACKET_LEN]) {
    buf[0] = match family {
        Family::V4 => V4_ECHO_REQUEST,
        Family::V6 => V6_ECHO_REQUEST,
    };
    buf[1] = 0;
    buf[2..4].copy_from_slice(&[0, 0]);
    buf[4..6].copy_from_slice(&p.ident.to_be_bytes());
    buf[6..8].copy_from_slice(&p.seq.to_be_bytes());
    buf[8..16].copy_from_slice(&p.token.to_be_bytes());
    buf[16..20].copy_from_slice(&p.batch.to_be_bytes());
    buf[20..24].copy_from_slice(&p.index.to_be_bytes());
    buf[24] = p.attempt;
    buf[25..32].copy_from_slice(&[0x76, 0x6d, 0x64, 0x72, 0, 0, 0]); // "vmdr"
    if family == Family::V4 {
        let c = checksum(buf);
        buf[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

/// Recognises one of our echo replies in `bytes` as received. `ip_header`:
/// the bytes start with an IPv4 header (raw IPv4 sockets deliver it).
/// Checks type, length, (IPv4) checksum and our token; the caller checks
/// batch, index and sender.
pub fn decode_reply(
    family: Family,
    bytes: &[u8],
    ip_header: bool,
    token: u64,
) -> Result<Probe, Reject> {
    let icmp = if ip_header {
        let first = *bytes.first().ok_or(Reject::Truncated)?;
        if first >> 4 != 4 {
            return Err(Reject::Truncated);
        }
        let ihl = usize::from(first & 0x0f) * 4;
        if ihl < 20 {
            return Err(Reject::Truncated);
        }
        bytes.get(ihl..).ok_or(Reject::Truncated)?
    } else {
        bytes
    };
    let kind = *icmp.first().ok_or(Reject::Truncated)?;
    let reply = match family {
        Family::V4 => V4_ECHO_REPLY,
        Family::V6 => V6_ECHO_REPLY,
    };
    if kind != reply {
        return Err(Reject::NotEchoReply);
    }
    if icmp.len() < PACKET_LEN {
        return Err(Reject::Truncated);
    }
    if icmp.get(1) != Some(&0) {
        return Err(Reject::NotEchoReply);
    }
    if family == Family::V4 && checksum(icmp) != 0 {
        return Err(Reject::BadChecksum);
    }
    let be16 = |i: usize| u16::from_be_bytes([icmp[i], icmp[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([icmp[i], icmp[i + 1], icmp[i + 2], icmp[i + 3]]);
    let got_token = u64::from_be_bytes([
        icmp[8], icmp[9], icmp[10], icmp[11], icmp[12], icmp[13], icmp[14], icmp[15],
    ]);
    if got_token != token {
        return Err(Reject::Foreign);
    }
    Ok(Probe {
        ident: be16(4),
        seq: be16(6),
        token,
        batch: be32(16),
        index: be32(20),
        attempt: icmp[24],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe {
            ident: 0x1234,
            seq: 7,
            token: 0xdead_beef_cafe_f00d,
            batch: 3,
            index: 9_999,
            attempt: 2,
        }
    }

    /// What a peer does: turn the request into a reply.
    fn as_reply(family: Family, mut buf: [u8; PACKET_LEN]) -> [u8; PACKET_LEN] {
        buf[0] = if family == Family::V4 {
            V4_ECHO_REPLY
        } else {
            V6_ECHO_REPLY
        };
        buf[2..4].copy_from_slice(&[0, 0]);
        if family == Family::V4 {
            let c = checksum(&buf);
            buf[2..4].copy_from_slice(&c.to_be_bytes());
        }
        buf
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example bytes.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn request_checksum_verifies() {
        let mut buf = [0u8; PACKET_LEN];
        encode_request(Family::V4, &probe(), &mut buf);
        assert_eq!(buf[0], V4_ECHO_REQUEST);
        assert_eq!(checksum(&buf), 0);
    }

    #[test]
    fn replies_round_trip() {
        for family in [Family::V4, Family::V6] {
            let mut buf = [0u8; PACKET_LEN];
            encode_request(family, &probe(), &mut buf);
            let reply = as_reply(family, buf);
            assert_eq!(
                decode_reply(family, &reply, false, probe().token),
                Ok(probe())
            );
            assert_eq!(decode_reply(family, &reply, false, 1), Err(Reject::Foreign));
            assert_eq!(
                decode_reply(family, &buf, false, probe().token),
                Err(Reject::NotEchoReply),
                "our own request"
            );
            assert_eq!(
                decode_reply(family, &reply[..PACKET_LEN - 1], false, probe().token),
                Err(Reject::Truncated)
            );
        }
    }

    #[test]
    fn ipv4_header_is_skipped_and_checked() {
        let mut buf = [0u8; PACKET_LEN];
        encode_request(Family::V4, &probe(), &mut buf);
        let reply = as_reply(Family::V4, buf);
        let mut with_ip = vec![0x45u8; 1];
        with_ip.extend_from_slice(&[0; 19]);
        with_ip.extend_from_slice(&reply);
        assert_eq!(
            decode_reply(Family::V4, &with_ip, true, probe().token),
            Ok(probe())
        );
        with_ip[0] = 0x46; // IHL 24 but no options: misaligned, so not ours
        assert!(decode_reply(Family::V4, &with_ip, true, probe().token).is_err());
        with_ip[0] = 0x41; // IHL 4: impossible
        assert_eq!(
            decode_reply(Family::V4, &with_ip, true, probe().token),
            Err(Reject::Truncated)
        );
    }

    #[test]
    fn a_corrupted_byte_is_caught_by_the_checksum() {
        let mut buf = [0u8; PACKET_LEN];
        encode_request(Family::V4, &probe(), &mut buf);
        let mut reply = as_reply(Family::V4, buf);
        reply[21] ^= 0x40;
        assert_eq!(
            decode_reply(Family::V4, &reply, false, probe().token),
            Err(Reject::BadChecksum)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), ip in proptest::prelude::any::<bool>()) {
            let _ = decode_reply(Family::V4, &bytes, ip, 42);
            let _ = decode_reply(Family::V6, &bytes, false, 42);
        }
    }
}
