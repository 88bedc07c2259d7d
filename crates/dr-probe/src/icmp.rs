//! The ICMP echo engine: one socket per address family, every target of a
//! batch in flight at once, replies matched by token, batch, index, attempt
//! and sender.

use crate::packet::{self, Family, Probe, Reject, PACKET_LEN};
use crate::socket::{self, IcmpSocket, SocketKind};
use crate::stats::Counters;
use crate::ProbeError;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How the ICMP engine sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpConfig {
    /// Requests per target per batch: the first at the target's slot, the
    /// others spread evenly over its timeout while it has not answered. A
    /// reply to any attempt counts.
    pub attempts: u8,
    /// Spread the first requests of a batch evenly over this long instead of
    /// sending them all at once (continuous mode uses it so that probes do
    /// not burst). Each target's timeout starts at its own send.
    pub spread: Duration,
    /// Socket buffer size, bytes.
    pub socket_buffer: usize,
}

impl Default for IcmpConfig {
    fn default() -> Self {
        IcmpConfig {
            attempts: 3,
            spread: Duration::ZERO,
            socket_buffer: 4 << 20,
        }
    }
}

/// Sends at most this many requests before looking at replies again.
const BURST: usize = 256;

/// The ICMP side of the prober.
pub struct IcmpEngine {
    v4: Mutex<Option<IcmpSocket>>,
    v6: Mutex<Option<IcmpSocket>>,
    token: u64,
    ident: u16,
    batch: AtomicU32,
    cfg: IcmpConfig,
    pub(crate) counters: Arc<Counters>,
}

/// One target's outcome: its round-trip time if it answered.
pub type Outcome = Option<Duration>;

impl IcmpEngine {
    /// An engine; sockets open on first use of each family.
    pub fn new(cfg: IcmpConfig, counters: Arc<Counters>) -> Self {
        IcmpEngine {
            v4: Mutex::new(None),
            v6: Mutex::new(None),
            token: random_token(),
            ident: (std::process::id() & 0xffff) as u16,
            batch: AtomicU32::new(1),
            cfg,
            counters,
        }
    }

    /// The kind of socket `family` uses (opening it if needed).
    pub async fn socket_kind(&self, family: Family) -> Result<SocketKind, ProbeError> {
        let mut slot = self.slot(family).lock().await;
        Ok(self.ensure(family, &mut slot)?.kind)
    }

    fn slot(&self, family: Family) -> &Mutex<Option<IcmpSocket>> {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn ensure<'a>(
        &self,
        family: Family,
        slot: &'a mut Option<IcmpSocket>,
    ) -> Result<&'a IcmpSocket, ProbeError> {
        if slot.is_none() {
            *slot = Some(socket::open(family, self.cfg.socket_buffer)?);
        }
        slot.as_ref()
            .ok_or_else(|| ProbeError::Unavailable("socket vanished".into()))
    }

    /// Probes `addrs` (all of `family`) and waits at most `timeout` per
    /// target. Batches of one family run one at a time.
    pub async fn probe(
        &self,
        family: Family,
        addrs: &[IpAddr],
        timeout: Duration,
    ) -> Result<Vec<Outcome>, ProbeError> {
        if addrs.is_empty() {
            return Ok(Vec::new());
        }
        let mut slot = self.slot(family).lock().await;
        let sock = self.ensure(family, &mut slot)?;
        let batch = self.batch.fetch_add(1, Ordering::Relaxed);
        let mut run = Batch::new(self, sock, batch, addrs, timeout);
        run.run().await;
        Ok(run.rtt)
    }
}

/// A random 64-bit token without a dependency: the standard library's
/// randomly seeded hasher.
fn random_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

struct Batch<'a> {
    engine: &'a IcmpEngine,
    sock: &'a IcmpSocket,
    batch: u32,
    addrs: &'a [IpAddr],
    start: Instant,
    timeout: Duration,
    attempts: usize,
    /// Send time of each (target, attempt).
    sent: Vec<Option<Instant>>,
    rtt: Vec<Outcome>,
    /// Next target to send, per attempt.
    cursor: Vec<usize>,
    pending: usize,
}

impl<'a> Batch<'a> {
    fn new(
        engine: &'a IcmpEngine,
        sock: &'a IcmpSocket,
        batch: u32,
        addrs: &'a [IpAddr],
        timeout: Duration,
    ) -> Self {
        let attempts = usize::from(engine.cfg.attempts.max(1));
        Batch {
            engine,
            sock,
            batch,
            addrs,
            start: Instant::now(),
            timeout,
            attempts,
            sent: vec![None; addrs.len() * attempts],
            rtt: vec![None; addrs.len()],
            cursor: vec![0; attempts],
            pending: addrs.len(),
        }
    }

    /// When target `i` gets its first request.
    fn slot(&self, i: usize) -> Instant {
        let spread = self.engine.cfg.spread;
        if spread.is_zero() {
            return self.start;
        }
        self.start + spread.mul_f64(i as f64 / self.addrs.len() as f64)
    }

