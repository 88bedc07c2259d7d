//! `[replication]`: the key, the schedule, the receivers this daemon runs
//! and the VMs it protects, each from its disk images (the hash scan) or
//! from the hypervisor's change tracking (`source = "libvirt"`: the disks
//! found from the VM's definition, each point one instant of all of them).

use super::{line_of, Backend, ConfigError};
use crate::replication::{DiskSource, Protected, Receive, ReplicationConfig, RestoreImages};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplication {
    key_file: Option<String>,
    key_env: Option<String>,
    interval: Option<Spanned<String>>,
    rpo_target: Option<Spanned<String>>,
    bandwidth: Option<u64>,
    log_root: Option<String>,
    #[serde(default)]
    vm: Vec<RawProtected>,
    #[serde(default)]
    receive: Vec<RawReceive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceive {
    listen: Spanned<String>,
    dir: String,
    keep: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtected {
    name: Spanned<String>,
    source: Option<Spanned<String>>,
    #[serde(default)]
    disks: Vec<String>,
    targets: Vec<Spanned<String>>,
    interval: Option<Spanned<String>>,
    nbd_port: Option<u16>,
    scratch_dir: Option<String>,
    scratch_limit_mb: Option<u64>,
    replica: Option<String>,
    restore_disks: Option<Vec<String>>,
    restore_dir: Option<String>,
}

/// The first NBD port of libvirt-tracked VMs that do not set one: each
/// gets the next, in the order of the file.
const NBD_BASE_PORT: u16 = 10809;

/// What parsing needs of the rest of the file.
pub(super) struct Ctx<'a> {
    pub text: &'a str,
    pub path: &'a Path,
    pub base: &'a Path,
    pub backend: &'a Backend,
}

impl Ctx<'_> {
    fn err(&self, line: Option<usize>, message: String) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            line,
            message,
        }
    }

    fn duration(&self, key: &str, v: &Spanned<String>) -> Result<Duration, ConfigError> {
        dr_core::time::parse_duration(v.get_ref()).map_err(|e| {
            self.err(
                Some(line_of(self.text, v.span().start)),
                format!("{key}: {e}"),
            )
        })
    }

    fn addr(&self, key: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        v.get_ref().parse::<SocketAddr>().map_err(|e| {
            self.err(
                Some(line_of(self.text, v.span().start)),
                format!("{key} {:?}: {e} (expected ADDRESS:PORT)", v.get_ref()),
            )
        })
    }
}

fn key(ctx: &Ctx<'_>, r: &RawReplication) -> Result<Vec<u8>, ConfigError> {
    let key = match (&r.key_file, &r.key_env) {
        (Some(f), None) => {
            let p = ctx.base.join(f);
            std::fs::read(&p)
                .map_err(|e| ctx.err(None, format!("replication.key_file {}: {e}", p.display())))?
        }
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| ctx.err(None, format!("replication.key_env: ${var} is not set")))?
            .into_bytes(),
        _ => {
            return Err(ctx.err(
                None,
                "replication: give key_file or key_env (one of them)".into(),
            ))
        }
    };
    let key = key.trim_ascii().to_vec();
    if key.len() < 16 {
        return Err(ctx.err(
            None,
            "replication: the key must be at least 16 bytes".into(),
        ));
    }
    Ok(key)
}

/// Parses `[replication]`.
pub(super) fn parse(ctx: &Ctx<'_>, r: RawReplication) -> Result<ReplicationConfig, ConfigError> {
    let key = key(ctx, &r)?;
    let interval = match &r.interval {
        None => Duration::from_secs(5),
        Some(s) => ctx.duration("replication.interval", s)?,
    };
    // A checkpoint every interval, shipped within the next: an RPO up to
    // about two intervals is on schedule.
    let rpo_target = match &r.rpo_target {
        None => interval * 3,
        Some(s) => ctx.duration("replication.rpo_target", s)?,
    };
    let log_root = ctx
        .base
        .join(r.log_root.as_deref().unwrap_or("drd-replication"));
    let mut receive = Vec::new();
    for rc in &r.receive {
        receive.push(Receive {
            listen: ctx.addr("replication.receive.listen", &rc.listen)?,
            dir: ctx.base.join(&rc.dir),
            keep: rc.keep.unwrap_or(2).max(1),
        });
    }
    let mut vms = Vec::new();
    let mut next_port = NBD_BASE_PORT;
    for v in r.vm {
        vms.push(protected(
            ctx,
            v,
            &log_root,
            interval,
            &receive,
            &mut next_port,
        )?);
    }
    Ok(ReplicationConfig {
        key,
        interval,
        rpo_target,
        bandwidth: r.bandwidth.filter(|&b| b > 0),
        vms,
        receive,
    })
}

