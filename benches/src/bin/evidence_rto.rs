//! The price of never running a VM twice, as a number: how long a VM whose
//! host fails stays down, by the evidence its restore rests on, side by
//! side in one run on the simulation (virtual time: the figures are exact
//! and the same on every machine).
//!
//! Cases, each over `runs` fault instants spread across a probe interval:
//! - `trusted`: the host dies; no agent, its site trusts silence (vmdr's
//!   behaviour before evidence, and a double run when a host is only cut
//!   off);
//! - `fenced`: the host is powered off out of band (the manager says so);
//! - `fenced (device)`: the host is only cut off (from vmdr and its
//!   manager, its VMs running); no agent, but a fence device (an off in
//!   3 s) that vmdr runs once the host is lost;
//! - `deadline`: the host dies; its agent's promise runs out;
//! - `self_fenced`: the host is isolated; its agent destroys its VMs and
//!   says so on storage;
//! - `deadline (isolated)`: isolated and its storage lost too: nothing said,
//!   the agent's deadline decides.
//!
//! RTO is measured from the fault to the VM running on another host. The
//! goal for self-fencing: RTO ≤ isolation timeout + 2 probe intervals + the
//! restore itself.
//!
//! `cargo run --release -p dr-benches --bin evidence-rto -- [runs]`

use dr_control::{Action, ControlEvent};
use dr_sim::report::Record;
use dr_sim::Scenario;

const ISOLATION_TIMEOUT_S: f64 = 30.0;
const PROBE_INTERVAL_S: f64 = 1.0;
const RESTORE_S: f64 = 30.0;

/// One host failure at `at_ms`: `agent` and `site_policy` lines for the
/// failing host's site, `faults` the TOML of the fault(s) on esx-1.
fn scenario(at_ms: u64, agent: &str, site_policy: &str, faults: &str) -> String {
    format!(
        r#"name = "evidence rto"
seed = 1
duration = "6m"
[control]
probe_interval = "1s"
probe_timeout = "500ms"
inventory_interval = "10s"
[latency]
restore_replica = "30s"
[policy]
failure_threshold = 3
host_down_after = "15s"
{site_policy}
[[site]]
name = "a"
[[host]]
name = "esx-1"
site = "a"
ip = "10.0.1.1"
{agent}
[[host]]
name = "esx-2"
site = "a"
ip = "10.0.1.2"
agent = {{}}
[[vm]]
name = "vm"
ip = "10.1.0.1"
host = "esx-1"
replica = true
{}"#,
        faults.replace("AT", &format!("{at_ms}ms"))
    )
}

fn fault(kind: &str) -> String {
    format!("[[fault]]\nat = \"AT\"\nkind = \"{kind}\"\nhost = \"esx-1\"\n")
}

/// Seconds from the fault to the VM restored elsewhere.
fn rto(text: &str, at_ms: u64) -> f64 {
    let report = dr_sim::run(&Scenario::parse(text).expect("scenario")).expect("runs");
    assert_eq!(report.verdict.double_runs, 0, "{:?}", report.verdict);
    let done = report
        .records
        .iter()
        .find_map(|(t, rec)| match rec {
            Record::Control(ControlEvent::ActionFinished {
                action: Action::Restore { .. },
                ok: true,
                ..
            }) => Some(t.as_millis()),
            _ => None,
        })
        .expect("the VM was restored");
    (done - at_ms) as f64 / 1000.0
}

fn main() {
    let runs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20)
        .max(1);
    let trust = "[policy.sites.a]\ntrust_unreachable = true";
    let agent = "agent = { isolation_timeout = \"30s\" }";
    let crash = fault("host_crash");
    let isolated = fault("host_isolation");
    let isolated_no_storage = format!("{isolated}{}", fault("storage_loss"));
    let cut = format!("{}{}", fault("host_partition"), fault("host_mgmt_loss"));
    let cases: [(&str, &str, &str, &str); 6] = [
        ("trusted", "", trust, &crash),
        ("fenced", agent, "", &fault("host_poweroff")),
        ("fenced (device)", "fence = { delay = \"3s\" }", "", &cut),
        ("deadline", agent, "", &crash),
        ("self_fenced", agent, "", &isolated),
        ("deadline (isolated)", agent, "", &isolated_no_storage),
    ];
    println!(
        "RTO from a host's failure to its VM running on another host ({runs} runs each, \
         faults spread over a probe interval; isolation timeout {ISOLATION_TIMEOUT_S} s, \
         probe interval {PROBE_INTERVAL_S} s, restore {RESTORE_S} s)"
    );
    println!(
        "{:<22}{:>10}{:>10}{:>10}",
        "evidence", "min s", "median s", "max s"
    );
    let goal = ISOLATION_TIMEOUT_S + 2.0 * PROBE_INTERVAL_S + RESTORE_S;
    for (name, agent, site, faults) in cases {
        let mut rtos: Vec<f64> = (0..runs)
            .map(|i| {
                let at = 60_000 + i * 1000 / runs;
                rto(&scenario(at, agent, site, faults), at)
            })
            .collect();
        rtos.sort_by(f64::total_cmp);
        let (min, med, max) = (rtos[0], rtos[rtos.len() / 2], rtos[rtos.len() - 1]);
        let verdict = if name.starts_with("self_fenced") || name.starts_with("deadline") {
            if max <= goal {
                format!("  goal ≤ {goal:.1} s: met")
            } else {
                format!("  goal ≤ {goal:.1} s: MISSED by {:.2} s", max - goal)
            }
        } else {
            String::new()
        };
        println!("{name:<22}{min:>10.2}{med:>10.2}{max:>10.2}{verdict}");
    }
}
