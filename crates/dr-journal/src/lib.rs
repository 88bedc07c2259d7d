//! The durable recovery journal of vmdr's daemon.
//!
//! Owns one thing: a record, safe across crashes, of every recovery the
//! daemon starts. An intent (which VM, which action, where) is committed and
//! fsynced **before** the action starts, and marked with its outcome when it
//! ends. After a crash, [`Journal::open_intents`] is exactly the set of
//! recoveries that may have been under way: the daemon resolves each one
//! against the hypervisor (finished, safe to retry, or to abandon) before it
//! acts again, so a VM is never started twice because of a restart.
//!
//! The daemon reaches it through [`Store`], which a cluster of daemons
//! implements over etcd (`dr-cluster`, fenced by the leader's epoch); this
//! crate's [`Journal`] is the single daemon's store: an embedded ACID store
//! (`redb`, one file).
//!
//! Must not know: decision rules, hypervisors, the control loop, etcd. It
//! stores what it is given.

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Entries by id: JSON of [`Entry`].
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// Ids of the entries not yet ended.
const OPEN: TableDefinition<u64, ()> = TableDefinition::new("open");
/// The last known address of every VM (the paper's name → IP map), kept
/// across restarts.
const ADDRESSES: TableDefinition<&str, &str> = TableDefinition::new("addresses");
/// The VMs an operator paused automation for.
const PAUSED: TableDefinition<&str, ()> = TableDefinition::new("paused");

/// A recovery about to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The VM it is for.
    pub vm: String,
    /// What will be done (`restart_in_place`, `restore_elsewhere`, …).
    pub action: String,
    /// The host the VM was on.
    pub from_host: Option<String>,
    /// The host it goes to, for actions that move it.
    pub to_host: Option<String>,
    /// When it was written, ms since the Unix epoch.
    pub started_ms: u64,
}

/// How a recovery ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// It did what it meant to.
    Succeeded,
    /// It failed; the engine may try again later.
    Failed {
        /// Why.
        error: String,
    },
    /// Given up without knowing it ran to its end (found open after a
    /// restart and judged unsafe to repeat, or cancelled).
    Abandoned {
        /// Why.
        why: String,
    },
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its id, increasing.
    pub id: u64,
    /// What was meant.
    pub intent: Intent,
    /// How it ended; `None` while open.
    pub outcome: Option<Outcome>,
    /// When it ended, ms since the Unix epoch.
    pub ended_ms: Option<u64>,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal file cannot be opened or created.
    #[error("cannot open journal {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store failed while doing `op`.
    #[error("journal {op} failed: {reason}")]
    Storage {
        /// What was being done.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// An entry's bytes are not an entry.
    #[error("journal entry {id} is unreadable: {reason}")]
    Corrupt {
        /// Its id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// No entry has this id.
    #[error("no journal entry {0}")]
    Unknown(u64),
    /// The entry has ended already.
    #[error("journal entry {0} has ended already")]
    AlreadyEnded(u64),
    /// This writer may no longer write: another one took over (a cluster's
    /// leader was deposed), so nothing it would start may be recorded.
    #[error("journal {op} refused: {reason}")]
    Fenced {
        /// What was being done.
        op: &'static str,
        /// Why this writer is fenced off.
        reason: String,
    },
}

/// An entry that cannot be read, found among the open ones: reported with
/// where it is stored and, when its bytes still say, the VM it was for (a
/// reader holds that VM for a person rather than guess what it meant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damaged {
    /// Where it is stored (a table and id, an etcd key).
    pub key: String,
    /// The VM it names, if that much is readable.
    pub vm: Option<String>,
    /// Why it cannot be read.
    pub reason: String,
}

/// What [`Store::open_intents`] finds: the entries begun and not ended,
/// oldest first, and those among them that cannot be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenIntents {
    /// Readable open entries, oldest first.
    pub entries: Vec<Entry>,
    /// Unreadable ones: never dropped in silence.
    pub damaged: Vec<Damaged>,
}

