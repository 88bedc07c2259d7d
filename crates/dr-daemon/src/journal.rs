//! The control loop's journal port over `dr-journal`, and what the daemon
//! does at start with recoveries a previous run left open.

use dr_control::executor::Action;
use dr_control::RecoveryJournal;
use dr_core::Timestamp;
use dr_journal::{Intent, Journal, Outcome};
use std::sync::Arc;

/// `dr_journal::Journal` as the control loop's [`RecoveryJournal`].
pub struct JournalPort(pub Arc<Journal>);

impl RecoveryJournal for JournalPort {
    fn begin(&self, action: &Action, at: Timestamp) -> Result<u64, String> {
        let to_host = match action {
            Action::Restore { target, .. } => Some(target.clone()),
            Action::AddHostThenRestore { spare, .. } => Some(spare.clone()),
            _ => None,
        };
        self.0
            .begin(&Intent {
                vm: action.vm().to_owned(),
                action: action.kind().to_owned(),
                from_host: Some(action.charged_host().to_owned()),
                to_host,
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

/// Closes the recoveries a previous run left open (it died during them).
/// None is repeated blindly: each is marked abandoned, and the first tick
/// decides afresh from the hypervisor's view, where a VM that a half-done
/// restore did start shows as running and so is never started again.
/// Returns the entries closed.
pub fn resolve_open(
    journal: &Journal,
    now_ms: u64,
) -> Result<Vec<dr_journal::Entry>, dr_journal::JournalError> {
    let mut closed = Vec::new();
    for entry in journal.open_intents()? {
        tracing::warn!(
            entry = entry.id,
            vm = %entry.intent.vm,
            action = %entry.intent.action,
            "a recovery was under way when the daemon stopped; abandoning it, the next decision rests on the hypervisor's view"
        );
        closed.push(journal.end(
            entry.id,
            Outcome::Abandoned {
                why: "under way when the daemon stopped; decided afresh from the hypervisor's view".into(),
            },
            now_ms,
        )?);
    }
    Ok(closed)
}
