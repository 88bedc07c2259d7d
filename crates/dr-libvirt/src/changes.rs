//! libvirt's change tracking as a replication change source: each point a
//! pull-mode backup of every disk of the VM as of one instant, with a new
//! checkpoint created at that instant; the first point (and any after the
//! chain was lost) reads every allocated extent, every later one only the
//! extents the previous checkpoint's dirty bitmap marks, over NBD.
//!
//! The chain lives in the log directory (`libvirt-chain`): a chain id (in
//! every checkpoint name, `vmdr-<chain>-<n>`, so a bitmap a qcow2 kept
//! after its checkpoint was lost never collides with a new one), the next
//! number and the base, the checkpoint of the last durable point. Crash
//! safety: the next number is saved before a checkpoint is created; the base
//! moves only once the point is durable in the log, then the old base is
//! deleted; any other `vmdr-` checkpoint found at the next point is a
//! leftover and deleted (its bitmap merges into its parent, so the base
//! still tracks everything since it was taken). An incremental backup that
//! fails (a bitmap QEMU marked inconsistent after a crash, a checkpoint
//! lost with a redefinition) drops the chain: every `vmdr-` checkpoint is
//! deleted and the point is taken full, logged and counted.
//!
//! The export is served and reached as [`crate::nbd_route`] says for the
//! host's transport (a local socket, ssh's forwarding, or plain TCP on a
//! `qemu+tcp` host).
//!
//! Scratch files (QEMU's copy-before-write of what the guest overwrites
//! during the read) go beside the VM's first disk unless set, and are
//! watched: past `scratch_limit` the point is abandoned and retried, so a
//! guest that writes hard cannot fill the host's disk.
//!
//! Called from a blocking thread (the replication job's), so the libvirt
//! calls run through the runtime's handle.

use crate::config::HostConfig;
use crate::domxml::DomainXml;
use crate::nbd_route::{NbdStream, Route};
use crate::pull;
use crate::remote::Client;
use crate::wire::{Checkpoint, Domain};
use dr_nbd::proto::{STATE_DIRTY, STATE_ZERO};
use dr_replication::capture::{ChangeSource, Consistency, Point, PointDisk, Sink, PIECE};
use dr_replication::scan::ScanStats;
use dr_replication::ReplError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How one VM's changes are tracked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracking {
    /// The VM (its domain name).
    pub vm: String,
    /// The hosts it may run on (it is looked for on each).
    pub hosts: Vec<HostConfig>,
    /// The chain's state (the replication log's directory).
    pub state_dir: PathBuf,
    /// The TCP port QEMU serves the export on, at the host's address.
    pub nbd_port: u16,
    /// The scratch files' directory on the host (`None`: beside the first
    /// disk).
    pub scratch_dir: Option<String>,
    /// The most the scratch files may hold before the point is abandoned.
    pub scratch_limit: u64,
    /// One call's (and one NBD read's) time limit.
    pub timeout: Duration,
}

/// The chain, as saved.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Chain {
    id: String,
    next: u64,
    base: Option<String>,
    /// A point was ever made durable in this log (the replicas hold data,
    /// so a full point must also send the zeroes).
    committed: bool,
}

impl Chain {
    fn new(committed: bool) -> Chain {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
        Chain {
            id: format!("{:08x}", (mixed ^ (mixed >> 29)) as u32),
            next: 1,
            base: None,
            committed,
        }
    }

    fn prefix(&self) -> String {
        format!("vmdr-{}-", self.id)
    }

    fn parse(text: &str) -> Option<Chain> {
        let mut c = Chain {
            id: String::new(),
            next: 0,
            base: None,
            committed: false,
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            match k {
                "chain" if v.chars().all(|ch| ch.is_ascii_hexdigit()) && !v.is_empty() => {
                    c.id = v.to_owned()
                }
                "next" => c.next = v.parse().ok()?,
                "base" if v == "-" => c.base = None,
                "base" => c.base = Some(v.to_owned()),
                "committed" => c.committed = v == "1",
                _ => return None,
            }
        }
        (!c.id.is_empty() && c.next > 0).then_some(c)
    }

