//! Invalid scenario files get an error naming the problem and its line.

use dr_sim::Scenario;

const BASE: &str = r#"duration = "10m"
[[host]]
name = "h1"
ip = "10.0.0.1"
[[vm]]
name = "a"
ip = "10.1.0.1"
host = "h1"
"#;

fn err(extra: &str) -> (Option<usize>, String) {
    let e = Scenario::parse(&format!("{BASE}{extra}")).expect_err("must be rejected");
    (e.line, e.to_string())
}

#[test]
fn the_base_is_valid() {
    let s = Scenario::parse(BASE).expect("valid");
    assert_eq!(s.hosts.len(), 1);
    assert_eq!(s.vms.len(), 1);
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "[[fault]]\nat = \"1m\"\nkind = \"vm_crash\"\nvm = \"nope\"\n",
            12,
            "unknown vm \"nope\"",
        ),
        (
            "[[fault]]\nat = \"1m\"\nkind = \"meteor\"\nvm = \"a\"\n",
            11,
            "unknown fault kind \"meteor\"",
        ),
        (
            "[[fault]]\nat = \"soon\"\nkind = \"vm_crash\"\nvm = \"a\"\n",
            10,
            "invalid duration",
        ),
        (
            "[[fault]]\nat = \"20m\"\nkind = \"vm_crash\"\nvm = \"a\"\n",
            10,
            "after the end",
        ),
        (
            "[[fault]]\nat = \"1m\"\nkind = \"host_crash\"\n",
            11,
            "host_crash needs host",
        ),
        (
            "[[fault]]\nat = \"1m\"\nkind = \"packet_loss\"\nvm = \"a\"\nloss = 1.5\n",
            13,
            "not between 0 and 1",
        ),
        (
            "[[vm]]\nname = \"b\"\nip = \"10.1.0.300\"\nhost = \"h1\"\n",
            11,
            "is not an IP address",
        ),
        (
            "[[vm]]\nname = \"b\"\nip = \"10.1.0.2\"\nhost = \"h9\"\n",
            12,
            "unknown host \"h9\"",
        ),
        (
            "[[vm]]\nname = \"a\"\nip = \"10.1.0.2\"\nhost = \"h1\"\n",
            10,
            "duplicate vm \"a\"",
        ),
        (
            "[[vm]]\nname = \"b\"\nip = \"10.1.0.1\"\nhost = \"h1\"\n",
            11,
            "already used by \"a\"",
        ),
        (
            "[[vm]]\nname = \"b\"\nip = \"10.1.0.2\"\nhost = \"h1\"\nmemory_mb = 99999999\n",
            10,
            "has only",
        ),
        (
            "[[vm]]\nname = \"b\"\nip = \"10.1.0.2\"\nhost = \"h1\"\ncolour = \"red\"\n",
            13,
            "unknown field `colour`",
        ),
        (
            "[policy]\nfailure_threshold = \"three\"\n",
            10,
            "failure_threshold",
        ),
        (
            "[policy]\nhost_down_after = \"15 fortnights\"\n",
            10,
            "unknown unit",
        ),
        ("[[host\nname = \"x\"\n", 9, ""),
    ];
    for (extra, line, needle) in cases {
        let (got_line, msg) = err(extra);
        assert_eq!(got_line, Some(*line), "wrong line for {extra:?}: {msg}");
        assert!(
            msg.contains(needle),
            "message for {extra:?} lacks {needle:?}: {msg}"
        );
        assert!(
            msg.starts_with(&format!("line {line}: ")),
            "message does not lead with the line: {msg}"
        );
    }
}

#[test]
fn policy_errors_are_reported() {
    let e =
        Scenario::parse(&format!("{BASE}[policy]\nfailure_threshold = 0\n")).expect_err("rejected");
    assert!(
        e.to_string()
            .contains("failure_threshold: must be at least 1"),
        "{e}"
    );
}

#[test]
fn a_scenario_without_hosts_is_rejected() {
    let e = Scenario::parse("duration = \"1m\"\n").expect_err("rejected");
    assert!(e.to_string().contains("at least one host"), "{e}");
}

#[test]
fn garbage_is_rejected_not_panicked_on() {
    for text in [
        "",
        "\u{0}\u{1}",
        "duration = 5",
        "[[vm]]\n",
        "duration = \"-5s\"",
        "= = =",
    ] {
        assert!(Scenario::parse(text).is_err(), "{text:?} accepted");
    }
}
