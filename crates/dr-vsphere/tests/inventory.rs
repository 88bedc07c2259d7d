//! The inventory read against govmomi's vCenter simulator.

mod common;

use common::{available, Vcsim};
use dr_core::model::{HaHostState, HostLink, PowerState};
use dr_vsphere::inventory::InventoryReader;
use dr_vsphere::xml::Limits;
use dr_vsphere::{PasswordSource, Session, TlsMode, VsphereConfig};
use std::time::Duration;

async fn session(sim: &Vcsim, var: &str) -> Session {
    std::env::set_var(var, "s3cret");
    let cfg = VsphereConfig {
        url: sim.url.clone(),
        user: "vmdr".into(),
        password: PasswordSource::Env(var.into()),
        tls: TlsMode::Verify,
        timeout: Duration::from_secs(30),
        limits: Limits::default(),
        spares: Vec::new(),
    };
    Session::connect(&cfg).await.expect("login")
}

/// POSTs to one of the simulator harness's `/vmdr-test/` endpoints.
async fn harness(sim: &Vcsim, query: &str) {
    let url = format!("{}/vmdr-test/{query}", sim.base());
    let resp = reqwest::Client::new()
        .post(&url)
        .send()
        .await
        .expect("test endpoint");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
}

#[tokio::test]
async fn hosts_and_vms_with_their_states() {
    if !available("hosts_and_vms_with_their_states") {
        return;
    }
    let sim = Vcsim::start(&["-clusters", "1", "-hosts", "3", "-vms", "4"]);
    let s = session(&sim, "DRV_PW_INV").await;
    let reader = InventoryReader::default();
    let (inv, trips) = reader.read(&s).await.expect("inventory");
    assert_eq!(trips, 2, "view + one page");
    assert_eq!(inv.hosts.len(), 3, "{:#?}", inv.hosts);
    assert!(!inv.vms.is_empty());
    for h in &inv.hosts {
        assert_eq!(h.link, HostLink::Connected, "{h:?}");
        assert!(h.memory_mb > 0 && h.cpu_mhz > 0, "{h:?}");
        assert!(!h.site.is_empty(), "the cluster is the site: {h:?}");
    }
    for vm in &inv.vms {
        assert!(
            inv.host(&vm.host).is_some(),
            "{} on unknown host {:?}",
            vm.name,
            vm.host
        );
        assert_eq!(vm.power, PowerState::On, "{vm:?}");
        assert!(vm.memory_mb > 0);
    }
    let (_, trips) = reader.read(&s).await.expect("again");
    assert_eq!(trips, 1, "the view is kept");
}

#[tokio::test]
async fn a_large_inventory_with_a_small_page() {
    if !available("a_large_inventory_with_a_small_page") {
        return;
    }
    let sim = Vcsim::start(&["-clusters", "1", "-hosts", "4", "-vms", "60"]);
    let s = session(&sim, "DRV_PW_PAGE").await;
    let all = InventoryReader::default()
        .read(&s)
        .await
        .expect("inventory")
        .0;
    let paged_reader = InventoryReader::with_page(25);
    // govmomi 0.24's simulator ignores maxObjects (no paging): it answers
    // in one page; the paging loop itself is tested against canned pages.
    let (paged, _) = paged_reader.read(&s).await.expect("paged");
    assert_eq!(paged.vms.len(), all.vms.len());
    assert_eq!(paged.hosts.len(), all.hosts.len());
}

#[tokio::test]
async fn a_host_that_stops_responding() {
    if !available("a_host_that_stops_responding") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let s = session(&sim, "DRV_PW_NR").await;
    let reader = InventoryReader::default();
    let inv = reader.read(&s).await.expect("inventory").0;
    let victim = inv.hosts[0].name.clone();
    harness(
        &sim,
        &format!("host-state?name={victim}&state=notResponding"),
    )
    .await;
    let inv = reader.read(&s).await.expect("inventory").0;
    assert_eq!(
        inv.host(&victim).map(|h| h.link),
        Some(HostLink::NotResponding)
    );
}

