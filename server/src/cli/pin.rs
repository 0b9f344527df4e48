//! Connecting to a server whose CA is pinned by its SHA-256 fingerprint (`--tls-fingerprint`),
//! for clients that have the fingerprint (from `mailplane server info` or the server's log) but
//! not the CA file. The pin picks the trust anchor among the certificates the server presents;
//! the server's certificate is then verified against it as usual (name, dates, signature).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::http::Uri;

/// Verifies a server against a pinned CA (or leaf) fingerprint.
#[derive(Debug)]
struct Pinned {
    pin: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use sha2::Digest as _;
        let matches =
            |c: &CertificateDer<'_>| sha2::Sha256::digest(c.as_ref()).as_slice() == self.pin;
        if matches(end_entity) {
            return Ok(ServerCertVerified::assertion());
        }
        let anchor = intermediates.iter().find(|c| matches(c)).ok_or_else(|| {
            rustls::Error::General(
                "no certificate of the server matches the pinned fingerprint".into(),
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Opens TLS connections for tonic with the pinned verifier (and HTTP/2 by ALPN).
#[derive(Clone)]
pub struct PinnedConnector {
    config: Arc<rustls::ClientConfig>,
    host: String,
}

impl PinnedConnector {
    /// A connector for `host` (the TLS name) trusting the certificate whose SHA-256 is
    /// `fingerprint` (hex, colons allowed).
    pub fn new(host: &str, fingerprint: &str) -> Result<Self, String> {
        let pin = hex::decode(fingerprint.replace(':', "").trim())
            .ok()
            .filter(|p| p.len() == 32)
            .ok_or_else(|| {
                "the fingerprint must be 64 hexadecimal digits (a SHA-256)".to_owned()
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            host: host.to_owned(),
        })
    }
}

type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower_service::Service<Uri> for PinnedConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Io, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (config, host) = (Arc::clone(&self.config), self.host.clone());
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::other("the address has no host"))?
                .to_string();
            let tcp = tokio::net::TcpStream::connect(authority).await?;
            let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}
