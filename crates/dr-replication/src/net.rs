//! Shipping over TCP: a receiver serving one replica, and a shipper
//! streaming the log to one receiver with back-pressure, reconnecting and
//! resuming from the receiver's last durable checkpoint.

use crate::log::Log;
use crate::record;
use crate::replica::{CheckpointInfo, Replica};
use crate::stream::StreamId;
use crate::wire::{self, Auth, Kind, WireError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `replica` to shippers connecting on `listener` until `shutdown`
/// turns true. Each connection must authenticate with `psk`; one that does
/// not is dropped (and counted in the log), nothing it sent is applied.
pub async fn serve(
    listener: TcpListener,
    replica: Arc<Mutex<Replica>>,
    psk: Arc<Vec<u8>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Connections end with the server: each finishes the frame it is
    // applying (and its merge) and stops, so that nothing holds the replica
    // once this returns; one that does not within the grace is cut off.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
                        while connections.join_next().await.is_some() {}
                    })
                    .await;
                    if drained.is_err() {
                        tracing::warn!("replication connections cut off at shutdown");
                        connections.abort_all();
                        while connections.join_next().await.is_some() {}
                    }
                    return;
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (replica, psk, stop) = (replica.clone(), psk.clone(), shutdown.clone());
                    connections.spawn(async move {
                        match receive(stream, replica, &psk, stop).await {
                            Ok(()) => {}
                            // A shipper that is done (or killed) closes
                            // the connection: it resumes from its last
                            // acknowledgement, nothing to warn about.
                            Err(NetError::Wire(WireError::Io(e)))
                                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                            {
                                tracing::debug!(%peer, "the shipper closed the connection");
                            }
                            // Logged where it was refused.
                            Err(e) if e.is_refusal() => {
                                tracing::debug!(%peer, error = %e, "replication connection refused");
                            }
                            Err(e) => tracing::warn!(%peer, error = %e, "replication connection ended"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Error of a receiving connection.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The wire failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The replica refused or failed.
    #[error(transparent)]
    Replica(#[from] crate::error::ReplError),
    /// The other end does not hold the same pre-shared key (or the
    /// handshake was tampered with). The key itself is never shown.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The receiver would not take this stream, and said why.
    #[error("the receiver refused: {0}")]
    Refused(String),
    /// The receiver says it has more of this stream than the log ever
    /// held: the log was recreated or brought back from an older copy.
    #[error(
        "the receiver has stream {stream} up to record {acked}, but this log ends at record \
         {last}: the log was recreated or restored from an older copy; give the replica a new \
         directory to copy the disks afresh"
    )]
    AheadOfLog {
        /// The stream.
        stream: StreamId,
        /// What the receiver has.
        acked: u64,
        /// The log's last record.
        last: u64,
    },
    /// A task failed.
    #[error("internal: {0}")]
    Internal(String),
}

impl NetError {
    /// Whether trying again cannot help until someone changes a key, a
    /// directory or a log.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            NetError::Authentication(_) | NetError::Refused(_) | NetError::AheadOfLog { .. }
        )
    }
}

/// An authenticated connection: its two halves and the keys sealing each
/// direction under the connection's session key.
pub struct Session {
    /// Frames from the peer.
    pub reader: OwnedReadHalf,
    /// Frames to the peer.
    pub writer: OwnedWriteHalf,
    /// Opens the peer's frames.
    pub inbound: Auth,
    /// Seals ours.
    pub outbound: Auth,
}

/// What a receiver does with a shipper's hello, once it authenticated.
pub type Admit<'a> = Box<dyn FnOnce(StreamId) -> Result<u64, String> + Send + 'a>;

/// The text of a refusal for a hello that failed authentication. The
/// shipper cannot check the frame (it is under the receiver's key) and
/// reports that; the text is for a shipper that could.
const AUTH_REFUSED: &str = "the shipper's hello failed authentication";

