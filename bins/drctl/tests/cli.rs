//! `drctl simulate` as an operator runs it.

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

fn example(name: &str) -> String {
    format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn seed_scenarios_print_json_lines_and_pass() {
    let (code, out, err) = drctl(&["simulate", &example("seed-scenarios.toml")]);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(lines.iter().any(|l| l["type"] == "decision"));
    assert!(lines.iter().any(|l| l["type"] == "action_started"));
    assert!(lines.iter().any(|l| l["type"] == "observation"));
    assert!(lines.iter().any(|l| l["type"] == "fault"));
    let timed: Vec<u64> = lines.iter().filter_map(|l| l["t_ms"].as_u64()).collect();
    assert!(timed.len() > 100, "timeline lines carry t_ms");
    assert!(
        timed.windows(2).all(|w| w[0] <= w[1]),
        "the timeline is in time order"
    );
    let summaries: Vec<_> = lines.iter().filter(|l| l["type"] == "summary").collect();
    assert_eq!(summaries.len(), 12, "one summary per VM");
    for s in &summaries {
        assert_eq!(s["double_runs"], 0, "{s}");
        for key in [
            "final_state",
            "final_host",
            "time_to_detect_ms",
            "rto_ms",
            "actions",
        ] {
            assert!(s.get(key).is_some(), "summary lacks {key}: {s}");
        }
    }
    let verdict = lines.last().expect("verdict");
    assert_eq!(verdict["type"], "verdict");
    assert_eq!(verdict["ok"], true);
}

#[test]
fn human_output_is_a_timeline_and_a_table() {
    let (code, out, _) = drctl(&["simulate", "--human", &example("seed-scenarios.toml")]);
    assert_eq!(code, 0);
    assert!(out.contains("FAULT     host_crash on host esx-a1"));
    assert!(out.contains("decide    vm db-1: power on in place"));
    assert!(out.contains("verdict: OK"));
}

#[test]
fn an_invalid_file_exits_2_naming_the_line() {
    let dir = std::env::temp_dir().join(format!("drctl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "duration = \"5m\"\n[[host]]\nname = \"h1\"\n[[vm]]\nname = \"a\"\nip = \"10.0.0.1\"\nhost = \"h2\"\n").expect("write");
    let (code, out, err) = drctl(&["simulate", bad.to_str().expect("utf-8 path")]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("line 7: vm \"a\": unknown host \"h2\""),
        "stderr: {err}"
    );
    assert!(err.contains("bad.toml"), "stderr names the file: {err}");
    let (code, _, err) = drctl(&[
        "simulate",
        dir.join("missing.toml").to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn random_mode_checks_seeds_and_replays_one() {
    let (code, out, _) = drctl(&["simulate", "--random", "--seeds", "20"]);
    assert_eq!(code, 0, "{out}");
    let last: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("summary")).expect("json");
    assert_eq!(last["type"], "random_summary");
    assert_eq!(last["seeds"], 20);
    assert_eq!(last["failed"], 0);
    let (code, a, _) = drctl(&["simulate", "--random", "--seed", "5"]);
    let (_, b, _) = drctl(&["simulate", "--random", "--seed", "5"]);
    assert_eq!(code, 0);
    assert_eq!(a, b, "a seed replays exactly");
}

#[test]
fn options_that_do_not_apply_are_refused_not_ignored() {
    // `--seed N` alone replays that random seed (before: a usage line that
    // asked for --random and a file at once).
    let (code, out, err) = drctl(&["simulate", "--seed", "5", "--human"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("random seed 5"), "{out}");
    for (args, says) in [
        (
            vec!["simulate", "--random", "--seeds", "2", "--human"],
            "--human prints one run",
        ),
        (
            vec!["simulate", "--seed", "5", "--seeds", "2"],
            "--seed replays one seed",
        ),
        (
            vec!["simulate", "x.toml", "--seeds", "3"],
            "a scenario file runs alone",
        ),
        (vec!["simulate"], "give a scenario file"),
    ] {
        let (code, _, err) = drctl(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_pipe_ends_drctl_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    // A pipe of one page, so the timeline (20 kB) cannot fit in it before
    // the reader goes.
    // Close-on-exec: the child must not hold the read end open itself.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    use std::os::fd::AsRawFd;
    nix::fcntl::fcntl(write.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096))
        .expect("pipe size");
    let mut child = Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["simulate", "--random", "--seed", "5", "--human"])
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("drctl");
    // Read one byte, then close the pipe, as `| head -c1` does.
    let mut stdout = std::fs::File::from(read);
    let mut byte = [0u8; 1];
    stdout.read_exact(&mut byte).expect("a byte");
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let status = child.wait().expect("wait");
    // Before: "drctl: Broken pipe (os error 32)" and exit status 2 (bad
    // input). Now SIGPIPE ends it, as it ends other Unix tools.
    assert!(err.is_empty(), "{err}");
    assert_eq!(status.signal(), Some(13), "{status:?}");
}
