//! Where QEMU serves a backup's NBD export, and how vmdr reaches it: the
//! same way vmdr reaches the host's libvirt daemon, so the disks' bytes
//! never cross a network the libvirt connection itself does not trust.
//!
//! - A local host (`qemu:///system`, `qemu+unix://`): a Unix socket beside
//!   the scratch files; nothing listens on any network.
//! - An `ssh` host: QEMU listens on the host's loopback only, and vmdr
//!   reaches it through ssh's own forwarding (`ssh -W 127.0.0.1:PORT`),
//!   under the same keys as the libvirt connection: encrypted and
//!   authenticated, nothing to install on the host.
//! - A `qemu+tcp` host (a network trusted as such): the host's management
//!   address, plain TCP, as libvirt's own connection is.

use crate::config::HostConfig;
use crate::pull::NbdServer;
use crate::uri::{ssh_command, Transport};
use dr_nbd::{Client, NbdError};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

/// The longest path a Unix socket's address holds (`sun_path`, less its
/// terminating zero).
const SUN_PATH_MAX: usize = 107;

/// Where one point's export is served and reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Plain TCP to the host's management address.
    Tcp(SocketAddr),
    /// A Unix socket on this machine (the host is local).
    Unix(PathBuf),
    /// The host's loopback, through `ssh -W`.
    Ssh {
        /// The host, as the libvirt URI names it.
        host: String,
        /// ssh's port, when not its default.
        ssh_port: Option<u16>,
        /// Remote user, when given.
        user: Option<String>,
        /// Private key file.
        keyfile: Option<PathBuf>,
        /// Its host keys' file, when not ssh's own.
        known_hosts: Option<PathBuf>,
        /// The export's port on the host's loopback.
        port: u16,
    },
}

impl Route {
    /// The route for `vm`'s exports on `host`: the NBD port `port` (TCP and
    /// ssh), the socket in `scratch_dir` (a local host).
    pub fn for_host(
        host: &HostConfig,
        vm: &str,
        port: u16,
        scratch_dir: &str,
    ) -> Result<Route, String> {
        match &host.uri.transport {
            Transport::Unix(_) => {
                let path = Path::new(scratch_dir).join(format!("vmdr-nbd-{vm}.sock"));
                if path.as_os_str().len() > SUN_PATH_MAX {
                    return Err(format!(
                        "the NBD socket {} is longer than a Unix socket's path may be \
                         ({SUN_PATH_MAX} bytes): set a shorter scratch_dir",
                        path.display()
                    ));
                }
                Ok(Route::Unix(path))
            }
            Transport::Ssh {
                host: h,
                port: ssh_port,
                user,
                keyfile,
                known_hosts,
            } => Ok(Route::Ssh {
                host: h.clone(),
                ssh_port: *ssh_port,
                user: user.clone(),
                keyfile: keyfile.clone(),
                known_hosts: known_hosts.clone(),
                port,
            }),
            Transport::Tcp { .. } => match host.ip {
                Some(ip) => Ok(Route::Tcp(SocketAddr::new(ip, port))),
                None => Err(format!(
                    "host {} has no `ip` in [[libvirt.host]]: QEMU serves the backup's NBD \
                     export there",
                    host.name
                )),
            },
        }
    }