/// A recovery journal: where the daemon records every recovery before it
/// starts. Every call may block on storage or the network: call it off the
/// async threads. A write that returns `Ok` is durable.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Writes `intent` durably and returns its id (increasing). Call before
    /// the action starts; an error means it must not start.
    fn begin(&self, intent: &Intent) -> Result<u64, JournalError>;

    /// Marks entry `id` ended with `outcome` at `ended_ms`, durably.
    fn end(&self, id: u64, outcome: Outcome, ended_ms: u64) -> Result<Entry, JournalError>;

    /// Entries begun and not ended: after a restart or a takeover, the
    /// recoveries that may have been under way.
    fn open_intents(&self) -> Result<OpenIntents, JournalError>;

    /// The newest `limit` entries, newest first.
    fn recent(&self, limit: usize) -> Result<Vec<Entry>, JournalError>;

    /// Replaces the stored name → address map with `addresses`.
    fn save_addresses(&self, addresses: &[(String, String)]) -> Result<(), JournalError>;

    /// The stored name → address map.
    fn addresses(&self) -> Result<Vec<(String, String)>, JournalError>;

    /// Records that an operator paused (`true`) or resumed automation for
    /// `vm`: a pause outlives the daemon, and a cluster's leader.
    fn set_paused(&self, vm: &str, paused: bool) -> Result<(), JournalError>;

    /// The VMs paused now, in name order.
    fn paused(&self) -> Result<Vec<String>, JournalError>;
}

/// The VM an unreadable entry names, if its bytes are still JSON with an
/// `intent.vm` (a field of another type, a truncated record: not).
pub fn vm_of_damaged(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("intent")?.get("vm")?.as_str().map(str::to_owned)
}

fn storage<E: std::fmt::Display>(op: &'static str) -> impl FnOnce(E) -> JournalError {
    move |e| JournalError::Storage {
        op,
        reason: e.to_string(),
    }
}

/// An entry from its stored bytes, checked to be entry `id`.
pub fn decode(id: u64, bytes: &[u8]) -> Result<Entry, JournalError> {
    let entry: Entry = serde_json::from_slice(bytes).map_err(|e| JournalError::Corrupt {
        id,
        reason: e.to_string(),
    })?;
    if entry.id != id {
        return Err(JournalError::Corrupt {
            id,
            reason: format!("holds entry {}", entry.id),
        });
    }
    Ok(entry)
}

/// The journal: one redb file. Every write is committed durably (fsync)
/// before the call returns.
pub struct Journal {
    db: Database,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (or creates) the journal at `path`. redb recovers a file left
    /// by a crash to its last commit.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let db = Database::create(path).map_err(|e| JournalError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        // Both tables exist from the start, so readers never miss them.
        let txn = db.begin_write().map_err(storage("open"))?;
        {
            txn.open_table(ENTRIES).map_err(storage("open"))?;
            txn.open_table(OPEN).map_err(storage("open"))?;
            txn.open_table(ADDRESSES).map_err(storage("open"))?;
            txn.open_table(PAUSED).map_err(storage("open"))?;
        }
        txn.commit().map_err(storage("open"))?;
        Ok(Journal { db })
    }

    /// Removes ended entries beyond the newest `keep` of them (open ones
    /// always stay). Returns how many went.
    pub fn prune(&self, keep: usize) -> Result<usize, JournalError> {
        let txn = self.db.begin_write().map_err(storage("prune"))?;
        let removed = {
            let open = txn.open_table(OPEN).map_err(storage("prune"))?;
            let mut entries = txn.open_table(ENTRIES).map_err(storage("prune"))?;
            let mut ended = Vec::new();
            for row in entries.iter().map_err(storage("prune"))?.rev() {
                let id = row.map_err(storage("prune"))?.0.value();
                if open.get(id).map_err(storage("prune"))?.is_none() {
                    ended.push(id);
                }
            }
            let old: Vec<u64> = ended.into_iter().skip(keep).collect();
            for id in &old {
                entries.remove(*id).map_err(storage("prune"))?;
            }
            old.len()
        };
        txn.commit().map_err(storage("prune"))?;
        Ok(removed)
    }

    /// How many entries it holds.
    pub fn len(&self) -> Result<u64, JournalError> {
        let txn = self.db.begin_read().map_err(storage("read"))?;
        let entries = txn.open_table(ENTRIES).map_err(storage("read"))?;
        entries.len().map_err(storage("read"))
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> Result<bool, JournalError> {
        self.len().map(|n| n == 0)
    }
}

impl Store for Journal {
    fn begin(&self, intent: &Intent) -> Result<u64, JournalError> {
        let txn = self.db.begin_write().map_err(storage("begin"))?;
        let id = {
            let mut entries = txn.open_table(ENTRIES).map_err(storage("begin"))?;
            let id = entries
                .last()
                .map_err(storage("begin"))?
                .map_or(1, |(k, _)| k.value() + 1);
            let entry = Entry {
                id,
                intent: intent.clone(),
                outcome: None,
                ended_ms: None,
            };
            let bytes = serde_json::to_vec(&entry).map_err(storage("begin"))?;
            entries
                .insert(id, bytes.as_slice())
                .map_err(storage("begin"))?;
            txn.open_table(OPEN)
                .map_err(storage("begin"))?
                .insert(id, ())
                .map_err(storage("begin"))?;
            id
        };
        txn.commit().map_err(storage("begin"))?;
        Ok(id)
    }

