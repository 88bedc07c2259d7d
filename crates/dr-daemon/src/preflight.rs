//! The checks the daemon makes before it starts that parsing a
//! configuration cannot: the files it names, read as the daemon will read
//! them, and the directories it writes into. The daemon runs them first,
//! and `drd check-config` runs the same ones, so `valid` means the daemon
//! can start with the file (short of what only a connection shows: a
//! vCenter or a libvirt daemon that does not answer).
//!
//! Each error names the key it comes from.

use crate::config::{Backend, ConfigError, DaemonConfig};
use std::path::Path;

/// Runs every check; the first that fails is the error.
pub fn check(cfg: &DaemonConfig) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError {
        path: cfg.path.clone(),
        line: None,
        message,
    };
    match &cfg.cluster {
        // A cluster's journal is in etcd.
        Some(c) => {
            for (key, file) in crate::cluster::files(c) {
                std::fs::File::open(&file)
                    .map_err(|e| err(format!("{key} {}: {e}", file.display())))?;
            }
        }
        None => journal(&cfg.journal).map_err(err)?,
    }
    backend(&cfg.backend).map_err(err)?;
    if let Some(r) = &cfg.replication {
        replication(r).map_err(err)?;
    }
    if let Some(dir) = cfg.agents.as_ref().and_then(|a| a.storage_dir.as_ref()) {
        // Unreadable later is a fact the engine weighs (no storage
        // evidence); missing at the start is a mistake in the file.
        if !dir.is_dir() {
            return Err(err(format!(
                "agents.storage_dir {}: is not a directory",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn journal(path: &Path) -> Result<(), String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        if !dir.is_dir() {
            return Err(format!(
                "journal.path {}: its directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
    }
    if path.is_dir() {
        return Err(format!(
            "journal.path {}: is a directory, not a journal file",
            path.display()
        ));
    }
    Ok(())
}

fn backend(backend: &Backend) -> Result<(), String> {
    match backend {
        Backend::Sim { scenario } => crate::backend::load_scenario(scenario)
            .map(|_| ())
            .map_err(|e| format!("sim.scenario {e}")),
        Backend::Vsphere { config, .. } => {
            config
                .password
                .read()
                .map_err(|e| format!("vsphere password: {e}"))?;
            dr_vsphere::tls::http_client(&config.tls, config.timeout)
                .map(|_| ())
                .map_err(|e| format!("vsphere tls: {e}"))
        }
        // Only connecting tells more.
        Backend::SimServer { .. } | Backend::Libvirt { .. } => Ok(()),
    }
}

fn replication(r: &crate::replication::ReplicationConfig) -> Result<(), String> {
    for p in &r.vms {
        if let crate::replication::DiskSource::Scan(disks) = &p.source {
            for disk in disks {
                std::fs::metadata(disk).map_err(|e| {
                    format!("replication.vm {:?}: disk {}: {e}", p.vm, disk.display())
                })?;
            }
        }
        // The restore images' directories are made when a failover writes
        // them; a path that exists must not be a directory (nor a file,
        // for restore_dir).
        if let Some((_, crate::replication::RestoreImages::Dir(d))) = &p.restore {
            if d.exists() && !d.is_dir() {
                return Err(format!(
                    "replication.vm {:?}: restore_dir {}: is not a directory",
                    p.vm,
                    d.display()
                ));
            }
        }
        if let Some((_, crate::replication::RestoreImages::Files(images))) = &p.restore {
            if let Some(image) = images.iter().find(|i| i.is_dir()) {
                return Err(format!(
                    "replication.vm {:?}: restore_disks {}: is a directory, not an image",
                    p.vm,
                    image.display()
                ));
            }
        }
    }
    for rc in &r.receive {
        if rc.dir.exists() && !rc.dir.is_dir() {
            return Err(format!(
                "replication.receive dir {}: is not a directory",
                rc.dir.display()
            ));
        }
    }
    Ok(())
}
