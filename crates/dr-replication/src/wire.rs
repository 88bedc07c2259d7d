//! Frames between a shipper and a receiver, authenticated with a pre-shared
//! key: every frame carries an HMAC-SHA256 over its direction, its counter
//! and its bytes, under a key derived for the connection from the PSK and
//! both ends' nonces. A frame that does not authenticate ends the
//! connection; a replayed or reordered one fails its counter.
//!
//! ```text
//! u32 len   bytes of type + payload
//! u8  type  1 hello, 2 welcome, 3 records, 4 ack
//! payload
//! [32] mac
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

/// Largest frame accepted (a batch of records).
pub const MAX_FRAME: usize = 80 << 20;
/// Protocol version.
pub const VERSION: u16 = 1;

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Shipper → receiver: version and nonce.
    Hello = 1,
    /// Receiver → shipper: nonce and where the replica stands.
    Welcome = 2,
    /// Shipper → receiver: encoded records.
    Records = 3,
    /// Receiver → shipper: a checkpoint is durable.
    Ack = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        [Kind::Hello, Kind::Welcome, Kind::Records, Kind::Ack]
            .into_iter()
            .find(|k| *k as u8 == b)
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame did not authenticate (wrong key, tampering, replay).
    #[error("frame {counter} failed authentication: wrong key or tampered")]
    BadMac {
        /// Its counter.
        counter: u64,
    },
    /// A frame that no peer of this version sends.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// One direction's authentication state.
pub struct Auth {
    key: Vec<u8>,
    dir: u8,
    counter: u64,
}

impl Auth {
    /// With a key (the PSK for the handshake, then the session key) for
    /// direction `dir` (0: shipper → receiver, 1: back).
    pub fn new(key: &[u8], dir: u8) -> Auth {
        Auth {
            key: key.to_vec(),
            dir,
            counter: 0,
        }
    }

    fn hmac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        m.update(&[self.dir]);
        m.update(&self.counter.to_le_bytes());
        m
    }
}

/// The per-connection key.
pub fn session_key(psk: &[u8], client: &[u8; 16], server: &[u8; 16]) -> Vec<u8> {
    let mut m = <HmacSha256 as Mac>::new_from_slice(psk)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(b"vmdr-repl-v1");
    m.update(client);
    m.update(server);
    m.finalize().into_bytes().to_vec()
}

/// A fresh random nonce.
pub fn nonce() -> Result<[u8; 16], WireError> {
    let mut n = [0u8; 16];
    getrandom::getrandom(&mut n).map_err(|e| WireError::Protocol(format!("no randomness: {e}")))?;
    Ok(n)
}

/// Writes one frame.
pub async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    auth: &mut Auth,
    kind: Kind,
    payload: &[u8],
) -> Result<(), WireError> {
    auth.counter += 1;
    let mut head = Vec::with_capacity(5);
    head.extend_from_slice(&((payload.len() + 1) as u32).to_le_bytes());
    head.push(kind as u8);
    let mut m = auth.hmac();
    m.update(&head);
    m.update(payload);
    let mac: [u8; 32] = m.finalize().into_bytes().into();
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    w.write_all(&mac).await?;
    Ok(())
}

/// Reads one frame; refuses what does not authenticate.
pub async fn recv<R: AsyncRead + Unpin>(
    r: &mut R,
    auth: &mut Auth,
) -> Result<(Kind, Vec<u8>), WireError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(WireError::Protocol(format!("frame length {len}")));
    }
    let mut payload = vec![0u8; len - 1];
    r.read_exact(&mut payload).await?;
    let mut mac = [0u8; 32];
    r.read_exact(&mut mac).await?;
    auth.counter += 1;
    let mut m = auth.hmac();
    m.update(&head);
    m.update(&payload);
    // `verify_slice` compares in constant time.
    if m.verify_slice(&mac).is_err() {
        return Err(WireError::BadMac {
            counter: auth.counter,
        });
    }
    let kind = Kind::from_u8(head[4])
        .ok_or_else(|| WireError::Protocol(format!("frame type {}", head[4])))?;
    Ok((kind, payload))
}
