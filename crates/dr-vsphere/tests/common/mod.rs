//! govmomi's vCenter simulator, built from `tests/vcsim/main.go` against
//! Debian's golang-github-vmware-govmomi-dev and started per test on
//! 127.0.0.1. In CI (`CI=true`) a missing Go toolchain or govmomi fails the
//! test; elsewhere the test is skipped with the reason printed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

const GOPATH: &str = "/usr/share/gocode";

fn build() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Found from any crate of the workspace (drctl's tests use it too).
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|d| d.join("crates/dr-vsphere/tests/vcsim"))
                .find(|d| d.is_dir())
                .ok_or("crates/dr-vsphere/tests/vcsim not found")?;
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vcsim");
            if Command::new("go").arg("version").output().is_err() {
                return Err("the Go toolchain is not installed (apt-get install golang-go)".into());
            }
            if !Path::new(GOPATH)
                .join("src/github.com/vmware/govmomi/simulator")
                .is_dir()
            {
                return Err(
                    "govmomi is not installed (apt-get install golang-github-vmware-govmomi-dev)"
                        .into(),
                );
            }
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(&src)
                .env("GO111MODULE", "off")
                .env("GOPATH", GOPATH)
                .env(
                    "GOCACHE",
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache"),
                )
                .env("GOFLAGS", "-mod=mod")
                .output()
                .map_err(|e| format!("go build: {e}"))?;
            if !status.status.success() {
                return Err(format!(
                    "go build of the simulator failed: {}",
                    String::from_utf8_lossy(&status.stderr)
                ));
            }
            Ok(out)
        })
        .clone()
}

/// Whether the simulator can be had: panics in CI when not, else prints why
/// the test is skipped.
pub fn available(test: &str) -> bool {
    match build() {
        Ok(_) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: cannot run in CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// A running simulator, killed on drop.
pub struct Vcsim {
    child: Child,
    /// Its SDK URL.
    pub url: String,
    /// Its certificate's SHA-256 thumbprint (with `-tls`).
    pub sha256: Option<String>,
}

impl Vcsim {
    /// Starts one with these flags (see `tests/vcsim/main.go`).
    pub fn start(args: &[&str]) -> Vcsim {
        let bin = build().expect("simulator built");
        // With its stdin as a lifeline, it removes its datastores'
        // directories when the test drops it (or dies).
        let mut child = Command::new(bin)
            .arg("-stdin-lifeline")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vcsim");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("vcsim prints its URL");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("vcsim said {line:?}: {e}"));
        Vcsim {
            child,
            url: v["url"].as_str().expect("url").to_owned(),
            sha256: v["sha256"].as_str().map(str::to_owned),
        }
    }

    /// The base URL (scheme, host, port) for the test-only endpoints.
    pub fn base(&self) -> String {
        self.url.trim_end_matches("/sdk").to_owned()
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        // A moment to clean up, then killed regardless.
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
