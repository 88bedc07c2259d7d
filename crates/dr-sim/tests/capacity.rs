//! Restores admitted by memory and CPU as hypervisors share them: CPU is
//! overcommitted (a VM without a reservation costs its nominal CPU over
//! the policy's `cpu_overcommit`, or its site's), memory is not, and the
//! hypervisor's own overhead for a VM counts beside its memory. Among the
//! hosts with room, restores go to the least loaded.

use dr_sim::Scenario;

/// 48 VMs of 2 GHz / 2 GiB on one host, two more hosts of 40 GHz /
/// 256 GiB (each with vmdr's agent), the first host dies for good: `overcommit` as the policy says,
/// and a reservation on `reserved` of the VMs.
fn scenario(overcommit: u16, reserved: u32) -> String {
    scenario_with(&format!("cpu_overcommit = {overcommit}\n"), reserved)
}

/// [`scenario`] with `policy` as the policy's own lines.
fn scenario_with(policy: &str, reserved: u32) -> String {
    let mut s = format!(
        "name = \"capacity\"\nseed = 1\nduration = \"20m\"\n\
         [policy]\nfailure_threshold = 2\nhost_down_after = \"10s\"\n\
         max_in_flight_per_host = 8\nmax_in_flight_total = 16\n{policy}\
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
    final_hosts(text)
        .into_iter()
        .filter(|(_, state, _)| state != "running")
        .map(|(vm, _, _)| vm)
        .collect()
}

/// Each VM's name, final state and final host after the run of `text`.
fn final_hosts(text: &str) -> Vec<(String, String, String)> {
    let report = dr_sim::run(&Scenario::parse(text).expect("scenario")).expect("runs");
    assert_eq!(report.verdict.double_runs, 0, "{:?}", report.verdict);
    report
        .summaries
        .iter()
        .map(|s| (s.vm.clone(), s.final_state.to_owned(), s.final_host.clone()))
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

#[test]
fn a_sites_own_overcommit_is_the_one_its_hosts_count_by() {
    // The policy overcommits 4:1, site "a" (every host here) not at all:
    // 8 stay down, as with a policy of 1.
    let strict_a = "cpu_overcommit = 4\n[policy.sites.a]\ncpu_overcommit = 1\n";
    assert_eq!(down_after(&scenario_with(strict_a, 0)).len(), 8);
    // Another site's ratio changes nothing here.
    let strict_b = "cpu_overcommit = 4\n[policy.sites.b]\ncpu_overcommit = 1\n";
    assert_eq!(
        down_after(&scenario_with(strict_b, 0)),
        Vec::<String>::new()
    );
    // And the other way round: a generous site under a strict policy.
    let generous_a = "cpu_overcommit = 1\n[policy.sites.a]\ncpu_overcommit = 4\n";
    assert_eq!(
        down_after(&scenario_with(generous_a, 0)),
        Vec::<String>::new()
    );
}

/// 8 VMs of 2 GiB (each with `overhead` MiB of the hypervisor's beside)
/// on a host of 32 GiB; one other host of 16 GiB; the first dies for good.
/// All 8 may be restored at once, so nothing but their cost keeps one back.
fn overhead_scenario(overhead: u64) -> String {
    let mut s = String::from(
        "name = \"overhead\"\nseed = 1\nduration = \"10m\"\n\
         [policy]\nfailure_threshold = 2\nhost_down_after = \"10s\"\nmax_in_flight_per_host = 8\n\
         [[site]]\nname = \"a\"\n\
         [[host]]\nname = \"esx-1\"\nsite = \"a\"\nip = \"10.0.1.1\"\nmemory_mb = 32768\nagent = {}\n\
         [[host]]\nname = \"esx-2\"\nsite = \"a\"\nip = \"10.0.1.2\"\nmemory_mb = 16384\nagent = {}\n",
    );
    for i in 0..8 {
        s.push_str(&format!(
            "[[vm]]\nname = \"vm-{i}\"\nip = \"10.1.0.{}\"\nhost = \"esx-1\"\nmemory_mb = 2048\n\
             memory_overhead_mb = {overhead}\nsnapshot = true\n",
            i + 1
        ));
    }
    s.push_str(
        "[[fault]]\nat = \"1m\"\nkind = \"host_crash\"\nhost = \"esx-1\"\nrecoverable = false\n",
    );
    s
}

#[test]
fn the_hypervisors_overhead_counts_beside_a_vms_memory() {
    // 8 x 2 GiB fill the 16 GiB host exactly.
    assert_eq!(down_after(&overhead_scenario(0)), Vec::<String>::new());
    // With 256 MiB of overhead each (reported while they ran, as vSphere
    // does, and remembered once their host is gone), 7 fit: the eighth is
    // not tried (the host would refuse it), it waits for capacity.
    let report =
        dr_sim::run(&Scenario::parse(&overhead_scenario(256)).expect("scenario")).expect("runs");
    let down: Vec<_> = report
        .summaries
        .iter()
        .filter(|s| s.final_state != "running")
        .collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(
        down[0].actions.is_empty(),
        "a restore the host could not hold was tried: {down:?}"
    );
}

#[test]
fn restores_spread_over_the_least_loaded_hosts() {
    // 24 VMs of 2 GHz / 2 GiB on esx-1; esx-2 and esx-3 empty; esx-4 as
    // big but busy with 10 VMs of its own. No limit keeps a host from
    // taking them all at once.
    let mut s = String::from(
        "name = \"spread\"\nseed = 1\nduration = \"15m\"\n\
         [policy]\nfailure_threshold = 2\nhost_down_after = \"10s\"\n\
         max_in_flight_per_host = 32\nmax_in_flight_total = 32\n\
         [[site]]\nname = \"a\"\n",
    );
    for i in 1..=4 {
        s.push_str(&format!(
            "[[host]]\nname = \"esx-{i}\"\nsite = \"a\"\nip = \"10.0.1.{i}\"\ncpu_mhz = 40000\n\
             memory_mb = 262144\nagent = {{}}\n"
        ));
    }
    for i in 0..24 {
        s.push_str(&format!(
            "[[vm]]\nname = \"vm-{i:02}\"\nip = \"10.1.0.{}\"\nhost = \"esx-1\"\ncpu_mhz = 2000\n\
             memory_mb = 2048\nsnapshot = true\n",
            i + 1
        ));
    }
    for i in 0..10 {
        s.push_str(&format!(
            "[[vm]]\nname = \"busy-{i}\"\nip = \"10.1.1.{}\"\nhost = \"esx-4\"\ncpu_mhz = 8000\n\
             memory_mb = 2048\n",
            i + 1
        ));
    }
    s.push_str(
        "[[fault]]\nat = \"1m\"\nkind = \"host_crash\"\nhost = \"esx-1\"\nrecoverable = false\n",
    );
    let fates = final_hosts(&s);
    let on = |host: &str| {
        fates
            .iter()
            .filter(|(vm, state, h)| vm.starts_with("vm-") && state == "running" && h == host)
            .count()
    };
    let (two, three, four) = (on("esx-2"), on("esx-3"), on("esx-4"));
    assert_eq!(two + three + four, 24, "every VM back: {fates:?}");
    // Before, the host with the most free memory took all 24.
    assert!(
        two.abs_diff(three) <= 2,
        "the two idle hosts share them: {two} and {three}"
    );
    assert!(
        four < two.min(three),
        "the busy host takes fewer: {four} against {two} and {three}"
    );
}
