//! Whether a lost host's VMs can still be running: the evidence a
//! relocation rests on (`docs/decision-table.md`, "Evidence").
//!
//! A host cut off from vmdr **and** from its manager while it keeps running
//! its VMs looks exactly like a dead one to ping and to the manager. So
//! losing both views proves nothing by itself; what does:
//!
//! 1. **fenced**: vmdr ran the host's fence device (power off, then a
//!    status that read off), or the manager reports the host powered off;
//! 2. **self-fenced**: its agent's storage heartbeat says it destroyed its
//!    guests; or **by deadline**: its agent promised to destroy them after
//!    its isolation timeout without vmdr (and without its reassurance), and
//!    every channel that could carry that reassurance to vmdr has been
//!    silent longer than the timeout plus margins for clock-rate error and
//!    for the agent's last check;
//! 3. a storage heartbeat still moving, or an agent still heard, means the
//!    host lives, whatever ping and the manager say: never down.
//!
//! Where vSphere HA watches the host, its master's view counts too: a host
//! it reaches, or sees partitioned with its datastore heartbeats still
//! written, lives; one it reports isolated (or dead) has its VMs off by its
//! isolation response's time, counted from when vmdr first saw the report
//! (deadline evidence); and where HA restarts a failed host's VMs itself,
//! vmdr leaves them to HA.
//!
//! A lost host with a fence device is fenced as soon as it is lost (unless
//! its agent has already proved it stopped): fencing is the quickest proof.
//! A fence that fails is tried again after `fence_retry`, and meanwhile
//! any other evidence still counts. Without any of these the VMs wait and
//! an alert names what is missing, unless the host's site trusts
//! unreachability (`trust_unreachable`).

use super::decision::DownEvidence;
use super::facts::{Fencing, HostFacts};
use super::policy::Policy;
use crate::model::{HaHostState, Reassurance};
use crate::time::Timestamp;
use serde::Serialize;
use std::time::Duration;

/// What is known of whether a host's VMs can still be running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum HostVerdict {
    /// Some channel still reaches it, or it has not been lost long enough.
    NotDown,
    /// Lost, and its VMs cannot be running, by this evidence.
    Down {
        /// The evidence.
        evidence: DownEvidence,
    },
    /// Lost, and its fence device is to be run now: it will be down once
    /// the device reads it off.
    Fence,
    /// Lost, and its fence device is running.
    Fencing,
    /// Its agent's deadline is coming: down at `at` unless it is heard.
    AwaitingDeadline {
        /// When it counts as self-fenced.
        at: Timestamp,
    },
    /// Lost (or powered off), and vSphere HA restarts its VMs itself:
    /// vmdr leaves them alone.
    LeftToHa,
    /// Lost to every view for `host_down_after`, and nothing proves its VMs
    /// stopped.
    Unproven {
        /// What would have proved it.
        missing: Missing,
    },
}

/// Why a lost host cannot be proved down: what would have proved it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// No agent ever heard from it, and no fence report.
    NoAgent,
    /// Its agent has no watchdog, and the policy requires one.
    NoWatchdog,
    /// Its agent keeps its guests while it reaches its isolation addresses,
    /// and it has no storage heartbeat to show whether it does.
    NoStorageHeartbeat,
    /// Its storage heartbeat cannot be read from here.
    StorageUnreadable,
    /// The policy requires fencing, and it is not fenced.
    NotFenced,
    /// Its fence device failed or timed out (tried again after
    /// `fence_retry`).
    FenceFailed,
    /// vSphere HA reports it isolated or dead, and its cluster's isolation
    /// response leaves VMs running.
    HaKeepsVms,
}

impl Missing {
    /// For an operator: what would have let vmdr act.
    pub const fn explain(self) -> &'static str {
        match self {
            Missing::NoAgent => {
                "no vmdr agent was heard from it, the manager does not report it powered off, \
                 and its site does not trust unreachability"
            }
            Missing::NoWatchdog => {
                "its agent armed no watchdog (policy agent_needs_watchdog), so its promise to \
                 fence itself does not survive its own crash"
            }
            Missing::NoStorageHeartbeat => {
                "its agent keeps its guests while it reaches its isolation addresses, and it \
                 writes no storage heartbeat to show whether it does"
            }
            Missing::StorageUnreadable => "its storage heartbeat cannot be read from here",
            Missing::NotFenced => {
                "the policy requires it fenced (require_fencing), and it has no fence device"
            }
            Missing::FenceFailed => {
                "its fence device failed or timed out: it is tried again, and a failed fence is \
                 never taken as success"
            }
            Missing::HaKeepsVms => {
                "vSphere HA reports it isolated or dead, and its cluster's isolation response \
                 (none) leaves its VMs running"
            }
        }
    }
}