/// Tells the shipper why it is refused, and gives back the reason. Best
/// effort: the refusal is what the shipper reports; this end fails with the
/// cause either way.
async fn refuse(
    w: &mut OwnedWriteHalf,
    outbound: &mut Auth,
    err: NetError,
    tell: &str,
) -> NetError {
    // Logged before the shipper is told: it may give up at once, and a
    // receiver stopped right then still has the refusal in its log.
    let peer = w.peer_addr().ok();
    tracing::warn!(peer = ?peer, error = %err, "replication refused");
    let mut text = tell.as_bytes().to_vec();
    let _ = wire::send(w, outbound, Kind::Refused, &mut text).await;
    err
}

/// The receiver's side of the handshake: checks the shipper's hello (its
/// MAC proves the pre-shared key), asks `admit` whether to take its stream
/// (`Ok`: the sequence up to which the replica has it all; `Err`: why not,
/// sent to the shipper), answers with a nonce of its own and that
/// sequence, and switches to the session key both nonces derive.
pub async fn accept(
    stream: TcpStream,
    psk: &[u8],
    admit: Admit<'_>,
) -> Result<(Session, StreamId), NetError> {
    stream.set_nodelay(true).map_err(WireError::from)?;
    let (mut r, mut w) = stream.into_split();
    let mut inbound = Auth::new(psk, 0);
    let mut outbound = Auth::new(psk, 1);
    let (kind, hello) = match wire::recv(&mut r, &mut inbound).await {
        Ok(frame) => frame,
        Err(WireError::BadMac { .. }) => {
            let err = NetError::Authentication(
                "the shipper's hello does not carry this receiver's key: the two ends have \
                 different replication keys (or the hello was tampered with)"
                    .into(),
            );
            return Err(refuse(&mut w, &mut outbound, err, AUTH_REFUSED).await);
        }
        Err(e) => return Err(e.into()),
    };
    let version = (hello.len() >= 2).then(|| u16::from_le_bytes([hello[0], hello[1]]));
    if kind != Kind::Hello || hello.len() != 34 || version != Some(wire::VERSION) {
        let why = match version {
            Some(v) if kind == Kind::Hello && v != wire::VERSION => format!(
                "the shipper speaks replication protocol version {v}, this receiver version {}",
                wire::VERSION
            ),
            _ => format!("expected a hello of version {}", wire::VERSION),
        };
        let err = NetError::Refused(why.clone());
        return Err(refuse(&mut w, &mut outbound, err, &why).await);
    }
    let mut client = [0u8; 16];
    client.copy_from_slice(&hello[2..18]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hello[18..34]);
    let id = StreamId(id);
    let acked = match admit(id) {
        Ok(acked) => acked,
        Err(why) => {
            let err = NetError::Refused(why.clone());
            return Err(refuse(&mut w, &mut outbound, err, &why).await);
        }
    };
    let server = wire::nonce()?;
    let mut welcome = server.to_vec();
    welcome.extend_from_slice(&acked.to_le_bytes());
    wire::send(&mut w, &mut outbound, Kind::Welcome, &mut welcome).await?;
    let key = wire::session_key(psk, &client, &server);
    Ok((
        Session {
            reader: r,
            writer: w,
            inbound: Auth::sealed(&key, 0),
            outbound: Auth::sealed(&key, 1),
        },
        id,
    ))
}

