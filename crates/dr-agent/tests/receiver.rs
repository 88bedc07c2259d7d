//! drd's side of the agents: heartbeats over the real listener, storage
//! records read from a real directory, the signals both give a host, and
//! the amended backend passing the shared conformance suite.

use dr_agent::protocol::{AgentState, Heartbeat, StorageRecord, HEARTBEAT_PATH};
use dr_agent::Agents;
use dr_control::TokioClock;
use dr_core::model::Reassurance;
use dr_core::ports::{Amended, Clock, Hypervisor};
use dr_sim::{Latencies, SimHypervisor, World};
use std::sync::{Arc, Mutex};

const SCENARIO: &str = r#"
duration = "1h"
[[host]]
name = "h1"
ip = "10.0.0.1"
snapshot = true
[[host]]
name = "h2"
ip = "10.0.0.2"
snapshot = true
[[host]]
name = "spare"
ip = "10.0.0.9"
standby = true
[[vm]]
name = "a"
ip = "10.1.0.1"
host = "h1"
replica = true
"#;

fn sim(clock: Arc<dyn Clock>) -> Arc<SimHypervisor> {
    let s = dr_sim::Scenario::parse(SCENARIO).expect("scenario");
    let world = World::new(s.hosts, s.vms, 1).expect("world");
    Arc::new(SimHypervisor::new(
        Arc::new(Mutex::new(world)),
        clock,
        Latencies::default(),
    ))
}

fn beat(host: &str, seq: u64) -> Heartbeat {
    Heartbeat {
        host: host.into(),
        seq,
        state: AgentState::Running,
        isolation_timeout_ms: 8_000,
        interval_ms: 500,
        reassurance: Reassurance::GatewayAndStorage,
        watchdog: false,
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dr-agent-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[tokio::test(start_paused = true)]
async fn an_amended_backend_passes_the_conformance_suite() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let hv = Amended::new(sim(clock.clone()), Agents::new(clock, None));
    let fx = dr_conformance::hypervisor::Fixture {
        vm: "a".into(),
        other_host: "h2".into(),
        standby_host: Some("spare".into()),
        disks: 1,
    };
    dr_conformance::hypervisor::run_all(&hv, &fx).await;
}

#[tokio::test]
async fn heartbeats_and_storage_records_become_the_hosts_signals() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let dir = temp_dir("signals");
    let agents = Agents::new(clock.clone(), Some(dir.clone()));
    let hv = Amended::new(sim(clock.clone()), agents.clone());

    // Nothing heard, no record: no signals.
    let inv = hv.inventory().await.expect("inventory");
    assert!(inv.hosts.iter().all(|h| h.signals.agent.is_none()));

    agents.heartbeat(beat("h1", 1)).expect("accepted");
    let record = |state| StorageRecord {
        host: "h1".into(),
        seq: 7,
        state,
        interval_ms: 500,
    };
    std::fs::write(
        dir.join("h1.json"),
        serde_json::to_vec(&record(AgentState::Running)).expect("json"),
    )
    .expect("record");
    let inv = hv.inventory().await.expect("inventory");
    let h1 = inv.hosts.iter().find(|h| h.name == "h1").expect("h1");
    let agent = h1.signals.agent.expect("h1's agent");
    assert_eq!(agent.isolation_timeout_ms, 8_000);
    assert_eq!(agent.reassurance, Reassurance::GatewayAndStorage);
    let storage = h1.signals.storage.expect("h1's record");
    assert!(storage.readable && !storage.fenced);
    let moved = storage.last_moved;

    // Unchanged: it does not move; "fenced": it says so.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let inv = hv.inventory().await.expect("inventory");
    let h1 = inv.hosts.iter().find(|h| h.name == "h1").expect("h1");
    assert_eq!(h1.signals.storage.expect("record").last_moved, moved);
    std::fs::write(
        dir.join("h1.json"),
        serde_json::to_vec(&StorageRecord {
            seq: 8,
            ..record(AgentState::Fenced)
        })
        .expect("json"),
    )
    .expect("record");
    let inv = hv.inventory().await.expect("inventory");
    let s = inv
        .hosts
        .iter()
        .find(|h| h.name == "h1")
        .expect("h1")
        .signals;
    let storage = s.storage.expect("record");
    assert!(storage.fenced && storage.last_moved > moved);

    // Garbage in a record is skipped, not taken as a move.
    std::fs::write(dir.join("h1.json"), b"{\"host\": 3").expect("garbage");
    let inv = hv.inventory().await.expect("inventory");
    let s = inv
        .hosts
        .iter()
        .find(|h| h.name == "h1")
        .expect("h1")
        .signals;
    assert_eq!(s.storage.expect("record").last_moved, storage.last_moved);

    // The directory gone: unreadable, so a stale record proves nothing.
    std::fs::remove_dir_all(&dir).expect("rm");
    let inv = hv.inventory().await.expect("inventory");
    let s = inv
        .hosts
        .iter()
        .find(|h| h.name == "h1")
        .expect("h1")
        .signals;
    assert!(!s.storage.expect("record").readable);

    // An agent that leaves: its host has no agent any more.
    agents
        .heartbeat(Heartbeat {
            state: AgentState::Leaving,
            ..beat("h1", 2)
        })
        .expect("accepted");
    let inv = hv.inventory().await.expect("inventory");
    let s = inv
        .hosts
        .iter()
        .find(|h| h.name == "h1")
        .expect("h1")
        .signals;
    assert!(s.agent.is_none());
}

#[tokio::test]
async fn the_listener_wants_the_token_and_a_heartbeat() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::from_zero());
    let agents = Agents::new(clock, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = agents.router(Arc::from("sixteen-char-token-x"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}{HEARTBEAT_PATH}");
    let http = reqwest::Client::new();
    let post = |token: &'static str, body: Vec<u8>| {
        http.post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let ok = serde_json::to_vec(&beat("h1", 41)).expect("json");
    let r = post("wrong", ok.clone()).await.expect("answer");
    assert_eq!(r.status(), 401);
    let r = post("sixteen-char-token-x", b"{\"host\":".to_vec())
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .expect("body")
        .starts_with("heartbeat is not valid"));
    let r = post(
        "sixteen-char-token-x",
        serde_json::to_vec(&beat("../etc", 1)).expect("json"),
    )
    .await
    .expect("answer");
    assert_eq!(r.status(), 400);
    let r = post("sixteen-char-token-x", ok).await.expect("answer");
    assert_eq!(r.status(), 200);
    let ack: serde_json::Value = r.json().await.expect("ack");
    assert_eq!(ack["seq"], 41);
}
