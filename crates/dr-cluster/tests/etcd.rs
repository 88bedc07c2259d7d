//! The cluster's election and journal against a real three-member etcd on
//! loopback (Debian's etcd-server): one leader, fencing by epoch, a leader
//! cut off or frozen stops before another can take over, a member lost,
//! quorum lost and back.

mod support;

use dr_cluster::{
    ElectionConfig, Etcd, EtcdConfig, EtcdJournal, Leadership, NotLeader, Role, Secret,
};
use dr_journal::{Intent, JournalError, Outcome, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{etcd_present, EtcdCluster, Relay};
use tokio::sync::watch;

const TTL: Duration = Duration::from_secs(2);

fn client(endpoints: Vec<String>) -> Arc<Etcd> {
    Arc::new(
        Etcd::new(&EtcdConfig {
            endpoints,
            ca_file: None,
            client_cert: None,
            user: None,
            request_timeout: Duration::from_millis(500),
        })
        .expect("client"),
    )
}

/// One node: its leadership, campaigning until `stop` (or aborted: a node
/// that died).
struct Node {
    leadership: Arc<Leadership>,
    etcd: Arc<Etcd>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn node(name: &str, etcd: Arc<Etcd>, prefix: &str) -> Node {
    let leadership = Leadership::new(
        etcd.clone(),
        ElectionConfig {
            node: name.into(),
            api: format!("http://{name}.invalid:7000"),
            prefix: prefix.into(),
            lease_ttl: TTL,
        },
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(leadership.clone().campaign(stopped));
    Node {
        leadership,
        etcd,
        stop,
        task,
    }
}

fn leaders(nodes: &[&Node]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.leadership.may_act().is_ok())
        .map(|n| n.leadership.config().node.clone())
        .collect()
}

/// Waits until exactly one of `nodes` may act, and returns its index.
async fn one_leader(nodes: &[&Node], within: Duration) -> usize {
    let until = Instant::now() + within;
    loop {
        let l: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].leadership.may_act().is_ok())
            .collect();
        assert!(
            l.len() <= 1,
            "two nodes may act at once: {:?}",
            leaders(nodes)
        );
        if l.len() == 1 {
            return l[0];
        }
        assert!(
            Instant::now() < until,
            "no leader within {within:?}: {:?}",
            nodes
                .iter()
                .map(|n| n.leadership.status())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn intent(vm: &str) -> Intent {
    Intent {
        vm: vm.into(),
        action: "restore_elsewhere".into(),
        from_host: Some("h1".into()),
        to_host: Some("h2".into()),
        started_ms: 1,
    }
}

fn journal(n: &Node, prefix: &str) -> Arc<EtcdJournal> {
    Arc::new(EtcdJournal::new(
        n.etcd.clone(),
        n.leadership.clone(),
        prefix,
        tokio::runtime::Handle::current(),
    ))
}

/// Runs a blocking journal call off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_journal_passes_the_journal_conformance_suite() {
    if !etcd_present("the_etcd_journal_passes_the_journal_conformance_suite") {
        return;
    }
    let cluster = EtcdCluster::start(3, "conformance");
    let a = node("a", client(cluster.endpoints()), "/conf");
    one_leader(&[&a], Duration::from_secs(10)).await;
    let j = journal(&a, "/conf");
    blocking(move || dr_conformance::journal::run_all(&*j)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_nodes_leads_and_another_takes_over_when_it_leaves_or_dies() {
    if !etcd_present("one_of_three_nodes_leads") {
        return;
    }
    let cluster = EtcdCluster::start(3, "election");
    let mut eps = cluster.endpoints();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        // Each node tries the members in another order.
        eps.rotate_left(1);
        nodes.push(node(name, client(eps.clone()), "/el"));
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let first = one_leader(&refs, Duration::from_secs(10)).await;
    let epoch1 = nodes[first].leadership.may_act().expect("leader");
    // The others follow it, by name and epoch, and see all three nodes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (i, n) in nodes.iter().enumerate() {
        let s = n.leadership.status();
        let leader = s.leader.as_ref().expect("a leader is known");
        assert_eq!(leader.node, nodes[first].leadership.config().node);
        assert_eq!(leader.epoch, epoch1);
        assert_eq!(s.nodes.len(), 3, "{s:?}");
        if i != first {
            assert_eq!(s.role, Role::Follower);
            assert!(matches!(
                n.leadership.may_act(),
                Err(NotLeader::Follower { .. })
            ));
        }
    }

    // It leaves (shutdown: its lease revoked): another leads at once, under
    // a later epoch.
    let left = Instant::now();
    let _ = nodes[first].stop.send(true);
    let rest: Vec<&Node> = (0..3).filter(|&i| i != first).map(|i| &nodes[i]).collect();
    let second = one_leader(&rest, Duration::from_secs(5)).await;
    let handover = left.elapsed();
    let epoch2 = rest[second].leadership.may_act().expect("leader");
    assert!(epoch2 > epoch1, "epochs increase: {epoch1} then {epoch2}");
    assert!(
        handover < TTL,
        "a leader that leaves hands over without waiting out its lease ({handover:?})"
    );

    // It dies (its task gone, no revoke): the last node leads once the
    // lease has expired, not before.
    let died = Instant::now();
    rest[second].task.abort();
    let last: Vec<&Node> = rest
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != second)
        .map(|(_, n)| *n)
        .collect();
    one_leader(&last, TTL * 4).await;
    let takeover = died.elapsed();
    let epoch3 = last[0].leadership.may_act().expect("leader");
    assert!(epoch3 > epoch2);
    // The dead one's deadline came before any takeover could.
    assert!(rest[second].leadership.may_act().is_err());
    eprintln!("handover after a shutdown {handover:?}, takeover after a death {takeover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_before_another_takes_over_and_its_late_writes_fail() {
    if !etcd_present("a_leader_cut_off_from_etcd") {
        return;
    }
    let cluster = EtcdCluster::start(3, "cutoff");
    // Node a reaches etcd only through relays the test can cut.
    let mut relays = Vec::new();
    for i in 0..3 {
        relays.push(Relay::start(cluster.client_port(i)).await);
    }
    let a = node(
        "a",
        client(
            relays
                .iter()
                .map(|r| format!("http://127.0.0.1:{}", r.port))
                .collect(),
        ),
        "/cut",
    );
    one_leader(&[&a], Duration::from_secs(10)).await;
    let b = node("b", client(cluster.endpoints()), "/cut");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(one_leader(&[&a, &b], Duration::from_secs(1)).await, 0);
    let epoch_a = a.leadership.may_act().expect("a leads");
    let ja = journal(&a, "/cut");
    let open = {
        let ja = ja.clone();
        blocking(move || ja.begin(&intent("web-1")))
            .await
            .expect("begin")
    };

    // Cut: a's renewals are lost. It must stop acting before b may act.
    let cut = Instant::now();
    for r in &relays {
        r.cut();
    }
    let mut a_stopped = None;
    let mut b_leads = None;
    while b_leads.is_none() {
        let now = Instant::now();
        if a_stopped.is_none() && a.leadership.may_act().is_err() {
            a_stopped = Some(now);
        }
        if b.leadership.may_act().is_ok() {
            b_leads = Some(now);
            assert!(
                a.leadership.may_act().is_err(),
                "b leads while a may still act"
            );
        }
        assert!(cut.elapsed() < TTL * 5, "b never took over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (a_stopped, b_leads) = (a_stopped.expect("a stopped"), b_leads.expect("b leads"));
    assert!(a_stopped < b_leads);
    assert!(
        a_stopped - cut < TTL,
        "a stops within its lease ({:?})",
        a_stopped - cut
    );
    eprintln!(
        "cut off: a stopped after {:?}, b led after {:?}",
        a_stopped - cut,
        b_leads - cut
    );
    let epoch_b = b.leadership.may_act().expect("b leads");
    assert!(epoch_b > epoch_a);

    // a comes back: what it would start is refused, and so is the end of
    // what it started (the new leader owns the journal now).
    for r in &relays {
        r.mend();
    }
    {
        let ja = ja.clone();
        match blocking(move || ja.begin(&intent("db-1"))).await {
            Err(JournalError::Fenced { .. }) => {}
            other => panic!("a deposed leader's begin: {other:?}"),
        }
    }
    // Whichever a learns first (another epoch, or none it may write
    // under), its end of the old intent does not land.
    let ended = {
        let ja = ja.clone();
        blocking(move || ja.end(open, Outcome::Succeeded, 2)).await
    };
    assert!(
        matches!(ended, Err(JournalError::Fenced { .. })),
        "a deposed leader's end: {ended:?}"
    );
    // b sees it open and may close it.
    let jb = journal(&b, "/cut");
    let intents = {
        let jb = jb.clone();
        blocking(move || jb.open_intents()).await.expect("open")
    };
    assert_eq!(
        intents.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![open]
    );
    blocking(move || {
        jb.end(
            open,
            Outcome::Abandoned {
                why: "taken over".into(),
            },
            3,
        )
    })
    .await
    .expect("the new leader ends it");
    // And a, once it has caught up, follows b.
    tokio::time::sleep(TTL).await;
    let s = a.leadership.status();
    assert_eq!(s.role, Role::Follower, "{s:?}");
    assert_eq!(s.leader.map(|l| l.node).as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_acts_without_quorum_and_leadership_returns_with_it() {
    if !etcd_present("no_node_acts_without_quorum") {
        return;
    }
    let mut cluster = EtcdCluster::start(3, "quorum");
    let a = node("a", client(cluster.endpoints()), "/q");
    let b = node("b", client(cluster.endpoints()), "/q");
    let first = one_leader(&[&a, &b], Duration::from_secs(10)).await;

    // One member lost: quorum holds, and so does the leader.
    cluster.kill(2);
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(one_leader(&[&a, &b], Duration::from_secs(1)).await, first);
    let j = journal([&a, &b][first], "/q");
    {
        let j = j.clone();
        let id = blocking(move || j.begin(&intent("web-1")))
            .await
            .expect("begin with 2 of 3");
        let j2 = journal([&a, &b][first], "/q");
        blocking(move || j2.end(id, Outcome::Succeeded, 2))
            .await
            .expect("end");
    }

    // Two lost: no quorum. The member left renews leases for as long as it
    // still believes it leads (up to an election timeout, 0.5 s here);
    // after that, within the lease, nobody may act any more.
    cluster.kill(1);
    let lost = Instant::now();
    loop {
        if a.leadership.may_act().is_err() && b.leadership.may_act().is_err() {
            break;
        }
        assert!(
            lost.elapsed() < TTL + Duration::from_secs(1),
            "a node still acts without quorum"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("no node acts {:?} after quorum was lost", lost.elapsed());
    tokio::time::sleep(TTL * 2).await;
    assert!(a.leadership.may_act().is_err() && b.leadership.may_act().is_err());
    {
        let j = j.clone();
        assert!(blocking(move || j.begin(&intent("db-1"))).await.is_err());
    }

    // Quorum back: a leader again.
    cluster.restart(1);
    cluster.restart(2);
    one_leader(&[&a, &b], Duration::from_secs(20)).await;
    eprintln!("leader back {:?} after quorum was lost", lost.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_entry_is_reported_with_its_key_and_vm() {
    if !etcd_present("a_damaged_entry_is_reported") {
        return;
    }
    let cluster = EtcdCluster::start(1, "damaged");
    let a = node("a", client(cluster.endpoints()), "/dmg");
    one_leader(&[&a], Duration::from_secs(10)).await;
    let j = journal(&a, "/dmg");
    let (bad, good) = {
        let j = j.clone();
        blocking(move || {
            (
                j.begin(&intent("web-1")).expect("begin"),
                j.begin(&intent("db-1")).expect("begin"),
            )
        })
        .await
    };
    let key = format!("/dmg/journal/entry/{bad:020}");
    let out = cluster.etcdctl(&[
        "put",
        &key,
        r#"{"intent":{"vm":"web-1"},"outcome":"maybe"}"#,
    ]);
    assert!(out.status.success(), "{out:?}");
    let open = blocking(move || j.open_intents())
        .await
        .expect("open intents");
    assert_eq!(
        open.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![good]
    );
    assert_eq!(open.damaged.len(), 1, "{open:?}");
    assert_eq!(open.damaged[0].key, key);
    assert_eq!(open.damaged[0].vm.as_deref(), Some("web-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_the_password_is_read_from_a_file_and_a_wrong_one_is_named() {
    if !etcd_present("with_authentication_on") {
        return;
    }
    let cluster = EtcdCluster::start(1, "auth");
    for args in [
        &["user", "add", "root:s3cret-root"][..],
        &["user", "add", "drd:s3cret-drd"],
        &["role", "add", "drd"],
        &[
            "role",
            "grant-permission",
            "drd",
            "--prefix=true",
            "readwrite",
            "/auth/",
        ],
        &["user", "grant-role", "drd", "drd"],
        &["auth", "enable"],
    ] {
        let out = cluster.etcdctl(args);
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let dir = std::env::temp_dir().join(format!("dr-etcd-auth-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pw = dir.join("password");
    std::fs::write(&pw, "s3cret-drd\n").expect("password file");
    let with = |secret: Secret| {
        Arc::new(
            Etcd::new(&EtcdConfig {
                endpoints: cluster.endpoints(),
                ca_file: None,
                client_cert: None,
                user: Some(("drd".into(), secret)),
                request_timeout: Duration::from_secs(2),
            })
            .expect("client"),
        )
    };
    let etcd = with(Secret::File(pw.clone()));
    assert!(!format!("{etcd:?}").contains("s3cret"), "{etcd:?}");
    let a = node("a", etcd, "/auth");
    one_leader(&[&a], Duration::from_secs(10)).await;
    let j = journal(&a, "/auth");
    blocking(move || j.begin(&intent("web-1")))
        .await
        .expect("begin as drd");

    std::fs::write(&pw, "wrong\n").expect("password file");
    let err = with(Secret::File(pw.clone()))
        .get(b"/auth/x")
        .await
        .expect_err("a wrong password");
    let text = err.to_string();
    assert!(text.contains("authentication as drd"), "{text}");
    assert!(
        !text.contains("wrong"),
        "the password is not in the error: {text}"
    );
    let err = with(Secret::Env("DR_NO_SUCH_VAR".into()))
        .get(b"/auth/x")
        .await
        .expect_err("no password");
    assert!(err.to_string().contains("DR_NO_SUCH_VAR"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_members_are_checked_against_the_ca_and_the_client_shows_its_certificate() {
    if !etcd_present("over_tls") {
        return;
    }
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "over_tls: openssl is missing (scripts/test.sh installs it)"
        );
        eprintln!("skipping over_tls: openssl is missing (apt-get install openssl)");
        return;
    }
    let cluster = EtcdCluster::start_tls(1, "tls");
    let tls = cluster.tls().expect("certificates").clone();
    let with = |ca: Option<std::path::PathBuf>, cert: bool| {
        Arc::new(
            Etcd::new(&EtcdConfig {
                endpoints: cluster.endpoints(),
                ca_file: ca,
                client_cert: cert.then(|| tls.client.clone()),
                user: None,
                request_timeout: Duration::from_secs(2),
            })
            .expect("client"),
        )
    };
    // Wait for the member to serve, through the right client.
    let good = with(Some(tls.ca.clone()), true);
    let until = Instant::now() + Duration::from_secs(20);
    while let Err(e) = good.members().await {
        assert!(Instant::now() < until, "the TLS member never answered: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = node("a", good, "/tls");
    one_leader(&[&a], Duration::from_secs(10)).await;
    let j = journal(&a, "/tls");
    blocking(move || j.begin(&intent("web-1")))
        .await
        .expect("begin over TLS");

    // A member whose certificate the system's roots do not sign is refused.
    let err = with(None, true)
        .get(b"/tls/x")
        .await
        .expect_err("an unknown CA");
    assert!(err.to_string().contains("unreachable"), "{err}");
    // Without a client certificate, etcd refuses the connection.
    let err = with(Some(tls.ca.clone()), false)
        .get(b"/tls/x")
        .await
        .expect_err("no client certificate");
    assert!(!err.to_string().is_empty());
    // A CA file that is not one is named at construction.
    let bad = std::env::temp_dir().join(format!("dr-etcd-not-a-ca-{}", std::process::id()));
    std::fs::write(&bad, "not a certificate").expect("file");
    let e = Etcd::new(&EtcdConfig {
        endpoints: cluster.endpoints(),
        ca_file: Some(bad.clone()),
        client_cert: None,
        user: None,
        request_timeout: Duration::from_secs(1),
    })
    .expect_err("not a CA");
    assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    let _ = std::fs::remove_file(&bad);
}
