//! The SMTP wire: reply parsing, CRLF normalisation, dot-stuffing, and the buffered
//! connection that reads replies and writes commands with a timeout on each.

use crate::Secret;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};

/// Longest reply line accepted (RFC 5321 allows 512; servers exceed it in practice).
const MAX_LINE: u64 = 4096;
/// Most lines accepted in one multi-line reply.
const MAX_LINES: usize = 256;
/// Size of each write while sending the message (each bounded by the data-block timeout).
const DATA_CHUNK: usize = 64 * 1024;

/// A server reply: the code, the enhanced status code when present, and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code, e.g. `250`.
    pub code: u16,
    /// The RFC 3463 enhanced status code of the first line, e.g. `2.0.0`, when present.
    pub enhanced: Option<String>,
    /// The text of each line, without code and separator. Multi-line replies keep one
    /// entry per line; [`Reply::text`] joins them.
    pub lines: Vec<String>,
}

impl Reply {
    /// The lines joined with `"\n"`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// `true` for 2xx and 3xx codes.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// `true` for 4xx codes.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// Why reading a reply or writing a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The per-phase (or overall) timeout elapsed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// An I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Bytes that are not an SMTP reply (first bytes kept, escaped).
    #[error("not an SMTP reply: {preview}")]
    Malformed {
        /// The offending bytes, escaped for display.
        preview: String,
        /// Whether they look like a TLS record.
        looks_like_tls: bool,
    },
}

/// Parses one reply line into `(code, is_last, text)`.
pub(crate) fn parse_reply_line(line: &[u8]) -> Option<(u16, bool, String)> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < 3
        || !line[..3].iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&line[0])
    {
        return None;
    }
    let code = u16::from(line[0] - b'0') * 100
        + u16::from(line[1] - b'0') * 10
        + u16::from(line[2] - b'0');
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return None,
    };
    Some((code, last, String::from_utf8_lossy(text).into_owned()))
}

/// Parses a complete (possibly multi-line) reply from its raw lines.
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let mut code = None;
    let mut lines = Vec::new();
    let mut complete = false;
    for line in raw.split_inclusive(|b| *b == b'\n') {
        if complete {
            return None;
        }
        let (c, last, text) = parse_reply_line(line)?;
        if *code.get_or_insert(c) != c {
            return None;
        }
        lines.push(text);
        complete = last;
    }
    let code = code?;
    complete.then(|| reply_from(code, lines))
}

fn reply_from(code: u16, mut lines: Vec<String>) -> Reply {
    let enhanced = lines.first().and_then(|first| {
        let token = first.split(' ').next()?;
        let parts: Vec<&str> = token.split('.').collect();
        let ok = parts.len() == 3
            && parts[0].len() == 1
            && parts[0].starts_with(['2', '4', '5'])
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then(|| token.to_owned())
    });
    if let (Some(e), Some(first)) = (&enhanced, lines.first_mut()) {
        *first = first[e.len()..].trim_start().to_owned();
    }
    Reply {
        code,
        enhanced,
        lines,
    }
}

/// Normalises every line ending to CRLF: bare LF and bare CR each become CRLF, and an
/// existing CRLF is kept as is.
pub fn normalize_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32 + 2);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The exact bytes sent after `354`: the message with CRLF line endings, every line that
/// starts with `.` given an extra `.` (RFC 5321 §4.5.2), a final CRLF if the message
/// lacks one, and the terminating `.` line.
pub fn data_payload(message: &[u8]) -> Vec<u8> {
    let normalized = normalize_crlf(message);
    let mut out = Vec::with_capacity(normalized.len() + 64);
    let mut at_line_start = true;
    for &b in &normalized {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Escapes bytes for a log line or an error message (at most `max` input bytes).
pub(crate) fn escape_preview(bytes: &[u8], max: usize) -> String {
    let mut s: String = bytes
        .iter()
        .take(max)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        s.push_str("...");
    }
    s
}

/// Whether `bytes` start like a TLS record (handshake or alert, version 3.x).
pub(crate) fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x14..=0x17] | [0x14..=0x17, 0x03, ..])
}

