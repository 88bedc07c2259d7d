//! What the backend keeps on disk across restarts, in the daemon's state
//! directory: each VM's last definition (so a VM whose host died can be
//! defined on another host: the dead host cannot be asked for it), where
//! vmdr last placed each VM it moved, and the standby hosts it added.
//!
//! Files are written to a temporary name, fsynced and renamed, so a crash
//! leaves the old file or the new one. Definitions may hold secrets (a
//! console password), so files are readable by their owner only. Without a
//! directory (a library user, a test) all of it stays in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where things are kept.
#[derive(Clone, Debug, Default)]
pub struct Store {
    dir: Option<PathBuf>,
}

/// Where vmdr put VMs, and the spares it added.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placements {
    /// VM → the host vmdr last defined it on.
    pub vms: BTreeMap<String, String>,
    /// Standby hosts vmdr added.
    pub added: BTreeSet<String>,
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A VM name as a file name: what is not a plain character is escaped, so
/// no name can reach outside the directory.
fn file_name(vm: &str) -> String {
    vm.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02x}"),
        })
        .collect()
}

impl Store {
    /// A store in `dir` (created if missing), or in memory only.
    pub fn new(dir: Option<PathBuf>) -> Store {
        Store { dir }
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(std::io::Error::other)?
    }

    /// Saves a VM's definition.
    pub async fn save_definition(&self, vm: &str, xml: &str) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let dir = dir.join("domains");
        let path = dir.join(format!("{}.xml", file_name(vm)));
        let data = xml.as_bytes().to_vec();
        Self::blocking(move || {
            std::fs::create_dir_all(&dir)?;
            if std::fs::read(&path).ok().as_deref() == Some(&data[..]) {
                return Ok(());
            }
            write_atomic(&path, &data)
        })
        .await
    }

    /// A VM's saved definition.
    pub async fn definition(&self, vm: &str) -> std::io::Result<Option<String>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let path = dir.join("domains").join(format!("{}.xml", file_name(vm)));
        Self::blocking(move || match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    /// Saves the placements.
    pub async fn save_placements(&self, p: &Placements) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let dir = dir.clone();
        let data = serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?;
        Self::blocking(move || {
            std::fs::create_dir_all(&dir)?;
            write_atomic(&dir.join("placements.json"), &data)
        })
        .await
    }

    /// The saved placements (empty when none were saved). A damaged file is
    /// an error naming it, never silently replaced.
    pub async fn placements(&self) -> std::io::Result<Placements> {
        let Some(dir) = &self.dir else {
            return Ok(Placements::default());
        };
        let path = dir.join("placements.json");
        Self::blocking(move || match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Placements::default()),
            Err(e) => Err(e),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn definitions_and_placements_survive_a_new_store() {
        let dir = std::env::temp_dir().join(format!("dr-libvirt-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::new(Some(dir.clone()));
        s.save_definition("../g 1", "<domain/>")
            .await
            .expect("save");
        let mut p = Placements::default();
        p.vms.insert("g1".into(), "a2".into());
        s.save_placements(&p).await.expect("save");
        let again = Store::new(Some(dir.clone()));
        assert_eq!(
            again.definition("../g 1").await.expect("read").as_deref(),
            Some("<domain/>")
        );
        assert_eq!(again.placements().await.expect("read"), p);
        assert!(dir.join("domains").join("%2e%2e%2fg%201.xml").exists());
        std::fs::write(dir.join("placements.json"), b"{").expect("damage");
        let e = again.placements().await.expect_err("damaged");
        assert!(e.to_string().contains("placements.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
