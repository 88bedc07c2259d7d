//! Failover from a replica's disk image on vCenter, against govmomi's
//! vCenter simulator: an image of SIZE MiB (in the page cache, as the
//! receiver just wrote it) is uploaded through vCenter's `/folder` service
//! to a datastore of another host and a VM is built around it, taking the
//! original's place. Prints the restore's wall time, its upload rate, and,
//! in the same run, a local copy of the same file to the same filesystem
//! (what the upload costs over a plain copy). The image, the copy and the
//! simulator's datastore go under `TMPDIR`.
//!
//! Run: `TMPDIR=/dev/shm cargo run --release -p dr-benches --bin vsphere-restore [SIZE_MiB]`
//! (default 2048). Talks only to the simulator it starts on 127.0.0.1.

use dr_vsphere::Vsphere;
use std::time::Instant;

fn main() {
    let size_mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2048);
    let (child, url) = dr_benches::start_vcsim(&["-clusters", "1", "-hosts", "2", "-vms", "1"])
        .unwrap_or_else(|why| {
            eprintln!("vsphere-restore: {why}");
            std::process::exit(2)
        });
    let dir = std::env::temp_dir().join(format!("vsphere-restore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let image = dir.join("disk-0.img");
    let bytes = size_mib << 20;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&image).expect("image"));
        let chunk: Vec<u8> = (0..1u32 << 20)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for _ in 0..size_mib {
            f.write_all(&chunk).expect("write the image");
        }
        f.flush().expect("write the image");
    }
    // First, on the same filesystem as the simulator's datastore; its
    // pages are freed again before the restore writes as many.
    let copy = dir.join("copy.img");
    let t = Instant::now();
    // Read and written 1 MiB at a time, not fsynced: the simulator writes
    // the upload to the page cache too. (`std::fs::copy` is slower on
    // tmpfs: its in-kernel copy falls back to a splice of small pieces.)
    {
        use std::io::{Read, Write};
        let mut from = std::fs::File::open(&image).expect("image");
        let mut to = std::fs::File::create(&copy).expect("copy");
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf).expect("read the image");
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).expect("write the copy");
        }
    }
    let local = t.elapsed().as_secs_f64();
    std::fs::remove_file(&copy).expect("remove the copy");
    println!(
        "local copy of the same file (1 MiB reads and writes): {local:.2} s ({:.0} MB/s)",
        bytes as f64 / local / 1e6
    );
    let cfg = dr_benches::vcsim_config(url);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let v = Vsphere::connect(&cfg).await.expect("login");
        let (inv, _) = v.full_inventory().await.expect("inventory");
        let vm = inv.vms[0].name.clone();
        let home = inv.vm(&vm).expect("the VM").host.clone();
        let other = inv
            .hosts
            .iter()
            .find(|h| h.name != home)
            .expect("a second host")
            .name
            .clone();
        v.power_off(&vm).await.expect("the VM stops");
        let t = Instant::now();
        v.restore_vm_from_images(&vm, &other, std::slice::from_ref(&image))
            .await
            .expect("restore from the image");
        let restore = t.elapsed().as_secs_f64();
        println!(
            "restore of {vm} from a {size_mib} MiB image onto {other}: {restore:.2} s ({:.0} MB/s of image)",
            bytes as f64 / restore / 1e6
        );
        v.close().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
    dr_benches::stop_vcsim(child);
}