    fn text(&self) -> String {
        format!(
            "chain {}\nnext {}\nbase {}\ncommitted {}\n",
            self.id,
            self.next,
            self.base.as_deref().unwrap_or("-"),
            u8::from(self.committed)
        )
    }
}

/// One disk of the point being read.
struct OpenDisk {
    dev: String,
    size: u64,
    nbd: dr_nbd::Client<NbdStream>,
}

/// The point being read: the backup job runs until it is committed or
/// abandoned.
struct Open {
    client: Client,
    dom: Domain,
    host: String,
    checkpoint: String,
    base: Option<String>,
    disks: Vec<OpenDisk>,
    route: Route,
}

/// The change source.
pub struct LibvirtChanges {
    cfg: Tracking,
    rt: tokio::runtime::Handle,
    chain: Chain,
    open: Option<Open>,
    /// The connection of the last point, to its host, reused while the VM
    /// still runs there.
    cached: Option<(String, Client)>,
    resets: u64,
    buf: Vec<u8>,
}

fn source(msg: String) -> ReplError {
    ReplError::Source(msg)
}

/// Bytes read in one batch, between checks of the scratch files.
const CHECK_EVERY: u64 = 64 << 20;
/// NBD reads in flight at once.
const WINDOW: usize = 16;
/// `VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL`: parents before children.
const LIST_TOPOLOGICAL: u32 = 2;
/// `VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY`.
const DELETE_METADATA_ONLY: u32 = 2;
/// `VIR_DOMAIN_RUNNING`, `VIR_DOMAIN_PAUSED`.
const RUNNING: i32 = 1;
const PAUSED: i32 = 3;

impl LibvirtChanges {
    /// The source of `cfg`'s VM; its chain is read from (or started in)
    /// `cfg.state_dir`. Call from within the runtime.
    pub fn open(cfg: Tracking) -> Result<LibvirtChanges, ReplError> {
        let path = cfg.state_dir.join("libvirt-chain");
        let chain = match std::fs::read_to_string(&path) {
            Ok(text) => Chain::parse(&text).ok_or_else(|| ReplError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: "not a checkpoint chain (chain, next, base, committed)".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Chain::new(false),
            Err(cause) => {
                return Err(ReplError::Io {
                    op: "read",
                    path,
                    cause,
                })
            }
        };
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| source("the libvirt change source needs a tokio runtime".into()))?;
        Ok(LibvirtChanges {
            cfg,
            rt,
            chain,
            open: None,
            cached: None,
            resets: 0,
            buf: vec![0u8; PIECE],
        })
    }

    /// Chains dropped so far (an incremental backup that failed).
    pub fn resets(&self) -> u64 {
        self.resets
    }

