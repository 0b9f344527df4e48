//! The SMTP client over any byte stream: it sends typed [`Command`]s and the message data,
//! and reads [`Reply`]s, each within a time limit. What to send, and what a reply means,
//! is the session's business. [`Link`] is the client a session holds, with what it knows
//! about the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::command::Command;
use crate::wire::{ByteStream, Connection, Reply, WireError};

/// An SMTP client over the stream `S`.
pub(crate) struct Client<S> {
    conn: Connection<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client over `stream`; `redact` lists strings (the secret and its encodings) to
    /// scrub from everything the server says.
    pub(crate) fn new(stream: S, redact: Vec<crate::Secret>) -> Self {
        Client {
            conn: Connection::new(stream, redact),
        }
    }

    /// Sends `command` (logged in its redacted form) and reads the reply, each within
    /// `limit`. Negative replies are `Ok`: the caller judges them.
    pub(crate) async fn command(
        &mut self,
        command: &Command,
        limit: Duration,
    ) -> Result<Reply, WireError> {
        tracing::debug!(target: "mailplane::smtp::wire", "C: {}", command.redacted());
        self.conn.send(&command.to_wire(), limit).await?;
        self.conn.read_reply(limit).await
    }

    /// Sends `commands` in one write (RFC 2920 pipelining) within `limit`, without
    /// reading; the caller reads one reply per command, in order.
    pub(crate) async fn send_pipelined(
        &mut self,
        commands: &[Command],
        limit: Duration,
    ) -> Result<(), WireError> {
        let mut bytes = zeroize::Zeroizing::new(Vec::new());
        for command in commands {
            tracing::debug!(target: "mailplane::smtp::wire", "C: {} (pipelined)", command.redacted());
            bytes.extend_from_slice(&command.to_wire());
        }
        self.conn.send(&bytes, limit).await
    }

    /// Reads one reply within `limit` (the greeting, or the reply to the message data).
    pub(crate) async fn read_reply(&mut self, limit: Duration) -> Result<Reply, WireError> {
        self.conn.read_reply(limit).await
    }

    /// Sends the message data (already dot-stuffed and terminated), each chunk within
    /// `per_chunk` and all within `total`.
    pub(crate) async fn send_data(
        &mut self,
        payload: &[u8],
        per_chunk: Duration,
        total: Duration,
    ) -> Result<(), WireError> {
        tracing::debug!(target: "mailplane::smtp::wire", "C: <{} bytes of message data>", payload.len());
        self.conn.send_chunked(payload, per_chunk, total).await
    }

    /// Adds a string to scrub from what the server says.
    pub(crate) fn add_redaction(&mut self, s: &str) {
        self.conn.add_redaction(s);
    }

    /// The strings this client scrubs (to carry over a TLS upgrade).
    pub(crate) fn redactions(&self) -> Vec<crate::Secret> {
        self.conn.redactions()
    }

    /// Gives the stream back for a TLS upgrade; fails if the server sent bytes past the
    /// last reply.
    pub(crate) fn into_stream(self) -> Result<S, WireError> {
        self.conn.into_stream()
    }

    /// Closes the write side, ignoring errors.
    pub(crate) async fn shutdown(&mut self) {
        self.conn.shutdown().await;
    }
}

/// An open connection and what the session knows about it. Phases take it by value and
/// hand it on, so a phase that needs the connection always has one.
pub(crate) struct Link {
    /// The SMTP client over plain TCP or TLS.
    pub(crate) client: Client<Box<dyn ByteStream>>,
    /// The address connected to, for the implicit-TLS probe.
    pub(crate) peer: Option<SocketAddr>,
    /// The first bytes the server sent on the TCP stream, for TLS error classification.
    pub(crate) sniffed: Arc<Mutex<Vec<u8>>>,
    /// Whether TLS is up.
    pub(crate) tls_active: bool,
    /// Whether TLS is up with a certificate that verified for the host (not merely
    /// accepted under `ignore_certificate_errors`).
    pub(crate) tls_verified: bool,
}