/// Seen at `at`, a channel beating every `interval_ms` still reaches the
/// host at `now`: within three beats (within `host_down_after` when the
/// interval is not known). Only ever makes a host *less* down: no
/// evidence of death rests on this window.
fn recent(policy: &Policy, now: Timestamp, at: Timestamp, interval_ms: u32) -> bool {
    now < at.saturating_add(beat_window(policy, interval_ms))
}

/// Three beats of `interval_ms` (`host_down_after` when it is not known).
fn beat_window(policy: &Policy, interval_ms: u32) -> Duration {
    if interval_ms == 0 {
        policy.host_down_after
    } else {
        Duration::from_millis(u64::from(interval_ms) * 3)
    }
}

/// When its agent's promise makes a silent host self-fenced, or why it
/// cannot.
pub fn self_fence_deadline(policy: &Policy, host: &HostFacts) -> Result<Timestamp, Missing> {
    let agent = host.agent.ok_or(Missing::NoAgent)?;
    if agent.isolation_timeout_ms == 0 {
        return Err(Missing::NoAgent);
    }
    if policy.agent_needs_watchdog && !agent.watchdog {
        return Err(Missing::NoWatchdog);
    }
    // The agent counts its timeout from its last acknowledged heartbeat,
    // sent no later than vmdr heard it; a reassured agent also from its
    // last storage write, which vmdr sees as the file moving.
    let from = match agent.reassurance {
        Reassurance::None => agent.last_heard,
        Reassurance::Gateway => return Err(Missing::NoStorageHeartbeat),
        Reassurance::GatewayAndStorage => {
            let storage = host.storage.ok_or(Missing::NoStorageHeartbeat)?;
            if !storage.readable {
                return Err(Missing::StorageUnreadable);
            }
            agent.last_heard.max(storage.last_moved)
        }
    };
    Ok(from.saturating_add(kept_by(policy, agent.isolation_timeout_ms)))
}

/// How long after a promise's start its "after `ms`" is surely kept, on
/// vmdr's clock: two clocks that each run up to 0.1 % off (a crystal's
/// 100 ppm and NTP's 500 ppm slew, with room to spare) disagree by at most
/// 0.2 %, and `self_fence_margin` covers the period of the promiser's own
/// check.
fn kept_by(policy: &Policy, ms: u32) -> Duration {
    let after = Duration::from_millis(u64::from(ms));
    after + after / 500 + policy.self_fence_margin
}

/// When vSphere HA's isolation response has the VMs of a host HA reports
/// isolated (or dead: isolated and off storage too, for all HA can tell)
/// off, or why it does not. `Ok(None)`: HA says nothing either way.
pub fn ha_deadline(policy: &Policy, host: &HostFacts) -> Result<Option<Timestamp>, Missing> {
    let Some(ha) = host.ha else {
        return Ok(None);
    };
    if !matches!(ha.signal.state, HaHostState::Isolated | HaHostState::Dead) {
        return Ok(None);
    }
    let after = ha.signal.response_after_ms.ok_or(Missing::HaKeepsVms)?;
    // The host declared itself isolated before vCenter could report it:
    // counted from the report, as an agent's promise is.
    Ok(Some(ha.since.saturating_add(kept_by(policy, after))))
}

/// The earliest of the host agent's deadline and HA's, or why neither.
fn deadline_of(policy: &Policy, host: &HostFacts) -> Result<Timestamp, Missing> {
    let agent = self_fence_deadline(policy, host);
    match (agent, ha_deadline(policy, host)) {
        (Ok(a), Ok(Some(b))) => Ok(a.min(b)),
        (Err(_), Ok(Some(b))) => Ok(b),
        (Ok(a), _) => Ok(a),
        // HA's word on why is the more telling one where it spoke.
        (Err(_), Err(missing)) => Err(missing),
        (Err(missing), Ok(None)) => Err(missing),
    }
}

