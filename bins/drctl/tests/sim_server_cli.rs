//! `drctl sim-server`: the simulated datacenter served over HTTP, read back
//! with `drctl inventory` through a daemon configuration that names it, and
//! stopped cleanly by SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(addr: &str, path: &str) -> String {
    common::http_get(addr, path).expect("an HTTP answer").1
}

#[test]
fn serves_the_datacenter_to_a_daemon_configuration_and_stops_on_sigterm() {
    let scenario = format!(
        "{}/../../examples/drd-datacenter.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut server = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["sim-server", &scenario, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("drctl sim-server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .to_owned();

    let report: serde_json::Value =
        serde_json::from_str(&get(&addr, "/sim/v1/report")).expect("report JSON");
    let vms = report["vms"].as_array().expect("vms");
    assert!(!vms.is_empty(), "{report}");
    assert!(vms.iter().all(|v| v["double_runs"] == 0), "{report}");

    let dir = std::env::temp_dir().join(format!("drctl-simserver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("drd.toml");
    std::fs::write(
        &config,
        format!("backend = \"sim\"\n[sim]\nurl = \"http://{addr}\"\n"),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["inventory", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("drctl inventory");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inventory JSON");
    assert_eq!(
        inv["vms"].as_array().map(Vec::len),
        Some(vms.len()),
        "the served inventory: {inv}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let sent = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_configuration_with_both_or_neither_sim_source_is_refused() {
    let dir = std::env::temp_dir().join(format!("drctl-simconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, text) in [
        (
            "both.toml",
            "backend = \"sim\"\n[sim]\nscenario = \"x.toml\"\nurl = \"http://127.0.0.1:1\"\n",
        ),
        ("neither.toml", "backend = \"sim\"\n[sim]\n"),
        (
            "bad-url.toml",
            "backend = \"sim\"\n[sim]\nurl = \"127.0.0.1:7080\"\n",
        ),
    ] {
        let config = dir.join(name);
        std::fs::write(&config, text).expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
            .args(["inventory", "--config"])
            .arg(&config)
            .output()
            .expect("drctl inventory");
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("sim"), "{name}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