fn protected(
    ctx: &Ctx<'_>,
    v: RawProtected,
    log_root: &Path,
    interval: Duration,
    receive: &[Receive],
    next_port: &mut u16,
) -> Result<Protected, ConfigError> {
    let line = Some(line_of(ctx.text, v.name.span().start));
    let name = v.name.get_ref().clone();
    let fail = |msg: String| ctx.err(line, format!("replication.vm {name:?}: {msg}"));
    if v.targets.is_empty() {
        return Err(fail("needs targets (its receivers, ADDRESS:PORT)".into()));
    }
    let mut targets = Vec::new();
    for t in &v.targets {
        targets.push(ctx.addr("replication.vm.targets", t)?);
    }
    let log_dir = log_root.join(&name);
    let source = match v.source.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("scan") => {
            if v.disks.is_empty() {
                return Err(fail(
                    "needs disks (its image files), or source = \"libvirt\" to read them from the hypervisor"
                        .into(),
                ));
            }
            if v.nbd_port.is_some() || v.scratch_dir.is_some() || v.scratch_limit_mb.is_some() {
                return Err(fail(
                    "nbd_port, scratch_dir and scratch_limit_mb go with source = \"libvirt\"".into(),
                ));
            }
            DiskSource::Scan(v.disks.iter().map(|d| ctx.base.join(d)).collect())
        }
        Some("libvirt") => {
            let Backend::Libvirt { config } = ctx.backend else {
                return Err(fail(
                    "source = \"libvirt\" needs backend = \"libvirt\" (its hosts are where the VM is looked for)"
                        .into(),
                ));
            };
            if !v.disks.is_empty() {
                return Err(fail(
                    "with source = \"libvirt\" the disks are found from the VM's definition: drop disks"
                        .into(),
                ));
            }
            let nbd_port = match v.nbd_port {
                Some(0) => return Err(fail("nbd_port 0 is not a port".into())),
                Some(p) => p,
                None => {
                    let p = *next_port;
                    *next_port = next_port.saturating_add(1);
                    p
                }
            };
            DiskSource::Libvirt(dr_libvirt::changes::Tracking {
                vm: name.clone(),
                hosts: config.hosts.clone(),
                state_dir: log_dir.clone(),
                nbd_port,
                scratch_dir: v.scratch_dir.clone(),
                scratch_limit: v.scratch_limit_mb.unwrap_or(1024).max(1) << 20,
                timeout: config.action_timeout,
            })
        }
        Some(other) => {
            return Err(ctx.err(
                v.source.as_ref().map(|s| line_of(ctx.text, s.span().start)),
                format!(
                    "replication.vm {name:?}: source {other:?}: expected \"scan\" (disk images) or \"libvirt\" (change tracking)"
                ),
            ))
        }
    };
    let restore = match (&v.replica, &v.restore_disks, &v.restore_dir) {
        (None, None, None) => None,
        (Some(dir), disks, dir_out) => {
            let dir = ctx.base.join(dir);
            if !receive.iter().any(|rc| rc.dir == dir) {
                return Err(fail(format!(
                    "replica {} is not a [[replication.receive]] dir of this daemon",
                    dir.display()
                )));
            }
            let images = match (disks, dir_out) {
                (Some(images), None) => {
                    if let DiskSource::Scan(d) = &source {
                        if images.len() != d.len() {
                            return Err(fail(format!(
                                "restore_disks needs one image per disk ({})",
                                d.len()
                            )));
                        }
                    }
                    RestoreImages::Files(images.iter().map(|i| ctx.base.join(i)).collect())
                }
                (None, Some(d)) => RestoreImages::Dir(ctx.base.join(d)),
                (None, None) => {
                    return Err(fail(
                        "replica needs restore_disks (one image per disk) or restore_dir".into(),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(fail("give restore_disks or restore_dir, not both".into()))
                }
            };
            Some((dir, images))
        }
        (None, _, _) => {
            return Err(fail(
                "restore_disks and restore_dir go with replica (the replica they are written from)"
                    .into(),
            ))
        }
    };
    Ok(Protected {
        interval: match &v.interval {
            Some(s) => ctx.duration("replication.vm.interval", s)?,
            None => interval,
        },
        restore,
        log_dir: log_dir.clone(),
        vm: name,
        source,
        targets,
    })
}

/// Where restored images go when only their directory is given.
pub fn image_in(dir: &Path, vm: &str, disk: u32) -> PathBuf {
    dir.join(format!("{vm}-disk{disk}.img"))
}

#[cfg(test)]
mod tests {
    use crate::config::DaemonConfig;
    use crate::replication::{DiskSource, RestoreImages};
    use std::path::Path;
    use std::time::Duration;

    const LIBVIRT: &str = "backend = \"libvirt\"\n[libvirt]\n[[libvirt.host]]\nname = \"kvm-a1\"\nuri = \"qemu+tcp://198.19.0.11/system\"\nip = \"198.19.0.11\"\n";
    const REPL: &str = "[replication]\nkey_env = \"VMDR_TEST_REPL_KEY\"\ninterval = \"2s\"\n[[replication.receive]]\nlisten = \"127.0.0.1:7400\"\ndir = \"replicas/db-1\"\n";

    fn parse(text: &str) -> Result<DaemonConfig, crate::config::ConfigError> {
        std::env::set_var("VMDR_TEST_REPL_KEY", "0123456789abcdef0123");
        DaemonConfig::parse(Path::new("/etc/vmdr/drd.toml"), text)
    }

    #[test]
    fn a_libvirt_tracked_vm_finds_its_disks_and_gets_a_port_of_its_own() {
        let c = parse(&format!(
            "{LIBVIRT}{REPL}[[replication.vm]]\nname = \"db-1\"\nsource = \"libvirt\"\ntargets = [\"127.0.0.1:7400\"]\ninterval = \"1s\"\nreplica = \"replicas/db-1\"\nrestore_dir = \"restored\"\n\
             [[replication.vm]]\nname = \"web-1\"\nsource = \"libvirt\"\ntargets = [\"127.0.0.1:7400\"]\nscratch_dir = \"/srv/scratch\"\nscratch_limit_mb = 64\n"
        ))
        .expect("valid");
        let r = c.replication.expect("replication");
        let (db, web) = (&r.vms[0], &r.vms[1]);
        let DiskSource::Libvirt(t) = &db.source else {
            panic!("db-1 is tracked by libvirt: {:?}", db.source)
        };
        assert_eq!(
            (t.vm.as_str(), t.nbd_port, t.scratch_limit),
            ("db-1", 10809, 1 << 30)
        );
        assert_eq!(t.hosts.len(), 1);
        assert_eq!(t.state_dir, Path::new("/etc/vmdr/drd-replication/db-1"));
        assert_eq!(db.interval, Duration::from_secs(1));
        assert_eq!(
            db.restore,
            Some((
                "/etc/vmdr/replicas/db-1".into(),
                RestoreImages::Dir("/etc/vmdr/restored".into())
            ))
        );
        let DiskSource::Libvirt(w) = &web.source else {
            panic!("web-1 is tracked by libvirt")
        };
        assert_eq!((w.nbd_port, w.scratch_limit), (10810, 64 << 20));
        assert_eq!(w.scratch_dir.as_deref(), Some("/srv/scratch"));
        assert_eq!(
            web.interval,
            Duration::from_secs(2),
            "the section's interval"
        );
    }

    #[test]
    fn libvirt_tracking_is_refused_where_it_cannot_work() {
        let vm = "[[replication.vm]]\nname = \"db-1\"\nsource = \"libvirt\"\ntargets = [\"127.0.0.1:7400\"]\n";
        let sim = "backend = \"sim\"\n[sim]\nscenario = \"x\"\n";
        let e = parse(&format!("{sim}{REPL}{vm}")).expect_err("not on the sim backend");
        assert!(e.message.contains("needs backend = \"libvirt\""), "{e}");
        let e = parse(&format!("{LIBVIRT}{REPL}{vm}disks = [\"/img/a.qcow2\"]\n"))
            .expect_err("disks given");
        assert!(e.message.contains("drop disks"), "{e}");
        let e = parse(&format!(
            "{LIBVIRT}{REPL}[[replication.vm]]\nname = \"db-1\"\nsource = \"rsync\"\ntargets = [\"127.0.0.1:7400\"]\n"
        ))
        .expect_err("unknown source");
        assert!(
            e.message.contains("source \"rsync\"") && e.line == Some(15),
            "{e}"
        );
        let e = parse(&format!(
            "{LIBVIRT}{REPL}[[replication.vm]]\nname = \"db-1\"\ntargets = [\"127.0.0.1:7400\"]\n"
        ))
        .expect_err("no disks for a scan");
        assert!(e.message.contains("needs disks"), "{e}");
        let e = parse(&format!(
            "{LIBVIRT}{REPL}[[replication.vm]]\nname = \"db-1\"\ndisks = [\"a.img\"]\nnbd_port = 7000\ntargets = [\"127.0.0.1:7400\"]\n"
        ))
        .expect_err("an NBD port for a scan");
        assert!(e.message.contains("go with source = \"libvirt\""), "{e}");
        let e = parse(&format!(
            "{LIBVIRT}{REPL}{vm}replica = \"replicas/db-1\"\nrestore_dir = \"r\"\nrestore_disks = [\"a\"]\n"
        ))
        .expect_err("both restore forms");
        assert!(e.message.contains("not both"), "{e}");
        let e = parse(&format!("{LIBVIRT}{REPL}{vm}restore_dir = \"r\"\n"))
            .expect_err("restore_dir without a replica");
        assert!(e.message.contains("go with replica"), "{e}");
    }
}
