//! `drctl repl` end to end over loopback: serve, ship, status, restore, and
//! a receiver killed with SIGKILL in the middle of shipping.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const KEY: &str = "0123456789abcdef-test-key";

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("drctl-repl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("dir");
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, listen: &str) -> Server {
    serve_logging(dir, listen, Stdio::inherit())
}

/// [`serve`] with its log (stderr) to `log`.
fn serve_logging(dir: &Path, listen: &str, log: impl Into<Stdio>) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["repl", "serve", "--listen", listen, "--dir"])
        .arg(dir)
        .env("VMDR_REPL_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    Server { child, addr }
}

fn drctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(args)
        .env("VMDR_REPL_KEY", KEY)
        .output()
        .expect("drctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `drctl repl restore --dir DIR --checkpoint CP --out OUT [EXTRA…]`.
fn restore(dir: &str, checkpoint: &str, out: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "repl",
        "restore",
        "--dir",
        dir,
        "--checkpoint",
        checkpoint,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    drctl(&args)
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 4096) as u8).wrapping_mul(31) ^ salt ^ (i as u8))
        .collect()
}

#[test]
fn ship_status_and_restore_two_checkpoints() {
    let (d, r) = (Dir::new("disk"), Dir::new("replica"));
    let disk = d.0.join("vm.img");
    let v1 = pattern(1 << 20, 1);
    std::fs::write(&disk, &v1).expect("write");
    let server = serve(&r.0, "127.0.0.1:0");
    let disk_s = disk.to_str().expect("utf-8");
    let (code, out, err) = drctl(&[
        "repl",
        "ship",
        "--disk",
        disk_s,
        "--to",
        &server.addr,
        "--once",
    ]);
    assert_eq!(code, 0, "{err}");
    let round: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a round")).expect("json");
    assert_eq!(round["checkpoint"], 1);
    assert_eq!(
        round["changed_blocks"], 256,
        "the first checkpoint carries every block"
    );
    let mut v2 = v1.clone();
    v2[5 * 4096] ^= 0xff;
    v2[200 * 4096 + 7] ^= 0xff;
    std::fs::write(&disk, &v2).expect("write");
    let (code, out, err) = drctl(&[
        "repl",
        "ship",
        "--disk",
        disk_s,
        "--to",
        &server.addr,
        "--once",
    ]);
    assert_eq!(code, 0, "{err}");
    let round: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a round")).expect("json");
    assert_eq!(round["changed_blocks"], 2, "only the changed blocks travel");
    let (code, out, _) = drctl(&[
        "repl",
        "status",
        "--dir",
        r.0.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(st["newest"], 2);
    assert!(st["rpo_ms"].as_u64().is_some_and(|ms| ms < 60_000));
    drop(server);
    for (cp, want) in [(1, &v1), (2, &v2)] {
        let out = d.0.join(format!("restored-{cp}.img"));
        let (code, _, err) = restore(
            r.0.to_str().expect("utf-8"),
            &cp.to_string(),
            out.to_str().expect("utf-8"),
            &[],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            std::fs::read(&out).expect("read") == *want,
            "checkpoint {cp} differs"
        );
    }
    let (code, _, err) = restore(r.0.to_str().expect("utf-8"), "9", "/dev/null", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("checkpoint 9"), "{err}");
}

#[test]
fn a_receiver_killed_mid_ship_comes_back_whole() {
    let (d, r) = (Dir::new("disk-k"), Dir::new("replica-k"));
    let disk = d.0.join("vm.img");
    let v1 = pattern(48 << 20, 9);
    std::fs::write(&disk, &v1).expect("write");
    let mut server = serve(&r.0, "127.0.0.1:0");
    let addr = server.addr.clone();
    let mut ship = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args([
            "repl",
            "ship",
            "--disk",
            disk.to_str().expect("utf-8"),
            "--to",
            &addr,
            "--once",
            "--timeout",
            "120",
        ])
        .env("VMDR_REPL_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ship");
    // Kill the receiver while the 48 MiB checkpoint is on its way.
    std::thread::sleep(std::time::Duration::from_millis(150));
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    // The replica shows no half checkpoint...
    let (code, out, _) = drctl(&[
        "repl",
        "status",
        "--dir",
        r.0.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        st["newest"].is_null() || st["newest"] == 1,
        "only whole checkpoints: {st}"
    );
    // ...and a restarted receiver on the same address gets it whole.
    let server = serve(&r.0, &addr);
    let status = ship.wait().expect("ship ends");
    assert!(
        status.success(),
        "the shipper finished after the receiver came back"
    );
    drop(server);
    let out = d.0.join("restored.img");
    let (code, _, err) = restore(
        r.0.to_str().expect("utf-8"),
        "1",
        out.to_str().expect("utf-8"),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read(&out).expect("read") == v1,
        "restored image differs"
    );
}

#[test]
fn bad_input_exits_2() {
    for args in [
        vec![
            "repl",
            "ship",
            "--disk",
            "/nonexistent",
            "--to",
            "127.0.0.1:1",
            "--once",
        ],
        vec![
            "repl",
            "ship",
            "--disk",
            "/etc/hostname",
            "--to",
            "127.0.0.1:1",
        ],
        vec![
            "repl",
            "ship",
            "--disk",
            "/etc/hostname",
            "--to",
            "not-an-address",
            "--once",
        ],
        vec!["repl", "status", "--dir", "/nonexistent-replica"],
    ] {
        let (code, _, err) = drctl(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let (code, _, err) = drctl(&[
        "repl",
        "ship",
        "--disk",
        "/dev/null",
        "--to",
        "127.0.0.1:1",
        "--once",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--log"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args([
            "repl",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--dir",
            "/tmp/x",
        ])
        .env("VMDR_REPL_KEY", "short")
        .output()
        .expect("drctl");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 bytes"));
}

/// Restores the replica's newest checkpoint; `None` before the first.
fn newest_image(replica: &Path, out: &Path) -> Option<(u64, Vec<u8>)> {
    let (code, st, err) = drctl(&[
        "repl",
        "status",
        "--dir",
        replica.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let st: serde_json::Value = serde_json::from_str(&st).expect("json");
    let id = st["newest"].as_u64()?;
    let (code, _, err) = restore(
        replica.to_str().expect("utf-8"),
        &id.to_string(),
        out.to_str().expect("utf-8"),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    Some((id, std::fs::read(out).expect("read restored")))
}

#[test]
fn a_sender_killed_at_random_points_leaves_whole_checkpoints() {
    let (d, r) = (Dir::new("disk-s"), Dir::new("replica-s"));
    let disk = d.0.join("vm.img");
    let out = d.0.join("restored.img");
    let mut image = pattern(8 << 20, 3);
    std::fs::write(&disk, &image).expect("write");
    let mut versions = vec![image.clone()];
    let mut server = serve(&r.0, "127.0.0.1:0");
    let addr = server.addr.clone();
    // A fixed seed: a failing run replays exactly.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut newest_seen = 0;
    for run in 0..10u8 {
        // Change some blocks, then ship continuously and SIGKILL the sender
        // at a random point.
        for _ in 0..(next() % 200 + 1) {
            let block = (next() as usize % (image.len() / 4096)) * 4096;
            image[block..block + 4096].fill(run.wrapping_mul(37) ^ (next() as u8));
        }
        std::fs::write(&disk, &image).expect("write");
        versions.push(image.clone());
        let mut ship = Command::new(env!("CARGO_BIN_EXE_drctl"))
            .args(["repl", "ship", "--disk"])
            .arg(&disk)
            .args(["--to", &addr, "--interval", "0.02"])
            .env("VMDR_REPL_KEY", KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ship");
        let wait = 50 + next() % 1200;
        eprintln!("run {run}: SIGKILL after {wait} ms");
        std::thread::sleep(std::time::Duration::from_millis(wait));
        ship.kill().expect("SIGKILL the sender");
        let _ = ship.wait();
        // The receiver goes too (SIGKILL, whatever it was doing), since a
        // replica is restored only by the one process that has it open.
        // Its newest checkpoint is whole, equals the source at some point,
        // and nothing acknowledged before is gone.
        drop(server);
        if let Some((id, got)) = newest_image(&r.0, &out) {
            assert!(
                id >= newest_seen,
                "run {run}: checkpoint {newest_seen} was lost (newest {id})"
            );
            newest_seen = id;
            eprintln!("run {run}: newest checkpoint {id}");
            assert!(
                versions.contains(&got),
                "run {run}: checkpoint {id} equals no version of the source"
            );
        }
        server = serve(&r.0, &addr);
    }
    // A last, complete shipment brings the replica to the source.
    let (code, _, err) = drctl(&[
        "repl",
        "ship",
        "--disk",
        disk.to_str().expect("utf-8"),
        "--to",
        &addr,
        "--once",
        "--timeout",
        "60",
    ]);
    assert_eq!(code, 0, "{err}");
    drop(server);
    let (id, got) = newest_image(&r.0, &out).expect("a checkpoint");
    assert!(id >= newest_seen, "checkpoint {newest_seen} was lost");
    assert!(
        got == image,
        "after a clean shipment the replica equals the source"
    );
}

#[test]
fn restore_refuses_a_replica_a_receiver_has_open() {
    let (d, r) = (Dir::new("disk-u"), Dir::new("replica-u"));
    let _server = serve(&r.0, "127.0.0.1:0");
    let out = d.0.join("restored.img");
    let (code, _, err) = restore(
        r.0.to_str().expect("utf-8"),
        "1",
        out.to_str().expect("utf-8"),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in use by another process"), "{err}");
}

fn ship_once(disk: &Path, to: &str, key: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args([
            "repl",
            "ship",
            "--once",
            "--timeout",
            "60",
            "--to",
            to,
            "--disk",
        ])
        .arg(disk)
        .env("VMDR_REPL_KEY", key)
        .output()
        .expect("drctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stream_id(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stream"))
        .expect("stream identity")
        .trim()
        .to_owned()
}

#[test]
fn a_replica_refuses_another_disk_groups_stream_and_both_ends_name_both() {
    let (d, r) = (Dir::new("disk-id"), Dir::new("replica-id"));
    let (a, b) = (d.0.join("a.img"), d.0.join("b.img"));
    let va = pattern(256 << 10, 1);
    std::fs::write(&a, &va).expect("write");
    std::fs::write(&b, pattern(256 << 10, 2)).expect("write");
    let log = d.0.join("receiver.log");
    let server = serve_logging(
        &r.0,
        "127.0.0.1:0",
        std::fs::File::create(&log).expect("log"),
    );
    let (code, _, err) = ship_once(&a, &server.addr, KEY);
    assert_eq!(code, 0, "{err}");
    let ours = stream_id(&r.0);
    assert_eq!(ours, stream_id(&d.0.join("a.img.vmdr-log")));
    // Another group of disks, whose new log is far behind the replica's
    // stream: before, the receiver answered "I have it all" and the shipper
    // exited 0 with the other stream's sequence.
    let (code, out, err) = ship_once(&b, &server.addr, KEY);
    assert_eq!(code, 1, "refused is a failure: {out} {err}");
    let theirs = stream_id(&d.0.join("b.img.vmdr-log"));
    assert_ne!(ours, theirs);
    for id in [&ours, &theirs] {
        assert!(err.contains(id.as_str()), "the shipper names {id}: {err}");
    }
    assert!(err.contains("refused"), "{err}");
    let round: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a round")).expect("json");
    assert_eq!(round["targets"][0]["checkpoint"], serde_json::Value::Null);
    assert_eq!(round["targets"][0]["acked_seq"], 0, "{round}");
    drop(server);
    let logged = std::fs::read_to_string(&log).expect("receiver log");
    for id in [&ours, &theirs] {
        assert!(
            logged.contains(id.as_str()),
            "the receiver names {id}: {logged}"
        );
    }
    // The replica is as it was: A's disk at checkpoint 1.
    let restored = d.0.join("restored.img");
    assert_eq!(newest_image(&r.0, &restored), Some((1, va)));
}

#[test]
fn a_wrong_key_is_an_authentication_failure_on_both_ends() {
    let (d, r) = (Dir::new("disk-key"), Dir::new("replica-key"));
    let disk = d.0.join("vm.img");
    std::fs::write(&disk, pattern(64 << 10, 4)).expect("write");
    let log = d.0.join("receiver.log");
    let server = serve_logging(
        &r.0,
        "127.0.0.1:0",
        std::fs::File::create(&log).expect("log"),
    );
    let wrong = "another-key-entirely-0123";
    let (code, _, err) = ship_once(&disk, &server.addr, wrong);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(err.contains("different replication keys"), "{err}");
    drop(server);
    let logged = std::fs::read_to_string(&log).expect("receiver log");
    assert!(logged.contains("authentication failed"), "{logged}");
    for text in [&err, &logged] {
        assert!(
            !text.contains(wrong) && !text.contains(KEY),
            "a key shown: {text}"
        );
    }
    assert!(!r.0.join("stream").exists(), "nothing bound the replica");
}

#[test]
fn lag_is_what_the_receiver_has_not_acknowledged_and_returns_to_zero() {
    let (d, r) = (Dir::new("disk-lag"), Dir::new("replica-lag"));
    let disk = d.0.join("vm.img");
    std::fs::write(&disk, pattern(1 << 20, 5)).expect("write");
    let server = serve(&r.0, "127.0.0.1:0");
    let mut ship = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args([
            "repl",
            "ship",
            "--interval",
            "0.1",
            "--to",
            &server.addr,
            "--disk",
        ])
        .arg(&disk)
        .env("VMDR_REPL_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ship");
    let lines = BufReader::new(ship.stdout.take().expect("stdout"));
    let mut rounds = Vec::new();
    for line in lines.lines().take(8) {
        let v: serde_json::Value = serde_json::from_str(&line.expect("line")).expect("json");
        rounds.push(v);
    }
    let _ = ship.kill();
    let _ = ship.wait();
    // Unchanged disk after the first: every round is a checkpoint record
    // only. Before, lag grew by its size each round (8,349 → 12,606 →
    // 13,563) while the receiver had acknowledged everything but it.
    let acked: Vec<&serde_json::Value> = rounds
        .iter()
        .filter(|r| r["targets"][0]["acked_seq"] == r["seq"])
        .collect();
    assert!(
        acked.len() >= 4,
        "most rounds arrive before the next: {rounds:?}"
    );
    for r in acked {
        assert_eq!(r["targets"][0]["lag_bytes"], 0, "acknowledged, no lag: {r}");
    }
}

#[test]
fn restore_names_the_disks_it_has_and_never_writes_an_empty_image() {
    let (d, r) = (Dir::new("disk-rd"), Dir::new("replica-rd"));
    let disk = d.0.join("vm.img");
    std::fs::write(&disk, pattern(64 << 10, 6)).expect("write");
    let server = serve(&r.0, "127.0.0.1:0");
    let (code, _, err) = ship_once(&disk, &server.addr, KEY);
    assert_eq!(code, 0, "{err}");
    drop(server);
    let out = d.0.join("r7.img");
    let dir = r.0.to_str().expect("utf-8");
    let (code, _, err) = restore(dir, "1", out.to_str().expect("utf-8"), &["--disk", "7"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no disk 7") && err.contains("disk 0 only"),
        "{err}"
    );
    assert!(!out.exists(), "no empty image left to pass for the disk");
    let (code, said, err) = restore(dir, "1", out.to_str().expect("utf-8"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        said.contains("wrote disk 0 at checkpoint 1") && said.contains("65536 bytes"),
        "{said}"
    );
    // A directory that is not there is not created by looking for it.
    let missing = d.0.join("no-such-replica");
    let (code, _, err) = restore(
        missing.to_str().expect("utf-8"),
        "1",
        out.to_str().expect("utf-8"),
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no replica at"), "{err}");
    assert!(!missing.exists(), "restore created {}", missing.display());
}

#[test]
fn serve_errors_say_what_failed_once_and_leave_nothing_behind() {
    let d = Dir::new("serve-err");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = d.0.join("replica");
    let (code, _, err) = drctl(&[
        "repl",
        "serve",
        "--listen",
        &addr,
        "--dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("in use").count(), 1, "said once: {err}");
    assert!(
        !dir.exists(),
        "a receiver that cannot listen made {}",
        dir.display()
    );
    let file = d.0.join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let (code, _, err) = drctl(&[
        "repl",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dir",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(err.matches("File exists").count(), 0, "{err}");
}
