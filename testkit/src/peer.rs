//! A scripted SMTP peer (our fault peer) for the session tests: it accepts one connection on
//! 127.0.0.1:0 and plays a list of [`Step`]s, recording what the client sent. [`start_many`]
//! plays one script per connection, in turn, for clients that reconnect.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One step of a script.
pub enum Step {
    /// Send these bytes as they are.
    Raw(Vec<u8>),
    /// Send one reply line (CRLF is added).
    Say(&'static str),
    /// Read one line and check that it starts with this text (case-insensitive).
    Expect(&'static str),
    /// Read command lines that must all have arrived together (one pipelined write): the
    /// first is read, and the rest must already be buffered before any further read; and
    /// nothing after them (the client waits for the replies). Each line is checked like
    /// [`Step::Expect`].
    ExpectBatch(Vec<&'static str>),
    /// Like [`Step::Expect`], and nothing else may have arrived with the line (the client
    /// waits for the reply before sending more).
    ExpectAlone(&'static str),
    /// Read message data up to and including the terminating `.` line.
    ReadData,
    /// Read some message data (at least `n` bytes) and then hang up.
    ReadSomeThenClose(usize),
    /// Start TLS as a server with this configuration.
    Tls(Arc<ServerConfig>),
    /// Read one plaintext TLS record and check that it carries a ClientHello (the
    /// client's first handshake flight), without answering it.
    ExpectClientHello,
    /// Read until the client hangs up, keeping what it sent in [`PeerLog::tail`].
    ReadUntilClosed,
    /// Say nothing for a long time (the client's timeout must fire first).
    Stall,
    /// Hang up.
    Close,
    /// Hang up, then notify (the test then knows the connection is closed).
    CloseAndNotify(Arc<tokio::sync::Notify>),
}

/// What the peer saw.
#[derive(Debug, Default)]
pub struct PeerLog {
    /// Every command line received (without CRLF), outside DATA.
    pub lines: Vec<String>,
    /// The raw DATA bytes, including the terminating ".\r\n".
    pub data: Vec<u8>,
    /// What the client sent during [`Step::ReadUntilClosed`].
    pub tail: Vec<u8>,
    /// The first script violation, if any.
    pub error: Option<String>,
    /// How many connections were accepted.
    pub connections: usize,
    /// For each [`Step::ExpectBatch`], the lines that arrived in one read.
    pub batches: Vec<Vec<String>>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Binds 127.0.0.1:0 and plays `steps` on the first connection.
pub async fn start(steps: Vec<Step>) -> (u16, JoinHandle<PeerLog>) {
    start_many(vec![steps]).await
}

/// Binds 127.0.0.1:0 and plays `scripts[i]` on the `i`-th connection, one connection
/// after the other (the next is accepted when the previous script has ended). Stops at
/// the first script violation.
pub async fn start_many(scripts: Vec<Vec<Step>>) -> (u16, JoinHandle<PeerLog>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let mut log = PeerLog::default();
        for steps in scripts {
            let (tcp, _) = listener.accept().await.unwrap();
            log.connections += 1;
            let stream: Box<dyn Io> = Box::new(tcp);
            if let Err(e) = play(stream, steps, &mut log).await {
                log.error = Some(format!("connection {}: {e}", log.connections));
                break;
            }
        }
        log
    });
    (port, handle)
}

/// Reads one line, records it and checks it starts with `prefix`.
async fn expect_line(
    reader: &mut BufReader<Box<dyn Io>>,
    prefix: &str,
    log: &mut PeerLog,
) -> Result<String, String> {
    let line = read_line(reader).await?;
    let text = String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    log.lines.push(text.clone());
    if !text
        .to_ascii_uppercase()
        .starts_with(&prefix.to_ascii_uppercase())
    {
        return Err(format!("expected {prefix:?}, got {text:?}"));
    }
    Ok(text)
}

async fn read_line(reader: &mut BufReader<Box<dyn Io>>) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let n = reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("client closed the connection".into());
    }
    Ok(line)
}

async fn play(stream: Box<dyn Io>, steps: Vec<Step>, log: &mut PeerLog) -> Result<(), String> {
    let mut reader = BufReader::new(stream);
    for step in steps {
        match step {
            Step::Raw(bytes) => reader
                .get_mut()
                .write_all(&bytes)
                .await
                .map_err(|e| e.to_string())?,
            Step::Say(line) => {
                let mut bytes = line.as_bytes().to_vec();
                bytes.extend_from_slice(b"\r\n");
                reader
                    .get_mut()
                    .write_all(&bytes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Step::Expect(prefix) => {
                expect_line(&mut reader, prefix, log).await?;
            }
            Step::ExpectAlone(prefix) => {
                let text = expect_line(&mut reader, prefix, log).await?;
                if !reader.buffer().is_empty() {
                    let more = String::from_utf8_lossy(reader.buffer()).into_owned();
                    return Err(format!("{text:?} arrived together with {more:?}"));
                }
            }
            Step::ExpectBatch(prefixes) => {
                let mut batch = Vec::new();
                for (i, prefix) in prefixes.iter().enumerate() {
                    if i > 0 && !reader.buffer().contains(&b'\n') {
                        return Err(format!(
                            "{prefix:?} did not arrive with {batch:?} (not pipelined)"
                        ));
                    }
                    batch.push(expect_line(&mut reader, prefix, log).await?);
                }
                if !reader.buffer().is_empty() {
                    let more = String::from_utf8_lossy(reader.buffer()).into_owned();
                    return Err(format!("{batch:?} arrived together with {more:?}"));
                }
                log.batches.push(batch);
            }
            Step::ReadData => loop {
                let line = read_line(&mut reader).await?;
                log.data.extend_from_slice(&line);
                if line == b".\r\n" {
                    break;
                }
            },
            Step::ReadSomeThenClose(n) => {
                while log.data.len() < n {
                    let line = read_line(&mut reader).await?;
                    log.data.extend_from_slice(&line);
                }
                return Ok(());
            }
            Step::Tls(config) => {
                if !reader.buffer().is_empty() {
                    return Err("client sent data before the TLS handshake".into());
                }
                let inner = reader.into_inner();
                let tls = tokio_rustls::TlsAcceptor::from(config)
                    .accept(inner)
                    .await
                    .map_err(|e| e.to_string())?;
                reader = BufReader::new(Box::new(tls));
            }
            Step::ExpectClientHello => {
                let mut header = [0u8; 5];
                reader
                    .read_exact(&mut header)
                    .await
                    .map_err(|e| format!("reading a TLS record header: {e}"))?;
                let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
                let mut body = vec![0u8; len];
                reader
                    .read_exact(&mut body)
                    .await
                    .map_err(|e| format!("reading a TLS record body: {e}"))?;
                // Content type 22 (handshake), handshake type 1 (ClientHello).
                if header[0] != 22 || body.first() != Some(&1) {
                    return Err(format!(
                        "expected a ClientHello, got record header {header:02x?}"
                    ));
                }
            }
            Step::ReadUntilClosed => {
                reader
                    .read_to_end(&mut log.tail)
                    .await
                    .map_err(|e| format!("reading until the client hangs up: {e}"))?;
            }
            Step::Stall => tokio::time::sleep(Duration::from_secs(60)).await,
            Step::Close => return Ok(()),
            Step::CloseAndNotify(closed) => {
                let mut stream = reader.into_inner();
                let _ = stream.shutdown().await;
                drop(stream);
                closed.notify_one();
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A plaintext TLS record with a ServerHello that selects TLS 1.0 (and
/// `TLS_RSA_WITH_AES_128_CBC_SHA`): what a legacy server that speaks nothing newer
/// answers to a modern ClientHello.
pub fn tls10_server_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01]; // server_version TLS 1.0
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(0); // empty session id
    body.extend_from_slice(&[0x00, 0x2f]); // cipher suite
    body.push(0); // null compression
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut handshake = vec![2, len[1], len[2], len[3]]; // ServerHello
    handshake.extend_from_slice(&body);
    let len = u16::try_from(handshake.len()).unwrap().to_be_bytes();
    let mut record = vec![22, 0x03, 0x01, len[0], len[1]];
    record.extend_from_slice(&handshake);
    record
}

/// A test CA made at run time.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA called `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server configuration with a certificate for `names`, expired when `expired`.
    pub fn server_config(&self, names: &[&str], expired: bool) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone(), self.der.clone()], key)
                .unwrap();
        Arc::new(config)
    }
}
