//! What can go wrong talking to an NBD server.

/// An NBD failure, naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// The connection failed (closed, reset, timed out).
    #[error("NBD {op}: {cause}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The cause.
        cause: std::io::Error,
    },
    /// The server broke the protocol; the connection is not used again.
    #[error("NBD server broke the protocol: {0}")]
    Protocol(String),
    /// The server refused an option of the handshake.
    #[error("NBD server refused {option}: {reply}{}", message_suffix(.message))]
    Refused {
        /// The option.
        option: &'static str,
        /// The error reply, by name.
        reply: String,
        /// The server's message, if it gave one.
        message: String,
    },
    /// The export does not offer a metadata context that was asked for
    /// (a dirty bitmap that does not exist, say).
    #[error("NBD export {export:?} has no metadata context {context:?} (it offered: {offered})")]
    NoContext {
        /// The export.
        export: String,
        /// The context asked for.
        context: String,
        /// What it did offer, comma-separated.
        offered: String,
    },
    /// The server failed a command.
    #[error("NBD {command} of {len} bytes at {offset} failed: {errno}{}", message_suffix(.message))]
    Command {
        /// The command.
        command: &'static str,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The error, by name.
        errno: String,
        /// The server's message, if it gave one.
        message: String,
    },
    /// A request the client will not send: out of the export's bounds, not
    /// aligned to its minimum block size, or a context not negotiated.
    #[error("NBD request not sent: {0}")]
    BadRequest(String),
    /// An earlier failure left the connection unusable.
    #[error("NBD connection unusable after an earlier failure: {0}")]
    Broken(String),
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

/// The closure that turns an I/O error into [`NbdError::Io`].
pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> NbdError {
    move |cause| NbdError::Io { op, cause }
}