/// Whether `bytes` start like an SMTP reply (`220 ` / `220-` etc.).
pub(crate) fn looks_like_smtp_reply(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[..3].iter().all(u8::is_ascii_digit) && matches!(bytes[3], b' ' | b'-')
}

/// An async byte stream (plain TCP or TLS) behind one type.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> ByteStream for T {}

/// A transport that can acknowledge what it has received at once instead of delaying the
/// ACK.
///
/// Why: SMTP is strictly request/response, so Linux puts our socket in "pingpong" mode and
/// delays the ACK of what the server sends (40 ms at least), hoping to piggyback it on our
/// next command. A server that leaves Nagle on (Postfix does) and writes a reply while an
/// earlier segment of its own is still unacknowledged holds the reply until that ACK comes.
/// After `STARTTLS` this happens every time the server's TLS 1.3 `NewSessionTicket`s reach
/// us after we sent the `EHLO`: the server's `EHLO` reply waits ~40 ms for our delayed ACK
/// of the tickets. Acknowledging every read at once removes the wait.
pub(crate) trait AckNow {
    /// Sends the ACK for data already received now, and keeps the socket out of delayed-ACK
    /// mode for a while (best effort; errors are ignored).
    fn ack_now(&self);
}

impl AckNow for tokio::net::TcpStream {
    fn ack_now(&self) {
        // TCP_QUICKACK is not sticky: the kernel goes back to delayed ACKs on its own, so
        // it is set again after every read.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = self.set_quickack(true);
    }
}

/// A TCP stream that keeps a copy of the first bytes it reads, so that a failed TLS
/// handshake can tell whether the server spoke plain SMTP instead. It also acknowledges
/// every read at once (see [`AckNow`]).
pub(crate) struct Sniff<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

/// How many leading bytes [`Sniff`] keeps.
const SNIFF_BYTES: usize = 64;

impl<S> Sniff<S> {
    /// Wraps `inner`; the returned handle shows the first bytes read.
    pub(crate) fn new(inner: S) -> (Self, Arc<Mutex<Vec<u8>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        (
            Sniff {
                inner,
                seen: Arc::clone(&seen),
            },
            seen,
        )
    }
}

