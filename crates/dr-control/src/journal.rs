//! The port through which recovery intents are recorded before they start
//! (the daemon's durable journal; the simulation needs none).

use crate::executor::Action;
use dr_core::Timestamp;

/// Records recoveries. Both calls may block on storage (an fsync): the loop
/// calls them off its async threads.
pub trait RecoveryJournal: Send + Sync {
    /// `action` is about to start: record it durably and return its id. An
    /// error means the action does not start (a recovery the journal cannot
    /// remember could be repeated after a crash).
    fn begin(&self, action: &Action, at: Timestamp) -> Result<u64, String>;

    /// The recovery `id` ended: `error` is `None` when it succeeded.
    fn end(&self, id: u64, error: Option<&str>, at: Timestamp) -> Result<(), String>;
}
