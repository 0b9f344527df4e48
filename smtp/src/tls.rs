//! TLS: the rustls client configuration (ring provider, webpki roots plus an optional
//! extra CA), a certificate verifier that records what verification said even when the
//! configuration ignores certificate errors, and certificate details via x509-parser.

use std::io;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::classify::{FailureClass, plain_smtp_hint};
use crate::transcript::{CertificateInfo, TlsInfo, Verification};
use crate::trust::{self, RootSource, TrustStore, Verifiers};
use crate::wire::{escape_preview, looks_like_smtp_reply};

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The extra CA is not valid PEM or holds no certificate.
    #[error("extra CA: {0}")]
    ExtraCa(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The verifier could not be built.
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// Nothing to verify certificates against.
    #[error(
        "no trusted roots: the trust store setting is {0:?} and the system trust store holds no \
         certificate; install the CA bundle (ca-certificates), set SSL_CERT_FILE, give an extra \
         CA, or use system+webpki"
    )]
    NoRoots(&'static str),
}

/// What the verifier saw: the end-entity certificate and the verification result.
#[derive(Debug, Default)]
pub(crate) struct VerifyRecord {
    /// DER of the end-entity certificate the server presented.
    pub end_entity: Option<Vec<u8>>,
    /// `None` until verification ran; then `Ok` or the rustls error.
    pub result: Option<Result<(), rustls::Error>>,
    /// The roots that verified the certificate.
    pub verified_by: Option<RootSource>,
}

/// A verifier that tries webpki with each set of roots (see [`crate::trust`]), records the
/// outcome and which roots verified, and (when configured to ignore certificate errors)
/// accepts the chain anyway. Handshake signatures are always checked, so the server still has
/// to hold the certificate's private key.
#[derive(Debug)]
struct RecordingVerifier {
    verifiers: Verifiers,
    ignore_errors: bool,
    record: Arc<Mutex<VerifyRecord>>,
}

impl RecordingVerifier {
    /// The verifier handshake signatures are checked with (they do not depend on the roots).
    fn first(&self) -> &WebPkiServerVerifier {
        &self.verifiers[0].1
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The first set of roots that accepts the chain verifies it; otherwise the most telling
        // error (an unknown issuer only says that these roots do not know it).
        let mut verified_by = None;
        let mut error: Option<rustls::Error> = None;
        for (source, verifier) in &self.verifiers {
            match verifier.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(_) => {
                    verified_by = Some(*source);
                    break;
                }
                Err(e) => {
                    let unknown = |e: &rustls::Error| {
                        matches!(
                            e,
                            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
                        )
                    };
                    if error
                        .as_ref()
                        .is_none_or(|old| unknown(old) && !unknown(&e))
                    {
                        error = Some(e);
                    }
                }
            }
        }
        let result = match (verified_by, error) {
            (Some(_), _) => Ok(ServerCertVerified::assertion()),
            (None, Some(e)) => Err(e),
            (None, None) => Err(rustls::Error::General("no trusted roots".into())),
        };
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        record.end_entity = Some(end_entity.as_ref().to_vec());
        record.result = Some(result.as_ref().map(|_| ()).map_err(Clone::clone));
        record.verified_by = verified_by;
        match result {
            Ok(v) => Ok(v),
            Err(_) if self.ignore_errors => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.first().supported_verify_schemes()
    }
}

/// Parses PEM bytes into certificates (at least one).
pub(crate) fn parse_ca_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::ExtraCa(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsConfigError::ExtraCa(
            "no CERTIFICATE block found".to_owned(),
        ));
    }
    Ok(certs)
}

