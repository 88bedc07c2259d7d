//! A real etcd cluster on loopback for tests: Debian's `etcd-server`, each
//! member its own process, data directory and pair of ports. Members can
//! be killed and started again; everything is killed when it drops.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `etcd-server` puts it.
pub const ETCD: &str = "/usr/bin/etcd";

/// Whether the tests may run; `false` (with the reason printed) only off
/// CI: in CI a missing etcd fails the test.
pub fn etcd_present(test: &str) -> bool {
    if std::path::Path::new(ETCD).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {ETCD} is missing (Debian's etcd-server; scripts/test.sh installs it)");
    }
    eprintln!("skipping {test}: {ETCD} is missing (apt-get install etcd-server)");
    false
}

/// A port free on loopback now, and never handed out before in this
/// process: tests run at once, each starting its own etcd, and two of them
/// given one port would talk to each other's cluster.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// The cluster.
pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
    tls: Option<Tls>,
}

/// Certificates for a cluster that serves clients over TLS and requires
/// their certificates: a CA, the members' certificate (for 127.0.0.1) and
/// a client's, made with the `openssl` command.
#[derive(Clone, Debug)]
pub struct Tls {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

impl Tls {
    /// Makes them in `dir`.
    pub fn make(dir: &Path) -> Tls {
        std::fs::create_dir_all(dir).expect("cert dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (Debian's openssl)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=vmdr test CA",
                ],
            ]
            .concat(),
        );
        // The members' certificate is a client one too: etcd's JSON gateway
        // dials the member's own gRPC port with it, and with client
        // certificates required that dial needs one.
        for (name, usage) in [
            ("server", "serverAuth,clientAuth"),
            ("client", "clientAuth"),
        ] {
            let ext = format!("{name}.ext");
            std::fs::write(
                dir.join(&ext),
                format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
            )
            .expect("ext");
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &[
                        "-keyout",
                        &key,
                        "-out",
                        &csr,
                        "-subj",
                        &format!("/CN={name}"),
                    ],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Tls {
            ca: dir.join("ca.pem"),
            server: (dir.join("server.pem"), dir.join("server.key")),
            client: (dir.join("client.pem"), dir.join("client.key")),
        }
    }
}

impl EtcdCluster {
    /// `n` members, started and healthy.
    pub fn start(n: usize, tag: &str) -> EtcdCluster {
        Self::start_with(n, tag, false)
    }

    /// `n` members serving clients over TLS only, with client
    /// certificates required ([`EtcdCluster::tls`] has them).
    pub fn start_tls(n: usize, tag: &str) -> EtcdCluster {
        Self::start_with(n, tag, true)
    }

    /// The certificates of a TLS cluster.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    fn start_with(n: usize, tag: &str, tls: bool) -> EtcdCluster {
        let dir = std::env::temp_dir().join(format!("dr-etcd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd dir");
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let tls = tls.then(|| Tls::make(&dir.join("certs")));
        let mut c = EtcdCluster {
            dir,
            token: format!("{tag}-{}", std::process::id()),
            members,
            tls,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .expect("etcd log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new(ETCD);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server.0)
                .arg("--key-file")
                .arg(&t.server.1)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // No metrics or debug listeners beyond the two ports.
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .env_remove("ETCD_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.members[i].child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members
            .iter()
            .map(|m| format!("{scheme}://127.0.0.1:{}", m.client))
            .collect()
    }

    /// Member `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Waits until every running member answers `/health` as healthy.
    pub fn wait_healthy(&mut self, within: Duration) {
        let until = Instant::now() + within;
        for m in self.members.iter_mut().filter(|m| m.child.is_some()) {
            loop {
                // A member that exited (its port taken by another process)
                // must not pass for healthy through whoever holds the port.
                let exited = m
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                // Over TLS, an accepting port is enough here: the tests'
                // clients wait for a leader anyway.
                let up = if self.tls.is_some() {
                    std::net::TcpStream::connect(("127.0.0.1", m.client)).is_ok()
                } else {
                    health(m.client)
                };
                if !exited && up {
                    break;
                }
                if exited || Instant::now() > until {
                    let log = std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                        .unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    panic!(
                        "etcd member {} {} :\n{tail}",
                        m.name,
                        if exited {
                            "exited".to_string()
                        } else {
                            format!("not healthy in {within:?}")
                        }
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Runs `etcdctl` against the cluster.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints().join(","))
            .args(args)
            .output()
            .expect("etcdctl")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /health` by hand (no client crate needed for it).
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

/// A TCP relay on loopback to one address, which the test can cut (every
/// connection dropped, new ones refused) and mend: a node cut off from
/// etcd while everything else still works.
pub struct Relay {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    /// Relays 127.0.0.1:`port` → 127.0.0.1:`to`.
    pub async fn start(to: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay");
        let port = listener.local_addr().expect("addr").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let c = c.clone();
                tokio::spawn(async move {
                    let hold = |c: std::sync::Arc<std::sync::atomic::AtomicBool>| async move {
                        while c.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    if c.load(Ordering::SeqCst) {
                        // A black hole: the connection stays open, nothing
                        // passes, until the cut is mended.
                        hold(c.clone()).await;
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while !c.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = watch => {
                            drop(outbound);
                            hold(c.clone()).await;
                        }
                    }
                    drop(inbound);
                });
            }
        });
        Relay { port, cut }
    }

    /// Lets nothing through any more: connections stay open and silent
    /// (packets lost, not refused) until mended.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Relays again.
    pub fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
