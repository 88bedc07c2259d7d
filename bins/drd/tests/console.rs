//! The operators' console in a real browser: drd on the embedded simulated
//! datacenter (tests/fixtures/console.toml) serves it, headless Chromium
//! shows it. Checked: every VM listed with its state; a crashed VM and one
//! whose host died turn down or recovering, then healthy, live (no
//! reload); a VM a person stopped shows so; a command without the token is
//! refused and with it works; a VM's page shows its timeline and outage;
//! nothing in the browser's console. Screenshots go under
//! `target/tmp/console/`.

mod common;

use common::browser::{chromium_or_skip, Browser};
use common::{Daemon, Dir, TOKEN};
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(40);

/// Records, per tile, every state it shows (tiles redrawn included), and
/// marks the document so a reload would show.
const RECORDER: &str = r#"
(() => {
  window.__seen = {};
  window.__loaded_once = true;
  const note = (el) => {
    const list = (window.__seen[el.dataset.vm] ??= []);
    if (list.at(-1) !== el.dataset.state) list.push(el.dataset.state);
  };
  document.querySelectorAll('#sites [data-vm]').forEach(note);
  new MutationObserver((changes) => {
    for (const c of changes) {
      if (c.type === 'attributes' && c.target.dataset?.vm) note(c.target);
      for (const n of c.addedNodes ?? []) {
        if (n.nodeType !== 1) continue;
        if (n.dataset?.vm) note(n);
        n.querySelectorAll?.('[data-vm]').forEach(note);
      }
    }
  }).observe(document.getElementById('sites'), {
    subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'],
  });
  return true;
})()
"#;

fn tile_state(vm: &str) -> String {
    format!("document.querySelector('#sites [data-vm=\"{vm}\"]')?.dataset.state")
}

/// The states `vm`'s tile showed, in order.
fn seen(page: &mut common::browser::Page, vm: &str) -> Vec<String> {
    let v = page.eval(&format!("JSON.stringify(window.__seen['{vm}'] ?? [])"));
    serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap_or_default()
}

/// Whether `want` appear in `states` in this order (others between).
fn in_order(states: &[String], want: &[&str]) -> bool {
    let mut it = states.iter();
    want.iter().all(|w| it.any(|s| s == w))
}

