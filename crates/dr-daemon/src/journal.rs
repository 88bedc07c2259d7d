//! The control loop's journal port over `dr-journal`, and what the daemon
//! does at start with recoveries a previous run left open.

use dr_control::executor::Action;
use dr_control::RecoveryJournal;
use dr_core::Timestamp;
use dr_journal::{Intent, Outcome, Store};
use std::sync::Arc;

/// The daemon's journal (a `dr_journal::Store`) as the control loop's
/// [`RecoveryJournal`].
pub struct JournalPort(pub Arc<dyn Store>);

impl RecoveryJournal for JournalPort {
    fn begin(&self, action: &Action, at: Timestamp) -> Result<u64, String> {
        // Where the VM was and where it goes, not the host the action is
        // charged to (a restore's target): the journal is the audit trail.
        let (from, to) = action.hosts();
        self.0
            .begin(&Intent {
                vm: action.vm().to_owned(),
                action: action.kind().to_owned(),
                from_host: Some(from.to_owned()),
                to_host: Some(to.to_owned()),
                started_ms: at.0,
            })
            .map_err(|e| e.to_string())
    }

    fn end(&self, id: u64, error: Option<&str>, at: Timestamp) -> Result<(), String> {
        let outcome = match error {
            None => Outcome::Succeeded,
            Some(e) => Outcome::Failed {
                error: e.to_owned(),
            },
        };
        self.0
            .end(id, outcome, at.0)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Until when a recovery interrupted by the daemon's death (`entry`) may
/// still be running in the hypervisor: its start plus one attempt's
/// timeout, but never more than one timeout from `now` (an entry from
/// another timeline — the embedded simulation restarts at zero — cannot
/// hold a VM longer). `None` when that time has passed.
pub fn hold_until(
    entry: &dr_journal::Entry,
    now: Timestamp,
    action_timeout: std::time::Duration,
) -> Option<Timestamp> {
    let t = dr_core::time::millis(action_timeout);
    let until = entry
        .intent
        .started_ms
        .saturating_add(t)
        .min(now.0.saturating_add(t));
    (until > now.0).then_some(Timestamp(until))
}

/// Closes the recoveries a previous run left open (it died during them).
/// None is repeated blindly: each is marked abandoned, its VM is held (see
/// [`hold_until`]), and then decided afresh from the hypervisor's view,
/// where a VM that the interrupted operation did start shows as running
/// and so is never started again.
/// An entry that cannot be read is not guessed at: it is reported, left
/// open, and its VM (when its bytes still name one) is paused for a person.
/// Returns the entries closed and the damaged ones.
pub fn resolve_open(
    journal: &dyn Store,
    now_ms: u64,
) -> Result<Resolved, dr_journal::JournalError> {
    let mut closed = Vec::new();
    let open = journal.open_intents()?;
    for d in &open.damaged {
        tracing::error!(key = %d.key, vm = ?d.vm, reason = %d.reason, "an unreadable recovery in the journal: its VM is held for a person");
    }
    for entry in open.entries {
        tracing::warn!(
            entry = entry.id,
            vm = %entry.intent.vm,
            action = %entry.intent.action,
            "a recovery was under way when the daemon stopped; abandoning it, the next decision rests on the hypervisor's view"
        );
        closed.push(journal.end(
            entry.id,
            Outcome::Abandoned {
                why: "under way when the daemon stopped; decided afresh from the hypervisor's view once it would have timed out".into(),
            },
            now_ms,
        )?);
    }
    Ok(Resolved {
        closed,
        damaged: open.damaged,
    })
}

/// What [`resolve_open`] did.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The open entries it closed (abandoned).
    pub closed: Vec<dr_journal::Entry>,
    /// The open entries it could not read, left as they are.
    pub damaged: Vec<dr_journal::Damaged>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(started_ms: u64) -> dr_journal::Entry {
        dr_journal::Entry {
            id: 1,
            intent: Intent {
                vm: "db-1".into(),
                action: "power_on".into(),
                from_host: None,
                to_host: None,
                started_ms,
            },
            outcome: None,
            ended_ms: None,
        }
    }

    #[test]
    fn an_interrupted_recovery_holds_its_vm_for_what_is_left_of_its_timeout() {
        let t = Duration::from_secs(10);
        // Started 4 s ago: 6 s left.
        assert_eq!(
            hold_until(&entry(96_000), Timestamp(100_000), t),
            Some(Timestamp(106_000))
        );
        // Long over: no hold.
        assert_eq!(hold_until(&entry(50_000), Timestamp(100_000), t), None);
        // From another timeline (later than now): at most one timeout.
        assert_eq!(
            hold_until(&entry(500_000), Timestamp(1_000), t),
            Some(Timestamp(11_000))
        );
    }
}
