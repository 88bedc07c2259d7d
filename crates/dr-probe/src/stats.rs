//! Counters of everything the prober saw that was not a good answer. Bad
//! input is counted here, never a panic and never an error for the batch.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by every batch of one prober.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) foreign: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) bad_checksum: AtomicU64,
    pub(crate) not_echo_reply: AtomicU64,
    pub(crate) unknown_sender: AtomicU64,
    pub(crate) forged: AtomicU64,
    pub(crate) send_errors: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Echo requests sent.
    pub sent: u64,
    /// Targets answered (first good reply per target and batch).
    pub answered: u64,
    /// Further replies for an already answered target.
    pub duplicates: u64,
    /// Good replies after their target's deadline or batch.
    pub late: u64,
    /// Echo replies to another pinger (raw sockets see them all).
    pub foreign: u64,
    /// Packets too short to be ours.
    pub truncated: u64,
    /// IPv4 packets with a wrong checksum.
    pub bad_checksum: u64,
    /// ICMP that is not an echo reply (errors, our own looped requests).
    pub not_echo_reply: u64,
    /// Replies carrying our token from an address other than the probed one.
    pub unknown_sender: u64,
    /// Replies with our token but an index or attempt we never sent.
    pub forged: u64,
    /// Requests the kernel refused to send (no route, ...).
    pub send_errors: u64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            sent: g(&self.sent),
            answered: g(&self.answered),
            duplicates: g(&self.duplicates),
            late: g(&self.late),
            foreign: g(&self.foreign),
            truncated: g(&self.truncated),
            bad_checksum: g(&self.bad_checksum),
            not_echo_reply: g(&self.not_echo_reply),
            unknown_sender: g(&self.unknown_sender),
            forged: g(&self.forged),
            send_errors: g(&self.send_errors),
        }
    }
}
