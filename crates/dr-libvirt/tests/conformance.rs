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
