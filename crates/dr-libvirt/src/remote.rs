//! The procedures of libvirt's remote program that vmdr calls, typed: the
//! arguments and results of `remote_protocol.x`, numbered as there (the
//! protocol is stable: a number never changes meaning).

use crate::conn::{Connection, OnMessage};
use crate::error::LibvirtError;
use crate::uri::Uri;
use crate::wire::{self, Checkpoint, Domain, Param, Snapshot};
use crate::xdr::{Reader, Writer, XdrError};
use std::time::Duration;

/// `REMOTE_DOMAIN_LIST_MAX`.
const DOMAIN_LIST_MAX: usize = 16384;
/// `REMOTE_DOMAIN_SNAPSHOT_LIST_MAX`.
const SNAPSHOT_LIST_MAX: usize = 16384;
/// `REMOTE_DOMAIN_CHECKPOINT_LIST_MAX`.
const CHECKPOINT_LIST_MAX: usize = 16384;
/// `REMOTE_CONNECT_GET_ALL_DOMAIN_STATS_MAX`.
const STATS_MAX: usize = 262_144;
/// `REMOTE_AUTH_TYPE_LIST_MAX`.
const AUTH_TYPE_LIST_MAX: usize = 20;
/// The smallest encoded domain reference: an empty name, the UUID, the id.
const DOMAIN_MIN: usize = 4 + 16 + 4;

/// Procedure numbers (`REMOTE_PROC_*`).
mod proc_ {
    pub const CONNECT_OPEN: i32 = 1;
    pub const NODE_GET_INFO: i32 = 6;
    pub const DOMAIN_GET_XML_DESC: i32 = 14;
    pub const DOMAIN_LOOKUP_BY_NAME: i32 = 23;
    pub const AUTH_LIST: i32 = 66;
    pub const AUTH_POLKIT: i32 = 70;
    pub const NODE_GET_FREE_MEMORY: i32 = 102;
    pub const DOMAIN_SNAPSHOT_CREATE_XML: i32 = 185;
    pub const DOMAIN_SNAPSHOT_GET_XML_DESC: i32 = 186;
    pub const DOMAIN_SNAPSHOT_LOOKUP_BY_NAME: i32 = 189;
    pub const DOMAIN_REVERT_TO_SNAPSHOT: i32 = 192;
    pub const DOMAIN_SNAPSHOT_DELETE: i32 = 193;
    pub const DOMAIN_CREATE_WITH_FLAGS: i32 = 196;
    pub const DOMAIN_GET_STATE: i32 = 212;
    pub const DOMAIN_UNDEFINE_FLAGS: i32 = 231;
    pub const DOMAIN_DESTROY_FLAGS: i32 = 234;
    pub const DOMAIN_RESET: i32 = 245;
    pub const CONNECT_LIST_ALL_DOMAINS: i32 = 273;
    pub const DOMAIN_LIST_ALL_SNAPSHOTS: i32 = 274;
    pub const CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY: i32 = 316;
    pub const CONNECT_GET_ALL_DOMAIN_STATS: i32 = 344;
    pub const DOMAIN_DEFINE_XML_FLAGS: i32 = 350;
    pub const STORAGE_POOL_CREATE_XML: i32 = 76;
    pub const STORAGE_POOL_DESTROY: i32 = 80;
    pub const STORAGE_VOL_DELETE: i32 = 94;
    pub const STORAGE_VOL_LOOKUP_BY_PATH: i32 = 97;
    pub const DOMAIN_GET_JOB_INFO: i32 = 163;
    pub const DOMAIN_ABORT_JOB: i32 = 164;
    pub const DOMAIN_GET_JOB_STATS: i32 = 298;
    pub const DOMAIN_CHECKPOINT_CREATE_XML: i32 = 411;
    pub const DOMAIN_LIST_ALL_CHECKPOINTS: i32 = 413;
    pub const DOMAIN_CHECKPOINT_DELETE: i32 = 417;
    pub const DOMAIN_BACKUP_BEGIN: i32 = 421;
    /// `QEMU_PROC_DOMAIN_AGENT_COMMAND`, of the QEMU program.
    pub const QEMU_DOMAIN_AGENT_COMMAND: i32 = 3;
}

