//! The recovery journal of a cluster, in etcd: every write a transaction
//! that holds only while the writer's epoch is the leader key's creation
//! revision, so a deposed leader's late writes fail and the next leader
//! reads exactly what was committed.
//!
//! Keys under the prefix: `journal/last` (the last id given), `journal/entry/
//! {id:020}` (an entry's JSON, as `dr-journal` writes it), `journal/open/
//! {id:020}` (empty: the entry has not ended), `addresses` (the name →
//! address map as one JSON object, written only when it changes),
//! `paused/{vm}` (an operator paused automation for it).

use crate::election::{key, Leadership};
use crate::etcd::{Etcd, EtcdError};
use crate::wire::{Compare, DeleteRequest, KeyValue, PutRequest, RequestOp, Target, TxnRequest};
use dr_journal::{Damaged, Entry, Intent, JournalError, OpenIntents, Outcome, Store};
use std::sync::Arc;

/// A journal write raced with another of this node (an answer lost, the
/// write applied): tried again this many times.
const RACES: usize = 3;

/// The journal in etcd. Its calls block on the network: call them off the
/// async threads, inside the runtime `handle` belongs to.
pub struct EtcdJournal {
    etcd: Arc<Etcd>,
    leadership: Arc<Leadership>,
    prefix: String,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for EtcdJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdJournal")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn store_error(op: &'static str) -> impl Fn(EtcdError) -> JournalError {
    move |e| JournalError::Storage {
        op,
        reason: e.to_string(),
    }
}

fn entry_key(prefix: &str, id: u64) -> Vec<u8> {
    key(prefix, &format!("journal/entry/{id:020}"))
}

fn open_key(prefix: &str, id: u64) -> Vec<u8> {
    key(prefix, &format!("journal/open/{id:020}"))
}

/// The id at the end of an entry's or open marker's key.
fn id_of(k: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(k).ok()?;
    s.rsplit('/').next()?.parse().ok()
}

impl EtcdJournal {
    /// The journal under `prefix`, written under `leadership`'s epoch.
    pub fn new(
        etcd: Arc<Etcd>,
        leadership: Arc<Leadership>,
        prefix: &str,
        handle: tokio::runtime::Handle,
    ) -> EtcdJournal {
        EtcdJournal {
            etcd,
            leadership,
            prefix: prefix.trim_end_matches('/').to_owned(),
            handle,
        }
    }

    fn key(&self, name: &str) -> Vec<u8> {
        key(&self.prefix, name)
    }

    /// The compare that fences a write: the leader key is still the one
    /// created at `epoch`.
    fn fence(&self, epoch: i64) -> Compare {
        Compare::equal(self.leadership.leader_key(), Target::Create(epoch))
    }

    /// After a transaction whose compares failed: whether the epoch did
    /// (this node is deposed) or only the other compare (a race).
    fn deposed(&self, op: &'static str, epoch: i64) -> Result<(), JournalError> {
        let leader = self
            .handle
            .block_on(self.etcd.get(&self.leadership.leader_key()))
            .map_err(store_error(op))?;
        match leader {
            Some(kv) if kv.create_revision == epoch => Ok(()),
            Some(kv) => Err(JournalError::Fenced {
                op,
                reason: format!(
                    "this node led under epoch {epoch}; the leader is now epoch {}",
                    kv.create_revision
                ),
            }),
            None => Err(JournalError::Fenced {
                op,
                reason: format!("this node led under epoch {epoch}; no node leads now"),
            }),
        }
    }

    fn txn(
        &self,
        op: &'static str,
        t: TxnRequest,
    ) -> Result<crate::wire::TxnResponse, JournalError> {
        self.handle
            .block_on(self.etcd.txn(&t))
            .map_err(store_error(op))
    }

    fn get(&self, op: &'static str, k: &[u8]) -> Result<Option<KeyValue>, JournalError> {
        self.handle
            .block_on(self.etcd.get(k))
            .map_err(store_error(op))
    }

    fn decode(&self, kv: &KeyValue) -> Result<Entry, Damaged> {
        let damaged = |reason: String| Damaged {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            vm: dr_journal::vm_of_damaged(&kv.value),
            reason,
        };
        let id = id_of(&kv.key).ok_or_else(|| damaged("no id at the end of its key".into()))?;
        dr_journal::decode(id, &kv.value).map_err(|e| damaged(e.to_string()))
    }
}

