//! Point-in-time exports of a real running guest (the KVM lab): a
//! pull-mode backup with a checkpoint created at the same instant, read
//! over NBD with vmdr's client while the guest keeps writing; then an
//! incremental one from that checkpoint, whose dirty bitmap is exactly what
//! the guest wrote in between.
//!
//! The guest runs the lab's writer: numbered records, one per 4 KiB block
//! of its disk, in order, each flushed before the next. So every image read
//! at one instant must hold a prefix of the records (nothing after a gap,
//! no torn record), the incremental's prefix must be longer, and every
//! record written between the two instants must lie in a dirty extent.
//!
//! Needs root and the lab's packages: in CI (`CI=true`) their absence fails
//! the test; elsewhere it is skipped with the reason printed.

mod common;

use dr_libvirt::pull::{self, NbdServer};
use dr_libvirt::remote::Client;
use dr_libvirt::uri::Uri;
use dr_nbd::client::connect_tcp;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const DISK: usize = 16 << 20;
const T: Duration = Duration::from_secs(30);

async fn wait_job_gone(c: &Client, dom: &dr_libvirt::wire::Domain) {
    let t0 = Instant::now();
    while c.job_type(dom).await.expect("job info") != dr_libvirt::remote::job::NONE {
        assert!(t0.elapsed() < T, "the backup job did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_guests_disk_read_at_two_instants_and_the_changes_between() {
    if !common::can_run("pull_backup") {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1"]);
    // A record every 50 ms.
    lab.guest_with("kvm-a1", "rec-1", 1, "vmdr.writer=50000");
    let uri = Uri::parse(&lab.uri("kvm-a1")).expect("uri");
    let c = Client::open(&uri, T, Box::new(|_| {}))
        .await
        .expect("connect");
    let dom = c.lookup("rec-1").await.expect("domain");
    let disks = vec!["vda".to_owned()];
    let host = lab.host_ip("kvm-a1");
    let server = NbdServer::Tcp {
        host: host.to_string(),
        port: 10809,
    };
    let nbd: SocketAddr = (host, 10809).into();
    let scratch = lab.dir.join("kvm-a1").display().to_string();

    // The guest boots and writes a few records.
    let t0 = Instant::now();
    loop {
        let img = std::fs::read(lab.shared().join("rec-1.qcow2")).unwrap_or_default();
        if img.windows(12).any(|w| w == b"vmdr-record ") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the guest's writer never wrote"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A full point, with checkpoint cp-1 at its instant.
    let xml = pull::backup_xml("rec-1", &disks, &server, &scratch, None);
    c.backup_begin(&dom, &xml, Some(&pull::checkpoint_xml("cp-1", &disks)))
        .await
        .expect("full pull backup");
    let first = tokio::task::spawn_blocking(move || {
        let mut n = connect_tcp(nbd, "vda", &["base:allocation"], T).expect("NBD handshake");
        assert_eq!(n.export().size, DISK as u64);
        let mut img = vec![0u8; DISK];
        n.read(0, &mut img).expect("read the whole export");
        n.disconnect().expect("disconnect");
        img
    })
    .await
    .expect("reader");
    c.abort_job(&dom).await.expect("end the backup");
    wait_job_gone(&c, &dom).await;
    let a = common::records_prefix(&first, "the export");
    assert!(a >= 1, "the first point holds no record");

    // The guest writes on; then the changes since cp-1, with cp-2.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let xml = pull::backup_xml("rec-1", &disks, &server, &scratch, Some("cp-1"));
    c.backup_begin(&dom, &xml, Some(&pull::checkpoint_xml("cp-2", &disks)))
        .await
        .expect("incremental pull backup");
    let ctx = pull::dirty_context("vda");
    let (second, dirty) = tokio::task::spawn_blocking(move || {
        let mut n = connect_tcp(nbd, "vda", &[&ctx], T).expect("NBD handshake");
        let dirty: Vec<dr_nbd::Extent> = n
            .extents(&ctx, 0, DISK as u64)
            .expect("dirty bitmap")
            .into_iter()
            .filter(|e| e.flags & dr_nbd::proto::STATE_DIRTY != 0)
            .collect();
        // The replica's way: the first point, then the dirty extents.
        let mut img = first;
        for e in &dirty {
            let (at, len) = (e.offset as usize, e.len as usize);
            n.read(e.offset, &mut img[at..at + len])
                .expect("read a dirty extent");
        }
        n.disconnect().expect("disconnect");
        (img, dirty)
    })
    .await
    .expect("reader");
    c.abort_job(&dom).await.expect("end the backup");
    wait_job_gone(&c, &dom).await;
    let b = common::records_prefix(&second, "the export");
    assert!(
        b > a,
        "the second point ({b} records) is not past the first ({a})"
    );
    for k in a..b {
        let at = (k * BLOCK) as u64;
        assert!(
            dirty.iter().any(|e| e.offset <= at && at < e.end()),
            "record {k}, written between the points, is in no dirty extent: {dirty:?}"
        );
    }
    let dirty_bytes: u64 = dirty.iter().map(|e| e.len).sum();
    eprintln!(
        "first point: {a} records; second: {b}; dirty between them: {} extents, {dirty_bytes} bytes",
        dirty.len()
    );
    let written = ((b - a + 1) * BLOCK) as u64;
    // The bitmap's granularity (64 KiB) rounds each end out, no more.
    assert!(
        dirty_bytes <= written + 2 * 65536,
        "{dirty_bytes} bytes dirty for {written} bytes written: {dirty:?}"
    );
    assert!(
        dirty.iter().all(|e| e.offset + 65536 > (a * BLOCK) as u64),
        "an extent before the first point's records is dirty: {dirty:?}"
    );

    // The chain: cp-2 is the base from now on; deleting cp-1 merges it.
    let cps = c.checkpoints(&dom, 0).await.expect("list");
    let names: Vec<&str> = cps.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let cp1 = cps.iter().find(|c| c.name == "cp-1").expect("cp-1");
    c.checkpoint_delete(cp1, 0).await.expect("delete cp-1");
    let left: Vec<String> = c
        .checkpoints(&dom, 0)
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(left, vec!["cp-2".to_owned()]);
    // No scratch file is left behind.
    let stray: Vec<_> = std::fs::read_dir(&scratch)
        .expect("scratch dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("vmdr-scratch-"))
        .collect();
    assert!(stray.is_empty(), "scratch files left: {stray:?}");
}
