//! One connection to one libvirt daemon: calls matched to their replies by
//! serial, events handed to a callback as they arrive, keepalive pings
//! answered.
//!
//! A reader task owns the read half and a writer task the write half: a
//! call that times out only stops waiting, it never leaves half a frame on
//! the wire. When the stream ends or breaks, every waiting call fails with
//! the reason and every later call fails at once; the owner reconnects.

use crate::error::LibvirtError;
use crate::uri::Io;
use crate::wire::{self, Header, MessageType, RemoteError, Status};
use crate::xdr::Reader;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// An asynchronous message from the daemon (an event).
#[derive(Debug)]
pub struct Message {
    /// Its program.
    pub program: u32,
    /// Its procedure (the event's kind).
    pub procedure: i32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What the reader hands to an event callback.
pub type OnMessage = Box<dyn Fn(Message) + Send + Sync>;

type Reply = Result<Vec<u8>, ReplyError>;

enum ReplyError {
    Remote(RemoteError),
    Closed(String),
    Decode(crate::xdr::XdrError),
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<u32, oneshot::Sender<Reply>>,
    /// Why the connection is gone, once it is.
    closed: Option<String>,
}

/// A connection. Dropping it closes the stream.
pub struct Connection {
    pending: Arc<Mutex<Pending>>,
    serial: AtomicU32,
    out: mpsc::Sender<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connection {
    /// Starts the tasks over an open stream; events go to `on_message`.
    pub fn start(io: Box<dyn Io>, on_message: OnMessage) -> Connection {
        let (mut rd, mut wr) = tokio::io::split(io);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (out, mut queue) = mpsc::channel::<Vec<u8>>(64);
        let writer_pending = pending.clone();
        let writer = tokio::spawn(async move {
            while let Some(frame) = queue.recv().await {
                if let Err(e) = wr.write_all(&frame).await {
                    close(&writer_pending, format!("write failed: {e}"));
                    return;
                }
            }
        });
        let reader_pending = pending.clone();
        let pong = out.clone();
        let reader = tokio::spawn(async move {
            let why = read_loop(&mut rd, &reader_pending, &on_message, &pong).await;
            close(&reader_pending, why);
        });
        Connection {
            pending,
            serial: AtomicU32::new(1),
            out,
            reader,
            writer,
        }
    }

    /// Why the connection is gone, if it is.
    pub fn closed(&self) -> Option<String> {
        lock(&self.pending).closed.clone()
    }

    /// Calls `procedure` of `program` with XDR-encoded `args` and returns
    /// the reply's payload.
    pub async fn call(
        &self,
        program: u32,
        procedure: i32,
        name: &'static str,
        args: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, LibvirtError> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if let Some(why) = &p.closed {
                return Err(LibvirtError::Closed(why.clone()));
            }
            p.waiting.insert(serial, tx);
        }
        let frame = Header::call(program, procedure, serial).frame(&args);
        let sent = tokio::time::timeout(timeout, self.out.send(frame)).await;
        let reply = match sent {
            Ok(Ok(())) => tokio::time::timeout(timeout, rx).await,
            Ok(Err(_)) => {
                lock(&self.pending).waiting.remove(&serial);
                return Err(LibvirtError::Closed(
                    self.closed().unwrap_or_else(|| "writer stopped".into()),
                ));
            }
            Err(_) => {
                lock(&self.pending).waiting.remove(&serial);
                return Err(LibvirtError::Timeout {
                    call: name,
                    after: timeout,
                });
            }
        };
        match reply {
            Err(_) => {
                lock(&self.pending).waiting.remove(&serial);
                Err(LibvirtError::Timeout {
                    call: name,
                    after: timeout,
                })
            }
            Ok(Err(_)) => Err(LibvirtError::Closed(
                self.closed().unwrap_or_else(|| "reader stopped".into()),
            )),
            Ok(Ok(Ok(payload))) => Ok(payload),
            Ok(Ok(Err(ReplyError::Remote(e)))) => Err(LibvirtError::Remote {
                call: name,
                code: e.code,
                message: e.message.unwrap_or_else(|| "no message".into()),
            }),
            Ok(Ok(Err(ReplyError::Closed(why)))) => Err(LibvirtError::Closed(why)),
            Ok(Ok(Err(ReplyError::Decode(source)))) => {
                Err(LibvirtError::Decode { call: name, source })
            }
        }
    }
}

fn close(pending: &Mutex<Pending>, why: String) {
    let mut p = lock(pending);
    if p.closed.is_none() {
        tracing::debug!(reason = %why, "libvirt connection closed");
        p.closed = Some(why.clone());
    }
    for (_, tx) in p.waiting.drain() {
        let _ = tx.send(Err(ReplyError::Closed(why.clone())));
    }
}

/// Reads messages until the stream ends; returns why it stopped.
async fn read_loop<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    pending: &Mutex<Pending>,
    on_message: &OnMessage,
    pong: &mpsc::Sender<Vec<u8>>,
) -> String {
    loop {
        let mut word = [0u8; 4];
        if let Err(e) = rd.read_exact(&mut word).await {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the daemon closed the connection".into()
            } else {
                format!("read failed: {e}")
            };
        }
        let len = match wire::body_len(word) {
            Ok(n) => n,
            Err(e) => return format!("bad message length: {e}"),
        };
        let mut body = vec![0u8; len];
        if let Err(e) = rd.read_exact(&mut body).await {
            return format!("message cut off: {e}");
        }
        let mut r = Reader::new(&body);
        let header = match Header::decode(&mut r) {
            Ok(h) => h,
            Err(e) => return format!("bad message header: {e}"),
        };
        let payload = body.split_off(wire::HEADER_LEN);
        match header.kind {
            MessageType::Reply | MessageType::ReplyWithFds => {
                let reply = match header.status {
                    Status::Ok => Ok(payload),
                    _ => match RemoteError::decode(&mut Reader::new(&payload)) {
                        Ok(e) => Err(ReplyError::Remote(e)),
                        Err(e) => Err(ReplyError::Decode(e)),
                    },
                };
                let tx = lock(pending).waiting.remove(&header.serial);
                // A reply nobody waits for belongs to a call that timed out.
                if let Some(tx) = tx {
                    let _ = tx.send(reply);
                }
            }
            // PING (1) is answered with PONG (2); a PONG needs nothing.
            MessageType::Message
                if header.program == wire::KEEPALIVE_PROGRAM && header.procedure == 1 =>
            {
                let h = Header {
                    procedure: 2,
                    kind: MessageType::Message,
                    ..header
                };
                let _ = pong.try_send(h.frame(&[]));
            }
            MessageType::Message if header.program == wire::KEEPALIVE_PROGRAM => {}
            MessageType::Message => on_message(Message {
                program: header.program,
                procedure: header.procedure,
                payload,
            }),
            // No streams are opened; calls never come from the daemon.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::Writer;

    /// A daemon end that answers each call with `answer(procedure, args)`.
    async fn fake_daemon(
        mut io: tokio::io::DuplexStream,
        answer: impl Fn(i32, &[u8]) -> Option<(Status, Vec<u8>)>,
    ) {
        loop {
            let mut word = [0u8; 4];
            if io.read_exact(&mut word).await.is_err() {
                return;
            }
            let len = wire::body_len(word).expect("length");
            let mut body = vec![0u8; len];
            io.read_exact(&mut body).await.expect("body");
            let h = Header::decode(&mut Reader::new(&body)).expect("header");
            if let Some((status, payload)) = answer(h.procedure, &body[wire::HEADER_LEN..]) {
                let reply = Header {
                    kind: MessageType::Reply,
                    status,
                    ..h
                };
                io.write_all(&reply.frame(&payload)).await.expect("write");
            }
        }
    }

    #[tokio::test]
    async fn replies_errors_timeouts_and_a_closed_stream() {
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(fake_daemon(server, |proc_, args| match proc_ {
            1 => Some((Status::Ok, args.to_vec())),
            2 => {
                let mut w = Writer::new();
                w.i32(42).i32(10).opt_str(Some("Domain not found"));
                w.i32(2)
                    .bool(false)
                    .opt_str(None)
                    .opt_str(None)
                    .opt_str(None);
                w.i32(0).i32(0).bool(false);
                Some((Status::Error, w.into_bytes()))
            }
            3 => None,
            _ => Some((Status::Ok, vec![])),
        }));
        let c = Connection::start(Box::new(client), Box::new(|_| {}));
        let t = Duration::from_secs(5);
        let echo = c
            .call(wire::REMOTE_PROGRAM, 1, "echo", vec![0, 0, 0, 9], t)
            .await;
        assert_eq!(echo.ok(), Some(vec![0, 0, 0, 9]));
        match c.call(wire::REMOTE_PROGRAM, 2, "lookup", vec![], t).await {
            Err(LibvirtError::Remote { code, message, .. }) => {
                assert_eq!(code, 42);
                assert_eq!(message, "Domain not found");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
        let silent = c
            .call(
                wire::REMOTE_PROGRAM,
                3,
                "silent",
                vec![],
                Duration::from_millis(50),
            )
            .await;
        assert!(matches!(silent, Err(LibvirtError::Timeout { .. })));
        // The connection still works after a timed-out call.
        assert!(c
            .call(wire::REMOTE_PROGRAM, 1, "echo", vec![], t)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_daemon_that_goes_away_fails_waiting_and_later_calls() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let c = Connection::start(Box::new(client), Box::new(|_| {}));
        let call = c.call(
            wire::REMOTE_PROGRAM,
            1,
            "echo",
            vec![],
            Duration::from_secs(5),
        );
        let drop_server = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(server);
        };
        let (r, ()) = tokio::join!(call, drop_server);
        assert!(matches!(r, Err(LibvirtError::Closed(_))), "{r:?}");
        assert!(c.closed().is_some());
        let again = c
            .call(
                wire::REMOTE_PROGRAM,
                1,
                "echo",
                vec![],
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(again, Err(LibvirtError::Closed(_))));
    }

    #[tokio::test]
    async fn garbage_from_the_daemon_closes_the_connection_with_a_reason() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let c = Connection::start(Box::new(client), Box::new(|_| {}));
        server
            .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .await
            .expect("write");
        let r = c
            .call(
                wire::REMOTE_PROGRAM,
                1,
                "echo",
                vec![],
                Duration::from_secs(5),
            )
            .await;
        match r {
            Err(LibvirtError::Closed(why)) => assert!(why.contains("length"), "{why}"),
            other => panic!("expected closed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn events_reach_the_callback_and_pings_are_answered() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _c = Connection::start(
            Box::new(client),
            Box::new(move |m: Message| {
                let _ = tx.send(m);
            }),
        );
        let event = Header {
            program: wire::REMOTE_PROGRAM,
            version: 1,
            procedure: 318,
            kind: MessageType::Message,
            serial: 0,
            status: Status::Ok,
        };
        server
            .write_all(&event.frame(&[0, 0, 0, 1]))
            .await
            .expect("event");
        let ping = Header {
            program: wire::KEEPALIVE_PROGRAM,
            procedure: 1,
            ..event
        };
        server.write_all(&ping.frame(&[])).await.expect("ping");
        let m = rx.recv().await.expect("event delivered");
        assert_eq!((m.procedure, m.payload), (318, vec![0, 0, 0, 1]));
        let mut word = [0u8; 4];
        server.read_exact(&mut word).await.expect("pong");
        let mut body = vec![0u8; wire::body_len(word).expect("len")];
        server.read_exact(&mut body).await.expect("pong body");
        let h = Header::decode(&mut Reader::new(&body)).expect("header");
        assert_eq!((h.program, h.procedure), (wire::KEEPALIVE_PROGRAM, 2));
    }
}
