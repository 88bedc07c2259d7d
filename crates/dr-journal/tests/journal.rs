//! The journal across reopenings (what a daemon restart sees) and its errors.

use dr_journal::{Intent, Journal, JournalError, Outcome, Store};
use std::path::PathBuf;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("dr-journal-{tag}-{}", std::process::id()));
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

fn intent(vm: &str, action: &str) -> Intent {
    Intent {
        vm: vm.into(),
        action: action.into(),
        from_host: Some("esx-1".into()),
        to_host: Some("esx-2".into()),
        started_ms: 1_000,
    }
}

#[test]
fn an_intent_not_ended_is_open_after_a_restart_and_ended_ones_are_not() {
    let d = Dir::new("restart");
    let path = d.0.join("journal.redb");
    let (a, b) = {
        let j = Journal::open(&path).expect("open");
        let a = j
            .begin(&intent("web-1", "restore_elsewhere"))
            .expect("begin");
        let b = j.begin(&intent("db-1", "restart_in_place")).expect("begin");
        j.end(b, Outcome::Succeeded, 2_000).expect("end");
        (a, b)
        // Dropped without ending `a`: a daemon that died mid-recovery.
    };
    let j = Journal::open(&path).expect("reopen");
    let open = j.open_intents().expect("open intents").entries;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, a);
    assert_eq!(open[0].intent, intent("web-1", "restore_elsewhere"));
    assert_eq!(open[0].outcome, None);
    let recent = j.recent(10).expect("recent");
    assert_eq!(recent.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b, a]);
    assert_eq!(recent[0].outcome, Some(Outcome::Succeeded));
    assert_eq!(recent[0].ended_ms, Some(2_000));
    // Resolving it after the restart closes it for good.
    let why = "found open after a restart; the VM runs on esx-2".to_string();
    j.end(a, Outcome::Abandoned { why: why.clone() }, 3_000)
        .expect("end");
    drop(j);
    let j = Journal::open(&path).expect("reopen");
    assert!(j.open_intents().expect("open").entries.is_empty());
    let recent = j.recent(10).expect("recent");
    let a_now = recent.iter().find(|e| e.id == a).expect("entry a");
    assert_eq!(a_now.outcome, Some(Outcome::Abandoned { why }));
    assert_eq!(a_now.ended_ms, Some(3_000));
    // Ids keep increasing across restarts.
    let c = j
        .begin(&intent("web-1", "restart_in_place"))
        .expect("begin");
    assert!(c > b && c > a);
}

#[test]
fn ending_twice_or_an_unknown_entry_is_an_error() {
    let d = Dir::new("errors");
    let j = Journal::open(&d.0.join("j.redb")).expect("open");
    let id = j.begin(&intent("vm", "revert_snapshot")).expect("begin");
    j.end(
        id,
        Outcome::Failed {
            error: "timeout".into(),
        },
        5,
    )
    .expect("end");
    assert!(matches!(
        j.end(id, Outcome::Succeeded, 6),
        Err(JournalError::AlreadyEnded(x)) if x == id
    ));
    assert!(matches!(
        j.end(99, Outcome::Succeeded, 6),
        Err(JournalError::Unknown(99))
    ));
}

#[test]
fn prune_keeps_the_newest_ended_and_every_open_entry() {
    let d = Dir::new("prune");
    let j = Journal::open(&d.0.join("j.redb")).expect("open");
    let first_open = j
        .begin(&intent("vm-0", "restore_elsewhere"))
        .expect("begin");
    let mut ended = Vec::new();
    for i in 1..=10 {
        let id = j
            .begin(&intent(&format!("vm-{i}"), "restart_in_place"))
            .expect("begin");
        j.end(id, Outcome::Succeeded, i).expect("end");
        ended.push(id);
    }
    assert_eq!(j.prune(3).expect("prune"), 7);
    assert_eq!(j.len().expect("len"), 4);
    let left: Vec<u64> = j
        .recent(100)
        .expect("recent")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, vec![ended[9], ended[8], ended[7], first_open]);
    assert_eq!(j.open_intents().expect("open").entries[0].id, first_open);
}

