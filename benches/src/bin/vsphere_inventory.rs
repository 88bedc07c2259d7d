//! The vSphere inventory benchmark against govmomi's vCenter simulator
//! (Debian's golang-go and golang-github-vmware-govmomi-dev): round trips and
//! wall time of a full read of ~1,000 VMs, and of an incremental refresh
//! after one VM changed.
//!
//! Run: `cargo run --release -p dr-benches --bin vsphere-inventory`
//! Talks only to the simulator it starts on 127.0.0.1.

use dr_vsphere::Vsphere;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // 1 cluster of 10 hosts and 1,000 VMs.
    let (child, url) = dr_benches::start_vcsim(&["-clusters", "1", "-hosts", "10", "-vms", "1000"])
        .unwrap_or_else(|why| {
            eprintln!("vsphere-inventory: {why}");
            std::process::exit(2)
        });
    let cfg = dr_benches::vcsim_config(url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let v = Vsphere::connect(&cfg).await.expect("login");
        let t = Instant::now();
        let (inv, first_trips) = v.full_inventory().await.expect("first read");
        println!("inventory: {} hosts, {} VMs", inv.hosts.len(), inv.vms.len());
        println!(
            "first full read (creates the container view): {first_trips} round trips, {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        let mut full = Vec::new();
        let mut full_trips = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let (_, trips) = v.full_inventory().await.expect("full read");
            full.push(t.elapsed());
            full_trips = trips;
        }
        let (_, start_trips) = v.inventory().await.expect("incremental start");
        let vm = inv.vms[0].name.clone();
        let mut incr = Vec::new();
        let mut incr_trips = Vec::new();
        let mut idle = Vec::new();
        for i in 0..6 {
            if i % 2 == 0 { v.power_off(&vm).await } else { v.power_on(&vm).await }.expect("change one VM");
            let t = Instant::now();
            let (_, trips) = v.inventory().await.expect("refresh");
            incr.push(t.elapsed());
            incr_trips.push(trips);
            let t = Instant::now();
            v.inventory().await.expect("refresh");
            idle.push(t.elapsed());
        }
        println!(
            "full read (RetrievePropertiesEx, view kept): {full_trips} round trip(s), median {:.1} ms over 5",
            median(full).as_secs_f64() * 1e3
        );
        println!(
            "incremental start (collector, view, filter, first WaitForUpdatesEx; perf counters and rates): {start_trips} round trips"
        );
        println!(
            "incremental refresh after one VM changed: {:?} round trip(s), median {:.2} ms over 6",
            incr_trips,
            median(incr).as_secs_f64() * 1e3
        );
        println!("incremental refresh with nothing changed: median {:.2} ms", median(idle).as_secs_f64() * 1e3);
        println!("(the simulator gathers updates on a 250 ms tick before answering WaitForUpdatesEx: its latency, not the client's)");
        v.close().await;
    });
    dr_benches::stop_vcsim(child);
}
