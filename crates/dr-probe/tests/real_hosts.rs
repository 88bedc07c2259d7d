//! The prober against real hosts: network namespaces this test creates.

mod common;

use common::{can_run, TestHost};
use dr_core::ports::{ProbeKind, ProbeTarget, Prober};
use dr_probe::{NetProber, ProbeConfig};
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn icmp(addrs: &[IpAddr]) -> Vec<ProbeTarget> {
    addrs.iter().copied().map(ProbeTarget::icmp).collect()
}

#[tokio::test]
async fn a_reachable_host_is_up_with_a_plausible_rtt() {
    if !can_run("a_reachable_host_is_up_with_a_plausible_rtt") {
        return;
    }
    let host = TestHost::new();
    let p = NetProber::new(ProbeConfig::default());
    let r = p
        .probe(&icmp(&[host.v4, host.v6]), Duration::from_secs(1))
        .await
        .expect("probe");
    for res in &r {
        assert!(res.reachable, "{} down", res.target.addr);
        let rtt = res.rtt.expect("rtt");
        assert!(
            rtt > Duration::ZERO && rtt < Duration::from_millis(50),
            "{} rtt {rtt:?}",
            res.target.addr
        );
    }
    let stats = p.stats();
    assert_eq!(stats.answered, 2);
    assert_eq!(
        stats.unknown_sender + stats.forged + stats.bad_checksum,
        0,
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_host_whose_link_goes_down_is_down_within_the_timeout_and_up_when_back() {
    if !can_run("a_host_whose_link_goes_down_is_down_within_the_timeout_and_up_when_back") {
        return;
    }
    let host = TestHost::new();
    let p = NetProber::new(ProbeConfig::default());
    let targets = icmp(&[host.v4, host.v6]);
    assert!(p
        .probe(&targets, Duration::from_millis(500))
        .await
        .expect("probe")
        .iter()
        .all(|r| r.reachable));
    host.link(false);
    let start = Instant::now();
    let r = p
        .probe(&targets, Duration::from_millis(500))
        .await
        .expect("probe");
    let took = start.elapsed();
    assert!(r.iter().all(|r| !r.reachable && r.rtt.is_none()), "{r:?}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(900),
        "took {took:?} for a 500 ms timeout"
    );
    host.link(true);
    // IPv6 needs its neighbour entry again; give the link a moment.
    let mut up = false;
    for _ in 0..10 {
        let r = p
            .probe(&targets, Duration::from_millis(500))
            .await
            .expect("probe");
        if r.iter().all(|r| r.reachable) {
            up = true;
            break;
        }
    }
    let last = p
        .probe(&targets, Duration::from_millis(500))
        .await
        .expect("probe");
    assert!(up, "host did not come back up: {last:?}");
}

#[tokio::test]
async fn a_silent_address_is_down_and_not_an_error() {
    if !can_run("a_silent_address_is_down_and_not_an_error") {
        return;
    }
    let host = TestHost::new();
    let p = NetProber::new(ProbeConfig::default());
    let r = p
        .probe(
            &icmp(&[host.silent_v4, host.v4]),
            Duration::from_millis(300),
        )
        .await
        .expect("probe");
    assert!(!r[0].reachable);
    assert!(r[1].reachable);
}

#[tokio::test]
async fn the_prober_passes_the_conformance_suite() {
    if !can_run("the_prober_passes_the_conformance_suite") {
        return;
    }
    let host = TestHost::new();
    let p = NetProber::new(ProbeConfig::default());
    let fx = dr_conformance::prober::Fixture {
        reachable: vec![
            host.v4,
            host.v6,
            "127.0.0.1".parse().expect("ip"),
            "::1".parse().expect("ip"),
        ],
        unreachable: vec![host.silent_v4],
        timeout: Duration::from_millis(400),
    };
    dr_conformance::prober::run_all(&p, &fx).await;
}

#[tokio::test]
async fn tcp_probes_see_listeners_and_closed_ports_as_up_and_silence_as_down() {
    if !can_run("tcp_probes_see_listeners_and_closed_ports_as_up_and_silence_as_down") {
        return;
    }
    let host = TestHost::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let open = listener.local_addr().expect("addr").port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    let targets = [
        ProbeTarget {
            addr: lo,
            kind: ProbeKind::Tcp(open),
        },
        ProbeTarget {
            addr: lo,
            kind: ProbeKind::Tcp(closed),
        },
        ProbeTarget {
            addr: host.silent_v4,
            kind: ProbeKind::Tcp(22),
        },
        ProbeTarget::icmp(host.v4),
    ];
    let p = NetProber::new(ProbeConfig::default());
    let r = p
        .probe(&targets, Duration::from_millis(500))
        .await
        .expect("probe");
    assert!(r[0].reachable, "listening port");
    assert!(
        r[1].reachable,
        "closed port: the host answered with a reset"
    );
    assert!(!r[2].reachable, "nobody there");
    assert!(r[3].reachable, "mixed batch keeps its order");
    drop(listener);
}
