//! The KVM lab for tests: `scripts/kvm-lab.sh` (the same script a person
//! runs) builds libvirt daemons in their own namespaces and boots real
//! guests on them; each test gets a lab of its own (its own directory,
//! namespaces, links and /24 inside 198.19.0.0/16) and removes it when it
//! ends. Traffic goes only to addresses inside the lab.
//!
//! Needs root and the packages the test command installs. In CI
//! (`CI=true`) a missing prerequisite fails the test; elsewhere the test is
//! skipped with the reason printed. Shared with drd's tests (`#[path]`).

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);
/// Guests under TCG are CPU-bound: one lab at a time per test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("scripts/kvm-lab.sh").exists())
        .map(|p| p.join("scripts/kvm-lab.sh"))
        .expect("scripts/kvm-lab.sh above the crate")
}

/// Why the lab cannot be built here, if it cannot.
fn missing() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()) != Some("0".into()) {
        return Some("not root (the lab needs namespaces)".into());
    }
    for (tool, pkg) in [
        ("libvirtd", "libvirt-daemon-driver-qemu"),
        ("virsh", "libvirt-clients"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("busybox", "busybox-static"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is not installed (Debian package {pkg})"));
        }
    }
    None
}

/// Whether a lab test should run: panics in CI when it cannot, returns
/// false (after saying why) elsewhere.
pub fn can_run(test: &str) -> bool {
    match missing() {
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

/// A running lab. Dropping it takes it down.
pub struct Lab {
    /// Its directory (`VMDR_LAB_DIR`).
    pub dir: PathBuf,
    name: String,
    net: u32,
    hosts: Vec<String>,
    _one: MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds a lab of `hosts`.
    pub fn up(hosts: &[&str]) -> Lab {
        let one = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let lab = Lab {
            dir: std::env::temp_dir().join(format!("vmdr-lab-{pid}-{n}")),
            name: format!("v{}{}", pid % 10_000, n % 10),
            net: (pid * 7 + n) % 250 + 1,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            _one: one,
        };
        let mut args = vec!["up"];
        args.extend(hosts);
        lab.run(&args);
        lab
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.arg(script())
            .args(args)
            .env("VMDR_LAB_DIR", &self.dir)
            .env("VMDR_LAB_NAME", &self.name)
            .env("VMDR_LAB_NET", self.net.to_string());
        c
    }

    /// Runs the lab script, failing the test with its output if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("kvm-lab.sh {args:?}: {e}"));
        assert!(
            out.status.success(),
            "kvm-lab.sh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A host's URI (TCP through its link, so a cut link cuts it off).
    pub fn uri(&self, host: &str) -> String {
        self.run(&["uri", host]).trim().to_owned()
    }

    /// A host's management address.
    pub fn host_ip(&self, host: &str) -> IpAddr {
        let i = self
            .hosts
            .iter()
            .position(|h| h == host)
            .unwrap_or_else(|| panic!("no host {host} in the lab"));
        format!("198.19.{}.{}", self.net, 11 + i)
            .parse()
            .expect("address")
    }

    /// The address of guest number `k` (1..=100).
    pub fn guest_ip(&self, k: u32) -> IpAddr {
        format!("198.19.{}.{}", self.net, 100 + k)
            .parse()
            .expect("address")
    }

    /// Defines and starts a guest on `host`; its disk is on the storage
    /// every host shares.
    pub fn guest(&self, host: &str, name: &str, k: u32) -> IpAddr {
        let ip = self.guest_ip(k);
        self.run(&["guest", host, name, &ip.to_string()]);
        ip
    }

    /// [`Lab::guest`] with more kernel arguments (`vmdr.writer=USEC`: the
    /// guest writes numbered records to its disk in order, each flushed).
    pub fn guest_with(&self, host: &str, name: &str, k: u32, args: &str) -> IpAddr {
        let ip = self.guest_ip(k);
        self.run(&["guest", host, name, &ip.to_string(), args]);
        ip
    }

    /// The directory every host shares.
    pub fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// A host's own libvirt, through its unix socket (which a cut link
    /// does not cut): what its agent, or a test watching it, uses.
    pub fn unix_uri(&self, host: &str) -> String {
        format!(
            "qemu+unix:///system?socket={}",
            self.dir.join(host).join("libvirt-sock").display()
        )
    }

    /// The lab's end of every host's link: the hosts' gateway.
    pub fn gateway(&self) -> IpAddr {
        format!("198.19.{}.1", self.net).parse().expect("address")
    }

    /// `program` to run inside `host`'s network namespace (killed with the
    /// host by `kill`).
    pub fn in_host(&self, host: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{host}", self.name)])
            .arg(program);
        c
    }

    /// The port of a host's BMC on 127.0.0.1 (after `kvm-lab.sh bmcs`).
    pub fn bmc_port(&self, host: &str) -> u16 {
        std::fs::read_to_string(self.dir.join(host).join("bmc").join("port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no BMC for {host} (kvm-lab.sh bmcs first)"))
    }

    /// The processes left in a host's network namespace.
    pub fn pids_in(&self, host: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "pids", &format!("{}-{host}", self.name)])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `virsh` on a host (through its unix socket), its output.
    pub fn virsh(&self, host: &str, args: &[&str]) -> String {
        let uri = self.unix_uri(host);
        let out = Command::new("virsh")
            .arg("-q")
            .arg("-c")
            .arg(&uri)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("virsh {args:?}: {e}"));
        assert!(
            out.status.success(),
            "virsh {args:?} on {host} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills the QEMU of guest `vm` (a crash, as the host sees it).
    pub fn kill_qemu(&self, vm: &str) {
        let out = Command::new("pkill")
            .args(["-9", "-f", &format!("guest={vm},")])
            .output()
            .expect("pkill");
        assert!(out.status.success(), "no QEMU of {vm} to kill");
    }

    /// A `[libvirt]` section over the lab's hosts: `kvm-b*` hosts are the
    /// secondary site, the others the primary; `standby` hosts are spares.
    pub fn libvirt_toml(&self, standby: &[&str]) -> String {
        let mut s = String::from("[libvirt]\ntimeout = \"3s\"\n");
        for h in &self.hosts {
            s.push_str(&format!(
                "[[libvirt.host]]\nname = \"{h}\"\nuri = \"{}\"\nip = \"{}\"\nsite = \"{}\"\nshared = [\"{}\"]\nstandby = {}\n",
                self.uri(h),
                self.host_ip(h),
                if h.contains("-b") { "secondary" } else { "primary" },
                self.shared().display(),
                standby.contains(&h.as_str()),
            ));
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).output();
    }
}

/// Whether `ip` answers one ping within a second.
pub fn pings(ip: IpAddr) -> bool {
    Command::new("ping")
        .args(["-c", "1", "-W", "1", &ip.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Waits until `ip` answers a ping, at most `within`; returns how long it
/// took.
pub fn wait_for_ping(ip: IpAddr, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if pings(ip) {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// How many of the lab writer's records (`vmdr.writer`: record k whole in
/// 4 KiB block k) a disk image holds as an unbroken prefix from record 0.
/// Panics, naming `what`, on a torn record or on anything after the gap:
/// what an image that is not one instant of the disk would show.
pub fn records_prefix(image: &[u8], what: &str) -> usize {
    const BLOCK: usize = 4096;
    let mut n = 0;
    for (k, block) in image.chunks(BLOCK).enumerate() {
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let want = format!("vmdr-record {k:08}\n");
        assert!(
            block.starts_with(want.as_bytes()) && block[want.len()..].iter().all(|&b| b == 0),
            "{what}: block {k} is not record {k} whole"
        );
        n = k + 1;
    }
    assert!(
        image[n * BLOCK..].iter().all(|&b| b == 0),
        "{what}: something follows the gap after record {n}: not one instant"
    );
    n
}
