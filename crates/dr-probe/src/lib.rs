//! # dr-probe: does it answer?
//!
//! Owns vmdr's real [`Prober`]: ICMP echo for IPv4 and IPv6 to thousands of
//! targets at once from one socket per address family, and TCP-connect probes
//! for targets that drop ICMP.
//!
//! - Sockets ([`socket`]): an unprivileged ICMP datagram socket where
//!   `net.ipv4.ping_group_range` allows it, a raw socket otherwise; which one
//!   is logged. Built on `socket2` and tokio's readiness API rather than
//!   `surge-ping`, whose one-future-per-ping design costs a task and a timer
//!   per target: here a batch is one loop over one socket (see
//!   `docs/ARCHITECTURE.md`).
//! - Matching ([`packet`]): replies are ours only if their payload carries
//!   this prober's random token, the batch, the target's index and attempt,
//!   and they come from the probed address. Everything else (other pingers'
//!   replies, truncated, corrupt or forged packets, late or duplicate
//!   answers) is counted in [`Stats`], never an error and never a panic.
//! - Batches ([`icmp`]): per-target timeout, retries spread over it,
//!   optional spreading of the sends; continuous rounds with jitter
//!   ([`NetProber::rounds`]).
//!
//! ## What this crate must not know
//!
//! What a result means: it reports reachability and RTT; the decision engine
//! (`dr-core`) judges. No hypervisor, no simulation.
#![forbid(unsafe_code)]

pub mod icmp;
pub mod packet;
pub mod socket;
mod stats;
pub mod tcp;

pub use dr_core::ports::ProbeError;
pub use icmp::IcmpConfig;
pub use stats::Stats;

use async_trait::async_trait;
use dr_core::ports::{ProbeKind, ProbeResult, ProbeTarget, Prober};
use packet::Family;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Settings of a [`NetProber`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The ICMP engine's settings.
    pub icmp: IcmpConfig,
    /// At most this many TCP connections at once.
    pub tcp_concurrency: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            icmp: IcmpConfig::default(),
            tcp_concurrency: 512,
        }
    }
}

/// The real prober: ICMP (v4 and v6) and TCP connect.
pub struct NetProber {
    icmp: icmp::IcmpEngine,
    cfg: ProbeConfig,
    counters: Arc<stats::Counters>,
}

impl NetProber {
    /// A prober; sockets open on first use.
    pub fn new(cfg: ProbeConfig) -> Self {
        let counters = Arc::new(stats::Counters::default());
        NetProber {
            icmp: icmp::IcmpEngine::new(cfg.icmp, counters.clone()),
            cfg,
            counters,
        }
    }

    /// What was counted so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Opens the socket of `family` now and says which kind it got (`Err`
    /// when the family cannot be probed here).
    pub async fn socket_kind(&self, family: Family) -> Result<socket::SocketKind, ProbeError> {
        self.icmp.socket_kind(family).await
    }

    /// Opens the sockets now and says which kind each family got (`Err` for
    /// a family that cannot be probed here).
    pub async fn socket_kinds(&self) -> [(Family, Result<socket::SocketKind, ProbeError>); 2] {
        [
            (Family::V4, self.icmp.socket_kind(Family::V4).await),
            (Family::V6, self.icmp.socket_kind(Family::V6).await),
        ]
    }

