//! Restores admitted by memory and CPU as hypervisors share them: CPU is
//! overcommitted (a VM without a reservation costs its nominal CPU over
//! the policy's `cpu_overcommit`), memory is not.

use dr_sim::Scenario;

/// 48 VMs of 2 GHz / 2 GiB on one host, two more hosts of 40 GHz /
/// 256 GiB (each with vmdr's agent), the first host dies for good: `overcommit` as the policy says,
/// and a reservation on `reserved` of the VMs.
fn scenario(overcommit: u16, reserved: u32) -> String {
    let mut s = format!(
        "name = \"capacity\"\nseed = 1\nduration = \"20m\"\n\
         [policy]\nfailure_threshold = 2\nhost_down_after = \"10s\"\ncpu_overcommit = {overcommit}\n\
         max_in_flight_per_host = 8\nmax_in_flight_total = 16\n\
         [[site]]\nname = \"a\"\n"
    );
    for (i, name) in ["esx-1", "esx-2", "esx-3"].iter().enumerate() {
        s.push_str(&format!(
            "[[host]]\nname = \"{name}\"\nsite = \"a\"\nip = \"10.0.1.{}\"\ncpu_mhz = 40000\nmemory_mb = 262144\nagent = {{}}\n",
            i + 1
        ));
    }
    for i in 0..48u32 {
        let reservation = if i < reserved {
            "cpu_reservation_mhz = 30000\n"
        } else {
            ""
        };
        s.push_str(&format!(
            "[[vm]]\nname = \"vm-{i:02}\"\nip = \"10.1.0.{}\"\nhost = \"esx-1\"\ncpu_mhz = 2000\nmemory_mb = 2048\nsnapshot = true\n{reservation}",
            i + 1
        ));
    }
    s.push_str(
        "[[fault]]\nat = \"1m\"\nkind = \"host_crash\"\nhost = \"esx-1\"\nrecoverable = false\n",
    );
    s
}

fn down_after(text: &str) -> Vec<String> {
    let report = dr_sim::run(&Scenario::parse(text).expect("scenario")).expect("runs");
    assert_eq!(report.verdict.double_runs, 0, "{:?}", report.verdict);
    report
        .summaries
        .iter()
        .filter(|s| s.final_state != "running")
        .map(|s| s.vm.clone())
        .collect()
}

#[test]
fn cpu_is_overcommitted_so_every_vm_whose_memory_fits_comes_back() {
    // Before: 40 restored, 8 left down with NoCapacity, although the two
    // hosts had 500 GiB free for their 16 GiB.
    assert_eq!(down_after(&scenario(4, 0)), Vec::<String>::new());
    // Without overcommit, nominal CPU is a hard reservation again: two
    // hosts of 40 GHz hold 40 VMs of 2 GHz.
    assert_eq!(down_after(&scenario(1, 0)).len(), 8);
}

#[test]
fn a_reservation_is_honoured_whatever_the_overcommit() {
    // Three VMs reserve 30 GHz each: two hosts of 40 GHz hold two of them,
    // and 10 GHz is left on each for the 45 others at 500 MHz each
    // (2 GHz over 4): 40 of them. Six stay down, one reserving VM among
    // them; every other is running.
    let down = down_after(&scenario(4, 3));
    assert_eq!(down.len(), 6, "{down:?}");
    assert_eq!(
        down.iter().filter(|v| v.as_str() < "vm-03").count(),
        1,
        "one reserving VM stays down: {down:?}"
    );
}