    fn save(&self) -> Result<(), ReplError> {
        let path = self.cfg.state_dir.join("libvirt-chain");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.chain.text())
            .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .map_err(|cause| ReplError::Io {
                op: "write",
                path: tmp.clone(),
                cause,
            })?;
        std::fs::rename(&tmp, &path).map_err(|cause| ReplError::Io {
            op: "rename",
            path,
            cause,
        })
    }

    fn call<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// The host the VM runs on, connected, and the domain.
    fn find(&mut self) -> Result<(Client, Domain, HostConfig), ReplError> {
        if let Some((name, c)) = self.cached.take() {
            let host = self.cfg.hosts.iter().find(|h| h.name == name).cloned();
            let still = self.call(async {
                let dom = c.lookup(&self.cfg.vm).await?;
                let (state, _) = c.state(&dom).await?;
                Ok::<_, crate::LibvirtError>((dom, state))
            });
            if let (Some(h), Ok((dom, state))) = (host, still) {
                if state == RUNNING || state == PAUSED {
                    return Ok((c, dom, h));
                }
            }
        }
        let mut tried = Vec::new();
        for h in &self.cfg.hosts {
            let found = self.call(async {
                let c = Client::open(&h.uri, self.cfg.timeout, Box::new(|_| {})).await?;
                let dom = c.lookup(&self.cfg.vm).await?;
                let (state, _) = c.state(&dom).await?;
                Ok::<_, crate::LibvirtError>((c, dom, state))
            });
            match found {
                Ok((c, dom, state)) if state == RUNNING || state == PAUSED => {
                    return Ok((c, dom, h.clone()))
                }
                Ok((_, _, state)) => tried.push(format!("{}: defined, state {state}", h.name)),
                Err(e) => tried.push(format!("{}: {e}", h.name)),
            }
        }
        Err(source(format!(
            "VM {} is not running on any host ({})",
            self.cfg.vm,
            tried.join("; ")
        )))
    }

    /// Deletes every checkpoint of ours on `dom` but `keep`.
    fn delete_others(&self, c: &Client, dom: &Domain, keep: Option<&str>) -> Result<(), ReplError> {
        let all: Vec<Checkpoint> = self
            .call(c.checkpoints(dom, LIST_TOPOLOGICAL))
            .map_err(|e| source(format!("{}: listing checkpoints: {e}", self.cfg.vm)))?;
        // Children first: each deletion merges into a parent still there.
        for cp in all.iter().rev() {
            if !cp.name.starts_with("vmdr-") || Some(cp.name.as_str()) == keep {
                continue;
            }
            if let Err(e) = self.call(c.checkpoint_delete(cp, 0)) {
                // A checkpoint whose bitmap is broken (QEMU died with it in
                // use) cannot be merged: its metadata goes; the bitmap's
                // name is of a dropped chain and never reused.
                tracing::warn!(vm = %self.cfg.vm, checkpoint = %cp.name, error = %e,
                    "a leftover checkpoint could not be deleted; dropping its metadata");
                self.call(c.checkpoint_delete(cp, DELETE_METADATA_ONLY))
                    .map_err(|e| {
                        source(format!(
                            "{}: checkpoint {} can be neither deleted nor forgotten: {e}",
                            self.cfg.vm, cp.name
                        ))
                    })?;
            }
        }
        Ok(())
    }

    /// Ends the point's backup job (waiting for it to go), then removes
    /// what its export's route left here.
    fn end_job(&self, open: &Open) {
        self.stop_job(open);
        open.route.clean_up();
    }

    fn stop_job(&self, open: &Open) {
        if let Err(e) = self.call(open.client.abort_job(&open.dom)) {
            tracing::debug!(vm = %self.cfg.vm, error = %e, "ending the backup job");
        }
        let t0 = Instant::now();
        while t0.elapsed() < self.cfg.timeout {
            match self.call(open.client.job_type(&open.dom)) {
                Ok(crate::remote::job::NONE) | Err(_) => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::warn!(vm = %self.cfg.vm, "the backup job did not end in time");
    }

    /// Starts the backup for the next point: incremental from the chain's
    /// base when it has one and it works, else full (dropping the chain).
    fn start(
        &mut self,
        c: &Client,
        dom: &Domain,
        host: &HostConfig,
        disks: &[String],
        scratch: &str,
        route: &Route,
    ) -> Result<(Option<String>, String, Option<String>), ReplError> {
        let server = route.server();
        let mut full_reason = None;
        let listed: Vec<String> = self
            .call(c.checkpoints(dom, 0))
            .map_err(|e| source(format!("{}: listing checkpoints: {e}", self.cfg.vm)))?
            .into_iter()
            .map(|cp| cp.name)
            .collect();
        let mut base = self.chain.base.clone();
        if let Some(b) = &base {
            if !listed.contains(b) {
                full_reason = Some(format!(
                    "checkpoint {b} is gone from {} (the VM was redefined or moved)",
                    host.name
                ));
                base = None;
            }
        }
        self.delete_others(c, dom, base.as_deref())?;
        loop {
            let name = format!("{}{}", self.chain.prefix(), self.chain.next);
            self.chain.next += 1;
            self.save()?;
            let xml = pull::backup_xml(&self.cfg.vm, disks, &server, scratch, base.as_deref());
            let cp = pull::checkpoint_xml(&name, disks);
            match self.call(c.backup_begin(dom, &xml, Some(&cp))) {
                Ok(()) => return Ok((base, name, full_reason)),
                Err(e) if base.is_some() => {
                    let why = format!(
                        "the incremental backup from {} failed: {e}",
                        base.as_deref().unwrap_or("")
                    );
                    tracing::warn!(vm = %self.cfg.vm, %why, "dropping the checkpoint chain; this point is full");
                    self.resets += 1;
                    self.delete_others(c, dom, None)?;
                    self.chain = Chain::new(self.chain.committed);
                    self.save()?;
                    base = None;
                    full_reason = Some(why);
                }
                Err(e) => {
                    return Err(source(format!(
                        "{}: the backup on {} did not start: {e} (every disk must be a qcow2 of \
                         compat 1.1 for checkpoints: `qemu-img convert -O qcow2` a raw one, \
                         `qemu-img amend -o compat=1.1` an old qcow2)",
                        self.cfg.vm, host.name
                    )))
                }
            }
        }
    }

    /// Fails the point if the backup's scratch files hold more than allowed
    /// (checked after each batch of reads: every [`CHECK_EVERY`] bytes, and
    /// at the end of each disk's).
    fn check_scratch(&mut self) -> Result<(), ReplError> {
        let Some(open) = self.open.as_ref() else {
            return Ok(());
        };
        let stats = self.rt.block_on(open.client.job_stats(&open.dom, 0));
        let used = stats
            .ok()
            .and_then(|(_, f)| {
                f.into_iter()
                    .find(|(k, _)| k == "disk_temp_used")
                    .and_then(|(_, v)| v.as_u64())
            })
            .unwrap_or(0);
        if used > self.cfg.scratch_limit {
            return Err(source(format!(
                "{}: the backup's scratch files on {} hold {used} bytes, over the limit of {} \
                 (the guest writes faster than the point is read): this point is abandoned and retried",
                self.cfg.vm, open.host, self.cfg.scratch_limit
            )));
        }
        Ok(())
    }

    /// Gives `len` zero bytes at `offset` to `sink`, in pieces.
    fn send_zeroes(
        &mut self,
        offset: u64,
        len: u64,
        sink: &mut Sink<'_>,
    ) -> Result<u64, ReplError> {
        self.buf.fill(0);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(PIECE as u64) as usize;
            sink(offset + done, &self.buf[..n])?;
            done += n as u64;
        }
        Ok(len)
    }

    /// Reads `extents` of disk `i` over NBD and gives their bytes to
    /// `sink` in order: in pieces, [`WINDOW`] requests in flight (scattered
    /// small extents cost a round trip per window, not each), the scratch
    /// files checked after every [`CHECK_EVERY`] bytes.
    fn send_extents(
        &mut self,
        i: usize,
        extents: &[(u64, u64)],
        sink: &mut Sink<'_>,
    ) -> Result<u64, ReplError> {
        let Some(open) = self.open.as_mut() else {
            return Err(source("no point begun".into()));
        };
        let step = u64::from(open.disks[i].nbd.step()).min(PIECE as u64);
        let mut pieces: Vec<(u64, u32)> = Vec::new();
        for &(offset, len) in extents {
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(step);
                pieces.push((at, n as u32));
                at += n;
            }
        }
        let mut sent = 0u64;
        let mut batch_start = 0;
        while batch_start < pieces.len() {
            let mut batch_end = batch_start;
            let mut bytes = 0u64;
            while batch_end < pieces.len() && (bytes < CHECK_EVERY || batch_end == batch_start) {
                bytes += u64::from(pieces[batch_end].1);
                batch_end += 1;
            }
            let batch = &pieces[batch_start..batch_end];
            let Some(open) = self.open.as_mut() else {
                return Err(source("no point begun".into()));
            };
            let d = &mut open.disks[i];
            let mut failed = None;
            d.nbd
                .read_each(batch, WINDOW, &mut |k, data| match sink(batch[k].0, data) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                })
                .map_err(|e| source(format!("{}:{}: {e}", self.cfg.vm, d.dev)))?;
            if let Some(e) = failed {
                return Err(e);
            }
            sent += bytes;
            self.check_scratch()?;
            batch_start = batch_end;
        }
        Ok(sent)
    }
}