    fn end(&self, id: u64, outcome: Outcome, ended_ms: u64) -> Result<Entry, JournalError> {
        let txn = self.db.begin_write().map_err(storage("end"))?;
        let entry = {
            let mut entries = txn.open_table(ENTRIES).map_err(storage("end"))?;
            let mut entry = match entries.get(id).map_err(storage("end"))? {
                Some(bytes) => decode(id, bytes.value())?,
                None => return Err(JournalError::Unknown(id)),
            };
            if entry.outcome.is_some() {
                return Err(JournalError::AlreadyEnded(id));
            }
            entry.outcome = Some(outcome);
            entry.ended_ms = Some(ended_ms);
            let bytes = serde_json::to_vec(&entry).map_err(storage("end"))?;
            entries
                .insert(id, bytes.as_slice())
                .map_err(storage("end"))?;
            txn.open_table(OPEN)
                .map_err(storage("end"))?
                .remove(id)
                .map_err(storage("end"))?;
            entry
        };
        txn.commit().map_err(storage("end"))?;
        Ok(entry)
    }

    fn open_intents(&self) -> Result<OpenIntents, JournalError> {
        let txn = self.db.begin_read().map_err(storage("read"))?;
        let open = txn.open_table(OPEN).map_err(storage("read"))?;
        let entries = txn.open_table(ENTRIES).map_err(storage("read"))?;
        let mut out = OpenIntents::default();
        for row in open.iter().map_err(storage("read"))? {
            let id = row.map_err(storage("read"))?.0.value();
            let key = format!("entries/{id}");
            match entries.get(id).map_err(storage("read"))? {
                Some(bytes) => match decode(id, bytes.value()) {
                    Ok(entry) => out.entries.push(entry),
                    Err(e) => out.damaged.push(Damaged {
                        key,
                        vm: vm_of_damaged(bytes.value()),
                        reason: e.to_string(),
                    }),
                },
                None => out.damaged.push(Damaged {
                    key,
                    vm: None,
                    reason: "listed open but missing".into(),
                }),
            }
        }
        Ok(out)
    }

    fn recent(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        let txn = self.db.begin_read().map_err(storage("read"))?;
        let entries = txn.open_table(ENTRIES).map_err(storage("read"))?;
        let mut out = Vec::new();
        for row in entries.iter().map_err(storage("read"))?.rev().take(limit) {
            let (k, v) = row.map_err(storage("read"))?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn save_addresses(&self, addresses: &[(String, String)]) -> Result<(), JournalError> {
        let txn = self.db.begin_write().map_err(storage("save addresses"))?;
        {
            let mut t = txn
                .open_table(ADDRESSES)
                .map_err(storage("save addresses"))?;
            t.retain(|_, _| false).map_err(storage("save addresses"))?;
            for (name, ip) in addresses {
                t.insert(name.as_str(), ip.as_str())
                    .map_err(storage("save addresses"))?;
            }
        }
        txn.commit().map_err(storage("save addresses"))
    }

    fn addresses(&self) -> Result<Vec<(String, String)>, JournalError> {
        let txn = self.db.begin_read().map_err(storage("read"))?;
        let t = txn.open_table(ADDRESSES).map_err(storage("read"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(storage("read"))? {
            let (k, v) = row.map_err(storage("read"))?;
            out.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }

    fn set_paused(&self, vm: &str, paused: bool) -> Result<(), JournalError> {
        let txn = self.db.begin_write().map_err(storage("pause"))?;
        {
            let mut t = txn.open_table(PAUSED).map_err(storage("pause"))?;
            if paused {
                t.insert(vm, ()).map_err(storage("pause"))?;
            } else {
                t.remove(vm).map_err(storage("pause"))?;
            }
        }
        txn.commit().map_err(storage("pause"))
    }

    fn paused(&self) -> Result<Vec<String>, JournalError> {
        let txn = self.db.begin_read().map_err(storage("read"))?;
        let t = txn.open_table(PAUSED).map_err(storage("read"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(storage("read"))? {
            out.push(row.map_err(storage("read"))?.0.value().to_owned());
        }
        Ok(out)
    }
}
