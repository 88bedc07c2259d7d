//! Connection URIs, as libvirt's clients write them, and the byte streams
//! they lead to: `qemu:///system` and `qemu+unix:///system?socket=PATH`
//! (a local socket), `qemu+tcp://HOST[:PORT]/system` (plain TCP, for a
//! network that is itself trusted), `qemu+ssh://[USER@]HOST[:PORT]/system`
//! (`ssh` runs `virt-ssh-helper` on the host, as libvirt's own client
//! does; `?keyfile=` and `?known_hosts=` as libvirt's). `qemu+tls` is refused with a clear error: this build does not
//! speak it.

use crate::error::LibvirtError;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// libvirt's TCP port.
pub const TCP_PORT: u16 = 16509;

/// Where a URI leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A unix socket (the first of these that exists).
    Unix(Vec<PathBuf>),
    /// Plain TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// `ssh` to the host, running `virt-ssh-helper` there.
    Ssh {
        /// Host name or address.
        host: String,
        /// Port, when not ssh's default.
        port: Option<u16>,
        /// Remote user, when given.
        user: Option<String>,
        /// Private key file (`?keyfile=`).
        keyfile: Option<PathBuf>,
        /// The host keys to verify it against (`?known_hosts=`; else ssh's
        /// own files).
        known_hosts: Option<PathBuf>,
    },
}

/// A parsed connection URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// The URI as written.
    pub text: String,
    /// How to reach the daemon.
    pub transport: Transport,
    /// The name the daemon is asked to open (`qemu:///system`).
    pub name: String,
}

impl Uri {
    /// Parses a URI; the error names what is wrong with it.
    pub fn parse(text: &str) -> Result<Uri, LibvirtError> {
        let bad = |why: &str| LibvirtError::Config(format!("libvirt URI {text:?}: {why}"));
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected DRIVER[+TRANSPORT]://[HOST]/PATH"))?;
        let (driver, transport) = match scheme.split_once('+') {
            Some((d, t)) => (d, t),
            None => (scheme, ""),
        };
        if driver != "qemu" {
            return Err(bad(&format!(
                "driver {driver:?}: this backend drives QEMU/KVM (qemu://...)"
            )));
        }
        let (authority, path_query) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(bad("no path: expected /system or /session")),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        if path != "/system" && path != "/session" {
            return Err(bad(&format!("path {path:?}: expected /system or /session")));
        }
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((k.to_owned(), percent_decode(v).map_err(|e| bad(&e))?));
        }
        let take = |params: &mut Vec<(String, String)>, key: &str| {
            params
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| params.remove(i).1)
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).map_err(|e| bad(&e))?;
        let transport = match transport {
            "" | "unix" => {
                if !host.is_empty() && transport.is_empty() {
                    // libvirt's own default for a remote host is TLS.
                    return Err(bad(
                        "a host without a transport means TLS, which this build does not speak: use qemu+ssh:// or qemu+tcp://",
                    ));
                }
                if !host.is_empty() {
                    return Err(bad("a unix socket URI names no host"));
                }
                let sockets = match take(&mut params, "socket") {
                    Some(s) => vec![PathBuf::from(s)],
                    None if path == "/system" => vec![
                        PathBuf::from("/run/libvirt/virtqemud-sock"),
                        PathBuf::from("/run/libvirt/libvirt-sock"),
                    ],
                    None => return Err(bad("a /session URI needs ?socket=PATH here")),
                };
                Transport::Unix(sockets)
            }
            "tcp" => {
                if host.is_empty() {
                    return Err(bad("qemu+tcp needs a host"));
                }
                Transport::Tcp {
                    host,
                    port: port.unwrap_or(TCP_PORT),
                }
            }
            "ssh" => {
                if host.is_empty() {
                    return Err(bad("qemu+ssh needs a host"));
                }
                Transport::Ssh {
                    host,
                    port,
                    user,
                    keyfile: take(&mut params, "keyfile").map(PathBuf::from),
                    known_hosts: take(&mut params, "known_hosts").map(PathBuf::from),
                }
            }
            "tls" => {
                return Err(bad(
                    "qemu+tls is not spoken by this build: use qemu+ssh:// (ssh keys), or qemu+tcp:// on a trusted network",
                ))
            }
            other => return Err(bad(&format!("unknown transport {other:?}"))),
        };
        if let Some((k, _)) = params.first() {
            return Err(bad(&format!("unknown parameter {k:?}")));
        }
        Ok(Uri {
            text: text.to_owned(),
            transport,
            name: format!("qemu://{path}"),
        })
    }

    /// Opens the byte stream to the daemon, within `timeout`.
    pub async fn open(&self, timeout: Duration) -> Result<Box<dyn Io>, LibvirtError> {
        let fail = |detail: String| LibvirtError::Connect {
            uri: self.text.clone(),
            detail,
        };
        let opened = tokio::time::timeout(timeout, async {
            match &self.transport {
                Transport::Unix(paths) => {
                    let mut last = String::from("no socket given");
                    for p in paths {
                        match tokio::net::UnixStream::connect(p).await {
                            Ok(s) => return Ok(Box::new(s) as Box<dyn Io>),
                            Err(e) => last = format!("{}: {e}", p.display()),
                        }
                    }
                    Err(fail(last))
                }
                Transport::Tcp { host, port } => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                        .await
                        .map_err(|e| fail(format!("{host}:{port}: {e}")))?;
                    let _ = s.set_nodelay(true);
                    Ok(Box::new(s) as Box<dyn Io>)
                }
                Transport::Ssh {
                    host,
                    port,
                    user,
                    keyfile,
                    known_hosts,
                } => {
                    let cmd = ssh_command(
                        *port,
                        user.as_deref(),
                        keyfile.as_deref(),
                        known_hosts.as_deref(),
                    );
                    ssh(cmd, host, &self.name).map_err(|e| fail(format!("ssh: {e}")))
                }
            }
        })
        .await;
        match opened {
            Ok(r) => r,
            Err(_) => Err(fail(format!("no connection within {timeout:?}"))),
        }
    }
}

fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed [ in the host".to_owned())?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
        None => None,
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

/// A byte stream to a daemon.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `ssh` with the options every connection to a host takes (its port, user,
/// key and known hosts; batch mode), before the destination.
pub(crate) fn ssh_command(
    port: Option<u16>,
    user: Option<&str>,
    keyfile: Option<&std::path::Path>,
    known_hosts: Option<&std::path::Path>,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(["-T", "-e", "none", "-o", "BatchMode=yes"]);
    if let Some(p) = port {
        cmd.arg("-p").arg(p.to_string());
    }
    if let Some(u) = user {
        cmd.arg("-l").arg(u);
    }
    if let Some(k) = keyfile {
        cmd.arg("-i").arg(k);
    }
    if let Some(k) = known_hosts {
        // Quoted: ssh splits an option's value at spaces.
        cmd.arg("-o")
            .arg(format!("UserKnownHostsFile=\"{}\"", k.display()));
    }
    cmd
}

/// `ssh` running `virt-ssh-helper` on the host: its stdin and stdout are the
/// stream. Batch mode: a host that asks for a password fails at once
/// instead of waiting on a terminal nobody watches.
fn ssh(cmd: std::process::Command, host: &str, name: &str) -> std::io::Result<Box<dyn Io>> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.arg("--")
        .arg(host)
        .arg("virt-ssh-helper")
        .arg(name)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("ssh gave no pipes"));
    };
    Ok(Box::new(ChildIo {
        _child: child,
        stdin,
        stdout,
    }))
}

struct ChildIo {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
}

impl AsyncRead for ChildIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_and_the_usual_uris_parse() {
        let u = Uri::parse("qemu+unix:///system?socket=/run/vmdr-lab/kvm-a1/libvirt-sock")
            .expect("unix");
        assert_eq!(
            u.transport,
            Transport::Unix(vec!["/run/vmdr-lab/kvm-a1/libvirt-sock".into()])
        );
        assert_eq!(u.name, "qemu:///system");
        let u = Uri::parse("qemu+tcp://198.19.0.11/system").expect("tcp");
        assert_eq!(
            u.transport,
            Transport::Tcp {
                host: "198.19.0.11".into(),
                port: 16509
            }
        );
        let u = Uri::parse("qemu+ssh://root@kvm-a1:2222/system?keyfile=/k%20ey").expect("ssh");
        assert_eq!(
            u.transport,
            Transport::Ssh {
                host: "kvm-a1".into(),
                port: Some(2222),
                user: Some("root".into()),
                keyfile: Some("/k ey".into()),
                known_hosts: None,
            }
        );
        let u = Uri::parse("qemu+ssh://kvm-a1/system?known_hosts=/etc/vmdr/known_hosts")
            .expect("ssh with known hosts");
        assert!(matches!(
            u.transport,
            Transport::Ssh { known_hosts: Some(k), .. } if k == std::path::Path::new("/etc/vmdr/known_hosts")
        ));
        let u = Uri::parse("qemu+tcp://[fd00::1]:1600/system").expect("v6");
        assert_eq!(
            u.transport,
            Transport::Tcp {
                host: "fd00::1".into(),
                port: 1600
            }
        );
        assert!(matches!(
            Uri::parse("qemu:///system").expect("local").transport,
            Transport::Unix(ref v) if v.len() == 2
        ));
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        for (uri, says) in [
            ("xen:///system", "driver"),
            ("qemu+tls://h/system", "qemu+tls"),
            ("qemu://h/system", "TLS"),
            ("qemu+tcp:///system", "needs a host"),
            ("qemu+tcp://h/other", "path"),
            ("qemu+tcp://h:port/system", "bad port"),
            ("qemu+ssh://h/system?nope=1", "unknown parameter"),
            ("qemu+carrier-pigeon://h/system", "unknown transport"),
            ("kvm-a1", "expected"),
        ] {
            let e = Uri::parse(uri).expect_err(uri).to_string();
            assert!(e.contains(says), "{uri}: {e}");
        }
    }
}