impl Store for EtcdJournal {
    fn begin(&self, intent: &Intent) -> Result<u64, JournalError> {
        let epoch = self
            .leadership
            .may_act()
            .map_err(|e| JournalError::Fenced {
                op: "begin",
                reason: e.to_string(),
            })?;
        let last_key = self.key("journal/last");
        for _ in 0..RACES {
            let last = self.get("begin", &last_key)?;
            let (last_id, last_rev) = match &last {
                Some(kv) => (
                    std::str::from_utf8(&kv.value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| JournalError::Corrupt {
                            id: 0,
                            reason: format!(
                                "{} holds {:?}, not an id",
                                String::from_utf8_lossy(&last_key),
                                String::from_utf8_lossy(&kv.value)
                            ),
                        })?,
                    kv.mod_revision,
                ),
                None => (0, 0),
            };
            let id = last_id + 1;
            let entry = Entry {
                id,
                intent: intent.clone(),
                outcome: None,
                ended_ms: None,
            };
            let bytes = serde_json::to_vec(&entry).map_err(|e| JournalError::Storage {
                op: "begin",
                reason: e.to_string(),
            })?;
            let counter = if last_rev == 0 {
                Compare::equal(last_key.clone(), Target::Version(0))
            } else {
                Compare::equal(last_key.clone(), Target::Mod(last_rev))
            };
            let r = self.txn(
                "begin",
                TxnRequest {
                    compare: vec![self.fence(epoch), counter],
                    success: vec![
                        RequestOp::Put(PutRequest {
                            key: last_key.clone(),
                            value: id.to_string().into_bytes(),
                            lease: 0,
                        }),
                        RequestOp::Put(PutRequest {
                            key: entry_key(&self.prefix, id),
                            value: bytes,
                            lease: 0,
                        }),
                        RequestOp::Put(PutRequest {
                            key: open_key(&self.prefix, id),
                            value: Vec::new(),
                            lease: 0,
                        }),
                    ],
                    failure: vec![],
                },
            )?;
            if r.succeeded {
                return Ok(id);
            }
            self.deposed("begin", epoch)?;
        }
        Err(JournalError::Storage {
            op: "begin",
            reason: "the last id kept changing under this node's writes".into(),
        })
    }

    fn end(&self, id: u64, outcome: Outcome, ended_ms: u64) -> Result<Entry, JournalError> {
        // What this node started, it may end while no other node leads:
        // the epoch it led under, whether or not its deadline has passed.
        let epoch = self
            .leadership
            .epoch()
            .ok_or_else(|| JournalError::Fenced {
                op: "end",
                reason: "this node does not lead the cluster".into(),
            })?;
        let k = entry_key(&self.prefix, id);
        for _ in 0..RACES {
            let Some(kv) = self.get("end", &k)? else {
                return Err(JournalError::Unknown(id));
            };
            let mut entry = self.decode(&kv).map_err(|d| JournalError::Corrupt {
                id,
                reason: format!("{}: {}", d.key, d.reason),
            })?;
            if entry.outcome.is_some() {
                return Err(JournalError::AlreadyEnded(id));
            }
            entry.outcome = Some(outcome.clone());
            entry.ended_ms = Some(ended_ms);
            let bytes = serde_json::to_vec(&entry).map_err(|e| JournalError::Storage {
                op: "end",
                reason: e.to_string(),
            })?;
            let r = self.txn(
                "end",
                TxnRequest {
                    compare: vec![
                        self.fence(epoch),
                        Compare::equal(k.clone(), Target::Mod(kv.mod_revision)),
                    ],
                    success: vec![
                        RequestOp::Put(PutRequest {
                            key: k.clone(),
                            value: bytes,
                            lease: 0,
                        }),
                        RequestOp::Delete(DeleteRequest {
                            key: open_key(&self.prefix, id),
                            range_end: Vec::new(),
                        }),
                    ],
                    failure: vec![],
                },
            )?;
            if r.succeeded {
                return Ok(entry);
            }
            self.deposed("end", epoch)?;
        }
        Err(JournalError::Storage {
            op: "end",
            reason: format!("entry {id} kept changing under this node's writes"),
        })
    }

