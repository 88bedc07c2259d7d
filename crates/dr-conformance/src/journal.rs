//! The contract of a recovery journal ([`dr_journal::Store`]): what the
//! daemon relies on whichever store holds it (one daemon's redb file, a
//! cluster's etcd).
//!
//! Call [`run_all`] on an empty store. It is synchronous, like the port:
//! call it off an async runtime's threads.

use dr_journal::{Intent, JournalError, Outcome, Store};

fn intent(vm: &str, action: &str, at: u64) -> Intent {
    Intent {
        vm: vm.into(),
        action: action.into(),
        from_host: Some("h1".into()),
        to_host: Some("h2".into()),
        started_ms: at,
    }
}

/// Every rule below, in order, on one empty store.
pub fn run_all(store: &dyn Store) {
    an_empty_store_has_nothing_open(store);
    begun_entries_are_open_until_they_end(store);
    ending_twice_or_an_unknown_entry_is_refused(store);
    recent_lists_the_newest_first_with_their_outcomes(store);
    the_address_map_is_replaced_whole(store);
    pauses_are_kept_until_resumed(store);
}

/// Nothing open, nothing recent, no addresses.
pub fn an_empty_store_has_nothing_open(store: &dyn Store) {
    let open = store
        .open_intents()
        .expect("open intents of an empty store");
    assert!(
        open.entries.is_empty() && open.damaged.is_empty(),
        "{open:?}"
    );
    assert!(store.recent(10).expect("recent").is_empty());
    assert!(store.addresses().expect("addresses").is_empty());
}

/// An intent is open from `begin` until `end`, ids increase, and what was
/// begun is what is read back.
pub fn begun_entries_are_open_until_they_end(store: &dyn Store) {
    let a = store
        .begin(&intent("web-1", "restore_elsewhere", 1_000))
        .expect("begin a");
    let b = store
        .begin(&intent("db-1", "restart_in_place", 1_100))
        .expect("begin b");
    assert!(b > a, "ids must increase: {a} then {b}");
    let open = store.open_intents().expect("open intents").entries;
    assert_eq!(
        open.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a, b],
        "open, oldest first"
    );
    assert_eq!(open[0].intent, intent("web-1", "restore_elsewhere", 1_000));
    assert_eq!(open[0].outcome, None);
    let ended = store.end(b, Outcome::Succeeded, 2_000).expect("end b");
    assert_eq!(ended.outcome, Some(Outcome::Succeeded));
    assert_eq!(ended.ended_ms, Some(2_000));
    let open = store.open_intents().expect("open intents").entries;
    assert_eq!(open.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a]);
    store
        .end(
            a,
            Outcome::Abandoned {
                why: "interrupted".into(),
            },
            2_100,
        )
        .expect("end a");
    assert!(store.open_intents().expect("open").entries.is_empty());
    let c = store
        .begin(&intent("web-1", "power_on", 3_000))
        .expect("begin c");
    assert!(c > b, "ids keep increasing: {b} then {c}");
    store.end(c, Outcome::Succeeded, 3_100).expect("end c");
}

/// An entry ends once; an id never begun does not end.
pub fn ending_twice_or_an_unknown_entry_is_refused(store: &dyn Store) {
    let id = store
        .begin(&intent("vm", "revert_snapshot", 4_000))
        .expect("begin");
    store
        .end(
            id,
            Outcome::Failed {
                error: "timeout".into(),
            },
            4_100,
        )
        .expect("end");
    match store.end(id, Outcome::Succeeded, 4_200) {
        Err(JournalError::AlreadyEnded(x)) if x == id => {}
        other => panic!("ending {id} twice gave {other:?}"),
    }
    let unknown = id + 1_000;
    match store.end(unknown, Outcome::Succeeded, 4_200) {
        Err(JournalError::Unknown(x)) if x == unknown => {}
        other => panic!("ending unknown {unknown} gave {other:?}"),
    }
}

/// `recent` is newest first, limited, with outcomes and end times.
pub fn recent_lists_the_newest_first_with_their_outcomes(store: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = store
            .begin(&intent(&format!("r-{i}"), "power_on", 5_000 + i))
            .expect("begin");
        store.end(id, Outcome::Succeeded, 6_000 + i).expect("end");
        ids.push(id);
    }
    let recent = store.recent(3).expect("recent");
    assert_eq!(
        recent.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3], ids[2]],
        "the newest three, newest first"
    );
    assert_eq!(recent[0].intent.vm, "r-4");
    assert_eq!(recent[0].ended_ms, Some(6_004));
}

/// Saving addresses replaces the stored map (a VM gone is gone).
pub fn the_address_map_is_replaced_whole(store: &dyn Store) {
    store
        .save_addresses(&[
            ("web-1".into(), "10.0.0.1".into()),
            ("db-1".into(), "10.0.0.2".into()),
        ])
        .expect("save");
    let mut got = store.addresses().expect("addresses");
    got.sort();
    assert_eq!(
        got,
        vec![
            ("db-1".to_string(), "10.0.0.2".to_string()),
            ("web-1".to_string(), "10.0.0.1".to_string())
        ]
    );
    store
        .save_addresses(&[("web-1".into(), "10.0.0.9".into())])
        .expect("save again");
    assert_eq!(
        store.addresses().expect("addresses"),
        vec![("web-1".to_string(), "10.0.0.9".to_string())]
    );
}

/// A pause is stored until resumed; pausing twice or resuming a VM not
/// paused changes nothing.
pub fn pauses_are_kept_until_resumed(store: &dyn Store) {
    assert!(store.paused().expect("paused").is_empty());
    store.set_paused("web-1", true).expect("pause");
    store.set_paused("db-1", true).expect("pause");
    store.set_paused("web-1", true).expect("pause again");
    assert_eq!(store.paused().expect("paused"), vec!["db-1", "web-1"]);
    store.set_paused("web-1", false).expect("resume");
    store
        .set_paused("nope", false)
        .expect("resume a VM not paused");
    assert_eq!(store.paused().expect("paused"), vec!["db-1"]);
    store.set_paused("db-1", false).expect("resume");
}