/// Event procedure numbers (messages from the daemon).
pub mod event {
    /// `REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE`.
    pub const LIFECYCLE: i32 = 318;
    /// `REMOTE_PROC_DOMAIN_EVENT_CALLBACK_AGENT_LIFECYCLE`.
    pub const AGENT_LIFECYCLE: i32 = 348;
    /// `VIR_DOMAIN_EVENT_ID_LIFECYCLE`.
    pub const ID_LIFECYCLE: i32 = 0;
    /// `VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE`.
    pub const ID_AGENT_LIFECYCLE: i32 = 18;
}

/// `virNodeGetInfo`: what a host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Memory, KiB.
    pub memory_kib: u64,
    /// Logical CPUs.
    pub cpus: u32,
    /// Their clock, MHz.
    pub mhz: u32,
}

/// One domain's statistics (`virDomainStatsRecord`).
#[derive(Clone, Debug, PartialEq)]
pub struct StatsRecord {
    /// The domain.
    pub domain: Domain,
    /// Its fields (`state.state`, `cpu.time`, `net.0.rx.bytes`, ...).
    pub params: Vec<(String, Param)>,
}

impl StatsRecord {
    /// A field as a number.
    pub fn get(&self, field: &str) -> Option<u64> {
        self.params
            .iter()
            .find(|(f, _)| f == field)
            .and_then(|(_, v)| v.as_u64())
    }
}

/// A lifecycle event (`remote_domain_event_callback_lifecycle_msg`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// The domain.
    pub domain: Domain,
    /// `virDomainEventType` (5: stopped, 2: started, ...).
    pub event: i32,
    /// Its detail (for stopped: 0 shutdown, 1 destroyed, 2 crashed, 5 failed).
    pub detail: i32,
}

impl Lifecycle {
    /// Decodes the event's payload.
    pub fn decode(payload: &[u8]) -> Result<Lifecycle, XdrError> {
        let mut r = Reader::new(payload);
        let _callback = r.i32("callback id")?;
        let domain = Domain::decode(&mut r)?;
        let event = r.i32("lifecycle event")?;
        let detail = r.i32("lifecycle detail")?;
        r.finish("lifecycle event")?;
        Ok(Lifecycle {
            domain,
            event,
            detail,
        })
    }
}

/// Decodes the reply of `virConnectGetAllDomainStats`: every domain's
/// record of typed fields.
pub fn decode_stats(payload: &[u8]) -> Result<Vec<StatsRecord>, LibvirtError> {
    decode("domain stats", payload, |r| {
        let n = r.len(STATS_MAX, DOMAIN_MIN + 4, "stats records")?;
        (0..n)
            .map(|_| {
                let domain = Domain::decode(r)?;
                let k = r.len(STATS_MAX, 12, "stats fields")?;
                let params = (0..k)
                    .map(|_| Param::decode(r))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(StatsRecord { domain, params })
            })
            .collect()
    })
}

/// Decodes the reply of `virConnectListAllDomains`.
pub fn decode_domains(payload: &[u8]) -> Result<Vec<Domain>, LibvirtError> {
    decode("list domains", payload, |r| {
        let d = domain_list(r, "domains")?;
        r.u32("count")?;
        Ok(d)
    })
}

/// `remote_nonnull_storage_pool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoragePool {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
}

/// `remote_nonnull_storage_vol`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageVol {
    /// Its pool's name.
    pub pool: String,
    /// Its name.
    pub name: String,
    /// Its key (usually its path).
    pub key: String,
}

/// `virDomainJobType` of a domain's current or last job.
pub mod job {
    /// No job.
    pub const NONE: i32 = 0;
    /// Finished successfully (`VIR_DOMAIN_JOB_COMPLETED`).
    pub const COMPLETED: i32 = 3;
}