impl<S: AsyncRead + AckNow + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            if buf.filled().len() > before {
                this.inner.ack_now();
            }
            let mut seen = this.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() < SNIFF_BYTES {
                let new = &buf.filled()[before..];
                let take = new.len().min(SNIFF_BYTES - seen.len());
                seen.extend_from_slice(&new[..take]);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    // Forwarded so that rustls can hand a whole flight (e.g. the client's
    // ChangeCipherSpec + Finished) to the socket in one `writev`, hence one segment,
    // instead of one write per TLS record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A buffered SMTP connection over any byte stream (in a session: plain TCP or TLS,
/// behind a [`ByteStream`] box).
pub(crate) struct Connection<S> {
    reader: BufReader<S>,
    /// Strings (the secret and its encodings) scrubbed from everything the server says.
    redact: Vec<Secret>,
}

/// Replaces every occurrence of each (non-empty) string in `redact` with `<redacted>`.
pub(crate) fn scrub(text: &str, redact: &[Secret]) -> String {
    let mut out = text.to_owned();
    for r in redact.iter().map(Secret::expose).filter(|r| !r.is_empty()) {
        if out.contains(r) {
            out = out.replace(r, "<redacted>");
        }
    }
    out
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream; `redact` lists strings never to log or record.
    pub(crate) fn new(stream: S, redact: Vec<Secret>) -> Self {
        Connection {
            reader: BufReader::new(stream),
            redact,
        }
    }

    /// Adds a string to scrub.
    pub(crate) fn add_redaction(&mut self, s: &str) {
        self.redact.push(Secret::new(s));
    }

    /// The strings this connection scrubs.
    pub(crate) fn redactions(&self) -> Vec<Secret> {
        self.redact.clone()
    }

    /// Unwraps the stream for a TLS upgrade. Fails if the server already sent bytes past
    /// the last reply (a `STARTTLS` response-injection attempt, CVE-2011-0411 style).
    pub(crate) fn into_stream(self) -> Result<S, WireError> {
        let pending = self.reader.buffer();
        if !pending.is_empty() {
            return Err(WireError::Malformed {
                preview: format!(
                    "unexpected data after the STARTTLS reply: {}",
                    escape_preview(pending, 40)
                ),
                looks_like_tls: false,
            });
        }
        Ok(self.reader.into_inner())
    }

    /// Writes `bytes` and flushes, within `limit`.
    pub(crate) async fn send(&mut self, bytes: &[u8], limit: Duration) -> Result<(), WireError> {
        let stream = self.reader.get_mut();
        let fut = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(WireError::Timeout(limit)),
        }
    }

    /// Writes `bytes` in chunks, each within `per_chunk` (and all within `total`).
    pub(crate) async fn send_chunked(
        &mut self,
        bytes: &[u8],
        per_chunk: Duration,
        total: Duration,
    ) -> Result<(), WireError> {
        let started = tokio::time::Instant::now();
        for chunk in bytes.chunks(DATA_CHUNK) {
            let left = total.saturating_sub(started.elapsed());
            let limit = per_chunk.min(left);
            self.send(chunk, limit).await?;
        }
        Ok(())
    }

    /// Reads one complete reply within `limit`.
    pub(crate) async fn read_reply(&mut self, limit: Duration) -> Result<Reply, WireError> {
        match tokio::time::timeout(limit, self.read_reply_inner()).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Timeout(limit)),
        }
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, WireError> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            // Judge the first bytes as soon as they arrive: a TLS record or other binary
            // data may never contain the newline that would end the line.
            let head = self.reader.fill_buf().await?;
            if head.is_empty() {
                return Err(WireError::Closed);
            }
            if looks_like_tls(head) || !head[0].is_ascii_digit() {
                return Err(WireError::Malformed {
                    preview: scrub(&escape_preview(head, 40), &self.redact),
                    looks_like_tls: looks_like_tls(head),
                });
            }
            let mut raw = Vec::new();
            let n = (&mut self.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut raw)
                .await?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            tracing::debug!(
                target: "mailplane::smtp::wire",
                "S: {}",
                scrub(&escape_preview(raw.trim_ascii_end(), 512), &self.redact)
            );
            let malformed = |raw: &[u8]| WireError::Malformed {
                preview: scrub(&escape_preview(raw, 40), &self.redact),
                looks_like_tls: looks_like_tls(raw),
            };
            if !raw.ends_with(b"\n") {
                // Over-long line or EOF in the middle of a line.
                return Err(if raw.len() as u64 >= MAX_LINE {
                    malformed(&raw)
                } else {
                    WireError::Closed
                });
            }
            let Some((c, last, text)) = parse_reply_line(&raw) else {
                return Err(malformed(&raw));
            };
            if *code.get_or_insert(c) != c || lines.len() >= MAX_LINES {
                return Err(malformed(&raw));
            }
            lines.push(scrub(&text, &self.redact));
            if last {
                return Ok(reply_from(c, lines));
            }
        }
    }

    /// Closes the write side, ignoring errors.
    pub(crate) async fn shutdown(&mut self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.reader.get_mut().shutdown()).await;
    }
}

/// Parses the queue id from a final `250` reply, e.g. Postfix `Ok: queued as 4Xyz12` or
/// Exim `OK id=1tAbcD-000123-Xy`.
pub fn parse_queue_id(reply: &Reply) -> Option<String> {
    let text = reply.text();
    let lower = text.to_ascii_lowercase();
    let start = if let Some(i) = lower.find("queued as ") {
        i + "queued as ".len()
    } else if let Some(i) = lower.find("id=") {
        i + "id=".len()
    } else {
        return None;
    };
    let id: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        .collect();
    let id = id.trim_end_matches(['.', '-']);
    (!id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests;
