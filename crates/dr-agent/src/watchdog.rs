//! The host's watchdog (`/dev/watchdog`, a hardware one or `softdog`): once
//! opened it resets the host unless written to within its timeout. The
//! agent's loop pets it; a thread of its own does the writes, so the loop
//! never blocks on the device, and a loop that stops (hung, killed) stops
//! the petting.

use std::io::Write;
use std::sync::mpsc;

/// An armed watchdog.
pub struct Watchdog {
    tx: mpsc::SyncSender<Pet>,
}

enum Pet {
    Keepalive,
    /// The magic close: a clean stop does not reset the host.
    Disarm,
}

impl Watchdog {
    /// Opens (arms) the device at `path`.
    pub fn arm(path: &std::path::Path) -> std::io::Result<Watchdog> {
        let mut dev = std::fs::OpenOptions::new().write(true).open(path)?;
        let (tx, rx) = mpsc::sync_channel::<Pet>(4);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                for pet in rx {
                    let bytes: &[u8] = match pet {
                        Pet::Keepalive => b"\0",
                        Pet::Disarm => b"V",
                    };
                    if let Err(e) = dev.write_all(bytes).and_then(|()| dev.flush()) {
                        tracing::error!(device = %path.display(), error = %e, "cannot pet the watchdog");
                    }
                    if matches!(pet, Pet::Disarm) {
                        return;
                    }
                }
            })?;
        Ok(Watchdog { tx })
    }

    /// Keeps the host up a while longer.
    pub fn pet(&self) {
        let _ = self.tx.try_send(Pet::Keepalive);
    }

    /// Stops it cleanly.
    pub fn disarm(self) {
        let _ = self.tx.send(Pet::Disarm);
    }
}
