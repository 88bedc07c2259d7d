//! TCP-connect probes, for targets that drop ICMP.
//!
//! A target is up when it answers the connection attempt at all: accepted,
//! or refused with a reset (the host is alive; only the port is closed). It is
//! down when nothing answers within the timeout, or the network says it is
//! unreachable. An open-port probe (`need_listener`) also counts a refusal
//! as down: it checks a service, not the host.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Probes each address concurrently (at most `concurrency` connections at
/// once); the round-trip time of those that answered. The `bool` beside an
/// address: only an accepted connection counts.
pub async fn probe(
    addrs: &[(SocketAddr, bool)],
    timeout: Duration,
    concurrency: usize,
) -> Vec<Option<Duration>> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &(addr, need_listener)) in addrs.iter().enumerate() {
        let limit = limit.clone();
        tasks.spawn(async move {
            // Closed only if the semaphore is closed, which it never is.
            let _permit = limit.acquire_owned().await.ok();
            let start = Instant::now();
            let answered =
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                    Ok(Ok(_stream)) => true,
                    Ok(Err(e)) => !need_listener && e.kind() == ErrorKind::ConnectionRefused,
                    Err(_) => false,
                };
            (i, answered.then(|| start.elapsed()))
        });
    }
    let mut out = vec![None; addrs.len()];
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, rtt)) => out[i] = rtt,
            Err(e) => tracing::warn!(error = %e, "TCP probe task failed"),
        }
    }
    out
}
