//! Test hosts: network namespaces with veth pairs, created and removed by
//! the tests themselves. Traffic goes only to addresses inside them (or to
//! loopback).
//!
//! They need root and iproute2. In CI (`CI=true`) a missing prerequisite
//! fails the test; on a developer machine the test is skipped with the
//! reason printed.

#![allow(dead_code)]

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing the test with its stderr if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why these tests cannot run here, if they cannot.
fn missing(tools: &[&str]) -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some("not root (network namespaces need root)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2's `ip` is not installed".into());
    }
    for tool in tools {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Whether a test needing namespaces should run: panics in CI when it
/// cannot, returns false (after saying why) elsewhere.
pub fn can_run(test: &str) -> bool {
    can_run_with(test, &[])
}

/// [`can_run`], also needing these commands.
pub fn can_run_with(test: &str, tools: &[&str]) -> bool {
    match missing(tools) {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: cannot run in CI: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// A test host: a namespace reached through a veth pair, with IPv4 and IPv6
/// addresses, and (optionally) a whole IPv4 range answered by its loopback.
pub struct TestHost {
    /// Namespace name.
    pub ns: String,
    /// Our end of the veth pair.
    pub outer: String,
    /// Its end.
    pub inner: String,
    /// Its IPv4 address.
    pub v4: IpAddr,
    /// Its IPv6 address.
    pub v6: IpAddr,
    /// An address on its link that nobody holds (never answers).
    pub silent_v4: IpAddr,
    range: Option<String>,
}

impl TestHost {
    /// A new host. Subnets are chosen per process and host so tests can run
    /// in parallel: 198.18.N.0/29 and fd00:766d:P:N::/64 (test and ULA
    /// ranges, inside the namespace only).
    pub fn new() -> TestHost {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 10_000;
        let id = format!("{pid}x{n}");
        let ns = format!("vmdr-{id}");
        let outer = format!("vo{id}");
        let inner = format!("vi{id}");
        let third = (pid * 7 + n) % 250 + 1;
        let host = TestHost {
            v4: format!("198.18.{third}.2").parse().expect("v4"),
            v6: format!("fd00:766d:{pid:x}:{n:x}::2").parse().expect("v6"),
            silent_v4: format!("198.18.{third}.5").parse().expect("v4"),
            ns,
            outer,
            inner,
            range: None,
        };
        sh(&["ip", "netns", "add", &host.ns]);
        // Keep IPv6 addresses when the link goes down (the kernel's default
        // flushes them), so "link down, link up" is a real outage and back.
        for scope in ["default", "all"] {
            host.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{scope}.keep_addr_on_down=1"),
            ]);
        }
        sh(&[
            "ip",
            "link",
            "add",
            &host.outer,
            "type",
            "veth",
            "peer",
            "name",
            &host.inner,
        ]);
        sh(&["ip", "link", "set", &host.inner, "netns", &host.ns]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("198.18.{third}.1/29"),
            "dev",
            &host.outer,
        ]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("fd00:766d:{pid:x}:{n:x}::1/64"),
            "dev",
            &host.outer,
            "nodad",
        ]);
        sh(&["ip", "link", "set", &host.outer, "up"]);
        sh(&[
            "ip",
            "-n",
            &host.ns,
            "addr",
            "add",
            &format!("{}/29", host.v4),
            "dev",
            &host.inner,
        ]);
        sh(&[
            "ip",
            "-n",
            &host.ns,
            "-6",
            "addr",
            "add",
            &format!("{}/64", host.v6),
            "dev",
            &host.inner,
            "nodad",
        ]);
        sh(&["ip", "-n", &host.ns, "link", "set", &host.inner, "up"]);
        sh(&["ip", "-n", &host.ns, "link", "set", "lo", "up"]);
        host
    }

    /// Makes the host answer for a whole IPv4 range through its loopback
    /// (`route add local`), routed to it from here.
    pub fn answer_range(&mut self, cidr: &str) {
        sh(&[
            "ip", "-n", &self.ns, "route", "add", "local", cidr, "dev", "lo",
        ]);
        sh(&["ip", "route", "add", cidr, "via", &self.v4.to_string()]);
        self.range = Some(cidr.to_owned());
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.ns];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// Brings its link down (`false`) or up (`true`).
    pub fn link(&self, up: bool) {
        sh(&[
            "ip",
            "-n",
            &self.ns,
            "link",
            "set",
            &self.inner,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(cidr) = &self.range {
            let _ = Command::new("ip").args(["route", "del", cidr]).output();
        }
        // Deleting the namespace deletes its veth end, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer])
            .output();
    }
}

/// An ICMPv4 echo responder running inside a test host's namespace (the
/// kernel's own replies switched off there): a slow host, or one that sends
/// bad replies. Stops when dropped.
pub struct Responder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    /// Answers after `delay`, passing each reply through `mangle` first
    /// (to forge, corrupt or truncate it).
    pub fn start(
        host: &TestHost,
        delay: std::time::Duration,
        mangle: fn(&mut Vec<u8>),
    ) -> Responder {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        host.exec(&["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"]);
        let stop = Arc::new(AtomicBool::new(false));
        let ns = format!("/run/netns/{}", host.ns);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // setns changes only this thread's namespace.
            let f = std::fs::File::open(&ns).expect("namespace file");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let raw = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::ICMPV4),
            )
            .expect("raw socket in the namespace");
            let sock: std::net::UdpSocket = raw.into();
            sock.set_read_timeout(Some(std::time::Duration::from_millis(50)))
                .expect("timeout");
            let sock = Arc::new(sock);
            ready_tx.send(()).expect("ready");
            let mut buf = [0u8; 2048];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if len < ihl + 8 || buf[ihl] != 8 {
                    continue; // not an echo request
                }
                let mut reply = buf[ihl..len].to_vec();
                reply[0] = 0;
                reply[2] = 0;
                reply[3] = 0;
                let c = dr_probe::packet::checksum(&reply);
                reply[2..4].copy_from_slice(&c.to_be_bytes());
                mangle(&mut reply);
                let sock = sock.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = sock.send_to(&reply, from);
                });
            }
        });
        ready_rx.recv().expect("responder started");
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