/// How long after `host` falls silent on every channel (its agent and
/// storage heartbeat included: a crash) its VMs will be proved stopped,
/// counted from that moment: its agent's deadline when its promise counts,
/// zero when its site trusts silence or it has a fence device (then only
/// the loss of both views for `host_down_after` is waited for, and the
/// fence itself), `None` when nothing will prove it (a crash is not a
/// power-off).
pub fn proof_after_silence(policy: &Policy, host: &HostFacts) -> Option<Duration> {
    let mut silent = *host;
    if let Some(a) = &mut silent.agent {
        a.last_heard = Timestamp::ZERO;
    }
    if let Some(s) = &mut silent.storage {
        s.last_moved = Timestamp::ZERO;
        s.fenced = false;
    }
    // Until its beats have been missed for their window, it is still heard.
    let heard = silent
        .agent
        .map(|a| beat_window(policy, a.interval_ms))
        .into_iter()
        .chain(silent.storage.map(|s| beat_window(policy, s.interval_ms)))
        .max()
        .unwrap_or_default();
    let deadline = self_fence_deadline(policy, &silent)
        .ok()
        .filter(|_| !policy.require_fencing)
        .map(|at| at.since(Timestamp::ZERO).max(heard));
    let fenced = (host.fence != Fencing::NoDevice).then_some(heard);
    let trusted = (host.trust_unreachable && !policy.require_fencing).then_some(heard);
    // A host HA watches that fails outright is declared dead by HA: then
    // it is HA's to restart, or its isolation response's time proves it.
    if host.ha.is_some_and(|ha| ha.signal.restarts) {
        return None;
    }
    let ha = host
        .ha
        .and_then(|ha| ha.signal.response_after_ms)
        .filter(|_| !policy.require_fencing)
        .map(|ms| kept_by(policy, ms).max(heard));
    [deadline, fenced, trusted, ha].into_iter().flatten().min()
}

/// Lost to both views: to probes past the threshold and to the manager,
/// for `host_down_after`.
fn lost(policy: &Policy, now: Timestamp, host: &HostFacts) -> bool {
    host.link.is_lost()
        && host.probe_failures >= policy.failure_threshold
        && host
            .unreachable_since
            .is_some_and(|since| now >= since.saturating_add(policy.host_down_after))
}

