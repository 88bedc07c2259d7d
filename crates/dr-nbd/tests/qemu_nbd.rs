//! The client against QEMU's own NBD server (`qemu-nbd`, the same server
//! code that exports a running VM's disks during a pull-mode backup): a
//! qcow2 image with a persistent dirty bitmap, written by `qemu-io` after
//! the bitmap was added, exported with the bitmap as a metadata context.
//!
//! Needs `qemu-utils`. In CI (`CI=true`) its absence fails the test;
//! elsewhere the test is skipped with the reason printed.

use dr_nbd::client::connect_unix;
use dr_nbd::proto::{STATE_DIRTY, STATE_HOLE, STATE_ZERO};
use dr_nbd::{Extent, NbdError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const M: u64 = 1 << 20;
const K: u64 = 1 << 10;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn can_run(test: &str) -> bool {
    let missing = ["qemu-img", "qemu-io", "qemu-nbd"]
        .into_iter()
        .find(|t| !have(t));
    match missing {
        None => true,
        Some(t) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: cannot run in CI: `{t}` is not installed (Debian package qemu-utils)")
        }
        Some(t) => {
            eprintln!("SKIPPED {test}: `{t}` is not installed (Debian package qemu-utils)");
            false
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dir(test: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nbd-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    d
}

/// `qemu-nbd` serving `image` on a Unix socket; killed on drop.
struct Served {
    child: Child,
    socket: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(image: &Path, bitmap: &str) -> Served {
    let socket = image.with_extension("sock");
    let child = Command::new("qemu-nbd")
        .args([
            "--persistent",
            "--shared=4",
            "--read-only",
            "-f",
            "qcow2",
            "-x",
            "vda",
        ])
        .arg(format!("--socket={}", socket.display()))
        .args(["-B", bitmap])
        .arg(image)
        .spawn()
        .expect("start qemu-nbd");
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "qemu-nbd made no socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Served { child, socket }
}

/// A 64 MiB qcow2: 1 MiB of 0x11 written before bitmap `b0` was added,
/// then 64 KiB of 0xab at 8 MiB and 4 KiB of 0xcd at 40 MiB after it.
fn image(d: &Path) -> PathBuf {
    let img = d.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("64M"));
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -q -P 0x11 0 1M"])
        .arg(&img));
    run(Command::new("qemu-img")
        .args(["bitmap", "--add"])
        .arg(&img)
        .arg("b0"));
    run(Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -q -P 0xab 8M 64k",
            "-c",
            "write -q -P 0xcd 40M 4k",
        ])
        .arg(&img));
    img
}

#[test]
fn dirty_bitmap_and_reads_from_qemu_nbd() {
    if !can_run("dirty_bitmap_and_reads_from_qemu_nbd") {
        return;
    }
    let d = dir("bitmap");
    let img = image(&d);
    let served = serve(&img, "b0");
    let ctx = "qemu:dirty-bitmap:b0";
    let t = Duration::from_secs(10);
    let mut c = connect_unix(&served.socket, "vda", &[ctx, "base:allocation"], t)
        .expect("handshake with qemu-nbd");
    assert_eq!(c.export().size, 64 * M);
    assert!(c.export().structured);

    // Exactly what was written after the bitmap, at its 64 KiB granularity.
    let dirty: Vec<Extent> = c
        .extents(ctx, 0, 64 * M)
        .expect("dirty bitmap")
        .into_iter()
        .filter(|e| e.flags & STATE_DIRTY != 0)
        .collect();
    let runs: Vec<(u64, u64)> = dirty.iter().map(|e| (e.offset, e.len)).collect();
    assert_eq!(runs, vec![(8 * M, 64 * K), (40 * M, 64 * K)]);

    // Allocation: what was written is data, the middle of the disk a hole.
    let alloc = c.extents("base:allocation", 0, 64 * M).expect("allocation");
    assert_eq!(alloc.first().map(|e| (e.offset, e.flags)), Some((0, 0)));
    let at_20m = alloc
        .iter()
        .find(|e| e.offset <= 20 * M && e.end() > 20 * M);
    assert_eq!(at_20m.map(|e| e.flags), Some(STATE_HOLE | STATE_ZERO));

    // Reads: data, and zeroes from a hole (an OFFSET_HOLE chunk or data).
    let mut buf = vec![0u8; 64 * K as usize];
    c.read(8 * M, &mut buf).expect("read at 8 MiB");
    assert!(buf.iter().all(|&b| b == 0xab));
    c.read(40 * M, &mut buf).expect("read at 40 MiB");
    assert!(buf[..4096].iter().all(|&b| b == 0xcd));
    assert!(buf[4096..].iter().all(|&b| b == 0));
    // All of it at once: more than one request of the export's maximum.
    let mut all = vec![0u8; 64 * M as usize];
    c.read(0, &mut all).expect("read everything");
    assert!(all[..M as usize].iter().all(|&b| b == 0x11));
    assert!(all[(8 * M) as usize..(8 * M + 64 * K) as usize]
        .iter()
        .all(|&b| b == 0xab));
    assert!(all[(20 * M) as usize..(30 * M) as usize]
        .iter()
        .all(|&b| b == 0));

    // Out of bounds: not sent, and the connection still works.
    assert!(matches!(
        c.read(64 * M - 512, &mut buf),
        Err(NbdError::BadRequest(_))
    ));
    c.read(0, &mut buf[..4096]).expect("still usable");
    c.disconnect().expect("disconnect");

    // A bitmap that does not exist, and an export that does not.
    let err = connect_unix(&served.socket, "vda", &["qemu:dirty-bitmap:nope"], t)
        .expect_err("no such bitmap");
    assert!(
        matches!(&err, NbdError::NoContext { context, .. } if context.ends_with("nope")),
        "{err}"
    );
    let err = connect_unix(&served.socket, "vdb", &[], t).expect_err("no such export");
    assert!(matches!(err, NbdError::Refused { .. }), "{err}");
}