/// A client configuration for HTTPS to a provider (an OAuth2 token endpoint): the web PKI
/// roots plus `extra_ca_pem` (the CA sessions trust as well), strict verification, HTTP/1.1.
pub fn https_client_config(extra_ca_pem: Option<&[u8]>) -> Result<ClientConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_ca_pem {
        for ca in parse_ca_pem(pem)? {
            roots
                .add(ca)
                .map_err(|e| TlsConfigError::ExtraCa(e.to_string()))?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Builds a client configuration for one session, returning it with the shared record
/// the verifier fills in: `extra_ca` and the roots `trust` names.
pub(crate) fn client_config(
    ignore_errors: bool,
    extra_ca: &[CertificateDer<'static>],
    trust: TrustStore,
) -> Result<(Arc<ClientConfig>, Arc<Mutex<VerifyRecord>>), TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut verifiers = Verifiers::new();
    if !extra_ca.is_empty() {
        let mut roots = RootCertStore::empty();
        for ca in extra_ca {
            roots
                .add(ca.clone())
                .map_err(|e| TlsConfigError::ExtraCa(e.to_string()))?;
        }
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()?;
        verifiers.push((RootSource::ExtraCa, v));
    }
    verifiers.extend(trust::shared(trust));
    if verifiers.is_empty() {
        return Err(TlsConfigError::NoRoots(trust.as_str()));
    }
    let record = Arc::new(Mutex::new(VerifyRecord::default()));
    let verifier = RecordingVerifier {
        verifiers,
        ignore_errors,
        record: Arc::clone(&record),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((Arc::new(config), record))
}

/// Formats an x509 time as RFC 3339 UTC.
fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    let dt = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Subject, issuer, SANs and validity of a DER certificate (`None` if it does not parse).
pub fn certificate_info(der: &[u8]) -> Option<CertificateInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => {
                        let a: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
                        sans.push(std::net::Ipv4Addr::from(a).to_string());
                    }
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(bytes);
                        sans.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                GeneralName::RFC822Name(m) => sans.push(format!("email:{m}")),
                _ => {}
            }
        }
    }
    Some(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: rfc3339(cert.validity().not_before),
        not_after: rfc3339(cert.validity().not_after),
    })
}

/// The verification outcome as recorded, for the transcript.
pub(crate) fn verification(record: &VerifyRecord, ignore_errors: bool) -> Verification {
    match &record.result {
        Some(Ok(())) => Verification::Verified,
        Some(Err(e)) if ignore_errors => Verification::IgnoredByConfig {
            reason: format!("{e} (ignore_certificate_errors is set)"),
        },
        Some(Err(e)) => Verification::Failed {
            reason: e.to_string(),
        },
        None => Verification::Failed {
            reason: "the handshake ended before the certificate was verified".to_owned(),
        },
    }
}

/// The outcome of a successful handshake, for the transcript.
pub(crate) fn session_info(
    conn: &rustls::ClientConnection,
    record: &VerifyRecord,
    ignore_errors: bool,
) -> TlsInfo {
    let protocol_version = conn
        .protocol_version()
        .map(|v| {
            v.as_str()
                .map(|s| s.replace('_', "."))
                .unwrap_or_else(|| format!("{v:?}"))
        })
        .unwrap_or_default();
    let cipher_suite = conn
        .negotiated_cipher_suite()
        .map(|s| {
            s.suite()
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{:?}", s.suite()))
        })
        .unwrap_or_default();
    let peer_certificate = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| certificate_info(c.as_ref()))
        .or_else(|| record.end_entity.as_deref().and_then(certificate_info));
    TlsInfo {
        protocol_version,
        cipher_suite,
        peer_certificate,
        verification: verification(record, ignore_errors),
    }
}

/// A classified handshake failure.
pub(crate) struct TlsFailure {
    pub class: FailureClass,
    pub message: String,
    pub hint: String,
    pub info: TlsInfo,
}

