//! Registrations under way, kept on disk: a restore off a lost host
//! unregisters the VM and then registers its files on another host. A
//! process that dies between the two would leave the VM out of vCenter's
//! inventory, so the record of what to register is written (and fsynced)
//! before the unregistration and removed once the VM is registered again;
//! the next connection finishes what it finds.
//!
//! One file per VM, `<vm>.pending`, lines: VM name, files path, folder,
//! pool, target host, home host (each reference `Type:value`).

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

fn file_of(dir: &Path, vm: &str) -> PathBuf {
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
    dir.join(format!("{safe}-{:016x}.pending", fnv(vm)))
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
        std::fs::create_dir_all(dir)?;
        let path = file_of(dir, &self.vm);
        let tmp = path.with_extension("tmp");
        let text = [
            self.vm.clone(),
            self.path.clone(),
            r(&self.folder),
            r(&self.pool),
            r(&self.target),
            r(&self.home),
        ]
        .join("\n");
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    }

    /// Removes the record (the VM is registered again).
    pub fn done(dir: &Path, vm: &str) -> std::io::Result<()> {
        match std::fs::remove_file(file_of(dir, vm)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => File::open(dir)?.sync_all(),
        }
    }

    /// Every record in `dir`; unreadable ones are reported and skipped.
    pub fn all(dir: &Path) -> Vec<Pending> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("pending") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let parsed = match lines.as_slice() {
                [vm, path, folder, pool, target, home] => (|| {
                    Some(Pending {
                        vm: (*vm).to_owned(),
                        path: (*path).to_owned(),
                        folder: parse_ref(folder)?,
                        pool: parse_ref(pool)?,
                        target: parse_ref(target)?,
                        home: parse_ref(home)?,
                    })
                })(),
                _ => None,
            };
            match parsed {
                Some(pending) => out.push(pending),
                None => {
                    tracing::error!(file = %p.display(), "unreadable pending registration record: left in place")
                }
            }
        }
        out
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