/// The verdict on `host` at `now`.
pub fn host_verdict(policy: &Policy, now: Timestamp, host: &HostFacts) -> HostVerdict {
    use HostVerdict::{Down, NotDown};
    let storage = host.storage.filter(|s| s.readable);
    if storage.is_some_and(|s| !s.fenced && recent(policy, now, s.last_moved, s.interval_ms)) {
        return NotDown;
    }
    if host
        .agent
        .is_some_and(|a| recent(policy, now, a.last_heard, a.interval_ms))
    {
        return NotDown;
    }
    // HA's master reaches it, or sees its datastore heartbeats: it lives.
    if host.ha.is_some_and(|ha| {
        matches!(
            ha.signal.state,
            HaHostState::Alive | HaHostState::Partitioned
        )
    }) {
        return NotDown;
    }
    if host.ha.is_some_and(|ha| ha.signal.restarts) {
        // HA restarts what a failed host ran: vmdr neither fences it nor
        // moves its VMs (HA's own restarts are proved by its datastore
        // locks), whatever else it knows.
        return if host.link.is_fenced() || host.fence == Fencing::Off || lost(policy, now, host) {
            HostVerdict::LeftToHa
        } else {
            NotDown
        };
    }
    if host.link.is_fenced() || host.fence == Fencing::Off {
        // "Powered off" while it still answers is a contradiction (a wrong
        // report, a device wired to another host, a reused address): not
        // trusted.
        return if host.probe_failures > 0 {
            Down {
                evidence: DownEvidence::Fenced,
            }
        } else {
            NotDown
        };
    }
    if !lost(policy, now, host) {
        return NotDown;
    }
    let deadline = deadline_of(policy, host);
    if !policy.require_fencing {
        if storage.is_some_and(|s| s.fenced) {
            return Down {
                evidence: DownEvidence::SelfFenced,
            };
        }
        if deadline.is_ok_and(|at| now >= at) {
            return Down {
                evidence: DownEvidence::Deadline,
            };
        }
    }
    match host.fence {
        Fencing::Ready => return HostVerdict::Fence,
        Fencing::Failed { retry_at } if now >= retry_at => return HostVerdict::Fence,
        Fencing::InFlight => return HostVerdict::Fencing,
        Fencing::NoDevice | Fencing::Off | Fencing::Failed { .. } => {}
    }
    let fence_failed = matches!(host.fence, Fencing::Failed { .. });
    if policy.require_fencing {
        return HostVerdict::Unproven {
            missing: if fence_failed {
                Missing::FenceFailed
            } else {
                Missing::NotFenced
            },
        };
    }
    if host.trust_unreachable {
        return Down {
            evidence: DownEvidence::Trusted,
        };
    }
    match deadline {
        Ok(at) => HostVerdict::AwaitingDeadline { at },
        Err(_) if fence_failed => HostVerdict::Unproven {
            missing: Missing::FenceFailed,
        },
        Err(missing) => HostVerdict::Unproven { missing },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::facts::HaFacts;
    use crate::model::{AgentSignal, HostLink, StorageSignal};

    const S: u64 = 1000;

    fn lost_at(t: u64) -> HostFacts {
        let mut h = HostFacts::connected(0, 0, 0);
        h.link = HostLink::NotResponding;
        h.probe_failures = 3;
        h.unreachable_since = Some(Timestamp(t));
        h
    }

    fn agent(last_heard: u64, reassurance: Reassurance) -> AgentSignal {
        AgentSignal {
            last_heard: Timestamp(last_heard),
            interval_ms: 0,
            isolation_timeout_ms: 30_000,
            reassurance,
            watchdog: true,
        }
    }

    #[test]
    fn a_lost_host_without_evidence_is_unproven_and_a_trusting_site_takes_it_down() {
        let p = Policy::default();
        let mut h = lost_at(0);
        assert_eq!(
            host_verdict(&p, Timestamp(14 * S), &h),
            HostVerdict::NotDown
        );
        assert_eq!(
            host_verdict(&p, Timestamp(15 * S), &h),
            HostVerdict::Unproven {
                missing: Missing::NoAgent
            }
        );
        h.trust_unreachable = true;
        assert_eq!(
            host_verdict(&p, Timestamp(15 * S), &h),
            HostVerdict::Down {
                evidence: DownEvidence::Trusted
            }
        );
    }

    #[test]
    fn a_lease_agent_is_self_fenced_after_its_timeout_and_margin() {
        let p = Policy::default();
        let mut h = lost_at(2 * S);
        h.agent = Some(agent(0, Reassurance::None));
        // 30 s + 0.2 % + 0.5 s after it was last heard.
        let at = Timestamp(30_560);
        assert_eq!(
            host_verdict(&p, Timestamp(20 * S), &h),
            HostVerdict::AwaitingDeadline { at }
        );
        assert_eq!(
            host_verdict(&p, Timestamp(at.0 - 1), &h),
            HostVerdict::AwaitingDeadline { at }
        );
        assert_eq!(
            host_verdict(&p, at, &h),
            HostVerdict::Down {
                evidence: DownEvidence::Deadline
            }
        );
    }

    #[test]
    fn a_moving_storage_heartbeat_keeps_a_host_up_whatever_else_says() {
        let p = Policy::default();
        let mut h = lost_at(0);
        h.link = HostLink::PoweredOff;
        h.agent = Some(agent(0, Reassurance::GatewayAndStorage));
        h.storage = Some(StorageSignal {
            readable: true,
            last_moved: Timestamp(99 * S),
            interval_ms: 0,
            fenced: false,
        });
        assert_eq!(
            host_verdict(&p, Timestamp(100 * S), &h),
            HostVerdict::NotDown
        );
        // Stale: the deadline runs from the last move.
        h.link = HostLink::NotResponding;
        let at = Timestamp(99 * S + 30_560);
        assert_eq!(
            host_verdict(&p, Timestamp(120 * S), &h),
            HostVerdict::AwaitingDeadline { at }
        );
        // Unreadable: nothing proves the agent is not writing it.
        h.storage = Some(StorageSignal {
            readable: false,
            last_moved: Timestamp(0),
            interval_ms: 0,
            fenced: false,
        });
        assert_eq!(
            host_verdict(&p, Timestamp(200 * S), &h),
            HostVerdict::Unproven {
                missing: Missing::StorageUnreadable
            }
        );
        // The file's last word is "fenced".
        h.storage = Some(StorageSignal {
            readable: true,
            last_moved: Timestamp(10 * S),
            interval_ms: 0,
            fenced: true,
        });
        assert_eq!(
            host_verdict(&p, Timestamp(16 * S), &h),
            HostVerdict::Down {
                evidence: DownEvidence::SelfFenced
            }
        );
    }

    #[test]
    fn an_agent_that_cannot_keep_its_promise_proves_nothing() {
        let p = Policy::default();
        let mut h = lost_at(0);
        h.agent = Some(AgentSignal {
            watchdog: false,
            ..agent(0, Reassurance::None)
        });
        let late = Timestamp(1000 * S);
        assert_eq!(
            host_verdict(&p, late, &h),
            HostVerdict::Unproven {
                missing: Missing::NoWatchdog
            }
        );
        let lax = Policy {
            agent_needs_watchdog: false,
            ..Policy::default()
        };
        assert!(matches!(
            host_verdict(&lax, late, &h),
            HostVerdict::Down { .. }
        ));
        h.agent = Some(agent(0, Reassurance::Gateway));
        assert_eq!(
            host_verdict(&p, late, &h),
            HostVerdict::Unproven {
                missing: Missing::NoStorageHeartbeat
            }
        );
        // Heard just now: alive, even lost to both views.
        h.agent = Some(agent(late.0, Reassurance::None));
        assert_eq!(host_verdict(&p, late, &h), HostVerdict::NotDown);
    }

    #[test]
    fn proof_after_silence_is_when_the_verdict_turns_down() {
        let p = Policy::default();
        let mut h = HostFacts::connected(0, 0, 0);
        assert_eq!(proof_after_silence(&p, &h), None);
        h.trust_unreachable = true;
        assert_eq!(proof_after_silence(&p, &h), Some(Duration::ZERO));
        h.trust_unreachable = false;
        h.agent = Some(agent(500, Reassurance::None));
        assert_eq!(
            proof_after_silence(&p, &h),
            Some(Duration::from_millis(30_560))
        );
        // Whichever comes first: trusted silence once the agent is missed
        // (three beats; `host_down_after` as its interval is unknown), or a
        // fence.
        h.trust_unreachable = true;
        assert_eq!(proof_after_silence(&p, &h), Some(Duration::from_secs(15)));
        h.trust_unreachable = false;
        h.fence = Fencing::Ready;
        assert_eq!(proof_after_silence(&p, &h), Some(Duration::from_secs(15)));
        h.fence = Fencing::NoDevice;
        // A short promise waits for its beats to be missed (three of 2 s).
        h.agent = Some(AgentSignal {
            isolation_timeout_ms: 1_000,
            interval_ms: 2_000,
            ..agent(500, Reassurance::None)
        });
        assert_eq!(proof_after_silence(&p, &h), Some(Duration::from_secs(6)));
    }

    #[test]
    fn a_lost_host_with_a_fence_device_is_fenced_and_down_only_once_it_reads_off() {
        let p = Policy::default();
        let mut h = lost_at(0);
        let t = Timestamp(15 * S);
        h.fence = Fencing::Ready;
        assert_eq!(
            host_verdict(&p, Timestamp(14 * S), &h),
            HostVerdict::NotDown
        );
        assert_eq!(host_verdict(&p, t, &h), HostVerdict::Fence);
        h.fence = Fencing::InFlight;
        assert_eq!(host_verdict(&p, t, &h), HostVerdict::Fencing);
        h.fence = Fencing::Off;
        assert_eq!(
            host_verdict(&p, t, &h),
            HostVerdict::Down {
                evidence: DownEvidence::Fenced
            }
        );
        // Read off, yet it answers: the device is not this host's.
        h.probe_failures = 0;
        assert_eq!(host_verdict(&p, t, &h), HostVerdict::NotDown);
        h.probe_failures = 3;
        // A failed fence proves nothing until it is tried again...
        h.fence = Fencing::Failed {
            retry_at: Timestamp(40 * S),
        };
        assert_eq!(
            host_verdict(&p, t, &h),
            HostVerdict::Unproven {
                missing: Missing::FenceFailed
            }
        );
        assert_eq!(host_verdict(&p, Timestamp(40 * S), &h), HostVerdict::Fence);
        // ...while other evidence still counts.
        h.trust_unreachable = true;
        assert_eq!(
            host_verdict(&p, t, &h),
            HostVerdict::Down {
                evidence: DownEvidence::Trusted
            }
        );
        // A device is used before trusting silence.
        h.fence = Fencing::Ready;
        assert_eq!(host_verdict(&p, t, &h), HostVerdict::Fence);
        // An agent that already said it fenced itself needs no fence.
        h.storage = Some(StorageSignal {
            readable: true,
            last_moved: Timestamp(0),
            interval_ms: 0,
            fenced: true,
        });
        assert_eq!(
            host_verdict(&p, t, &h),
            HostVerdict::Down {
                evidence: DownEvidence::SelfFenced
            }
        );
    }

    #[test]
    fn require_fencing_takes_only_a_fence() {
        let p = Policy {
            require_fencing: true,
            ..Policy::default()
        };
        let mut h = lost_at(0);
        let t = Timestamp(1000 * S);
        h.agent = Some(agent(0, Reassurance::None));
        h.trust_unreachable = true;
        assert_eq!(
            host_verdict(&p, t, &h),
            HostVerdict::Unproven {
                missing: Missing::NotFenced
            }
        );
        h.fence = Fencing::Ready;
        assert_eq!(host_verdict(&p, t, &h), HostVerdict::Fence);
        h.fence = Fencing::Failed {
            retry_at: Timestamp(2000 * S),
        };
        assert_eq!(
            host_verdict(&p, t, &h),
            HostVerdict::Unproven {
                missing: Missing::FenceFailed
            }
        );
        h.fence = Fencing::Off;
        assert!(matches!(host_verdict(&p, t, &h), HostVerdict::Down { .. }));
        assert_eq!(proof_after_silence(&p, &h), Some(Duration::from_secs(15)));
        h.agent = None;
        assert_eq!(proof_after_silence(&p, &h), Some(Duration::ZERO));
    }

    fn ha(state: HaHostState, restarts: bool, response: Option<u32>, since: u64) -> HaFacts {
        HaFacts {
            signal: crate::model::HaSignal {
                state,
                restarts,
                response_after_ms: response,
            },
            since: Timestamp(since),
        }
    }

    #[test]
    fn vsphere_has_isolation_response_proves_an_isolated_host_down_by_its_time() {
        let p = Policy::default();
        let mut h = lost_at(0);
        // Reported isolated at 20 s; powered off 30 s later (+0.2 %, +0.5 s).
        h.ha = Some(ha(HaHostState::Isolated, false, Some(30_000), 20 * S));
        let at = Timestamp(20 * S + 30_000 + 60 + 500);
        assert_eq!(
            host_verdict(&p, Timestamp(25 * S), &h),
            HostVerdict::AwaitingDeadline { at }
        );
        assert_eq!(
            host_verdict(&p, at, &h),
            HostVerdict::Down {
                evidence: DownEvidence::Deadline
            }
        );
        // An agent's earlier deadline wins.
        h.agent = Some(agent(0, Reassurance::None));
        assert_eq!(
            host_verdict(&p, Timestamp(31 * S), &h),
            HostVerdict::Down {
                evidence: DownEvidence::Deadline
            }
        );
        // A response that leaves VMs running proves nothing.
        h.agent = None;
        h.ha = Some(ha(HaHostState::Isolated, false, None, 20 * S));
        assert_eq!(
            host_verdict(&p, Timestamp(200 * S), &h),
            HostVerdict::Unproven {
                missing: Missing::HaKeepsVms
            }
        );
        // require_fencing: HA's word is not a fence.
        let strict = Policy {
            require_fencing: true,
            ..Policy::default()
        };
        h.ha = Some(ha(HaHostState::Isolated, false, Some(30_000), 20 * S));
        assert_eq!(
            host_verdict(&strict, Timestamp(200 * S), &h),
            HostVerdict::Unproven {
                missing: Missing::NotFenced
            }
        );
    }

    #[test]
    fn a_host_has_master_reaches_or_sees_partitioned_lives_and_has_restarts_are_left_to_it() {
        let p = Policy::default();
        let mut h = lost_at(0);
        h.trust_unreachable = true;
        for state in [HaHostState::Alive, HaHostState::Partitioned] {
            h.ha = Some(ha(state, false, Some(30_000), 0));
            assert_eq!(
                host_verdict(&p, Timestamp(500 * S), &h),
                HostVerdict::NotDown,
                "{state:?}"
            );
        }
        // HA restarts them: left to HA even when powered off or fenced.
        h.ha = Some(ha(HaHostState::Dead, true, Some(30_000), 0));
        assert_eq!(
            host_verdict(&p, Timestamp(500 * S), &h),
            HostVerdict::LeftToHa
        );
        h.link = HostLink::PoweredOff;
        h.fence = Fencing::Off;
        assert_eq!(
            host_verdict(&p, Timestamp(500 * S), &h),
            HostVerdict::LeftToHa
        );
        // Not lost yet: not down.
        let mut fresh = lost_at(0);
        fresh.ha = h.ha;
        assert_eq!(host_verdict(&p, Timestamp(S), &fresh), HostVerdict::NotDown);
        assert_eq!(
            proof_after_silence(&p, &fresh),
            None,
            "never vmdr's to restore"
        );
    }
}