/// Clicks `button` on the VM page, confirms, and waits for the result.
fn run_command(page: &mut common::browser::Page, button: &str, expect: &str) -> String {
    page.eval(&format!(
        "document.getElementById('{button}').click(); true"
    ));
    page.wait_for(
        "the confirmation",
        "document.getElementById('confirm').open",
        LIMIT,
    );
    page.eval("document.getElementById('confirm-ok').click(); true");
    let text = page.wait_for(
        &format!("the command's result ({expect})"),
        &format!(
            "(() => {{ const t = document.getElementById('cmd-result')?.innerText ?? ''; return t.includes('{expect}') && t; }})()"
        ),
        LIMIT,
    );
    text.as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_console_shows_outages_live_and_runs_commands_with_the_token() {
    let Some(chromium) = chromium_or_skip("the console's browser test") else {
        return;
    };
    let dir = Dir::new("console");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/console.toml");
    let config = common::write_config_on(
        &dir.0,
        &format!("scenario = \"{}\"", fixture.display()),
        "200ms",
    );
    let mut daemon = Daemon::start(&config);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    let mut browser = Browser::launch(&chromium, &dir.0);
    let page = &mut browser.page;
    page.goto(&format!("http://{}/", daemon.addr));

    // Every VM listed, healthy before the faults (10 s after drd's start).
    let vms = ["db-1", "user-off", "erp-1", "app-1"];
    let all_healthy = vms
        .iter()
        .map(|vm| format!("{} === 'healthy'", tile_state(vm)))
        .collect::<Vec<_>>()
        .join(" && ");
    page.wait_for("every VM shown healthy", &all_healthy, LIMIT);
    assert_eq!(
        page.eval("document.querySelectorAll('#sites [data-vm]').length"),
        4,
        "one tile per VM"
    );
    let sites =
        page.eval("[...document.querySelectorAll('.site > h3')].map(h => h.textContent).join(',')");
    assert_eq!(sites, "Site primary,Site dr", "hosts grouped by site");
    page.eval(RECORDER);

    // The faults, live: a crash, a person's power-off, a host lost for good.
    page.wait_for(
        "db-1 and erp-1 back, user-off shown stopped by a person",
        &format!(
            "{} === 'user_stopped' && (window.__seen['db-1'] ?? []).length > 2 && {} === 'healthy' && (window.__seen['erp-1'] ?? []).length > 2 && {} === 'healthy'",
            tile_state("user-off"),
            tile_state("db-1"),
            tile_state("erp-1")
        ),
        LIMIT,
    );
    let db = seen(page, "db-1");
    assert!(
        in_order(&db, &["healthy", "recovering", "healthy"]),
        "db-1 showed {db:?}"
    );
    let erp = seen(page, "erp-1");
    assert!(
        in_order(&erp, &["healthy", "down", "recovering", "healthy"]),
        "erp-1 (its host died) showed {erp:?}"
    );
    assert_eq!(seen(page, "user-off"), ["healthy", "user_stopped"]);
    assert_eq!(
        page.eval("window.__loaded_once === true"),
        true,
        "no reload"
    );
    let erp_host = page.eval(
        "document.querySelector('#sites [data-vm=\"erp-1\"]').closest('[data-host]').dataset.host",
    );
    assert_ne!(erp_host, "esx-3", "erp-1's tile moved with it");
    let chip = page.eval("document.querySelector('[data-count=\"user_stopped\"]')?.textContent");
    assert_eq!(chip, "1", "the counts follow");
    page.screenshot(&shots.join("overview.png"));

    // The filter by state and by name.
    page.eval("document.querySelector('#counts [data-state=\"user_stopped\"]').click(); true");
    let shown = page.eval("[...document.querySelectorAll('#sites [data-vm]:not([hidden])')].map(t => t.dataset.vm).join(',')");
    assert_eq!(shown, "user-off");
    page.eval("document.querySelector('#counts [data-state=\"\"]').click(); { const f = document.getElementById('filter'); f.value = 'db'; f.dispatchEvent(new Event('input')); } true");
    let shown = page.eval("[...document.querySelectorAll('#sites [data-vm]:not([hidden])')].map(t => t.dataset.vm).join(',')");
    assert_eq!(shown, "db-1");
    page.eval("{ const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); } true");

    // A VM's page: its timeline (observation, decision, action with its
    // outcome and duration) and its outage with its RTO.
    page.eval("location.hash = '#/vm/db-1'; true");
    page.wait_for(
        "db-1's timeline",
        "document.getElementById('vm-title').textContent === 'db-1' && (() => { const t = document.querySelector('#vm-body .timeline')?.innerText ?? ''; return t.includes('recovery succeeded') && t.includes('Power on in') && t.includes('decision'); })()",
        LIMIT,
    );
    let outage = page.wait_for(
        "db-1's outage with its RTO",
        "(() => { const r = document.querySelector('#vm-body table:not(.timeline) tbody tr'); return r && !r.innerText.includes('not back yet') && r.innerText; })()",
        LIMIT,
    );
    assert!(
        outage.as_str().unwrap_or_default().contains("Power on"),
        "{outage}"
    );
    page.screenshot(&shots.join("vm-db-1.png"));

    // Commands: refused without the token, done with it.
    page.eval("location.hash = '#/vm/app-1'; true");
    page.wait_for(
        "app-1's page",
        "document.getElementById('vm-title').textContent === 'app-1' && document.querySelector('#vm-body .facts') && document.getElementById('cmd-pause')",
        LIMIT,
    );
    let refused = run_command(page, "cmd-pause", "Refused");
    assert!(refused.contains("token"), "{refused}");
    assert_eq!(daemon.json("/api/v1/vms")[3]["paused"], false);
    page.eval(&format!(
        "{{ const t = document.getElementById('token'); t.value = '{TOKEN}'; t.dispatchEvent(new Event('input')); }} true"
    ));
    run_command(page, "cmd-pause", "Automation paused.");
    page.wait_for(
        "app-1 shown paused",
        &format!("{} === 'paused'", tile_state("app-1")),
        LIMIT,
    );
    let paused = daemon.json("/api/v1/vms");
    let app = paused
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == "app-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(app["paused"], true, "{app}");
    assert_eq!(app["state"], "paused");
    page.wait_for(
        "the resume button",
        "document.getElementById('cmd-resume')",
        LIMIT,
    );
    run_command(page, "cmd-resume", "Automation resumed.");
    page.wait_for(
        "app-1 shown healthy again",
        &format!("{} === 'healthy'", tile_state("app-1")),
        LIMIT,
    );

    // By keyboard: Enter on a focused tile opens its VM; Escape closes a
    // command's confirmation without sending it.
    page.eval("location.hash = '#/'; true");
    page.wait_for(
        "the overview again",
        "!document.getElementById('overview').hidden",
        LIMIT,
    );
    page.eval("document.querySelector('#sites [data-vm=\"db-1\"]').focus(); true");
    page.press("Enter");
    page.wait_for(
        "db-1's page by keyboard",
        "location.hash === '#/vm/db-1' && document.getElementById('vm-title').textContent === 'db-1' && document.getElementById('cmd-failover')",
        LIMIT,
    );
    page.eval("document.getElementById('cmd-failover').focus(); true");
    page.press("Enter");
    page.wait_for(
        "the confirmation by keyboard",
        "document.getElementById('confirm').open",
        LIMIT,
    );
    assert_eq!(
        page.eval("document.activeElement.id"),
        "confirm-cancel",
        "the safe choice has the focus"
    );
    page.press("Escape");
    page.wait_for(
        "the confirmation closed",
        "!document.getElementById('confirm').open",
        LIMIT,
    );
    assert_eq!(
        page.eval("document.getElementById('cmd-result').innerText"),
        "",
        "nothing sent"
    );

    // Activity: the recoveries with their durations.
    page.eval("location.hash = '#/activity'; true");
    page.wait_for(
        "the recent recoveries",
        "(() => { const t = document.getElementById('recent').innerText; return t.includes('db-1') && t.includes('erp-1') && t.includes('succeeded'); })()",
        LIMIT,
    );
    page.screenshot(&shots.join("activity.png"));

    // The one refusal asked for is logged by Chromium as a failed load;
    // nothing else may be there.
    let refusal = "status of 401 (Unauthorized) http://";
    let (refusals, others): (Vec<&String>, Vec<&String>) = page
        .problems
        .iter()
        .partition(|p| p.contains(refusal) && p.ends_with("/api/v1/vms/app-1/pause"));
    assert_eq!(refusals.len(), 1, "{:#?}", page.problems);
    assert!(
        others.is_empty(),
        "the browser's console reported: {others:#?}"
    );
    drop(browser);
    daemon.terminate_within(Duration::from_secs(15), "after the console test");
}

/// A replicated VM's page lists the checkpoints of its replica this drd
/// receives, newest first, and fails the VM over to an older one (from
/// before its disk was damaged): confirmed, with the token, the disk comes
/// back as it was at that point.
#[test]
fn a_vms_page_lists_its_checkpoints_and_fails_over_to_an_older_one() {
    let Some(chromium) = chromium_or_skip("the console's checkpoints test") else {
        return;
    };
    let before: Vec<u8> = (0..(1u32 << 20)).map(|i| (i / 512) as u8 ^ 0x3C).collect();
    let (dir, config, [a, _]) = common::shipping_and_receiving(
        "console-points",
        &before,
        1000,
        "a replication key for the console",
    );
    let mut daemon = Daemon::start(&config);
    let acked = |d: &Daemon| {
        d.metric(&format!(
            "vmdr_replication_checkpoint{{vm=\"app-1\",target=\"127.0.0.1:{a}\"}}"
        ))
        .unwrap_or(0.0) as u64
    };
    daemon.wait_for(LIMIT, "a checkpoint on dr-a", |d| acked(d) >= 1);
    let old_id = daemon.json("/api/v1/vms/app-1/checkpoints")["checkpoints"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c["id"].as_u64())
        .expect("a checkpoint listed");
    // The disk is damaged; the replicas get that too.
    let mut after = before.clone();
    after[4096..65536].fill(0xEE);
    std::fs::write(dir.0.join("app-1.img"), &after).expect("disk");
    daemon.wait_for(LIMIT, "newer checkpoints on dr-a", |d| {
        acked(d) >= old_id + 2
    });

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    let mut browser = Browser::launch(&chromium, &dir.0);
    let page = &mut browser.page;
    page.goto(&format!("http://{}/#/vm/app-1", daemon.addr));
    let rows = page.wait_for(
        "the replica's checkpoints, newest first",
        &format!(
            "(() => {{ const b = [...document.querySelectorAll('#vm-body .cmd-point')].map(b => Number(b.dataset.id)); return b.length >= 3 && b.includes({old_id}) && JSON.stringify(b); }})()"
        ),
        LIMIT,
    );
    let ids: Vec<u64> = serde_json::from_str(rows.as_str().unwrap_or("[]")).expect("ids");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert!(ids[0] > old_id, "{ids:?}");
    page.screenshot(&shots.join("vm-app-1-checkpoints.png"));

    page.eval(&format!(
        "{{ const t = document.getElementById('token'); t.value = '{TOKEN}'; t.dispatchEvent(new Event('input')); }} true"
    ));
    page.eval(&format!(
        "document.querySelector('#vm-body .cmd-point[data-id=\"{old_id}\"]').click(); true"
    ));
    let title = page.wait_for(
        "the confirmation",
        "document.getElementById('confirm').open && document.getElementById('confirm-title').textContent",
        LIMIT,
    );
    assert_eq!(
        title.as_str().unwrap_or_default(),
        format!("Fail app-1 over to checkpoint {old_id}?")
    );
    page.eval("document.getElementById('confirm-ok').click(); true");
    let done = page.wait_for(
        "the failover's result",
        "(() => { const t = document.getElementById('cmd-result')?.innerText ?? ''; return (t.includes('Failed over') || t.includes('Not done')) && t; })()",
        LIMIT,
    );
    let done = done.as_str().unwrap_or_default().to_owned();
    assert!(
        done.contains(&format!("as of checkpoint {old_id}")),
        "{done}"
    );
    let restored = std::fs::read(dir.0.join("dr-site/app-1.img")).expect("the restored disk");
    assert!(
        restored == before,
        "the restored disk is not the disk as it was at checkpoint {old_id}"
    );
    assert!(
        page.problems.is_empty(),
        "the browser's console reported: {:#?}",
        page.problems
    );
    drop(browser);
    daemon.terminate_within(Duration::from_secs(15), "after the checkpoints test");
}