impl ChangeSource for LibvirtChanges {
    fn consistency(&self) -> Consistency {
        Consistency::PointInTime
    }

    fn begin(&mut self) -> Result<Point, ReplError> {
        if let Some(stale) = self.open.take() {
            self.end_job(&stale);
        }
        let (c, dom, host) = self.find()?;
        let xml = self
            .call(c.xml(&dom, 0))
            .map_err(|e| source(format!("{}: reading its definition: {e}", self.cfg.vm)))?;
        let x = DomainXml::parse(&xml)
            .map_err(|e| source(format!("{}: its definition: {e}", self.cfg.vm)))?;
        if x.targets.is_empty() {
            return Err(source(format!("{} has no disk to replicate", self.cfg.vm)));
        }
        for ((dev, file), format) in x.targets.iter().zip(&x.disks).zip(&x.formats) {
            if format != "qcow2" {
                return Err(source(format!(
                    "disk {dev} of {} ({file}) is {}, not qcow2: change tracking needs qcow2 \
                     (convert it with `qemu-img convert -O qcow2` while the VM is off)",
                    self.cfg.vm,
                    if format.is_empty() {
                        "of no stated format"
                    } else {
                        format
                    }
                )));
            }
        }
        let scratch = match &self.cfg.scratch_dir {
            Some(d) => d.clone(),
            None => Path::new(&x.disks[0])
                .parent()
                .map_or_else(|| "/var/tmp".to_owned(), |p| p.display().to_string()),
        };
        let route = Route::for_host(&host, &self.cfg.vm, self.cfg.nbd_port, &scratch)
            .map_err(|e| source(format!("{}: {e}", self.cfg.vm)))?;
        let (base, checkpoint, full_reason) =
            self.start(&c, &dom, &host, &x.targets, &scratch, &route)?;
        let mut disks = Vec::with_capacity(x.targets.len());
        let mut open = Open {
            client: c,
            dom,
            host: host.name.clone(),
            checkpoint,
            base: base.clone(),
            disks: Vec::new(),
            route: route.clone(),
        };
        for dev in &x.targets {
            let ctx = match &base {
                Some(_) => pull::dirty_context(dev),
                None => "base:allocation".to_owned(),
            };
            match route.connect(&pull::export_name(dev), &[&ctx], self.cfg.timeout) {
                Ok(nbd) => {
                    let size = nbd.export().size;
                    disks.push(PointDisk {
                        name: format!("{}:{dev}", self.cfg.vm),
                        size,
                    });
                    open.disks.push(OpenDisk {
                        dev: dev.clone(),
                        size,
                        nbd,
                    });
                }
                Err(e) => {
                    self.open = Some(open);
                    let why = format!("{}:{dev}: the export at {route}: {e}", self.cfg.vm);
                    self.abandon(&why);
                    return Err(source(why));
                }
            }
        }
        tracing::debug!(vm = %self.cfg.vm, host = %open.host, checkpoint = %open.checkpoint,
            base = ?open.base, "replication point frozen");
        self.open = Some(open);
        Ok(Point {
            disks,
            full: base.is_none(),
            full_reason,
        })
    }

