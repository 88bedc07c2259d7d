//! The vSphere backend passes the same conformance suite as the simulated
//! datacenter, against govmomi's vCenter simulator.

mod common;

use common::{available, Vcsim};
use dr_core::ports::Hypervisor;
use dr_vsphere::xml::Limits;
use dr_vsphere::{PasswordSource, SpareHost, TlsMode, Vsphere, VsphereConfig};
use std::time::Duration;

#[tokio::test]
async fn vsphere_passes_the_conformance_suite() {
    if !available("vsphere_passes_the_conformance_suite") {
        return;
    }
    let sim = Vcsim::start(&["-clusters", "1", "-hosts", "3", "-vms", "2"]);
    std::env::set_var("DRV_PW_CONF", "s3cret");
    std::env::set_var("DRV_PW_SPARE", "esx-root-password");
    let cfg = VsphereConfig {
        url: sim.url.clone(),
        user: "vmdr".into(),
        password: PasswordSource::Env("DRV_PW_CONF".into()),
        tls: TlsMode::Verify,
        timeout: Duration::from_secs(30),
        limits: Limits::default(),
        spares: vec![SpareHost {
            name: "esx-spare.vmdr.test".into(),
            cluster: "DC0_C0".into(),
            user: "root".into(),
            password: PasswordSource::Env("DRV_PW_SPARE".into()),
            ssl_thumbprint: None,
            cpu_mhz: 40_000,
            memory_mb: 65_536,
        }],
    };
    let v = Vsphere::connect(&cfg).await.expect("login");
    let inv = Hypervisor::inventory(&v).await.expect("inventory");
    let vm = inv
        .vms
        .iter()
        .find(|x| x.power == dr_core::model::PowerState::On)
        .expect("a running VM");
    let other = inv
        .hosts
        .iter()
        .find(|h| h.name != vm.host && h.link == dr_core::model::HostLink::Connected)
        .expect("a second connected host");
    let r = v.moref(true, &vm.name).await.expect("the VM");
    let devices = dr_vsphere::inventory::retrieve_one(v.session(), &r, &["config.hardware.device"])
        .await
        .expect("its devices");
    let disks = devices.props["config.hardware.device"]
        .children
        .iter()
        .filter(|d| d.xsi_type() == Some("VirtualDisk"))
        .count();
    let fx = dr_conformance::hypervisor::Fixture {
        vm: vm.name.clone(),
        other_host: other.name.clone(),
        standby_host: Some("esx-spare.vmdr.test".into()),
        disks,
    };
    dr_conformance::hypervisor::run_all(&v, &fx).await;
    v.close().await;
}