    /// Continuous mode: probes `targets` every `cfg.interval` (the first
    /// round at once) until `cfg.rounds` rounds are done or the receiver is
    /// dropped. Each later round starts after a random delay of up to
    /// `cfg.jitter`, and each round spreads its requests over `cfg.spread`,
    /// so that many probers, or many rounds, do not send in bursts. Each
    /// round's results go to `out`; the last one is sent as soon as it is
    /// complete (every target answered or past its deadline).
    pub async fn rounds(
        &self,
        targets: &[ProbeTarget],
        cfg: RoundConfig,
        out: mpsc::Sender<Result<Vec<ProbeResult>, ProbeError>>,
    ) {
        // Its own engine only for a spread of its own: the sockets this
        // prober opened (and checked) are reused otherwise.
        let own = (cfg.spread != self.cfg.icmp.spread).then(|| NetProber {
            icmp: icmp::IcmpEngine::new(
                IcmpConfig {
                    spread: cfg.spread,
                    ..self.cfg.icmp
                },
                self.counters.clone(),
            ),
            cfg: self.cfg,
            counters: self.counters.clone(),
        });
        let spread = own.as_ref().unwrap_or(self);
        let mut next = tokio::time::Instant::now();
        let mut seed = u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15;
        let mut done = 0u32;
        while cfg.rounds.is_none_or(|n| done < n) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // The first round goes at once (not even a timer tick, which
            // rounds up to the next millisecond): a one-off sweep waits for
            // nothing but its answers.
            if done > 0 {
                let delay = cfg.jitter.mul_f64((seed % 1_000) as f64 / 1_000.0);
                tokio::time::sleep_until(next + delay).await;
            }
            let r = spread.probe(targets, cfg.timeout).await;
            if out.send(r).await.is_err() {
                return;
            }
            done += 1;
            next += cfg.interval;
        }
    }
}

/// How [`NetProber::rounds`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundConfig {
    /// From one round's start to the next's.
    pub interval: Duration,
    /// A random delay of up to this before each round but the first.
    pub jitter: Duration,
    /// Each round's first requests spread over this long (zero: all at
    /// once, as `fping -i 0`).
    pub spread: Duration,
    /// Each target's timeout.
    pub timeout: Duration,
    /// How many rounds (`None`: until the receiver goes).
    pub rounds: Option<u32>,
}

#[async_trait]
impl Prober for NetProber {
    async fn probe(
        &self,
        targets: &[ProbeTarget],
        timeout: Duration,
    ) -> Result<Vec<ProbeResult>, ProbeError> {
        let mut v4 = (Vec::new(), Vec::new());
        let mut v6 = (Vec::new(), Vec::new());
        let mut tcp = (Vec::new(), Vec::new());
        for (i, t) in targets.iter().enumerate() {
            let ip = icmp::canonical(t.addr);
            match (t.kind, ip) {
                (ProbeKind::Icmp, IpAddr::V4(_)) => {
                    v4.0.push(i);
                    v4.1.push(ip);
                }
                (ProbeKind::Icmp, IpAddr::V6(_)) => {
                    v6.0.push(i);
                    v6.1.push(ip);
                }
                (ProbeKind::Tcp(port), _) | (ProbeKind::TcpOpen(port), _) => {
                    if port == 0 {
                        return Err(ProbeError::InvalidTarget {
                            target: t.addr,
                            reason: "TCP port 0".into(),
                        });
                    }
                    tcp.0.push(i);
                    let need_listener = matches!(t.kind, ProbeKind::TcpOpen(_));
                    tcp.1.push((SocketAddr::new(ip, port), need_listener));
                }
            }
        }
        let (r4, r6, rt) = tokio::join!(
            self.icmp.probe(Family::V4, &v4.1, timeout),
            self.icmp.probe(Family::V6, &v6.1, timeout),
            async {
                if tcp.1.is_empty() {
                    Vec::new()
                } else {
                    tcp::probe(&tcp.1, timeout, self.cfg.tcp_concurrency).await
                }
            },
        );
        let mut out: Vec<ProbeResult> = targets
            .iter()
            .map(|&target| ProbeResult {
                target,
                reachable: false,
                rtt: None,
            })
            .collect();
        for (idx, rtts) in [(&v4.0, r4?), (&v6.0, r6?), (&tcp.0, rt)] {
            for (&i, rtt) in idx.iter().zip(rtts) {
                out[i].reachable = rtt.is_some();
                out[i].rtt = rtt;
            }
        }
        Ok(out)
    }
}
