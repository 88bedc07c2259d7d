//! The `Prober` conformance suite.

use dr_core::ports::{ProbeTarget, Prober};
use std::net::IpAddr;
use std::time::Duration;

/// Addresses the suite may probe.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Addresses that answer.
    pub reachable: Vec<IpAddr>,
    /// Addresses that never answer (inside a test's own network namespace,
    /// or unassigned loopback addresses: never anyone else's).
    pub unreachable: Vec<IpAddr>,
    /// Timeout to probe with.
    pub timeout: Duration,
}

/// Runs every test of the suite.
pub async fn run_all(p: &dyn Prober, fx: &Fixture) {
    empty_batch_is_empty(p, fx).await;
    reachable_targets_answer(p, fx).await;
    unreachable_targets_are_down_not_errors(p, fx).await;
    one_result_per_target_in_order(p, fx).await;
}

fn icmp(addrs: &[IpAddr]) -> Vec<ProbeTarget> {
    addrs.iter().copied().map(ProbeTarget::icmp).collect()
}

/// An empty batch gives an empty answer.
pub async fn empty_batch_is_empty(p: &dyn Prober, fx: &Fixture) {
    let r = p
        .probe(&[], fx.timeout)
        .await
        .unwrap_or_else(|e| panic!("empty batch failed: {e}"));
    assert!(r.is_empty(), "empty batch gave {} results", r.len());
}

/// Reachable targets are up with an RTT no longer than the timeout.
pub async fn reachable_targets_answer(p: &dyn Prober, fx: &Fixture) {
    let r = p
        .probe(&icmp(&fx.reachable), fx.timeout)
        .await
        .unwrap_or_else(|e| panic!("probe failed: {e}"));
    for res in &r {
        assert!(res.reachable, "{} should be reachable", res.target.addr);
        let rtt = res
            .rtt
            .unwrap_or_else(|| panic!("{} is up without an RTT", res.target.addr));
        assert!(
            rtt <= fx.timeout,
            "{} RTT {rtt:?} exceeds the timeout",
            res.target.addr
        );
    }
}

/// Unreachable targets are results with `reachable == false`, not errors.
pub async fn unreachable_targets_are_down_not_errors(p: &dyn Prober, fx: &Fixture) {
    let r = p
        .probe(&icmp(&fx.unreachable), fx.timeout)
        .await
        .unwrap_or_else(|e| panic!("probe failed: {e}"));
    assert_eq!(r.len(), fx.unreachable.len());
    for res in &r {
        assert!(!res.reachable, "{} should be unreachable", res.target.addr);
        assert_eq!(res.rtt, None, "{} is down but has an RTT", res.target.addr);
    }
}

/// A mixed batch with repeats: one result per target, in the given order.
pub async fn one_result_per_target_in_order(p: &dyn Prober, fx: &Fixture) {
    let mut addrs = Vec::new();
    for (i, a) in fx.reachable.iter().chain(&fx.unreachable).enumerate() {
        addrs.push(*a);
        if i % 2 == 0 {
            addrs.push(*a);
        }
    }
    let targets = icmp(&addrs);
    let r = p
        .probe(&targets, fx.timeout)
        .await
        .unwrap_or_else(|e| panic!("probe failed: {e}"));
    assert_eq!(
        r.len(),
        targets.len(),
        "results do not match targets one to one"
    );
    for (res, t) in r.iter().zip(&targets) {
        assert_eq!(&res.target, t, "results are not in target order");
        assert_eq!(
            res.reachable,
            fx.reachable.contains(&t.addr),
            "wrong reachability for {}",
            t.addr
        );
    }
}
