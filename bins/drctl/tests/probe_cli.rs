//! `drctl probe` as an operator runs it, against loopback and the test's
//! own network namespaces.

#[path = "../../../crates/dr-probe/tests/common/mod.rs"]
mod common;

use std::process::Command;

fn drctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(args)
        .output()
        .expect("drctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn up_and_down_targets_one_line_each_and_exit_1() {
    if !common::can_run("up_and_down_targets_one_line_each_and_exit_1") {
        return;
    }
    let host = common::TestHost::new();
    let (up4, up6, silent) = (
        host.v4.to_string(),
        host.v6.to_string(),
        host.silent_v4.to_string(),
    );
    let (code, out, err) = drctl(&[
        "probe",
        "--count",
        "3",
        "--interval",
        "100",
        "--timeout",
        "300",
        &up4,
        &up6,
        "127.0.0.1",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        assert!(
            l.contains(": up    xmt/rcv/%loss = 3/3/0%, min/avg/max = "),
            "{l}"
        );
    }
    let (code, out, _) = drctl(&[
        "probe",
        "--count",
        "2",
        "--interval",
        "100",
        "--timeout",
        "200",
        "--json",
        &up4,
        &silent,
    ]);
    assert_eq!(code, 1, "a down target makes the exit status 1");
    let v: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(v[0]["up"], true);
    assert_eq!(v[0]["received"], 2);
    assert!(v[0]["rtt_ms"]["avg"]
        .as_f64()
        .is_some_and(|ms| ms > 0.0 && ms < 50.0));
    assert_eq!(v[1]["up"], false);
    assert_eq!(v[1]["loss_percent"], 100.0);
}

#[test]
fn targets_from_a_file_with_comments() {
    if !common::can_run("targets_from_a_file_with_comments") {
        return;
    }
    let host = common::TestHost::new();
    let dir = std::env::temp_dir().join(format!("drctl-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("targets.txt");
    std::fs::write(
        &file,
        format!("# test hosts\n{}\n\n127.0.0.1   # loopback\n", host.v4),
    )
    .expect("write");
    let (code, out, err) = drctl(&[
        "probe",
        "--count",
        "1",
        "--file",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    std::fs::write(&file, "127.0.0.1\nnot a target!\n").expect("write");
    let (code, _, err) = drctl(&["probe", "--file", file.to_str().expect("utf-8")]);
    assert_eq!(code, 2);
    assert!(err.contains("targets.txt:2: invalid target"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tcp_mode_needs_no_privilege() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let (code, out, err) = drctl(&[
        "probe",
        "--tcp",
        &port,
        "--count",
        "2",
        "--interval",
        "50",
        "127.0.0.1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("127.0.0.1 : up    xmt/rcv/%loss = 2/2/0%"),
        "{out}"
    );
}

#[test]
fn a_refused_port_is_a_live_host_but_not_an_open_port() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").port().to_string();
    let probe = |mode: &str, port: &str| {
        drctl(&[
            "probe",
            mode,
            port,
            "--count",
            "1",
            "--timeout",
            "300",
            "127.0.0.1",
        ])
    };
    // --tcp checks the host: nothing listening, yet it answered (a reset).
    let (code, out, err) = probe("--tcp", &closed);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains(": up"), "{out}");
    // --tcp-open checks the service: a listener is needed.
    let (code, out, _) = probe("--tcp-open", &closed);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(": DOWN"), "{out}");
    let (code, out, err) = probe("--tcp-open", &open);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains(": up"), "{out}");
    // The help says which is which.
    let (_, help, _) = drctl(&["probe", "--help"]);
    assert!(
        help.contains("refuses") && help.contains("--tcp-open"),
        "{help}"
    );
}

#[test]
fn bad_input_exits_2() {
    for args in [
        vec!["probe", "not a host!"],
        vec!["probe", "0.0.0.0"],
        vec!["probe", "--count", "0", "127.0.0.1"],
        vec!["probe", "--tcp", "0", "127.0.0.1"],
        vec!["probe", "--timeout", "abc", "127.0.0.1"],
        vec!["probe"],
        vec!["probe", "--file", "/nonexistent/targets"],
    ] {
        let (code, out, err) = drctl(&args);
        assert_eq!(code, 2, "{args:?}: stdout {out} stderr {err}");
        assert!(!err.is_empty(), "{args:?}: no message");
    }
}