    fn read_changes(&mut self, disk: u32, sink: &mut Sink<'_>) -> Result<ScanStats, ReplError> {
        let i = disk as usize;
        let (extents, size, incremental) = {
            let Some(open) = self.open.as_mut() else {
                return Err(source("no point begun".into()));
            };
            let incremental = open.base.is_some();
            let vm = &self.cfg.vm;
            let Some(d) = open.disks.get_mut(i) else {
                return Err(source(format!("{vm} has no disk {disk}")));
            };
            let ctx = match incremental {
                true => pull::dirty_context(&d.dev),
                false => "base:allocation".to_owned(),
            };
            let extents = d
                .nbd
                .extents(&ctx, 0, d.size)
                .map_err(|e| source(format!("{vm}:{}: {e}", d.dev)))?;
            (extents, d.size, incremental)
        };
        // A fresh log's replicas start from empty images: zeroes need not
        // travel, but the last block does (it gives the image its size).
        let fresh = !self.chain.committed;
        let mut stats = ScanStats {
            blocks: size.div_ceil(4096),
            ..ScanStats::default()
        };
        let mut sent_end = 0u64;
        // Runs of extents to read go as one batch; zeroes (a full point to
        // replicas that hold data) are sent in between, in order.
        let mut reads: Vec<(u64, u64)> = Vec::new();
        for e in extents {
            let (send, zero) = match incremental {
                true => (e.flags & STATE_DIRTY != 0, false),
                false => {
                    let zero = e.flags & STATE_ZERO != 0;
                    (!(zero && fresh), zero)
                }
            };
            if !send {
                continue;
            }
            sent_end = e.end();
            if zero {
                stats.bytes += self.send_extents(i, &std::mem::take(&mut reads), sink)?;
                stats.bytes += self.send_zeroes(e.offset, e.len, sink)?;
            } else {
                reads.push((e.offset, e.len));
            }
        }
        stats.bytes += self.send_extents(i, &reads, sink)?;
        if !incremental && fresh && sent_end < size && size > 0 {
            let last = size - 1 - (size - 1) % 4096;
            stats.bytes += self.send_zeroes(last, size - last, sink)?;
        }
        stats.changed = stats.bytes.div_ceil(4096);
        Ok(stats)
    }

