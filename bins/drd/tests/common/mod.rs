//! Running `drd` as a process and talking HTTP to it (a small HTTP/1.1
//! client over std, enough for the daemon's API).

#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod datacenter;

pub const TOKEN: &str = "an-api-token-for-the-tests";

pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("drd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("dir");
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a daemon configuration into `dir` over the test datacenter.
pub fn write_config(dir: &Path, probe_interval: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dc.toml");
    write_config_on(dir, &scenario_source(&fixture), probe_interval)
}

/// Writes a daemon configuration into `dir` whose `[sim]` section holds
/// `sim_source` (`scenario = "FILE"` or `url = "http://..."`).
pub fn write_config_on(dir: &Path, sim_source: &str, probe_interval: &str) -> PathBuf {
    std::fs::write(dir.join("token"), TOKEN).expect("token");
    let path = dir.join("drd.toml");
    std::fs::write(&path, config_text_on(sim_source, probe_interval)).expect("config");
    path
}

fn scenario_source(fixture: &Path) -> String {
    format!("scenario = \"{}\"", fixture.display())
}

pub fn config_text(fixture: &Path, probe_interval: &str) -> String {
    config_text_on(&scenario_source(fixture), probe_interval)
}

fn config_text_on(sim_source: &str, probe_interval: &str) -> String {
    format!(
        r#"backend = "sim"

[sim]
{sim_source}

[control]
probe_interval = "{probe_interval}"
probe_timeout = "100ms"
inventory_interval = "1s"
action_timeout = "10s"
action_retries = 1
retry_delay = "200ms"

[policy]
failure_threshold = 2
host_down_after = "1s"
backoff_base = "1s"
boot_grace = "2s"
stable_after = "5s"

[api]
listen = "127.0.0.1:0"
token_file = "token"

[journal]
path = "journal.redb"
"#
    )
}

pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        // Its log goes beside its configuration, to show when it fails.
        let log_path = config.with_extension("log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_drd"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("drd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("address line");
        let addr = line
            .trim()
            .strip_prefix("api listening on ")
            .unwrap_or_else(|| {
                let _ = child.wait();
                panic!(
                    "drd did not start (first line {line:?}); its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            })
            .to_owned();
        Daemon {
            child,
            addr,
            log: log_path,
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(&self.addr, "GET", path, None)
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub fn post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http(&self.addr, "POST", path, token)
    }

    /// Polls `what` until it is true, or fails after `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, mut f: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        while !f(self) {
            if start.elapsed() >= limit {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "timed out waiting for {what}; the end of drd's log:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for a clean exit, failing with `why` after
    /// `limit`.
    pub fn terminate_within(&mut self, limit: Duration, why: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(start.elapsed() < limit, "{why}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        match self.json("/api/v1/events?limit=10000") {
            serde_json::Value::Array(v) => v,
            other => panic!("events: {other}"),
        }
    }

    pub fn metric(&self, name_and_labels: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics");
        text.lines().find_map(|l| {
            l.strip_prefix(name_and_labels)?
                .strip_prefix(' ')?
                .parse()
                .ok()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to drd");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The events of one kind about one VM.
pub fn actions_for<'a>(
    events: &'a [serde_json::Value],
    kind: &str,
    vm: &str,
) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .filter(|e| e["action"]["vm"] == vm)
        .collect()
}

/// The VM named `name` in the daemon's `/api/v1/vms` (null if absent).
pub fn vm(d: &Daemon, name: &str) -> serde_json::Value {
    d.json("/api/v1/vms")
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A daemon that ships app-1's disk (`image`, written to the directory) and
/// also receives both replicas (the DR site's receivers; dr-a keeping
/// `keep` checkpoints apart); a failover from the replica restores from
/// dr-a to `dr-site/app-1.img`; `key` is the replication key. Its
/// directory, its configuration and the receivers' ports.
pub fn shipping_and_receiving(
    tag: &str,
    image: &[u8],
    keep: usize,
    key: &str,
) -> (Dir, PathBuf, [u16; 2]) {
    let d = Dir::new(tag);
    std::fs::write(d.0.join("app-1.img"), image).expect("disk");
    std::fs::write(d.0.join("repl-key"), key).expect("key");
    let (a, b) = (free_port(), free_port());
    let config = write_config(&d.0, "200ms");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[replication]\nkey_file = \"repl-key\"\ninterval = \"300ms\"\n\
         [[replication.receive]]\nlisten = \"127.0.0.1:{a}\"\ndir = \"dr-a\"\nkeep = {keep}\n\
         [[replication.receive]]\nlisten = \"127.0.0.1:{b}\"\ndir = \"dr-b\"\n\
         [[replication.vm]]\nname = \"app-1\"\ndisks = [\"app-1.img\"]\n\
         targets = [\"127.0.0.1:{a}\", \"127.0.0.1:{b}\"]\n\
         replica = \"dr-a\"\nrestore_disks = [\"dr-site/app-1.img\"]\n"
    ));
    std::fs::write(&config, text).expect("config");
    (d, config, [a, b])
}