/// The shipper's side of the handshake with the receiver at `addr`, for
/// stream `stream`. Returns the session and the sequence up to which the
/// receiver has everything (the shipper resumes after it).
pub async fn connect(
    addr: SocketAddr,
    psk: &[u8],
    stream: StreamId,
) -> Result<(Session, u64), NetError> {
    let tcp = TcpStream::connect(addr).await.map_err(WireError::from)?;
    tcp.set_nodelay(true).map_err(WireError::from)?;
    let (mut r, mut w) = tcp.into_split();
    let mut outbound = Auth::new(psk, 0);
    let mut inbound = Auth::new(psk, 1);
    let client = wire::nonce()?;
    let mut hello = wire::VERSION.to_le_bytes().to_vec();
    hello.extend_from_slice(&client);
    hello.extend_from_slice(&stream.0);
    wire::send(&mut w, &mut outbound, Kind::Hello, &mut hello).await?;
    let (kind, welcome) = match wire::recv(&mut r, &mut inbound).await {
        Ok(frame) => frame,
        Err(WireError::BadMac { .. }) => {
            return Err(NetError::Authentication(format!(
                "the answer of the receiver at {addr} does not carry this shipper's key: the two \
                 ends have different replication keys (or the answer was tampered with)"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if kind == Kind::Refused {
        return Err(NetError::Refused(
            String::from_utf8_lossy(&welcome).into_owned(),
        ));
    }
    if kind != Kind::Welcome || welcome.len() != 24 {
        return Err(WireError::Protocol("expected a welcome".into()).into());
    }
    let mut server = [0u8; 16];
    server.copy_from_slice(&welcome[..16]);
    let mut acked = [0u8; 8];
    acked.copy_from_slice(&welcome[16..24]);
    let key = wire::session_key(psk, &client, &server);
    let session = Session {
        reader: r,
        writer: w,
        outbound: Auth::sealed(&key, 0),
        inbound: Auth::sealed(&key, 1),
    };
    Ok((session, u64::from_le_bytes(acked)))
}

/// Sends the acknowledgement of checkpoint `c`: everything up to its
/// record is durable here.
pub async fn send_ack<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    outbound: &mut Auth,
    c: &CheckpointInfo,
) -> Result<(), WireError> {
    let mut ack = Vec::with_capacity(24);
    ack.extend_from_slice(&c.seq.to_le_bytes());
    ack.extend_from_slice(&c.id.to_le_bytes());
    ack.extend_from_slice(&c.time_ms.to_le_bytes());
    wire::send(w, outbound, Kind::Ack, &mut ack).await
}

/// Reads an acknowledgement: the checkpoint it reports durable.
pub async fn recv_ack<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    inbound: &mut Auth,
) -> Result<CheckpointInfo, WireError> {
    let (kind, ack) = wire::recv(r, inbound).await?;
    if kind != Kind::Ack || ack.len() != 24 {
        return Err(WireError::Protocol("expected an ack".into()));
    }
    let num = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&ack[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Ok(CheckpointInfo {
        seq: num(0),
        id: num(8),
        time_ms: num(16),
    })
}

/// How long a stopping receiver waits for its connections to finish the
/// frame each is applying.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

async fn receive(
    stream: TcpStream,
    replica: Arc<Mutex<Replica>>,
    psk: &[u8],
    mut stop: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let admit: Admit<'_> = Box::new(|id| {
        let r = lock(&replica);
        r.check_stream(id).map_err(|e| e.to_string())?;
        Ok(r.acked_seq())
    });
    let (session, id) = tokio::select! {
        s = accept(stream, psk, admit) => s?,
        _ = stop.wait_for(|s| *s) => return Ok(()),
    };
    let mut bound = false;
    let Session {
        reader: mut r,
        writer: mut w,
        mut inbound,
        mut outbound,
    } = session;
    // Frames are read and authenticated on their own task while the
    // previous one is applied: the two overlap. Their buffers go back to
    // the reader, so a steady stream allocates nothing.
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel(2);
    let (spare_tx, mut spare) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = spare.try_recv().unwrap_or_default();
            let frame = wire::recv_into(&mut r, &mut inbound, &mut buf)
                .await
                .map(|kind| (kind, buf));
            let failed = frame.is_err();
            if frames_tx.send(frame).await.is_err() || failed {
                return;
            }
        }
    });
    let outcome = async {
        loop {
            // Work under way is not cut off: stopping is looked at between
            // frames.
            let frame = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                frame = frames.recv() => match frame {
                    Some(f) => f,
                    None => break,
                },
            };
            let (kind, payload) = frame?;
            if kind != Kind::Records {
                return Err(WireError::Protocol(format!("unexpected {kind:?}")).into());
            }
            // Applying fsyncs: off the async threads. The first records
            // bind a new replica to this stream for good.
            let rep = replica.clone();
            let bind = !bound;
            let (payload, durable) = tokio::task::spawn_blocking(move || {
                let mut r = lock(&rep);
                let durable =
                    if bind { r.bind(id) } else { Ok(()) }.and_then(|()| r.apply_batch(&payload));
                (payload, durable)
            })
            .await
            .map_err(|e| NetError::Internal(e.to_string()))?;
            let _ = spare_tx.try_send(payload);
            let durable = durable?;
            bound = true;
            for c in &durable {
                send_ack(&mut w, &mut outbound, c).await?;
            }
            if !durable.is_empty() {
                // After the acknowledgement, before the next frame: the
                // merge's fsyncs are off the acknowledgement path, and its
                // cost still reaches the shipper as back-pressure.
                let rep = replica.clone();
                tokio::task::spawn_blocking(move || lock(&rep).merge_due())
                    .await
                    .map_err(|e| NetError::Internal(e.to_string()))??;
            }
        }
        Ok(())
    };
    let result = outcome.await;
    reader.abort();
    result
}

