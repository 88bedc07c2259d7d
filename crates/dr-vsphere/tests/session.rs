//! Sessions against govmomi's vCenter simulator: login, wrong password,
//! expiry and transparent re-login, logout, TLS modes; and what a bad
//! server (a proxy's HTML, truncated XML) gets.

mod common;

use common::{available, Vcsim};
use dr_vsphere::xml::Limits;
use dr_vsphere::{PasswordSource, Session, TlsMode, VsphereConfig, VsphereError};
use std::time::Duration;

fn config(url: &str, pw_var: &str, tls: TlsMode) -> VsphereConfig {
    VsphereConfig {
        url: url.to_owned(),
        user: "vmdr".into(),
        password: PasswordSource::Env(pw_var.into()),
        tls,
        timeout: Duration::from_secs(10),
        limits: Limits::default(),
        spares: Vec::new(),
    }
}

fn set_password(var: &str, value: &str) {
    // Test-only: each test uses its own variable name, so parallel tests
    // do not race on one.
    std::env::set_var(var, value);
}

#[tokio::test]
async fn login_logout_and_a_wrong_password() {
    if !available("login_logout_and_a_wrong_password") {
        return;
    }
    let sim = Vcsim::start(&[]);
    set_password("DRV_PW_LOGIN", "s3cret");
    let s = Session::connect(&config(&sim.url, "DRV_PW_LOGIN", TlsMode::Verify))
        .await
        .expect("login");
    assert!(
        s.content().full_name.contains("vCenter"),
        "{:?}",
        s.content()
    );
    assert_eq!(s.content().root_folder.kind, "Folder");
    assert!(!format!("{s:?}").contains("s3cret"));
    s.logout().await;
    // After logout, calls are refused until a new login (done transparently).
    let r = s
        .invoke(
            "CurrentTime",
            r#"<_this type="ServiceInstance">ServiceInstance</_this>"#,
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(s.relogins().await, 1);

    set_password("DRV_PW_WRONG", "not-it");
    let e = Session::connect(&config(&sim.url, "DRV_PW_WRONG", TlsMode::Verify))
        .await
        .expect_err("wrong password");
    assert_eq!(e.fault(), Some("InvalidLogin"), "{e}");
    let port_error: dr_core::ports::HypervisorError = e.into();
    assert!(
        matches!(port_error, dr_core::ports::HypervisorError::Auth(_)),
        "{port_error:?}"
    );
}

#[tokio::test]
async fn an_expired_session_is_renewed_transparently() {
    if !available("an_expired_session_is_renewed_transparently") {
        return;
    }
    let sim = Vcsim::start(&["-session-idle", "1s"]);
    set_password("DRV_PW_EXPIRE", "s3cret");
    let s = Session::connect(&config(&sim.url, "DRV_PW_EXPIRE", TlsMode::Verify))
        .await
        .expect("login");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let r = s
        .invoke(
            "CurrentTime",
            r#"<_this type="ServiceInstance">ServiceInstance</_this>"#,
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        s.relogins().await,
        1,
        "the session expired and was renewed once"
    );
}

#[tokio::test]
async fn tls_pinning_ca_and_insecure() {
    if !available("tls_pinning_ca_and_insecure") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("drv-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("vcsim.pem");
    let sim = Vcsim::start(&["-tls", "-cert-out", ca.to_str().expect("utf-8")]);
    set_password("DRV_PW_TLS", "s3cret");
    let thumb = sim.sha256.clone().expect("thumbprint");
    let e = Session::connect(&config(&sim.url, "DRV_PW_TLS", TlsMode::Verify))
        .await
        .expect_err("self-signed is not trusted by default");
    assert!(matches!(e, VsphereError::Tls { .. }), "{e}");
    Session::connect(&config(
        &sim.url,
        "DRV_PW_TLS",
        TlsMode::Pinned(thumb.clone()),
    ))
    .await
    .expect("pinned thumbprint");
    let wrong = thumb.replace(&thumb[..2], if &thumb[..2] == "00" { "11" } else { "00" });
    let e = Session::connect(&config(&sim.url, "DRV_PW_TLS", TlsMode::Pinned(wrong)))
        .await
        .expect_err("wrong pin");
    assert!(matches!(e, VsphereError::Tls { .. }), "{e}");
    Session::connect(&config(&sim.url, "DRV_PW_TLS", TlsMode::CaFile(ca.clone())))
        .await
        .expect("CA file");
    std::fs::write(&ca, "not a certificate").expect("write");
    let e = Session::connect(&config(&sim.url, "DRV_PW_TLS", TlsMode::CaFile(ca.clone())))
        .await
        .expect_err("bad CA file");
    assert!(matches!(e, VsphereError::Config(_)), "{e}");
    Session::connect(&config(&sim.url, "DRV_PW_TLS", TlsMode::Insecure))
        .await
        .expect("insecure");
    let _ = std::fs::remove_dir_all(&dir);
    let e = Session::connect(&config(
        &sim.url,
        "DRV_PW_TLS",
        TlsMode::Pinned("12:34".into()),
    ))
    .await
    .expect_err("bad pin");
    assert!(matches!(e, VsphereError::Config(_)), "{e}");
}

/// Connects with `tls` to a simulator serving a certificate of `kind`: the
/// error's text.
async fn refused(kind: &str, tls: impl FnOnce(&Vcsim, &std::path::Path) -> TlsMode) -> String {
    let dir = std::env::temp_dir().join(format!("drv-cert-{kind}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    let sim = Vcsim::start(&[
        "-tls",
        "-cert-kind",
        kind,
        "-cert-out",
        ca.to_str().expect("utf-8"),
    ]);
    set_password("DRV_PW_CERTS", "s3cret");
    let mode = tls(&sim, &ca);
    let e = Session::connect(&config(&sim.url, "DRV_PW_CERTS", mode))
        .await
        .expect_err("refused");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(e, VsphereError::Tls { .. }), "{kind}: {e:?}");
    let text = e.to_string();
    // Never rustls' variant names alone.
    assert!(
        !text.contains("BadSignature") && !text.contains("UnknownIssuer"),
        "{text}"
    );
    text
}

#[tokio::test]
async fn certificate_failures_say_what_is_wrong_and_what_to_do() {
    if !available("certificate_failures_say_what_is_wrong_and_what_to_do") {
        return;
    }
    // A 1024-bit key (as the simulator's built-in certificate), pinned
    // right or trusted through its CA: before, "invalid peer certificate:
    // BadSignature".
    let pinned =
        |s: &Vcsim, _: &std::path::Path| TlsMode::Pinned(s.sha256.clone().expect("sha256"));
    let ca_file = |_: &Vcsim, ca: &std::path::Path| TlsMode::CaFile(ca.to_owned());
    for text in [
        refused("weak", pinned).await,
        refused("weak", ca_file).await,
    ] {
        assert!(
            text.contains("too weak") && text.contains("2048-bit"),
            "{text}"
        );
    }
    let text = refused("expired", ca_file).await;
    assert!(
        text.contains("has expired") && text.contains("renew"),
        "{text}"
    );
    let text = refused("wrong-name", ca_file).await;
    assert!(
        text.contains("not for the address connected to (127.0.0.1)"),
        "{text}"
    );
    let text = refused("good", |_, _| TlsMode::Verify).await;
    assert!(
        text.contains("CA this machine does not trust")
            && text.contains("vsphere.ca_file")
            && text.contains("vsphere.thumbprint"),
        "{text}"
    );
    let mut presented = String::new();
    let text = refused("good", |s, _| {
        presented = s.sha256.clone().expect("sha256");
        let wrong = presented.replace(
            &presented[..2],
            if &presented[..2] == "00" { "11" } else { "00" },
        );
        TlsMode::Pinned(wrong)
    })
    .await;
    assert!(
        text.contains("not the pinned one") && text.contains(&presented),
        "{text}"
    );
}

/// A one-shot HTTP server on loopback answering every request with `reply`.
async fn canned(reply: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    format!("http://{addr}/sdk")
}

#[tokio::test]
async fn bad_servers_get_typed_errors() {
    set_password("DRV_PW_BAD", "x");
    let html = canned("HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 33\r\nConnection: close\r\n\r\n<html><body>proxy</body></html>\r\n").await;
    let e = Session::connect(&config(&html, "DRV_PW_BAD", TlsMode::Verify))
        .await
        .expect_err("html");
    assert!(matches!(e, VsphereError::NotSoap { .. }), "{e}");
    assert!(e.to_string().contains("text/html"), "{e}");
    let cut = canned("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 60\r\nConnection: close\r\n\r\n<soapenv:Envelope><soapenv:Body><RetrieveServiceContentRes").await;
    let e = Session::connect(&config(&cut, "DRV_PW_BAD", TlsMode::Verify))
        .await
        .expect_err("truncated");
    assert!(
        matches!(e, VsphereError::Xml { .. } | VsphereError::Http { .. }),
        "{e}"
    );
    let dtd = canned("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 64\r\nConnection: close\r\n\r\n<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>").await;
    let e = Session::connect(&config(&dtd, "DRV_PW_BAD", TlsMode::Verify))
        .await
        .expect_err("dtd");
    assert!(e.to_string().contains("DTD"), "{e}");
    let empty = canned("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    let e = Session::connect(&config(&empty, "DRV_PW_BAD", TlsMode::Verify))
        .await
        .expect_err("empty");
    assert!(matches!(e, VsphereError::Xml { .. }), "{e}");
    let e = Session::connect(&config("ftp://x/sdk", "DRV_PW_BAD", TlsMode::Verify))
        .await
        .expect_err("scheme");
    assert!(matches!(e, VsphereError::Config(_)), "{e}");
    let e = Session::connect(&config("https://u:p@x/sdk", "DRV_PW_BAD", TlsMode::Verify))
        .await
        .expect_err("creds in URL");
    assert!(matches!(e, VsphereError::Config(_)), "{e}");
}

/// Where datastore `ds` of the simulator keeps its files on this machine.
async fn datastore_dir(sim: &Vcsim, ds: &str) -> std::path::PathBuf {
    let body = reqwest::get(format!("{}/vmdr-test/datastores", sim.base()))
        .await
        .expect("test endpoint")
        .text()
        .await
        .expect("body");
    let dirs: std::collections::HashMap<String, String> =
        serde_json::from_str(&body).expect("json");
    std::path::PathBuf::from(dirs.get(ds).expect("the datastore"))
}

/// The sessions of the next `n` uploads expire as they arrive.
async fn expire_upload_sessions(sim: &Vcsim, n: u32) {
    let url = format!("{}/vmdr-test/expire-upload-sessions?n={n}", sim.base());
    assert!(reqwest::Client::new()
        .post(&url)
        .send()
        .await
        .expect("test endpoint")
        .status()
        .is_success());
}

#[tokio::test]
async fn an_upload_whose_session_expired_logs_in_again_once() {
    if !available("an_upload_whose_session_expired_logs_in_again_once") {
        return;
    }
    use dr_vsphere::session::Upload;
    let sim = Vcsim::start(&[]);
    set_password("DRV_PW_UPLOAD_401", "s3cret");
    let s = Session::connect(&config(&sim.url, "DRV_PW_UPLOAD_401", TlsMode::Verify))
        .await
        .expect("login");
    let local = datastore_dir(&sim, "LocalDS_0").await;
    let image = std::env::temp_dir().join(format!("drv-upload-401-{}.img", std::process::id()));
    let data: Vec<u8> = (0..(3u32 << 20))
        .map(|x| (x.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&image, &data).expect("image");

    // The session expires under the upload: refused with 401, the client
    // logs in again and sends the whole file again, with the new cookie.
    expire_upload_sessions(&sim, 1).await;
    s.upload(
        "DC0",
        "LocalDS_0",
        "up-401/disk-flat.vmdk",
        Upload::File(&image),
    )
    .await
    .expect("uploaded after logging in again");
    assert_eq!(s.relogins().await, 1);
    assert!(
        std::fs::read(local.join("up-401/disk-flat.vmdk")).expect("uploaded") == data,
        "the file on the datastore is not the image"
    );
    // SOAP calls go on with the new session.
    s.invoke(
        "CurrentTime",
        r#"<_this type="ServiceInstance">ServiceInstance</_this>"#,
    )
    .await
    .expect("a call after");

    // Refused again after the new login: an error that says so, one login.
    expire_upload_sessions(&sim, 2).await;
    let e = s
        .upload(
            "DC0",
            "LocalDS_0",
            "up-401/disk.vmdk",
            Upload::Bytes(b"descriptor"),
        )
        .await
        .expect_err("refused twice");
    assert!(matches!(e, VsphereError::Upload { .. }), "{e:?}");
    assert!(e.to_string().contains("401"), "{e}");
    assert_eq!(s.relogins().await, 2);
    let _ = std::fs::remove_file(&image);
}
