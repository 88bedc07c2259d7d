//! Opening ICMP sockets: an unprivileged ICMP datagram socket where the
//! system allows it (`net.ipv4.ping_group_range`), a raw socket otherwise
//! (needs `CAP_NET_RAW`).

use crate::packet::Family;
use crate::ProbeError;
use socket2::{Domain, Protocol, Socket, Type};
use std::fmt;

/// Which kind of socket a family got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// `SOCK_DGRAM` + `IPPROTO_ICMP(V6)`: no privilege; the kernel sets the
    /// identifier and delivers only our replies, without the IP header.
    Datagram,
    /// `SOCK_RAW`: needs `CAP_NET_RAW`; sees every ICMP packet (IPv4 ones
    /// with their IP header).
    Raw,
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketKind::Datagram => "unprivileged datagram",
            SocketKind::Raw => "raw",
        })
    }
}

/// One open ICMP socket, registered with tokio.
pub struct IcmpSocket {
    /// The socket. A `UdpSocket` is tokio's datagram wrapper for any
    /// datagram-style file descriptor; ICMP sockets are used through it with
    /// port 0.
    pub sock: tokio::net::UdpSocket,
    /// What it is.
    pub kind: SocketKind,
    /// Its family.
    pub family: Family,
}

impl IcmpSocket {
    /// Received IPv4 packets start with the IP header.
    pub fn has_ip_header(&self) -> bool {
        self.kind == SocketKind::Raw && self.family == Family::V4
    }
}

/// Opens a socket for `family` with a receive buffer of `rcvbuf` bytes.
/// Must be called inside a tokio runtime.
pub fn open(family: Family, rcvbuf: usize) -> Result<IcmpSocket, ProbeError> {
    let (domain, proto, name) = match family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4, "IPv4"),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6, "IPv6"),
    };
    let (socket, kind) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => (s, SocketKind::Datagram),
        Err(dgram) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => (s, SocketKind::Raw),
            Err(raw) => {
                return Err(ProbeError::Unavailable(format!(
                    "no {name} ICMP socket: unprivileged datagram socket refused ({dgram}; \
                     see sysctl net.ipv4.ping_group_range), raw socket refused ({raw}; needs CAP_NET_RAW)"
                )))
            }
        },
    };
    let setup = |s: &Socket| -> std::io::Result<()> {
        s.set_nonblocking(true)?;
        // Many replies can land between two reads: do not drop them.
        s.set_recv_buffer_size(rcvbuf)?;
        s.set_send_buffer_size(rcvbuf)?;
        Ok(())
    };
    setup(&socket)
        .map_err(|e| ProbeError::Unavailable(format!("{name} ICMP socket setup: {e}")))?;
    let std_sock: std::net::UdpSocket = socket.into();
    let sock = tokio::net::UdpSocket::from_std(std_sock)
        .map_err(|e| ProbeError::Unavailable(format!("{name} ICMP socket registration: {e}")))?;
    tracing::info!(family = name, kind = %kind, "ICMP socket open");
    Ok(IcmpSocket { sock, kind, family })
}