/// Classifies a failed handshake from the I/O error, what the verifier recorded, and the
/// first bytes the server sent.
pub(crate) fn classify_handshake_error(
    err: &io::Error,
    record: &VerifyRecord,
    sniffed: &[u8],
    host: &str,
    port: u16,
    implicit: bool,
) -> TlsFailure {
    let cert = record.end_entity.as_deref().and_then(certificate_info);
    let info = TlsInfo {
        protocol_version: String::new(),
        cipher_suite: String::new(),
        peer_certificate: cert.clone(),
        verification: verification(record, false),
    };
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    let verify_err = match &record.result {
        Some(Err(e)) => Some(e),
        Some(Ok(())) | None => {
            rustls_err.filter(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
        }
    };
    if let Some(rustls::Error::InvalidCertificate(ce)) = verify_err {
        let (class, hint) = certificate_class(ce, cert.as_ref(), host);
        return TlsFailure {
            class,
            message: format!("certificate verification failed: {ce}"),
            hint,
            info,
        };
    }
    if implicit && looks_like_smtp_reply(sniffed) {
        return TlsFailure {
            class: FailureClass::ProtocolMismatch,
            message: format!(
                "expected a TLS handshake, the server sent {}",
                escape_preview(sniffed, 40)
            ),
            hint: plain_smtp_hint(port),
            info,
        };
    }
    // The server said yes to STARTTLS, then answered the ClientHello with something that is
    // not TLS at all: the port does not really speak TLS (or a middlebox strips it).
    if let Some(e @ rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) =
        rustls_err
    {
        return TlsFailure {
            class: FailureClass::ProtocolMismatch,
            message: format!("the server accepted STARTTLS but did not answer in TLS ({e})"),
            hint: "the server accepted STARTTLS and then did not speak TLS; it may be \
                   misconfigured, or a proxy on the path breaks STARTTLS"
                .to_owned(),
            info,
        };
    }
    let message = match rustls_err {
        Some(e) => format!("TLS handshake failed: {e}"),
        None => format!("TLS handshake failed: {err}"),
    };
    let hint = match rustls_err {
        Some(rustls::Error::AlertReceived(alert)) => {
            format!(
                "the server aborted the handshake with alert {alert:?}; check TLS versions and ciphers"
            )
        }
        Some(rustls::Error::PeerIncompatible(_)) => {
            "the server supports no TLS version or cipher this client accepts (TLS 1.2+)".to_owned()
        }
        _ if err.kind() == io::ErrorKind::UnexpectedEof => {
            "the server hung up during the TLS handshake; it may accept no TLS version or \
             cipher this client offers (TLS 1.2+), or limit connections"
                .to_owned()
        }
        _ => FailureClass::TlsHandshake.default_hint().to_owned(),
    };
    TlsFailure {
        class: FailureClass::TlsHandshake,
        message,
        hint,
        info,
    }
}

fn certificate_class(
    err: &CertificateError,
    cert: Option<&CertificateInfo>,
    host: &str,
) -> (FailureClass, String) {
    let not_after = cert
        .map(|c| c.not_after.clone())
        .unwrap_or_else(|| "an unknown date".to_owned());
    match err {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
            FailureClass::CertificateExpired,
            format!("certificate expired on {not_after}"),
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            let nb = cert.map(|c| c.not_before.clone()).unwrap_or_default();
            (
                FailureClass::CertificateExpired,
                format!("certificate is not valid before {nb}; check the clocks"),
            )
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let sans = cert
                .map(|c| {
                    if c.sans.is_empty() {
                        c.subject.clone()
                    } else {
                        c.sans.join(", ")
                    }
                })
                .unwrap_or_else(|| "another name".to_owned());
            (
                FailureClass::CertificateNameMismatch,
                format!("certificate is for {sans}, not {host}"),
            )
        }
        _ => {
            let issuer = cert
                .map(|c| c.issuer.clone())
                .unwrap_or_else(|| "an unknown issuer".to_owned());
            (
                FailureClass::CertificateUntrusted,
                format!(
                    "certificate issued by {issuer} is not trusted ({err}); add its CA as extra CA or set ignore_certificate_errors"
                ),
            )
        }
    }
}
