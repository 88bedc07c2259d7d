//! Registrations under way, kept on disk: a restore off a lost host
//! unregisters the VM and then registers its files on another host. A
//! process that dies between the two would leave the VM out of vCenter's
//! inventory, so the record of what to register is written (and fsynced)
//! before the unregistration and removed once the VM is registered again;
//! the next connection finishes what it finds.
//!
//! One file per VM, `<vm>.pending`, lines: VM name, files path, folder,
//! pool, target host, home host (each reference `Type:value`).
//!
//! Uploads of a replica's disk images are recorded likewise ([`Upload`]):
//! a restore cut off while it uploads (by its action timeout, or a crash)
//! would otherwise leave gigabytes on the datastore, in a directory no VM
//! owns. One file per VM to be created, `<vm>.upload`, lines: that VM's
//! name, datastore, directory, datacenter.

use crate::soap::MoRef;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One registration under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The VM's name.
    pub vm: String,
    /// Its files (`[datastore] dir/vm.vmx`).
    pub path: String,
    /// Its folder.
    pub folder: MoRef,
    /// The resource pool to register into.
    pub pool: MoRef,
    /// The host it goes to.
    pub target: MoRef,
    /// The host it was on (registered back there if the target fails).
    pub home: MoRef,
}

fn file_of(dir: &Path, vm: &str, ext: &str) -> PathBuf {
    // VM names may hold any character: keep the file name safe.
    let safe: String = vm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{safe}-{:016x}.{ext}", fnv(vm)))
}

/// Writes a record durably: aside, fsynced, renamed into place.
fn save_lines(dir: &Path, vm: &str, ext: &str, lines: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = file_of(dir, vm, ext);
    let tmp = path.with_extension(format!("{ext}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(lines.join("\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

/// Removes a record; one that is not there is fine.
fn remove(dir: &Path, vm: &str, ext: &str) -> std::io::Result<()> {
    match std::fs::remove_file(file_of(dir, vm, ext)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => File::open(dir)?.sync_all(),
    }
}

/// Every record of kind `ext` in `dir`, parsed by `parse`; unreadable
/// ones are reported and left in place.
fn all_of<T>(dir: &Path, ext: &str, parse: impl Fn(&[&str]) -> Option<T>) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some(ext) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        match parse(&lines) {
            Some(record) => out.push(record),
            None => {
                tracing::error!(file = %p.display(), "unreadable record of an operation under way: left in place")
            }
        }
    }
    out
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn r(m: &MoRef) -> String {
    format!("{}:{}", m.kind, m.value)
}

fn parse_ref(line: &str) -> Option<MoRef> {
    let (kind, value) = line.split_once(':')?;
    Some(MoRef::new(kind, value))
}

impl Pending {
    /// Writes the record durably.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let lines = [
            self.vm.clone(),
            self.path.clone(),
            r(&self.folder),
            r(&self.pool),
            r(&self.target),
            r(&self.home),
        ];
        save_lines(dir, &self.vm, "pending", &lines)
    }

    /// Removes the record (the VM is registered again).
    pub fn done(dir: &Path, vm: &str) -> std::io::Result<()> {
        remove(dir, vm, "pending")
    }

    /// Every record in `dir`; unreadable ones are reported and skipped.
    pub fn all(dir: &Path) -> Vec<Pending> {
        all_of(dir, "pending", |lines| match lines {
            [vm, path, folder, pool, target, home] => Some(Pending {
                vm: (*vm).to_owned(),
                path: (*path).to_owned(),
                folder: parse_ref(folder)?,
                pool: parse_ref(pool)?,
                target: parse_ref(target)?,
                home: parse_ref(home)?,
            }),
            _ => None,
        })
    }
}

/// An upload of disk images under way, for a VM to be created from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The VM to be created around the images (a restore's temporary name,
    /// or a drill's copy).
    pub vm: String,
    /// The datastore written to.
    pub datastore: String,
    /// The directory on it that holds the upload, and nothing else.
    pub dir: String,
    /// The datacenter of the datastore.
    pub datacenter: MoRef,
}

impl Upload {
    /// Writes the record durably.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let lines = [
            self.vm.clone(),
            self.datastore.clone(),
            self.dir.clone(),
            r(&self.datacenter),
        ];
        save_lines(dir, &self.vm, "upload", &lines)
    }

    /// Removes the record (the VM exists, or the upload was removed).
    pub fn done(dir: &Path, vm: &str) -> std::io::Result<()> {
        remove(dir, vm, "upload")
    }

    /// Every record in `dir`; unreadable ones are reported and skipped.
    pub fn all(dir: &Path) -> Vec<Upload> {
        all_of(dir, "upload", |lines| match lines {
            [vm, datastore, d, datacenter] if !d.is_empty() => Some(Upload {
                vm: (*vm).to_owned(),
                datastore: (*datastore).to_owned(),
                dir: (*d).to_owned(),
                datacenter: parse_ref(datacenter)?,
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_go_away() {
        let dir = std::env::temp_dir().join(format!("vmdr-pending-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = Pending {
            vm: "web 1/ä".into(),
            path: "[datastore1] web 1/web 1.vmx".into(),
            folder: MoRef::new("Folder", "group-v3"),
            pool: MoRef::new("ResourcePool", "resgroup-8"),
            target: MoRef::new("HostSystem", "host-21"),
            home: MoRef::new("HostSystem", "host-20"),
        };
        p.save(&dir).expect("save");
        assert_eq!(Pending::all(&dir), vec![p.clone()]);
        Pending::done(&dir, &p.vm).expect("done");
        assert!(Pending::all(&dir).is_empty());
        Pending::done(&dir, &p.vm).expect("done twice is fine");
        let u = Upload {
            vm: "web 1/ä.vmdr-restore".into(),
            datastore: "datastore1".into(),
            dir: "web_1-vmdr-replica-1700000000000".into(),
            datacenter: MoRef::new("Datacenter", "datacenter-2"),
        };
        u.save(&dir).expect("save");
        assert_eq!(Upload::all(&dir), vec![u.clone()]);
        assert!(Pending::all(&dir).is_empty(), "kinds apart");
        Upload::done(&dir, &u.vm).expect("done");
        assert!(Upload::all(&dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