/// How a shipper behaves.
#[derive(Clone, Debug)]
pub struct ShipConfig {
    /// The pre-shared key.
    pub psk: Arc<Vec<u8>>,
    /// Records per frame, in bytes (about).
    pub batch_bytes: usize,
    /// At most this many checkpoints sent and not yet acknowledged.
    pub window: usize,
    /// Wait between reconnection attempts.
    pub reconnect: Duration,
    /// Bandwidth cap, bytes per second.
    pub bandwidth: Option<u64>,
}

impl ShipConfig {
    /// Defaults with this key.
    pub fn new(psk: Vec<u8>) -> Self {
        ShipConfig {
            psk: Arc::new(psk),
            batch_bytes: 4 << 20,
            window: 8,
            reconnect: Duration::from_millis(500),
            bandwidth: None,
        }
    }
}

/// Where one receiver stands, as the shipper knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Everything up to this sequence is durable there.
    pub acked_seq: u64,
    /// Its newest durable checkpoint (id, time).
    pub checkpoint: Option<(u64, u64)>,
    /// Connections that failed so far.
    pub failures: u64,
    /// Why the last connection failed, until one gets through the
    /// handshake again.
    pub error: Option<Arc<str>>,
    /// Whether that failure was a refusal (a wrong key, another stream, a
    /// log behind the replica): retrying cannot help until someone fixes
    /// it, so a one-off job gives up at once.
    pub refused: bool,
}

/// Ships `log` to `addr` until `shutdown` turns true, reconnecting after
/// failures. `wake` is notified when the log has new checkpoints.
pub async fn ship(
    log: Arc<Mutex<Log>>,
    addr: SocketAddr,
    cfg: ShipConfig,
    wake: Arc<Notify>,
    progress: watch::Sender<Progress>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            r = connection(&log, addr, &cfg, &wake, &progress) => r,
        };
        if let Err(e) = result {
            tracing::warn!(%addr, error = %e, "replication to receiver failed; reconnecting");
            progress.send_modify(|p| {
                p.failures += 1;
                p.error = Some(e.to_string().into());
                p.refused = e.is_refusal();
            });
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(cfg.reconnect) => {}
        }
    }
}