    fn commit(&mut self) -> Result<(), ReplError> {
        let Some(open) = self.open.take() else {
            return Err(source("no point begun".into()));
        };
        self.end_job(&open);
        let Open {
            client,
            dom,
            host,
            checkpoint,
            ..
        } = open;
        let old = self.chain.base.replace(checkpoint);
        self.chain.committed = true;
        self.save()?;
        if let Some(old) = old {
            let cp = Checkpoint {
                name: old,
                domain: dom,
            };
            if let Err(e) = self.call(client.checkpoint_delete(&cp, 0)) {
                tracing::warn!(vm = %self.cfg.vm, checkpoint = %cp.name, error = %e,
                    "the previous base could not be deleted; the next point retries");
            }
        }
        self.cached = Some((host, client));
        Ok(())
    }

    fn abandon(&mut self, why: &str) {
        let Some(open) = self.open.take() else {
            return;
        };
        tracing::warn!(vm = %self.cfg.vm, checkpoint = %open.checkpoint, why, "replication point abandoned");
        self.end_job(&open);
        let cp = Checkpoint {
            name: open.checkpoint.clone(),
            domain: open.dom.clone(),
        };
        if let Err(e) = self.call(open.client.checkpoint_delete(&cp, 0)) {
            tracing::warn!(vm = %self.cfg.vm, checkpoint = %cp.name, error = %e,
                "the abandoned point's checkpoint is left for the next point to delete");
        }
        self.cached = Some((open.host, open.client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_reads_back_and_bad_text_is_refused() {
        let mut c = Chain::new(false);
        assert_eq!(Chain::parse(&c.text()), Some(c.clone()));
        c.base = Some("vmdr-0badcafe-7".into());
        c.next = 8;
        c.committed = true;
        assert_eq!(Chain::parse(&c.text()), Some(c.clone()));
        assert!(c.prefix().starts_with("vmdr-") && c.prefix().ends_with('-'));
        for bad in [
            "",
            "chain zz\nnext 1\n",
            "chain ab\nnext x\n",
            "chain ab\nnext 0\n",
            "hello",
        ] {
            assert_eq!(Chain::parse(bad), None, "{bad:?}");
        }
    }
}
