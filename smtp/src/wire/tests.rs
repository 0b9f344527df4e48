//! Tests of the line codec, the reply parser, and the socket wrapper.

use super::*;

#[test]
fn crlf_normalisation() {
    assert_eq!(normalize_crlf(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd");
    assert_eq!(normalize_crlf(b"\r\r\n\n"), b"\r\n\r\n\r\n");
    assert_eq!(normalize_crlf(b"\n\r"), b"\r\n\r\n");
    assert_eq!(normalize_crlf(b""), b"");
}

#[test]
fn payload_bare_lf_and_cr() {
    assert_eq!(data_payload(b"a\nb\rc"), b"a\r\nb\r\nc\r\n.\r\n");
}

#[test]
fn payload_lone_dot_is_stuffed() {
    assert_eq!(
        data_payload(b"one\r\n.\r\ntwo\r\n"),
        b"one\r\n..\r\ntwo\r\n.\r\n"
    );
    assert_eq!(data_payload(b"one\n.\ntwo"), b"one\r\n..\r\ntwo\r\n.\r\n");
    assert_eq!(data_payload(b".leading\r\n"), b"..leading\r\n.\r\n");
    assert_eq!(data_payload(b"..two\r\n"), b"...two\r\n.\r\n");
    assert_eq!(data_payload(b"mid.dle\r\n"), b"mid.dle\r\n.\r\n");
}

#[test]
fn payload_dot_crlf_at_end() {
    assert_eq!(data_payload(b"body\r\n.\r\n"), b"body\r\n..\r\n.\r\n");
    assert_eq!(data_payload(b"body\r\n."), b"body\r\n..\r\n.\r\n");
    assert_eq!(data_payload(b"."), b"..\r\n.\r\n");
    assert_eq!(data_payload(b""), b".\r\n");
}

#[test]
fn payload_smuggling_attempts() {
    // Bare-LF and bare-CR variants of the end-of-data marker must not end DATA early.
    for input in [
        &b"x\r\n.\r\nMAIL FROM:<evil@x>\r\n"[..],
        b"x\n.\nMAIL FROM:<evil@x>\n",
        b"x\r.\rMAIL FROM:<evil@x>\r",
        b"x\n.\r\nMAIL FROM:<evil@x>\r\n",
        b"x\r\n.\nMAIL FROM:<evil@x>\r\n",
        b"x\r.\nMAIL FROM:<evil@x>",
    ] {
        let out = data_payload(input);
        assert_eq!(
            out, b"x\r\n..\r\nMAIL FROM:<evil@x>\r\n.\r\n",
            "input {input:?}"
        );
        // The terminator appears exactly once, at the end.
        let marker = b"\r\n.\r\n";
        let hits = out.windows(marker.len()).filter(|w| *w == marker).count();
        assert_eq!(hits, 1);
        assert!(out.ends_with(marker));
    }
}

#[test]
fn payload_has_only_crlf() {
    let out = data_payload(b"a\rb\nc\r\n\r\rd\n\n");
    for (i, b) in out.iter().enumerate() {
        if *b == b'\n' {
            assert_eq!(out[i - 1], b'\r');
        }
        if *b == b'\r' {
            assert_eq!(out[i + 1], b'\n');
        }
    }
}

#[test]
fn reply_single_and_multi_line() {
    let r = parse_reply(b"250 2.1.0 Ok\r\n").unwrap();
    assert_eq!(
        (r.code, r.enhanced.as_deref(), r.text()),
        (250, Some("2.1.0"), "Ok".into())
    );
    let r = parse_reply(b"250-mail.example.org\r\n250-PIPELINING\r\n250 STARTTLS\r\n").unwrap();
    assert_eq!(r.lines, ["mail.example.org", "PIPELINING", "STARTTLS"]);
    assert_eq!(r.text(), "mail.example.org\nPIPELINING\nSTARTTLS");
    assert_eq!(r.enhanced, None);
    let r = parse_reply(b"354\r\n").unwrap();
    assert_eq!((r.code, r.text()), (354, String::new()));
    assert_eq!(
        parse_reply(b"354 End data with <CR><LF>.<CR><LF>\n")
            .unwrap()
            .code,
        354
    );
}

#[test]
fn reply_rejects_garbage() {
    assert!(parse_reply(b"hello\r\n").is_none());
    assert!(parse_reply(b"\x16\x03\x01\x00\x05hello").is_none());
    assert!(parse_reply(b"250-a\r\n251 b\r\n").is_none());
    assert!(parse_reply(b"250-a\r\n").is_none());
    assert!(parse_reply(b"699 x\r\n").is_none());
    assert!(parse_reply(b"250xok\r\n").is_none());
}

#[test]
fn queue_ids() {
    let r = |t: &str| parse_reply(format!("250 {t}\r\n").as_bytes()).unwrap();
    assert_eq!(
        parse_queue_id(&r("2.0.0 Ok: queued as 4Xyz12")).as_deref(),
        Some("4Xyz12")
    );
    assert_eq!(
        parse_queue_id(&r("OK id=1tAbcD-000123-Xy")).as_deref(),
        Some("1tAbcD-000123-Xy")
    );
    assert_eq!(
        parse_queue_id(&r("2.0.0 Ok: queued as 4Xyz12.")).as_deref(),
        Some("4Xyz12")
    );
    assert_eq!(parse_queue_id(&r("2.0.0 OK")), None);
}

/// A stream that hands out `data` in reads of at most `step` bytes and counts the ACKs
/// asked for.
struct Scripted {
    data: Vec<u8>,
    step: usize,
    acks: Arc<Mutex<usize>>,
}

impl AsyncRead for Scripted {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.step.min(this.data.len()).min(buf.remaining());
        buf.put_slice(&this.data[..n]);
        this.data.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl AckNow for Scripted {
    fn ack_now(&self) {
        *self.acks.lock().unwrap() += 1;
    }
}

#[tokio::test]
async fn sniff_acks_every_read_with_data() {
    let acks = Arc::new(Mutex::new(0));
    let stream = Scripted {
        data: b"220 hello\r\n".to_vec(),
        step: 4,
        acks: Arc::clone(&acks),
    };
    let (mut sniff, seen) = Sniff::new(stream);
    let mut out = Vec::new();
    sniff.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"220 hello\r\n");
    assert_eq!(*seen.lock().unwrap(), b"220 hello\r\n");
    // Three reads returned data (4 + 4 + 3 bytes); the final EOF read is not acked.
    assert_eq!(*acks.lock().unwrap(), 3);
}

/// On a real socket: a read through [`Sniff`] leaves delayed-ACK ("pingpong") mode, so
/// the kernel acknowledges what arrives next at once.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn sniff_read_turns_quickack_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    // What an SMTP exchange leads to: delayed ACKs.
    client.set_quickack(false).unwrap();
    assert!(!client.quickack().unwrap());
    server.write_all(b"250 ok\r\n").await.unwrap();
    let (mut sniff, _) = Sniff::new(client);
    let mut buf = [0u8; 16];
    let n = sniff.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"250 ok\r\n");
    assert!(sniff.inner.quickack().unwrap());
}