#[tokio::test]
async fn usage_and_overhead_from_the_quick_stats() {
    if !available("usage_and_overhead_from_the_quick_stats") {
        return;
    }
    let sim = Vcsim::start(&[]);
    let s = session(&sim, "DRV_PW_QS").await;
    let reader = InventoryReader::default();
    let inv = reader.read(&s).await.expect("inventory").0;
    let host = inv.hosts[0].name.clone();
    let vm = inv
        .vms
        .iter()
        .find(|v| v.host == host)
        .expect("a VM on the first host")
        .name
        .clone();
    harness(&sim, &format!("quick-stats?host={host}&cpu=5123&mem=7000")).await;
    harness(&sim, &format!("quick-stats?vm={vm}&overhead=211")).await;
    let inv = reader.read(&s).await.expect("inventory").0;
    let h = inv.host(&host).expect("host");
    assert_eq!(
        (h.vitals.cpu_mhz, h.vitals.memory_mb),
        (5123, 7000),
        "{h:?}"
    );
    let v = inv.vm(&vm).expect("vm");
    assert_eq!(v.memory_overhead_mb, 211, "{v:?}");
    // The other VMs report none.
    assert!(inv
        .vms
        .iter()
        .filter(|o| o.name != vm)
        .all(|o| o.memory_overhead_mb == 0));
}

#[tokio::test]
async fn vsphere_ha_settings_and_host_states() {
    if !available("vsphere_ha_settings_and_host_states") {
        return;
    }
    let sim = Vcsim::start(&["-clusters", "2", "-hosts", "2", "-vms", "1"]);
    let s = session(&sim, "DRV_PW_HA").await;
    let reader = InventoryReader::default();
    let inv = reader.read(&s).await.expect("inventory").0;
    assert!(
        inv.hosts.iter().all(|h| h.signals.ha.is_none()),
        "HA is off in the simulator: {:?}",
        inv.hosts
    );
    let watched = inv.hosts[0].site.clone();
    let host = inv.hosts[0].name.clone();
    // HA that leaves restarts to vmdr and powers isolated hosts' VMs off
    // 10 s after they declare themselves isolated.
    harness(
        &sim,
        &format!("ha?cluster={watched}&restart=disabled&response=powerOff&delay=10"),
    )
    .await;
    harness(&sim, &format!("ha-state?host={host}&state=networkIsolated")).await;
    let inv = reader.read(&s).await.expect("inventory").0;
    for h in &inv.hosts {
        if h.site != watched {
            assert_eq!(h.signals.ha, None, "{h:?}");
            continue;
        }
        let ha = h.signals.ha.expect("HA watches this cluster's hosts");
        assert!(!ha.restarts, "{h:?}");
        assert_eq!(ha.response_after_ms, Some(10_000), "{h:?}");
        let want = if h.name == host {
            HaHostState::Isolated
        } else {
            HaHostState::Unknown
        };
        assert_eq!(ha.state, want, "{h:?}");
    }
    // HA restarting VMs itself, with a shutdown response (300 s by default
    // before it powers them off); the master reaches the host again.
    harness(
        &sim,
        &format!("ha?cluster={watched}&restart=medium&response=shutdown"),
    )
    .await;
    harness(
        &sim,
        &format!("ha-state?host={host}&state=connectedToMaster"),
    )
    .await;
    let inv = reader.read(&s).await.expect("inventory").0;
    let ha = inv.host(&host).and_then(|h| h.signals.ha).expect("ha");
    assert!(ha.restarts);
    assert_eq!(ha.response_after_ms, Some(330_000));
    assert_eq!(ha.state, HaHostState::Alive);
}

