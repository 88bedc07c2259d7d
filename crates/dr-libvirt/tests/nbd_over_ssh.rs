//! A backup's export on an `ssh` host, reached as the route says: QEMU's
//! NBD server (`qemu-nbd`, the same server code) listening on the lab
//! host's loopback only, an OpenSSH daemon in the host's network
//! namespace, and the client through `ssh -W` with the URI's key and known
//! hosts. Nothing answers on the host's network address; a host key that
//! is not the known one is refused.
//!
//! Needs root, the lab's packages and `openssh-server`: in CI (`CI=true`)
//! a missing one fails the test; elsewhere it is skipped with the reason.

mod common;

use dr_libvirt::nbd_route::Route;
use dr_libvirt::uri::Uri;
use dr_libvirt::HostConfig;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSH_PORT: u16 = 2222;
const NBD_PORT: u16 = 10809;

/// Children killed on drop.
struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path));
}

fn host(uri: &str, lab: &common::Lab) -> HostConfig {
    HostConfig {
        name: "kvm-a1".into(),
        uri: Uri::parse(uri).expect("uri"),
        ip: Some(lab.host_ip("kvm-a1")),
        site: "primary".into(),
        shared: Vec::new(),
        standby: false,
    }
}

#[test]
fn an_ssh_hosts_export_is_reached_through_ssh_and_nowhere_else() {
    let test = "an_ssh_hosts_export_is_reached_through_ssh_and_nowhere_else";
    if !common::can_run(test) {
        return;
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: cannot run in CI: /usr/sbin/sshd is missing (Debian package openssh-server)");
        }
        eprintln!("SKIPPED {test}: /usr/sbin/sshd is missing (Debian package openssh-server)");
        return;
    }
    let lab = common::Lab::up(&["kvm-a1"]);
    let ip = lab.host_ip("kvm-a1");
    let dir = lab.dir.join("ssh");
    std::fs::create_dir_all(&dir).expect("dir");
    let (host_key, client_key, other_key) =
        (dir.join("host_key"), dir.join("id"), dir.join("other"));
    for k in [&host_key, &client_key, &other_key] {
        keygen(k);
    }
    std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).expect("authorized keys");
    let known = |key: &Path, file: &str| {
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        let path = dir.join(file);
        std::fs::write(&path, format!("[{ip}]:{SSH_PORT} {public}")).expect("known hosts");
        path
    };
    let (known_hosts, wrong_hosts) = (known(&host_key, "known_hosts"), known(&other_key, "wrong"));
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {SSH_PORT}\nListenAddress {ip}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAllowTcpForwarding yes\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display(),
        ),
    )
    .expect("sshd config");
    // sshd's privilege separation directory.
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    let image = dir.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("16M"));
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -q -P 0x5a 4M 1M"])
        .arg(&image));
    let sshd = lab
        .in_host("kvm-a1", Path::new("/usr/sbin/sshd"))
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(std::fs::File::create(dir.join("sshd.log")).expect("log"))
        .spawn()
        .expect("sshd");
    // On the host's loopback only, as the backup's XML asks QEMU for an
    // ssh host.
    let nbd = lab
        .in_host("kvm-a1", Path::new("/usr/bin/qemu-nbd"))
        .args(["--persistent", "--read-only", "-f", "qcow2", "-x", "vda"])
        .args(["-b", "127.0.0.1", "-p", &NBD_PORT.to_string()])
        .arg(&image)
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-nbd");
    let _children = Killed(vec![sshd, nbd]);

    let uri = |known: &Path| {
        format!(
            "qemu+ssh://root@{ip}:{SSH_PORT}/system?keyfile={}&known_hosts={}",
            client_key.display(),
            known.display()
        )
    };
    let route =
        Route::for_host(&host(&uri(&known_hosts), &lab), "db", NBD_PORT, "/unused").expect("route");
    assert!(matches!(route, Route::Ssh { .. }), "{route:?}");
    let timeout = Duration::from_secs(10);
    let t0 = Instant::now();
    let mut client = loop {
        match route.connect("vda", &["base:allocation"], timeout) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "no export through ssh: {e}; sshd said: {}",
                    std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert_eq!(client.export().size, 16 << 20);
    let mut buf = vec![0u8; 1 << 20];
    client.read(4 << 20, &mut buf).expect("read the pattern");
    assert!(buf.iter().all(|&b| b == 0x5a), "the written MiB");
    client.read(0, &mut buf).expect("read the start");
    assert!(buf.iter().all(|&b| b == 0), "an unwritten MiB");
    let extents = client
        .extents("base:allocation", 0, 16 << 20)
        .expect("block status");
    assert!(!extents.is_empty());
    client.disconnect().expect("disconnect");

    // Nothing on the host's network: the export is not at its address.
    let direct = TcpStream::connect_timeout(&SocketAddr::new(ip, NBD_PORT), timeout);
    assert!(
        direct.is_err(),
        "the export answers on {ip}:{NBD_PORT} without ssh"
    );
    // A host that is not the one known is refused by ssh.
    let impostor =
        Route::for_host(&host(&uri(&wrong_hosts), &lab), "db", NBD_PORT, "/unused").expect("route");
    let refused = impostor.connect("vda", &["base:allocation"], timeout);
    assert!(refused.is_err(), "an unknown host key was accepted");
}