/// An open, authenticated connection to one daemon.
pub struct Client {
    conn: Connection,
    /// The URI it was opened with.
    pub uri: Uri,
    /// How long a call may take before it counts as unanswered.
    pub timeout: Duration,
}

fn decode<T>(
    call: &'static str,
    payload: &[u8],
    f: impl FnOnce(&mut Reader<'_>) -> Result<T, XdrError>,
) -> Result<T, LibvirtError> {
    let mut r = Reader::new(payload);
    let v = f(&mut r).map_err(|source| LibvirtError::Decode { call, source })?;
    r.finish(call)
        .map_err(|source| LibvirtError::Decode { call, source })?;
    Ok(v)
}

fn args(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    f(&mut w);
    w.into_bytes()
}

fn domain_list(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<Domain>, XdrError> {
    let n = r.len(DOMAIN_LIST_MAX, DOMAIN_MIN, what)?;
    (0..n).map(|_| Domain::decode(r)).collect()
}

impl Client {
    /// Connects, authenticates (none, or polkit for a local socket) and
    /// opens the URI's driver; events go to `on_message`.
    pub async fn open(
        uri: &Uri,
        timeout: Duration,
        on_message: OnMessage,
    ) -> Result<Client, LibvirtError> {
        let io = uri.open(timeout).await?;
        let client = Client {
            conn: Connection::start(io, on_message),
            uri: uri.clone(),
            timeout,
        };
        let auth = client.call(proc_::AUTH_LIST, "auth list", vec![]).await?;
        let types = decode("auth list", &auth, |r| {
            let n = r.len(AUTH_TYPE_LIST_MAX, 4, "auth types")?;
            (0..n)
                .map(|_| r.i32("auth type"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        // 0: none, 1: SASL, 2: polkit (the daemon checks the peer's
        // credentials on a local socket: root passes).
        if !types.is_empty() && !types.contains(&0) {
            if types.contains(&2) {
                let r = client.call(proc_::AUTH_POLKIT, "polkit", vec![]).await?;
                decode("polkit", &r, |r| r.i32("complete"))?;
            } else {
                return Err(LibvirtError::Auth {
                    uri: uri.text.clone(),
                    method: "SASL",
                    hint: "set auth_tcp = \"none\" on a trusted network, or use qemu+ssh:// (ssh keys)",
                });
            }
        }
        let name = uri.name.clone();
        client
            .call(
                proc_::CONNECT_OPEN,
                "open",
                args(|w| {
                    w.opt_str(Some(&name)).u32(0);
                }),
            )
            .await?;
        Ok(client)
    }

    /// Why the connection is gone, if it is.
    pub fn closed(&self) -> Option<String> {
        self.conn.closed()
    }

    async fn call(
        &self,
        procedure: i32,
        name: &'static str,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, LibvirtError> {
        self.call_within(procedure, name, args, self.timeout).await
    }

    /// A call whose reply carries nothing.
    async fn call_void(
        &self,
        procedure: i32,
        name: &'static str,
        args: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), LibvirtError> {
        let r = self.call_within(procedure, name, args, timeout).await?;
        decode(name, &r, |_| Ok(()))
    }

    async fn call_within(
        &self,
        procedure: i32,
        name: &'static str,
        args: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, LibvirtError> {
        self.conn
            .call(wire::REMOTE_PROGRAM, procedure, name, args, timeout)
            .await
    }

    /// The host's memory and CPUs.
    pub async fn node_info(&self) -> Result<NodeInfo, LibvirtError> {
        let r = self.call(proc_::NODE_GET_INFO, "node info", vec![]).await?;
        decode("node info", &r, |r| {
            // `char model[32]`: each char is an XDR int.
            for _ in 0..32 {
                r.i32("model")?;
            }
            let memory_kib = r.u64("memory")?;
            let cpus = r.i32("cpus")?;
            let mhz = r.i32("mhz")?;
            for what in ["nodes", "sockets", "cores", "threads"] {
                r.i32(what)?;
            }
            Ok(NodeInfo {
                memory_kib,
                cpus: cpus.max(0) as u32,
                mhz: mhz.max(0) as u32,
            })
        })
    }

    /// The host's free memory, bytes.
    pub async fn free_memory(&self) -> Result<u64, LibvirtError> {
        let r = self
            .call(proc_::NODE_GET_FREE_MEMORY, "free memory", vec![])
            .await?;
        decode("free memory", &r, |r| r.u64("free memory"))
    }

    /// Every domain, running or defined.
    pub async fn list_all_domains(&self) -> Result<Vec<Domain>, LibvirtError> {
        let r = self
            .call(
                proc_::CONNECT_LIST_ALL_DOMAINS,
                "list domains",
                args(|w| {
                    w.i32(1).u32(0);
                }),
            )
            .await?;
        decode_domains(&r)
    }

    /// A domain by name.
    pub async fn lookup(&self, name: &str) -> Result<Domain, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_LOOKUP_BY_NAME,
                "lookup domain",
                args(|w| {
                    w.str(name);
                }),
            )
            .await?;
        decode("lookup domain", &r, Domain::decode)
    }

    /// A domain's state and its reason (`virDomainGetState`).
    pub async fn state(&self, dom: &Domain) -> Result<(i32, i32), LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_GET_STATE,
                "domain state",
                args(|w| {
                    dom.encode(w);
                    w.u32(0);
                }),
            )
            .await?;
        decode("domain state", &r, |r| {
            Ok((r.i32("state")?, r.i32("reason")?))
        })
    }

    /// A domain's XML (`flags`: 1 secure, 2 inactive, 8 migratable).
    pub async fn xml(&self, dom: &Domain, flags: u32) -> Result<String, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_GET_XML_DESC,
                "domain XML",
                args(|w| {
                    dom.encode(w);
                    w.u32(flags);
                }),
            )
            .await?;
        decode("domain XML", &r, |r| r.string("xml"))
    }

    /// Defines (or redefines) a domain from its XML.
    pub async fn define(&self, xml: &str) -> Result<Domain, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_DEFINE_XML_FLAGS,
                "define domain",
                args(|w| {
                    w.str(xml).u32(0);
                }),
            )
            .await?;
        decode("define domain", &r, Domain::decode)
    }

    /// Starts a defined domain, waiting at most `timeout`.
    pub async fn create(&self, dom: &Domain, timeout: Duration) -> Result<Domain, LibvirtError> {
        let r = self
            .call_within(
                proc_::DOMAIN_CREATE_WITH_FLAGS,
                "start domain",
                args(|w| {
                    dom.encode(w);
                    w.u32(0);
                }),
                timeout,
            )
            .await?;
        decode("start domain", &r, Domain::decode)
    }

    /// Stops a domain at once (`virDomainDestroyFlags`, 0: kill).
    pub async fn destroy(&self, dom: &Domain) -> Result<(), LibvirtError> {
        self.dom_flags(proc_::DOMAIN_DESTROY_FLAGS, "destroy domain", dom, 0)
            .await
    }

    /// Power-cycles a running domain in place.
    pub async fn reset(&self, dom: &Domain) -> Result<(), LibvirtError> {
        self.dom_flags(proc_::DOMAIN_RESET, "reset domain", dom, 0)
            .await
    }

    /// Removes a domain's definition (2: and its snapshots' metadata; the
    /// disks stay).
    pub async fn undefine(&self, dom: &Domain, flags: u32) -> Result<(), LibvirtError> {
        self.dom_flags(proc_::DOMAIN_UNDEFINE_FLAGS, "undefine domain", dom, flags)
            .await
    }

    async fn dom_flags(
        &self,
        procedure: i32,
        name: &'static str,
        dom: &Domain,
        flags: u32,
    ) -> Result<(), LibvirtError> {
        let a = args(|w| {
            dom.encode(w);
            w.u32(flags);
        });
        self.call_void(procedure, name, a, self.timeout).await
    }

    /// Takes a snapshot from its XML (`flags` 1: redefine metadata only).
    pub async fn snapshot_create(
        &self,
        dom: &Domain,
        xml: &str,
        flags: u32,
        timeout: Duration,
    ) -> Result<Snapshot, LibvirtError> {
        let r = self
            .call_within(
                proc_::DOMAIN_SNAPSHOT_CREATE_XML,
                "create snapshot",
                args(|w| {
                    dom.encode(w);
                    w.str(xml).u32(flags);
                }),
                timeout,
            )
            .await?;
        decode("create snapshot", &r, Snapshot::decode)
    }

    /// Every snapshot of a domain (`flags` 1024: parents before children).
    pub async fn snapshots(&self, dom: &Domain, flags: u32) -> Result<Vec<Snapshot>, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_LIST_ALL_SNAPSHOTS,
                "list snapshots",
                args(|w| {
                    dom.encode(w);
                    w.i32(1).u32(flags);
                }),
            )
            .await?;
        decode("list snapshots", &r, |r| {
            let n = r.len(SNAPSHOT_LIST_MAX, 4 + DOMAIN_MIN, "snapshots")?;
            let s = (0..n)
                .map(|_| Snapshot::decode(r))
                .collect::<Result<Vec<_>, _>>()?;
            r.i32("count")?;
            Ok(s)
        })
    }

    /// A snapshot by name.
    pub async fn snapshot_lookup(
        &self,
        dom: &Domain,
        name: &str,
    ) -> Result<Snapshot, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_SNAPSHOT_LOOKUP_BY_NAME,
                "look up snapshot",
                args(|w| {
                    dom.encode(w);
                    w.str(name).u32(0);
                }),
            )
            .await?;
        decode("look up snapshot", &r, Snapshot::decode)
    }

    /// A snapshot's XML (with the domain's definition at the time).
    pub async fn snapshot_xml(&self, snap: &Snapshot) -> Result<String, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_SNAPSHOT_GET_XML_DESC,
                "snapshot XML",
                args(|w| {
                    snap.encode(w);
                    w.u32(1);
                }),
            )
            .await?;
        decode("snapshot XML", &r, |r| r.string("xml"))
    }

    /// Reverts a domain to a snapshot (`flags` 2: paused, 4: force).
    pub async fn revert(
        &self,
        snap: &Snapshot,
        flags: u32,
        timeout: Duration,
    ) -> Result<(), LibvirtError> {
        self.call_void(
            proc_::DOMAIN_REVERT_TO_SNAPSHOT,
            "revert to snapshot",
            args(|w| {
                snap.encode(w);
                w.u32(flags);
            }),
            timeout,
        )
        .await
    }

    /// Deletes a snapshot (`flags` 2: its metadata only).
    pub async fn snapshot_delete(
        &self,
        snap: &Snapshot,
        flags: u32,
        timeout: Duration,
    ) -> Result<(), LibvirtError> {
        self.call_void(
            proc_::DOMAIN_SNAPSHOT_DELETE,
            "delete snapshot",
            args(|w| {
                snap.encode(w);
                w.u32(flags);
            }),
            timeout,
        )
        .await
    }

    /// Subscribes this connection to one kind of event of every domain.
    pub async fn register_events(&self, event_id: i32) -> Result<i32, LibvirtError> {
        let r = self
            .call(
                proc_::CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
                "register events",
                args(|w| {
                    w.i32(event_id).bool(false);
                }),
            )
            .await?;
        decode("register events", &r, |r| r.i32("callback id"))
    }

    /// Statistics of every domain in one call (`stats`: a mask of
    /// `VIR_DOMAIN_STATS_*`).
    pub async fn all_domain_stats(&self, stats: u32) -> Result<Vec<StatsRecord>, LibvirtError> {
        let r = self
            .call(
                proc_::CONNECT_GET_ALL_DOMAIN_STATS,
                "domain stats",
                args(|w| {
                    w.u32(0).u32(stats).u32(0);
                }),
            )
            .await?;
        decode_stats(&r)
    }

    /// Starts a backup job of the domain (`virDomainBackupBegin`): in push
    /// mode QEMU writes each disk as of this instant to its target; in pull
    /// mode it exports each disk as of this instant over NBD until the job
    /// is aborted. `checkpoint`: the XML of a checkpoint created at the
    /// same instant (the base of the next incremental backup).
    pub async fn backup_begin(
        &self,
        dom: &Domain,
        xml: &str,
        checkpoint: Option<&str>,
    ) -> Result<(), LibvirtError> {
        self.call_void(
            proc_::DOMAIN_BACKUP_BEGIN,
            "begin backup",
            args(|w| {
                dom.encode(w);
                w.str(xml).opt_str(checkpoint).u32(0);
            }),
            self.timeout,
        )
        .await
    }

    /// Creates a checkpoint from its XML (`virDomainCheckpointCreateXML`;
    /// `flags` 1: redefine metadata only).
    pub async fn checkpoint_create(
        &self,
        dom: &Domain,
        xml: &str,
        flags: u32,
    ) -> Result<Checkpoint, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_CHECKPOINT_CREATE_XML,
                "create checkpoint",
                args(|w| {
                    dom.encode(w);
                    w.str(xml).u32(flags);
                }),
            )
            .await?;
        decode("create checkpoint", &r, Checkpoint::decode)
    }

    /// Every checkpoint of a domain (`flags` 2: parents before children).
    pub async fn checkpoints(
        &self,
        dom: &Domain,
        flags: u32,
    ) -> Result<Vec<Checkpoint>, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_LIST_ALL_CHECKPOINTS,
                "list checkpoints",
                args(|w| {
                    dom.encode(w);
                    w.i32(1).u32(flags);
                }),
            )
            .await?;
        decode("list checkpoints", &r, |r| {
            let n = r.len(CHECKPOINT_LIST_MAX, 4 + DOMAIN_MIN, "checkpoints")?;
            let c = (0..n)
                .map(|_| Checkpoint::decode(r))
                .collect::<Result<Vec<_>, _>>()?;
            r.i32("count")?;
            Ok(c)
        })
    }

    /// Deletes a checkpoint (`flags` 2: its metadata only, the disks'
    /// bitmaps left as they are). Its changes are merged into its parent's
    /// bitmap, so the parent still tracks everything since it was taken.
    pub async fn checkpoint_delete(
        &self,
        checkpoint: &Checkpoint,
        flags: u32,
    ) -> Result<(), LibvirtError> {
        self.call_void(
            proc_::DOMAIN_CHECKPOINT_DELETE,
            "delete checkpoint",
            args(|w| {
                checkpoint.encode(w);
                w.u32(flags);
            }),
            self.timeout,
        )
        .await
    }

    /// The type of the domain's running job ([`job::NONE`] when none).
    pub async fn job_type(&self, dom: &Domain) -> Result<i32, LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_GET_JOB_INFO,
                "job info",
                args(|w| dom.encode(w)),
            )
            .await?;
        decode("job info", &r, |r| {
            let t = r.i32("job type")?;
            for _ in 0..11 {
                r.u64("job figures")?;
            }
            Ok(t)
        })
    }

    /// The type of the domain's last finished job (`COMPLETED` flag), and
    /// its `errmsg` when it failed.
    pub async fn completed_job(&self, dom: &Domain) -> Result<(i32, Option<String>), LibvirtError> {
        let (t, fields) = self.job_stats(dom, 1).await?;
        let err = fields
            .into_iter()
            .find_map(|(k, v)| match (k == "errmsg", v) {
                (true, Param::Str(s)) => Some(s),
                _ => None,
            });
        Ok((t, err))
    }

    /// The domain's job statistics (`virDomainGetJobStats`; `flags` 1: the
    /// last finished job's): its type and fields (a backup's
    /// `disk_temp_used` is what its scratch files hold).
    pub async fn job_stats(
        &self,
        dom: &Domain,
        flags: u32,
    ) -> Result<(i32, Vec<(String, Param)>), LibvirtError> {
        let r = self
            .call(
                proc_::DOMAIN_GET_JOB_STATS,
                "job stats",
                args(|w| {
                    dom.encode(w);
                    w.u32(flags);
                }),
            )
            .await?;
        decode("job stats", &r, |r| {
            let t = r.i32("job type")?;
            let n = r.len(64, 12, "job fields")?;
            let fields = (0..n)
                .map(|_| Param::decode(r))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((t, fields))
        })
    }

    /// Aborts the domain's running job.
    pub async fn abort_job(&self, dom: &Domain) -> Result<(), LibvirtError> {
        self.call_void(
            proc_::DOMAIN_ABORT_JOB,
            "abort job",
            args(|w| dom.encode(w)),
            self.timeout,
        )
        .await
    }

    /// Starts a transient storage pool from its XML.
    pub async fn pool_create(&self, xml: &str) -> Result<StoragePool, LibvirtError> {
        let r = self
            .call(
                proc_::STORAGE_POOL_CREATE_XML,
                "create pool",
                args(|w| {
                    w.str(xml).u32(0);
                }),
            )
            .await?;
        decode("create pool", &r, |r| {
            let name = r.string("pool name")?;
            let mut uuid = [0; 16];
            uuid.copy_from_slice(r.fixed(16, "pool uuid")?);
            Ok(StoragePool { name, uuid })
        })
    }

    /// Stops a storage pool (a transient one goes away).
    pub async fn pool_destroy(&self, pool: &StoragePool) -> Result<(), LibvirtError> {
        self.call_void(
            proc_::STORAGE_POOL_DESTROY,
            "destroy pool",
            args(|w| {
                w.str(&pool.name).fixed(&pool.uuid);
            }),
            self.timeout,
        )
        .await
    }

    /// The volume at `path`, in whichever active pool holds it.
    pub async fn vol_by_path(&self, path: &str) -> Result<StorageVol, LibvirtError> {
        let r = self
            .call(
                proc_::STORAGE_VOL_LOOKUP_BY_PATH,
                "look up volume",
                args(|w| {
                    w.str(path);
                }),
            )
            .await?;
        decode("look up volume", &r, |r| {
            Ok(StorageVol {
                pool: r.string("volume pool")?,
                name: r.string("volume name")?,
                key: r.string("volume key")?,
            })
        })
    }

    /// Deletes a volume (its file).
    pub async fn vol_delete(&self, vol: &StorageVol) -> Result<(), LibvirtError> {
        self.call_void(
            proc_::STORAGE_VOL_DELETE,
            "delete volume",
            args(|w| {
                w.str(&vol.pool).str(&vol.name).str(&vol.key).u32(0);
            }),
            self.timeout,
        )
        .await
    }

    /// Sends one command to the domain's QEMU guest agent and returns its
    /// JSON answer; `agent_timeout` is the agent's own (seconds).
    pub async fn agent_command(
        &self,
        dom: &Domain,
        cmd: &str,
        agent_timeout: i32,
    ) -> Result<Option<String>, LibvirtError> {
        let a = args(|w| {
            dom.encode(w);
            w.str(cmd).i32(agent_timeout).u32(0);
        });
        let wait = self
            .timeout
            .max(Duration::from_secs(agent_timeout.max(0) as u64 + 1));
        let r = self
            .conn
            .call(
                wire::QEMU_PROGRAM,
                proc_::QEMU_DOMAIN_AGENT_COMMAND,
                "guest agent command",
                a,
                wait,
            )
            .await?;
        decode("guest agent command", &r, |r| r.opt_string("result"))
    }
}