    /// What the backup's XML asks QEMU to serve on.
    pub fn server(&self) -> NbdServer {
        match self {
            Route::Tcp(addr) => NbdServer::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
            },
            Route::Unix(path) => NbdServer::Unix(path.display().to_string()),
            Route::Ssh { port, .. } => NbdServer::Tcp {
                host: IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
                port: *port,
            },
        }
    }

    /// Opens `export` with `contexts`; every read and write waits at most
    /// `timeout` (through ssh: ssh's own keep-alives and the job's end).
    pub fn connect(
        &self,
        export: &str,
        contexts: &[&str],
        timeout: Duration,
    ) -> Result<Client<NbdStream>, NbdError> {
        let stream = match self {
            Route::Tcp(addr) => NbdStream::Tcp(dr_nbd::client::tcp_stream(*addr, timeout)?),
            Route::Unix(path) => NbdStream::Unix(dr_nbd::client::unix_stream(path, timeout)?),
            Route::Ssh {
                host,
                ssh_port,
                user,
                keyfile,
                known_hosts,
                port,
            } => {
                let mut cmd = ssh_command(
                    *ssh_port,
                    user.as_deref(),
                    keyfile.as_deref(),
                    known_hosts.as_deref(),
                );
                let timeout_s = timeout.as_secs().max(1).to_string();
                cmd.args(["-o", &format!("ConnectTimeout={timeout_s}")])
                    .args(["-o", &format!("ServerAliveInterval={timeout_s}")])
                    .args(["-o", "ServerAliveCountMax=1"])
                    .arg("-W")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--")
                    .arg(host)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null());
                let mut child = cmd.spawn().map_err(io("run ssh"))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(NbdError::Io {
                        op: "run ssh",
                        cause: std::io::Error::other("ssh gave no pipes"),
                    });
                };
                NbdStream::Ssh(SshPipe {
                    child,
                    stdin,
                    stdout,
                })
            }
        };
        Client::handshake(stream, export, contexts)
    }

    /// Removes what the route left on this machine (a local host's socket
    /// file, which QEMU does not remove when the job ends).
    pub fn clean_up(&self) {
        if let Route::Unix(path) = self {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(socket = %path.display(), error = %e, "cannot remove the NBD socket");
                }
            }
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Tcp(addr) => write!(f, "{addr}"),
            Route::Unix(path) => write!(f, "{}", path.display()),
            Route::Ssh { host, port, .. } => write!(f, "127.0.0.1:{port} on {host} (through ssh)"),
        }
    }
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> NbdError {
    move |cause| NbdError::Io { op, cause }
}

/// The byte stream to an export.
pub enum NbdStream {
    /// TCP.
    Tcp(TcpStream),
    /// A local Unix socket.
    Unix(UnixStream),
    /// ssh's forwarding: its stdin and stdout.
    Ssh(SshPipe),
}

/// `ssh -W`: the child is killed and reaped when the stream goes.
pub struct SshPipe {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Drop for SshPipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Read for NbdStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            NbdStream::Tcp(s) => s.read(buf),
            NbdStream::Unix(s) => s.read(buf),
            NbdStream::Ssh(p) => p.stdout.read(buf),
        }
    }
}

impl Write for NbdStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            NbdStream::Tcp(s) => s.write(buf),
            NbdStream::Unix(s) => s.write(buf),
            NbdStream::Ssh(p) => p.stdin.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            NbdStream::Tcp(s) => s.flush(),
            NbdStream::Unix(s) => s.flush(),
            NbdStream::Ssh(p) => p.stdin.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::Uri;

    fn host(uri: &str, ip: Option<IpAddr>) -> HostConfig {
        HostConfig {
            name: "kvm-a1".into(),
            uri: Uri::parse(uri).expect("uri"),
            ip,
            site: "primary".into(),
            shared: Vec::new(),
            standby: false,
        }
    }

    #[test]
    fn each_transport_gets_its_route() {
        let ip: IpAddr = "198.19.0.11".parse().expect("ip");
        let tcp = Route::for_host(&host("qemu+tcp://h/system", Some(ip)), "db", 10809, "/s")
            .expect("tcp");
        assert_eq!(tcp, Route::Tcp(SocketAddr::new(ip, 10809)));
        assert_eq!(
            tcp.server(),
            NbdServer::Tcp {
                host: "198.19.0.11".into(),
                port: 10809
            }
        );
        let local = Route::for_host(&host("qemu:///system", None), "db", 10809, "/var/lib/x")
            .expect("unix");
        assert_eq!(
            local.server(),
            NbdServer::Unix("/var/lib/x/vmdr-nbd-db.sock".into())
        );
        let ssh = Route::for_host(
            &host("qemu+ssh://root@kvm-a1:2222/system?keyfile=/k", Some(ip)),
            "db",
            10810,
            "/s",
        )
        .expect("ssh");
        // Served on the host's loopback only: nothing on the network.
        assert_eq!(
            ssh.server(),
            NbdServer::Tcp {
                host: "127.0.0.1".into(),
                port: 10810
            }
        );
        assert_eq!(ssh.to_string(), "127.0.0.1:10810 on kvm-a1 (through ssh)");
    }

    #[test]
    fn a_route_that_cannot_be_is_said_so() {
        let e = Route::for_host(&host("qemu+tcp://h/system", None), "db", 10809, "/s")
            .expect_err("no ip");
        assert!(e.contains("has no `ip`"), "{e}");
        let long = format!("/{}", "d".repeat(120));
        let e = Route::for_host(&host("qemu:///system", None), "db", 10809, &long)
            .expect_err("too long");
        assert!(e.contains("set a shorter scratch_dir"), "{e}");
    }
}