    /// When attempt `a` of target `i` is due.
    fn due(&self, i: usize, a: usize) -> Instant {
        self.slot(i) + self.timeout.mul_f64(a as f64 / self.attempts as f64)
    }

    fn deadline(&self, i: usize) -> Instant {
        self.slot(i) + self.timeout
    }

    async fn run(&mut self) {
        let end = self.deadline(self.addrs.len() - 1);
        let mut rbuf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            if self.pending == 0 || now >= end {
                return;
            }
            let blocked = self.send_due(now);
            self.drain(&mut rbuf);
            if self.pending == 0 {
                return;
            }
            let wake = self.next_due().map_or(end, |d| d.min(end));
            if !blocked && wake <= Instant::now() {
                // More to send right away: let other tasks run, then go on.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                r = self.sock.sock.readable() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "ICMP socket not readable");
                        tokio::time::sleep_until(wake).await;
                    }
                }
                r = self.sock.sock.writable(), if blocked => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "ICMP socket not writable");
                        tokio::time::sleep_until(wake).await;
                    }
                }
                () = tokio::time::sleep_until(wake), if !blocked => {}
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        (0..self.attempts)
            .filter(|&a| self.cursor[a] < self.addrs.len())
            .map(|a| self.due(self.cursor[a], a))
            .min()
    }

    /// Sends what is due, up to a burst. Returns true when the socket's
    /// send buffer is full.
    fn send_due(&mut self, now: Instant) -> bool {
        let mut sent = 0;
        let mut pkt = [0u8; PACKET_LEN];
        for a in 0..self.attempts {
            while self.cursor[a] < self.addrs.len() && sent < BURST {
                let i = self.cursor[a];
                if self.due(i, a) > now {
                    break;
                }
                if self.rtt[i].is_some() || now >= self.deadline(i) {
                    self.cursor[a] += 1;
                    continue;
                }
                let probe = Probe {
                    ident: self.engine.ident,
                    seq: (i as u16).wrapping_add((a as u16) << 12),
                    token: self.engine.token,
                    batch: self.batch,
                    index: i as u32,
                    attempt: a as u8,
                };
                packet::encode_request(self.sock.family, &probe, &mut pkt);
                match self
                    .sock
                    .sock
                    .try_send_to(&pkt, SocketAddr::new(self.addrs[i], 0))
                {
                    Ok(_) => {
                        self.sent[i * self.attempts + a] = Some(Instant::now());
                        Counters::add(&self.engine.counters.sent);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) => {
                        // No route, refused by policy...: this attempt is
                        // lost; the target stays unanswered.
                        tracing::debug!(target = %self.addrs[i], error = %e, "ICMP send failed");
                        Counters::add(&self.engine.counters.send_errors);
                    }
                }
                self.cursor[a] += 1;
                sent += 1;
            }
        }
        false
    }

    /// Reads every reply waiting on the socket.
    fn drain(&mut self, rbuf: &mut [u8]) {
        loop {
            match self.sock.sock.try_recv_from(rbuf) {
                Ok((len, from)) => self.handle(&rbuf[..len], from.ip()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Errors queued on the socket (e.g. an ICMP error for a
                    // request) are consumed by this read; carry on.
                    tracing::debug!(error = %e, "ICMP receive error");
                    Counters::add(&self.engine.counters.not_echo_reply);
                }
            }
        }
    }

    fn handle(&mut self, bytes: &[u8], from: IpAddr) {
        let c = &self.engine.counters;
        let p = match packet::decode_reply(
            self.sock.family,
            bytes,
            self.sock.has_ip_header(),
            self.engine.token,
        ) {
            Ok(p) => p,
            Err(r) => {
                Counters::add(match r {
                    Reject::Truncated => &c.truncated,
                    Reject::NotEchoReply => &c.not_echo_reply,
                    Reject::BadChecksum => &c.bad_checksum,
                    Reject::Foreign => &c.foreign,
                });
                return;
            }
        };
        if self.sock.kind == SocketKind::Raw && p.ident != self.engine.ident {
            Counters::add(&c.forged);
            return;
        }
        if p.batch != self.batch {
            Counters::add(&c.late);
            return;
        }
        let i = p.index as usize;
        let a = usize::from(p.attempt);
        if i >= self.addrs.len() || a >= self.attempts {
            Counters::add(&c.forged);
            return;
        }
        if canonical(from) != canonical(self.addrs[i]) {
            Counters::add(&c.unknown_sender);
            return;
        }
        let Some(sent) = self.sent[i * self.attempts + a] else {
            Counters::add(&c.forged);
            return;
        };
        let now = Instant::now();
        if self.rtt[i].is_some() {
            Counters::add(&c.duplicates);
        } else if now > self.deadline(i) {
            Counters::add(&c.late);
        } else {
            self.rtt[i] = Some(now.saturating_duration_since(sent));
            self.pending -= 1;
            Counters::add(&c.answered);
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