/// A stream that records the size of every write that reaches it.
struct Counting<S> {
    inner: S,
    writes: Arc<Mutex<Vec<usize>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.writes.lock().unwrap().push(n);
        }
        res
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Like writev: one write of everything.
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.poll_write(cx, &all)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S> AckNow for Counting<S> {
    fn ack_now(&self) {}
}

/// Each flight the client sends over TLS reaches the socket as one write: the
/// handshake's ChangeCipherSpec + Finished, and a command with its flush. Two writes
/// for one flight mean two segments, and the second can wait on a delayed ACK.
#[tokio::test]
async fn tls_flights_are_single_writes() {
    let ca = mailplane_testkit::peer::TestCa::new("wire test CA");
    let server_config = ca.server_config(&["localhost"], false);
    let extra = crate::tls::parse_ca_pem(ca.pem.as_bytes()).unwrap();
    let (client_config, _) =
        crate::tls::client_config(false, &extra, crate::TrustStore::Webpki).unwrap();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let writes = Arc::new(Mutex::new(Vec::new()));
    let counting = Counting {
        inner: client_io,
        writes: Arc::clone(&writes),
    };
    let (sniff, _) = Sniff::new(counting);
    let boxed: Box<dyn ByteStream> = Box::new(sniff);
    let server = tokio::spawn(async move {
        let mut tls = tokio_rustls::TlsAcceptor::from(server_config)
            .accept(server_io)
            .await
            .unwrap();
        let mut line = Vec::new();
        let mut reader = BufReader::new(&mut tls);
        reader.read_until(b'\n', &mut line).await.unwrap();
        line
    });
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config)
        .connect(name, boxed)
        .await
        .unwrap();
    // ClientHello, then ChangeCipherSpec + Finished together.
    let handshake = std::mem::take(&mut *writes.lock().unwrap());
    assert_eq!(handshake.len(), 2, "write sizes {handshake:?}");
    let mut conn = Connection::new(tls, Vec::new());
    conn.send(b"EHLO client.example\r\n", Duration::from_secs(5))
        .await
        .unwrap();
    let command = std::mem::take(&mut *writes.lock().unwrap());
    assert_eq!(command.len(), 1, "write sizes {command:?}");
    assert_eq!(server.await.unwrap(), b"EHLO client.example\r\n");
}

#[test]
fn tls_and_reply_sniffing() {
    assert!(looks_like_tls(b"\x16\x03\x03\x00\x40"));
    assert!(looks_like_tls(b"\x15\x03\x01\x00\x02"));
    assert!(!looks_like_tls(b"220 ok"));
    assert!(looks_like_smtp_reply(b"220 mail ESMTP"));
    assert!(looks_like_smtp_reply(b"220-mail"));
    assert!(!looks_like_smtp_reply(b"\x16\x03\x03"));
}
