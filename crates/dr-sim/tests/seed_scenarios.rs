//! `examples/seed-scenarios.toml` covers the paper's scenarios 1–3 with all
//! branches; this checks each branch did what the paper says, safely.

use dr_control::{Action, ControlEvent};
use dr_core::model::RestoreSource;
use dr_core::{Decision, Timestamp};
use dr_sim::report::Record;
use dr_sim::{Report, Scenario};

fn run() -> Report {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed-scenarios.toml"
    );
    let text = std::fs::read_to_string(path).expect("examples/seed-scenarios.toml");
    dr_sim::run(&Scenario::parse(&text).expect("seed scenarios parse")).expect("runs")
}

fn actions(r: &Report, vm: &str) -> Vec<(Timestamp, Action)> {
    r.records
        .iter()
        .filter_map(|(t, rec)| match rec {
            Record::Control(ControlEvent::ActionStarted { action }) if action.vm() == vm => {
                Some((*t, action.clone()))
            }
            _ => None,
        })
        .collect()
}

fn decisions(r: &Report, vm: &str) -> Vec<Decision> {
    r.records
        .iter()
        .filter_map(|(_, rec)| match rec {
            Record::Control(ControlEvent::Decision {
                vm: v, decision, ..
            }) if v == vm => Some(*decision),
            _ => None,
        })
        .collect()
}

fn summary<'a>(r: &'a Report, vm: &str) -> &'a dr_sim::report::VmSummary {
    r.summaries
        .iter()
        .find(|s| s.vm == vm)
        .expect("vm in summary")
}

#[test]
fn every_branch_of_the_paper_runs_safely() {
    let r = run();
    assert!(r.verdict.ok, "verdict: {:?}", r.verdict);
    for s in &r.summaries {
        assert_eq!(s.double_runs, 0, "{} ran twice", s.vm);
    }

    // Scenario 2c: crash on a live host: powered on in place, quickly.
    let db = actions(&r, "db-1");
    assert!(matches!(db[0].1, Action::PowerOn { .. }), "db-1: {db:?}");
    assert!(
        summary(&r, "db-1")
            .time_to_detect_ms
            .is_some_and(|ms| ms <= 4_000),
        "db-1 detected within ~3 probes"
    );

    // Scenario 2b: powered off by a user: never touched, even through the
    // crash of its host.
    assert!(actions(&r, "app-user").is_empty());
    assert_eq!(summary(&r, "app-user").final_state, "stopped_by_user");

    // A failed power-on backs off, then escalates to the snapshot.
    let app2: Vec<&str> = actions(&r, "app-2").iter().map(|(_, a)| a.kind()).collect();
    assert_eq!(
        &app2[..2],
        ["power_on", "revert_to_snapshot"],
        "app-2: {app2:?}"
    );
    assert!(decisions(&r, "app-2").contains(&Decision::Wait {
        why: dr_core::engine::WaitReason::Backoff
    }));

    // A hung guest is reset in place.
    assert!(matches!(actions(&r, "cache-1")[0].1, Action::Reset { .. }));

    // Lost probes with a live heartbeat, and a host cut off from vmdr but
    // managed: alerts only, nothing started elsewhere (no split brain).
    for vm in ["web-2", "erp-1", "mail-1"] {
        let before_crash: Vec<_> = actions(&r, vm)
            .into_iter()
            .filter(|(t, _)| t.as_millis() < 15 * 60_000)
            .collect();
        assert!(
            before_crash.is_empty(),
            "{vm} acted on before its host crashed: {before_crash:?}"
        );
        assert!(
            decisions(&r, vm).contains(&Decision::Alert {
                why: dr_core::engine::AlertReason::GuestUnreachable
            }),
            "{vm} not alerted"
        );
    }

    // Scenario 3 c/d: the host comes back from its snapshot, then its VMs.
    let web1 = actions(&r, "web-1");
    assert!(
        matches!(&web1[0].1, Action::RecoverHost { host, .. } if host == "esx-a1"),
        "web-1: {web1:?}"
    );
    assert!(matches!(web1[1].1, Action::PowerOn { .. }));

    // 3d failed -> 3e: restored on another connected host, from the right source.
    let restored = |vm: &str| -> Vec<(String, RestoreSource)> {
        actions(&r, vm)
            .into_iter()
            .filter_map(|(_, a)| match a {
                Action::Restore { target, source, .. } => Some((target, source)),
                Action::AddHostThenRestore { spare, source, .. } => Some((spare, source)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        restored("erp-1"),
        [("esx-a1".to_owned(), RestoreSource::Snapshot)],
        "snapshot-only VM stays on its site"
    );
    assert_eq!(restored("mail-1")[0].1, RestoreSource::Replica);
    assert!(
        matches!(actions(&r, "web-2")[0].1, Action::RecoverHost { .. }),
        "host snapshot tried first"
    );

    // 3e "No": no connected host has room: the spare is added.
    assert!(
        matches!(&actions(&r, "crm-1")[0].1, Action::AddHostThenRestore { spare, .. } if spare == "esx-spare")
    );

    // Fenced host: no confirmation wait.
    let report = actions(&r, "report-1");
    let after_fence = report
        .iter()
        .find(|(t, _)| t.as_millis() >= 25 * 60_000)
        .expect("report-1 moved after the fence");
    assert!(
        after_fence.0.as_millis() < 25 * 60_000 + 10_000,
        "fenced host's VM waited: {after_fence:?}"
    );

    // Flapping: each retry waits longer than the one before.
    let starts: Vec<u64> = web1
        .iter()
        .filter(|(t, _)| t.as_millis() >= 28 * 60_000)
        .map(|(t, _)| t.as_millis())
        .collect();
    let crashes = [
        28 * 60_000u64,
        28 * 60_000 + 40_000,
        28 * 60_000 + 80_000,
        28 * 60_000 + 120_000,
    ];
    let delays: Vec<u64> = starts.iter().zip(crashes).map(|(s, c)| s - c).collect();
    assert_eq!(delays.len(), 4, "web-1 flap recoveries: {starts:?}");
    assert!(
        delays.windows(2).skip(1).all(|w| w[1] > w[0]),
        "no back-off while flapping: {delays:?}"
    );
}

#[test]
fn every_example_parses_and_passes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        if text
            .lines()
            .any(|l| l.trim_start().starts_with("backend =") || l.starts_with("drd ="))
        {
            continue; // a daemon's or an agent's configuration, not a scenario
        }
        let scenario = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let report = dr_sim::run(&scenario).expect("runs");
        assert!(
            report.verdict.ok,
            "{}: {:?}",
            path.display(),
            report.verdict
        );
        seen += 1;
    }
    assert!(seen >= 2, "examples/ holds the seed and random scenarios");
}