#[test]
fn a_file_that_is_not_a_journal_is_refused_by_name_and_left_alone() {
    let d = Dir::new("garbage");
    let path = d.0.join("not-a-journal.redb");
    let garbage = b"this is a text file, not a redb database\n".repeat(100);
    std::fs::write(&path, &garbage).expect("write");
    let err = Journal::open(&path).expect_err("garbage");
    assert!(err.to_string().contains("not-a-journal.redb"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "the file was changed"
    );
}

/// Run by the test below in a child process (this test binary, re-run):
/// begins an intent, says so, and waits to be killed.
#[test]
fn child_begins_and_waits_to_be_killed() {
    let Ok(path) = std::env::var("DR_JOURNAL_CHILD") else {
        return;
    };
    let j = Journal::open(std::path::Path::new(&path)).expect("open");
    let id = j
        .begin(&intent("web-1", "restore_elsewhere"))
        .expect("begin");
    println!("begun {id}");
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn a_process_killed_right_after_begin_leaves_its_intent_open() {
    use std::io::{BufRead, BufReader};
    let d = Dir::new("sigkill");
    let path = d.0.join("journal.redb");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_begins_and_waits_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DR_JOURNAL_CHILD", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child");
    let mut id = None;
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("line");
        // libtest may print the test's name on the same line first.
        if let Some((_, n)) = line.split_once("begun ") {
            id = Some(n.trim().parse::<u64>().expect("id"));
            break;
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let id = id.expect("the child began an intent");
    let j = Journal::open(&path).expect("reopen after SIGKILL");
    let open = j.open_intents().expect("open").entries;
    assert_eq!(open.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);
}

#[test]
fn the_address_map_survives_a_restart_and_is_replaced_whole() {
    let d = Dir::new("addresses");
    let path = d.0.join("j.redb");
    {
        let j = Journal::open(&path).expect("open");
        j.save_addresses(&[
            ("web-1".into(), "10.0.0.1".into()),
            ("db-1".into(), "10.0.0.2".into()),
        ])
        .expect("save");
    }
    let j = Journal::open(&path).expect("reopen");
    assert_eq!(
        j.addresses().expect("read"),
        vec![
            ("db-1".to_owned(), "10.0.0.2".to_owned()),
            ("web-1".to_owned(), "10.0.0.1".to_owned())
        ]
    );
    j.save_addresses(&[("web-1".into(), "10.0.0.9".into())])
        .expect("save");
    assert_eq!(
        j.addresses().expect("read"),
        vec![("web-1".to_owned(), "10.0.0.9".to_owned())]
    );
}

#[test]
fn the_redb_journal_passes_the_journal_conformance_suite() {
    let d = Dir::new("conformance");
    let j = Journal::open(&d.0.join("j.redb")).expect("open");
    dr_conformance::journal::run_all(&j);
}

#[test]
fn an_unreadable_open_entry_is_reported_with_its_key_and_vm_not_dropped() {
    let d = Dir::new("damaged");
    let path = d.0.join("j.redb");
    let id = {
        let j = Journal::open(&path).expect("open");
        let id = j
            .begin(&intent("web-1", "restore_elsewhere"))
            .expect("begin");
        j.begin(&intent("db-1", "power_on")).expect("begin");
        id
    };
    // Damage entry `id` in place: still JSON, naming its VM, but its
    // outcome is not one.
    {
        let db = redb::Database::open(&path).expect("redb");
        let txn = db.begin_write().expect("write");
        {
            let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("entries");
            let mut t = txn.open_table(table).expect("entries");
            let bad =
                format!(r#"{{"id":{id},"intent":{{"vm":"web-1"}},"outcome":7,"ended_ms":null}}"#);
            t.insert(id, bad.as_bytes()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let j = Journal::open(&path).expect("reopen");
    let open = j.open_intents().expect("open intents");
    assert_eq!(open.entries.len(), 1, "the readable one is still there");
    assert_eq!(open.entries[0].intent.vm, "db-1");
    assert_eq!(open.damaged.len(), 1);
    assert_eq!(open.damaged[0].key, format!("entries/{id}"));
    assert_eq!(open.damaged[0].vm.as_deref(), Some("web-1"));
    assert!(!open.damaged[0].reason.is_empty());
}