async fn connection(
    log: &Arc<Mutex<Log>>,
    addr: SocketAddr,
    cfg: &ShipConfig,
    wake: &Notify,
    progress: &watch::Sender<Progress>,
) -> Result<(), NetError> {
    let (
        Session {
            reader: mut r,
            writer: mut w,
            mut inbound,
            mut outbound,
        },
        acked,
    ) = {
        let (stream, last) = {
            let l = lock(log);
            (l.stream_id(), l.next_seq() - 1)
        };
        let (session, acked) = connect(addr, &cfg.psk, stream).await?;
        if acked > last {
            // Sending from there would skip what the replica lacks, and
            // reporting its sequence as this log's would be a lie.
            return Err(NetError::AheadOfLog {
                stream,
                acked,
                last,
            });
        }
        (session, acked)
    };
    progress.send_modify(|p| {
        p.acked_seq = p.acked_seq.max(acked);
        p.error = None;
        p.refused = false;
    });

    // Acknowledgements come back on their own task.
    let (acks_tx, mut acks_rx) = watch::channel(acked);
    let progress_acks = progress.clone();
    let reader = tokio::spawn(async move {
        // Ends when the connection fails; the sender notices the closed
        // channel.
        while let Ok(c) = recv_ack(&mut r, &mut inbound).await {
            progress_acks.send_modify(|p| {
                p.acked_seq = p.acked_seq.max(c.seq);
                p.checkpoint = Some((c.id, c.time_ms));
            });
            let _ = acks_tx.send(c.seq);
        }
    });

    // Frames are sealed and written on their own task while the next
    // batch is read from the log: the two overlap. Their buffers come back
    // for the next reads, so a steady stream allocates nothing.
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let (spare_tx, mut spare) = tokio::sync::mpsc::channel::<Vec<u8>>(3);
    let writer = tokio::spawn(async move {
        while let Some(mut frame) = frames_rx.recv().await {
            wire::send(&mut w, &mut outbound, Kind::Records, &mut frame).await?;
            let _ = spare_tx.try_send(frame);
        }
        Ok::<(), WireError>(())
    });
    let mut next = acked + 1;
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let outcome = async {
        loop {
            // Back-pressure: wait while the window of unacknowledged
            // checkpoints is full.
            loop {
                let done = *acks_rx.borrow();
                while in_flight.front().is_some_and(|&s| s <= done) {
                    in_flight.pop_front();
                }
                if in_flight.len() < cfg.window {
                    break;
                }
                if acks_rx.changed().await.is_err() {
                    return Err(NetError::Internal("acknowledgement reader ended".into()));
                }
            }
            let l = log.clone();
            let (from, max) = (next, cfg.batch_bytes);
            let reuse = spare.try_recv().unwrap_or_default();
            let (batch, durable) = tokio::task::spawn_blocking(move || {
                let mut log = lock(&l);
                let durable = log.last_checkpoint().map_or(0, |c| c.1);
                let mut batch = crate::log::Encoded::reusing(reuse);
                log.read_encoded_into(from, max, &mut batch)
                    .map(|()| (batch, durable))
            })
            .await
            .map_err(|e| NetError::Internal(e.to_string()))??;
            // Ship only what a durable checkpoint covers: writes after the
            // last checkpoint may still be lost by a crash of the primary.
            let upto = batch.records.iter().rposition(|(h, _)| h.seq() <= durable);
            let Some(upto) = upto else {
                // Nothing to send: wait for the log, and notice a receiver
                // that went away meanwhile (its acknowledgement reader ends).
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    changed = acks_rx.changed() => {
                        if changed.is_err() {
                            return Err(NetError::Internal("the receiver closed the connection".into()));
                        }
                    }
                }
                continue;
            };
            for (h, _) in &batch.records[..=upto] {
                if let record::Header::Checkpoint { seq, .. } = h {
                    in_flight.push_back(*seq);
                }
            }
            let (last, end) = batch.records[upto];
            let mut frame = batch.bytes;
            frame.truncate(end);
            let len = frame.len();
            if frames_tx.send(frame).await.is_err() {
                return Err(NetError::Internal(WRITER_ENDED.into()));
            }
            next = last.seq() + 1;
            if let Some(rate) = cfg.bandwidth.filter(|&r| r > 0) {
                tokio::time::sleep(Duration::from_secs_f64(len as f64 / rate as f64)).await;
            }
        }
    };
    let r = outcome.await;
    reader.abort();
    match r {
        // The writer's own error says what happened.
        Err(NetError::Internal(m)) if m == WRITER_ENDED => match writer.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Err(NetError::Internal(m)),
        },
        r => {
            writer.abort();
            r
        }
    }
}

const WRITER_ENDED: &str = "the frame writer ended";