/// A loopback SOAP endpoint answering by method name from canned bodies, for
/// what govmomi 0.24's simulator does not do (paging).
async fn canned_vcenter(pages: Vec<&'static str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let pages = std::sync::Arc::new(std::sync::Mutex::new(pages.into_iter()));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let pages = pages.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() < head_end + 4 + len {
                        continue;
                    }
                    let body = &text[head_end + 4..];
                    let inner = if body.contains("<RetrieveServiceContent") {
                        r#"<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">root</rootFolder><propertyCollector type="PropertyCollector">pc</propertyCollector><viewManager type="ViewManager">vm</viewManager><sessionManager type="SessionManager">sm</sessionManager></returnval></RetrieveServiceContentResponse>"#.to_owned()
                    } else if body.contains("<Login") {
                        r#"<LoginResponse xmlns="urn:vim25"><returnval><key>k</key></returnval></LoginResponse>"#.to_owned()
                    } else if body.contains("<CreateContainerView") {
                        r#"<CreateContainerViewResponse xmlns="urn:vim25"><returnval type="ContainerView">view-1</returnval></CreateContainerViewResponse>"#.to_owned()
                    } else {
                        pages.lock().expect("lock").next().unwrap_or("").to_owned()
                    };
                    let xml = format!("<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>");
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nSet-Cookie: vmware_soap_session=\"s1\"; Path=/\r\nContent-Length: {}\r\n\r\n{xml}", xml.len());
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    buf.clear();
                }
            });
        }
    });
    format!("http://{addr}/sdk")
}

#[tokio::test]
async fn paging_follows_the_token_to_the_end() {
    let vm = |id: &str, host: &str| {
        format!(
            r#"<objects><obj type="VirtualMachine">{id}</obj><propSet><name>name</name><val>{id}</val></propSet><propSet><name>runtime.host</name><val type="HostSystem">{host}</val></propSet><propSet><name>runtime.powerState</name><val>poweredOn</val></propSet></objects>"#
        )
    };
    let host = r#"<objects><obj type="HostSystem">host-1</obj><propSet><name>name</name><val>10.0.0.1</val></propSet><propSet><name>runtime.connectionState</name><val>connected</val></propSet></objects>"#;
    let page1: &'static str = Box::leak(format!(r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><token>t1</token>{host}{}</returnval></RetrievePropertiesExResponse>"#, vm("vm-1", "host-1")).into_boxed_str());
    let page2: &'static str = Box::leak(format!(r#"<ContinueRetrievePropertiesExResponse xmlns="urn:vim25"><returnval><token>t2</token>{}</returnval></ContinueRetrievePropertiesExResponse>"#, vm("vm-2", "host-1")).into_boxed_str());
    let page3: &'static str = Box::leak(format!(r#"<ContinueRetrievePropertiesExResponse xmlns="urn:vim25"><returnval>{}</returnval></ContinueRetrievePropertiesExResponse>"#, vm("vm-3", "host-1")).into_boxed_str());
    let url = canned_vcenter(vec![page1, page2, page3]).await;
    std::env::set_var("DRV_PW_CANNED", "x");
    let cfg = VsphereConfig {
        url,
        user: "vmdr".into(),
        password: PasswordSource::Env("DRV_PW_CANNED".into()),
        tls: TlsMode::Verify,
        timeout: Duration::from_secs(5),
        limits: Limits::default(),
        spares: Vec::new(),
    };
    let s = Session::connect(&cfg).await.expect("login");
    let (inv, trips) = InventoryReader::with_page(1)
        .read(&s)
        .await
        .expect("inventory");
    assert_eq!(trips, 4, "view + 3 pages");
    let names: Vec<&str> = inv.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["vm-1", "vm-2", "vm-3"]);
    assert!(inv.vms.iter().all(|v| v.host == "10.0.0.1"));
    assert_eq!(
        inv.hosts[0].ip,
        Some("10.0.0.1".parse().expect("ip")),
        "a host named by its address"
    );
}
