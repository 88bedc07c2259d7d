//! The shared conformance suite against real libvirt daemons and a real
//! guest: the lab of `scripts/kvm-lab.sh` (root; fails in CI without it).

mod common;

use dr_libvirt::LibvirtSection;

fn config(lab: &common::Lab, standby: &[&str]) -> dr_libvirt::LibvirtConfig {
    #[derive(serde::Deserialize)]
    struct File {
        libvirt: LibvirtSection,
    }
    let f: File = toml::from_str(&lab.libvirt_toml(standby)).expect("lab config");
    f.libvirt.into_config().expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_libvirt_backend_passes_the_conformance_suite() {
    if !common::can_run("the_libvirt_backend_passes_the_conformance_suite") {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1", "kvm-a2", "kvm-b1"]);
    lab.guest("kvm-a1", "conf-vm", 1);
    let state = lab.dir.join("state");
    let hv = dr_libvirt::connect(&config(&lab, &["kvm-b1"]), Some(state.clone()))
        .await
        .expect("backend");
    let fx = dr_conformance::hypervisor::Fixture {
        vm: "conf-vm".into(),
        other_host: "kvm-a2".into(),
        standby_host: Some("kvm-b1".into()),
        disks: 1,
    };
    dr_conformance::hypervisor::run_all(&hv, &fx).await;
}

/// A drill's copy: the running original's disk copied at one instant, the
/// copy up with every network link down, the original untouched and still
/// answering; removing the copy deletes its image; a VM that is not a
/// drill copy is never removed as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_copy_runs_isolated_beside_its_original_and_leaves_nothing() {
    use dr_core::model::RestoreSource;
    use dr_core::ports::{Hypervisor, HypervisorError};
    let test = "a_drill_copy_runs_isolated_beside_its_original_and_leaves_nothing";
    if !common::can_run(test) {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1", "kvm-a2"]);
    let ip = lab.guest("kvm-a1", "drilled", 1);
    assert!(common::wait_for_ping(ip, std::time::Duration::from_secs(60)).is_some());
    let hv = dr_libvirt::connect(&config(&lab, &[]), None)
        .await
        .expect("backend");
    let copy = dr_core::model::drill_copy_name("drilled", 1);
    hv.start_drill_copy("drilled", "kvm-a2", RestoreSource::Snapshot, &copy)
        .await
        .expect("drill copy");
    assert_eq!(lab.virsh("kvm-a2", &["domstate", &copy]), "running");
    let xml = lab.virsh("kvm-a2", &["dumpxml", &copy]);
    assert!(xml.contains("<link state='down'/>"), "{xml}");
    assert!(!xml.contains("<link state='up'/>"), "{xml}");
    let image = lab.shared().join(format!("{copy}-vda.qcow2"));
    assert!(image.exists(), "no copy image at {}", image.display());
    assert_eq!(lab.virsh("kvm-a1", &["domstate", "drilled"]), "running");
    assert!(common::pings(ip), "the original stopped answering");
    hv.remove_drill_copy(&copy).await.expect("remove");
    assert!(!image.exists(), "the copy's image was left behind");
    assert!(!lab
        .virsh("kvm-a2", &["list", "--all", "--name"])
        .lines()
        .any(|l| l.trim() == copy));
    match hv.remove_drill_copy("drilled").await {
        Err(HypervisorError::InvalidState { .. }) => {}
        r => panic!("removing a VM that is not a drill copy: {r:?}"),
    }
    assert_eq!(lab.virsh("kvm-a1", &["domstate", "drilled"]), "running");
    assert!(lab.shared().join("drilled.qcow2").exists());
}

/// A VM whose change tracking left checkpoints (points taken before it
/// stopped) still moves: libvirt refuses to undefine a domain with
/// checkpoints unless told their metadata goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_with_a_checkpoint_moves_to_another_host() {
    use dr_core::ports::Hypervisor;
    let test = "a_vm_with_a_checkpoint_moves_to_another_host";
    if !common::can_run(test) {
        return;
    }
    let lab = common::Lab::up(&["kvm-a1", "kvm-a2"]);
    let ip = lab.guest("kvm-a1", "tracked", 1);
    assert!(common::wait_for_ping(ip, std::time::Duration::from_secs(60)).is_some());
    // A chain of two, as change tracking keeps (libvirt counts the
    // checkpoints that are not leaves when it refuses).
    for name in ["vmdr-point-1", "vmdr-point-2"] {
        lab.virsh("kvm-a1", &["checkpoint-create-as", "tracked", name]);
    }
    let listed = lab.virsh("kvm-a1", &["checkpoint-list", "tracked", "--name"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    lab.virsh("kvm-a1", &["destroy", "tracked"]);
    let hv = dr_libvirt::connect(&config(&lab, &[]), None)
        .await
        .expect("backend");
    hv.migrate_vm("tracked", "kvm-a2")
        .await
        .expect("a VM with a checkpoint moves");
    assert_eq!(lab.virsh("kvm-a2", &["domstate", "tracked"]), "shut off");
    assert!(!lab
        .virsh("kvm-a1", &["list", "--all", "--name"])
        .lines()
        .any(|l| l.trim() == "tracked"));
}