    fn open_intents(&self) -> Result<OpenIntents, JournalError> {
        let open = self
            .handle
            .block_on(self.etcd.list(&self.key("journal/open/"), 0, false))
            .map_err(store_error("read"))?;
        let mut out = OpenIntents::default();
        for marker in open {
            let Some(id) = id_of(&marker.key) else {
                out.damaged.push(Damaged {
                    key: String::from_utf8_lossy(&marker.key).into_owned(),
                    vm: None,
                    reason: "an open marker without an id".into(),
                });
                continue;
            };
            let k = entry_key(&self.prefix, id);
            match self.get("read", &k)? {
                Some(kv) => match self.decode(&kv) {
                    Ok(e) => out.entries.push(e),
                    Err(d) => out.damaged.push(d),
                },
                None => out.damaged.push(Damaged {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    vm: None,
                    reason: "listed open but missing".into(),
                }),
            }
        }
        Ok(out)
    }

    fn recent(&self, limit: usize) -> Result<Vec<Entry>, JournalError> {
        let kvs = self
            .handle
            .block_on(self.etcd.list(
                &self.key("journal/entry/"),
                i64::try_from(limit).unwrap_or(i64::MAX),
                true,
            ))
            .map_err(store_error("read"))?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            match self.decode(kv) {
                Ok(e) => out.push(e),
                Err(d) => {
                    tracing::error!(key = %d.key, vm = ?d.vm, reason = %d.reason, "an unreadable journal entry, left out of the recent ones")
                }
            }
        }
        Ok(out)
    }

    fn save_addresses(&self, addresses: &[(String, String)]) -> Result<(), JournalError> {
        let epoch = self
            .leadership
            .epoch()
            .ok_or_else(|| JournalError::Fenced {
                op: "save addresses",
                reason: "this node does not lead the cluster".into(),
            })?;
        let map: serde_json::Map<String, serde_json::Value> = addresses
            .iter()
            .map(|(n, ip)| (n.clone(), serde_json::Value::String(ip.clone())))
            .collect();
        let bytes = serde_json::to_vec(&map).map_err(|e| JournalError::Storage {
            op: "save addresses",
            reason: e.to_string(),
        })?;
        let r = self.txn(
            "save addresses",
            TxnRequest {
                compare: vec![self.fence(epoch)],
                success: vec![RequestOp::Put(PutRequest {
                    key: self.key("addresses"),
                    value: bytes,
                    lease: 0,
                })],
                failure: vec![],
            },
        )?;
        if r.succeeded {
            Ok(())
        } else {
            self.deposed("save addresses", epoch)?;
            Err(JournalError::Storage {
                op: "save addresses",
                reason: "the leader key changed during the write".into(),
            })
        }
    }

    fn addresses(&self) -> Result<Vec<(String, String)>, JournalError> {
        let k = self.key("addresses");
        let Some(kv) = self.get("read", &k)? else {
            return Ok(Vec::new());
        };
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&kv.value)
            .map_err(|e| JournalError::Corrupt {
                id: 0,
                reason: format!("{}: {e}", String::from_utf8_lossy(&k)),
            })?;
        Ok(map
            .into_iter()
            .filter_map(|(n, v)| Some((n, v.as_str()?.to_owned())))
            .collect())
    }

    fn set_paused(&self, vm: &str, paused: bool) -> Result<(), JournalError> {
        let op = if paused { "pause" } else { "resume" };
        let epoch = self
            .leadership
            .epoch()
            .ok_or_else(|| JournalError::Fenced {
                op,
                reason: "this node does not lead the cluster".into(),
            })?;
        let k = self.key(&format!("paused/{vm}"));
        let change = if paused {
            RequestOp::Put(PutRequest {
                key: k,
                value: Vec::new(),
                lease: 0,
            })
        } else {
            RequestOp::Delete(DeleteRequest {
                key: k,
                range_end: Vec::new(),
            })
        };
        let r = self.txn(
            op,
            TxnRequest {
                compare: vec![self.fence(epoch)],
                success: vec![change],
                failure: vec![],
            },
        )?;
        if r.succeeded {
            return Ok(());
        }
        self.deposed(op, epoch)?;
        Err(JournalError::Storage {
            op,
            reason: "the leader key changed during the write".into(),
        })
    }

    fn paused(&self) -> Result<Vec<String>, JournalError> {
        let prefix = self.key("paused/");
        let kvs = self
            .handle
            .block_on(self.etcd.list(&prefix, 0, false))
            .map_err(store_error("read"))?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(prefix.as_slice())?;
                String::from_utf8(name.to_vec()).ok()
            })
            .collect())
    }
}
