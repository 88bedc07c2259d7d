//! Point-in-time exports of a running domain's disks: the XML of a
//! pull-mode backup (`virDomainBackupBegin`) that QEMU serves over NBD as
//! of the instant it starts, and of the checkpoint created atomically with
//! it, whose dirty bitmap tracks every write after that instant.
//!
//! An incremental backup from checkpoint `base` exports, beside each disk,
//! the bitmap of everything written since `base` as the NBD metadata
//! context [`dirty_context`]. Reads of the export see the disk frozen at
//! the backup's instant while the guest goes on writing: QEMU copies each
//! block the guest overwrites to the scratch file first (copy-before-write),
//! so the scratch grows with what the guest writes during the read.

use crate::domxml::escape;

/// Where QEMU serves the export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NbdServer {
    /// TCP on the host's address and a port.
    Tcp {
        /// The address QEMU listens on (the host's, as its clients reach it).
        host: String,
        /// The port.
        port: u16,
    },
    /// A Unix socket on the host.
    Unix(String),
}

/// The export name of disk `dev`.
pub fn export_name(dev: &str) -> String {
    dev.to_owned()
}

/// The name of the exported bitmap of disk `dev`.
pub fn bitmap_name(dev: &str) -> String {
    format!("vmdr-{dev}")
}

/// The NBD metadata context of disk `dev`'s changes since the base.
pub fn dirty_context(dev: &str) -> String {
    format!("qemu:dirty-bitmap:{}", bitmap_name(dev))
}

/// The scratch file of disk `dev` in `dir` for the backup of `vm`.
pub fn scratch_path(dir: &str, vm: &str, dev: &str) -> String {
    format!(
        "{}/vmdr-scratch-{vm}-{dev}.qcow2",
        dir.trim_end_matches('/')
    )
}

/// The `<domainbackup>` of a pull-mode backup of `disks` (target devices),
/// served at `server`, scratch files in `scratch_dir`, incremental from
/// checkpoint `base` when given (full otherwise).
pub fn backup_xml(
    vm: &str,
    disks: &[String],
    server: &NbdServer,
    scratch_dir: &str,
    base: Option<&str>,
) -> String {
    let mut x = String::from("<domainbackup mode='pull'>");
    if let Some(b) = base {
        x.push_str(&format!("<incremental>{}</incremental>", escape(b)));
    }
    match server {
        NbdServer::Tcp { host, port } => x.push_str(&format!(
            "<server transport='tcp' name='{}' port='{port}'/>",
            escape(host)
        )),
        NbdServer::Unix(path) => x.push_str(&format!(
            "<server transport='unix' socket='{}'/>",
            escape(path)
        )),
    }
    x.push_str("<disks>");
    for dev in disks {
        let bitmap = match base {
            Some(_) => format!(" exportbitmap='{}'", escape(&bitmap_name(dev))),
            None => String::new(),
        };
        x.push_str(&format!(
            "<disk name='{d}' backup='yes' type='file' exportname='{e}'{bitmap}><scratch file='{s}'/></disk>",
            d = escape(dev),
            e = escape(&export_name(dev)),
            s = escape(&scratch_path(scratch_dir, vm, dev)),
        ));
    }
    x.push_str("</disks></domainbackup>");
    x
}

/// The `<domaincheckpoint>` named `name` over `disks`, created with the
/// backup: its bitmaps start at the backup's instant.
pub fn checkpoint_xml(name: &str, disks: &[String]) -> String {
    let mut x = format!(
        "<domaincheckpoint><name>{}</name><description>vmdr replication point</description><disks>",
        escape(name)
    );
    for dev in disks {
        x.push_str(&format!(
            "<disk name='{}' checkpoint='bitmap'/>",
            escape(dev)
        ));
    }
    x.push_str("</disks></domaincheckpoint>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incremental_pull_backup_exports_each_disk_with_its_bitmap() {
        let disks = vec!["vda".to_owned(), "vdb".to_owned()];
        let server = NbdServer::Tcp {
            host: "198.19.3.10".into(),
            port: 10809,
        };
        let x = backup_xml("db-1", &disks, &server, "/var/lib/vmdr/", Some("vmdr-7"));
        assert!(x.starts_with("<domainbackup mode='pull'><incremental>vmdr-7</incremental>"));
        assert!(x.contains("<server transport='tcp' name='198.19.3.10' port='10809'/>"));
        assert!(x.contains("<disk name='vdb' backup='yes' type='file' exportname='vdb' exportbitmap='vmdr-vdb'><scratch file='/var/lib/vmdr/vmdr-scratch-db-1-vdb.qcow2'/></disk>"));
        let full = backup_xml(
            "db-1",
            &disks,
            &NbdServer::Unix("/run/x'.sock".into()),
            "/s",
            None,
        );
        assert!(!full.contains("incremental") && !full.contains("exportbitmap"));
        assert!(full.contains("socket='/run/x&apos;.sock'"), "{full}");
        assert_eq!(dirty_context("vda"), "qemu:dirty-bitmap:vmdr-vda");
        let c = checkpoint_xml("vmdr-8", &disks);
        assert!(
            c.contains("<name>vmdr-8</name>")
                && c.contains("<disk name='vdb' checkpoint='bitmap'/>")
        );
    }
}
