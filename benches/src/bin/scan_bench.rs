//! The hash scan's speed on an unchanged image in the page cache (the
//! fallback change source: it reads the whole disk every point), against
//! reading the same file sequentially with nothing else done (what `cat`
//! costs) and against one thread hashing as the scan did before it was
//! parallel, all in one run.
//!
//! Run: `cargo run --release -p dr-benches --bin scan-bench [SIZE_MiB [ROUNDS]]`
//! (default 2048 MiB, 3 rounds). The image goes to target/scan-bench.

use dr_replication::scan::{Scanner, BLOCK};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

/// Sequential read of the whole file with 1 MiB reads, nothing else done.
fn read_all(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf).expect("read");
        if got == 0 {
            return n;
        }
        n += got as u64;
    }
}

/// The scan as it was: one thread, 1 MiB reads, a hash per block.
fn one_thread_hash(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut x = 0u8;
    loop {
        let got = f.read(&mut buf).expect("read");
        if got == 0 {
            return u64::from(x);
        }
        for c in buf[..got].chunks(BLOCK) {
            x ^= blake3::hash(c).as_bytes()[0];
        }
    }
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2048);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scan-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let image = dir.join("disk.img");
    let size = mib << 20;
    if std::fs::metadata(&image).map(|m| m.len()).ok() != Some(size) {
        dr_benches::random_image(&image, size, 0x9e37_79b9_7f4a_7c15);
    }
    let state = dir.join("disk.hashes");
    let _ = std::fs::remove_file(&state);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("scan-bench: {mib} MiB image, {cores} cores, {rounds} rounds each, page cache warm");
    read_all(&image);

    let mut scanner = Scanner::open(0, &state).expect("scanner");
    let t = Instant::now();
    let first = scanner
        .scan_into(&image, &mut |_, _| Ok(()))
        .expect("first scan");
    println!(
        "first scan (every block sent to a sink that drops it): {:.0} MB/s",
        mbps(first.bytes, t.elapsed().as_secs_f64())
    );
    scanner.commit().expect("commit");

    let (mut scan, mut read, mut old) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let s = scanner.scan_into(&image, &mut |_, _| Ok(())).expect("scan");
        assert_eq!(s.changed, 0, "nothing changed");
        scan.push(mbps(size, t.elapsed().as_secs_f64()));
        let t = Instant::now();
        assert_eq!(read_all(&image), size);
        read.push(mbps(size, t.elapsed().as_secs_f64()));
        let t = Instant::now();
        std::hint::black_box(one_thread_hash(&image));
        old.push(mbps(size, t.elapsed().as_secs_f64()));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (s, r, o) = (median(&mut scan), median(&mut read), median(&mut old));
    println!("unchanged image, median of {rounds}:");
    println!("  hash scan (parallel):         {s:>7.0} MB/s");
    println!(
        "  sequential read, nothing else: {r:>7.0} MB/s  (scan / read = {:.2})",
        s / r
    );
    println!(
        "  one-thread hash (the old scan): {o:>6.0} MB/s  (scan / old = {:.2})",
        s / o
    );
}
