//! The server's own certificate authority for agents: it signs each agent's client certificate
//! (from the agent's CSR, so the agent's key never leaves it) and the certificate of the agent
//! listener. The CA key is sealed under the key-encryption key and kept in the database, so all
//! replicas on one PostgreSQL database share one CA.

use crate::crypto::aad;
use crate::domain::{AgentName, Micros, now_micros};
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::store::Store;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The metadata key of the sealed CA.
const META_KEY: &str = "agent_ca";
/// How long an agent certificate is valid by default (`ServerConfig::agent_cert_lifetime`);
/// agents renew after two thirds of it.
pub const AGENT_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the listener's certificate is valid (it is made anew at every start).
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The CA, ready to sign.
pub struct AgentCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate issued to an agent.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate (PEM).
    pub pem: String,
    /// The SHA-256 of its DER, by which the server knows the agent.
    pub fingerprint: String,
    /// When it expires.
    pub not_after: Micros,
}

fn ca_error(e: impl std::fmt::Display) -> Error {
    Error::Crypto(format!("agent CA: {e}"))
}

/// The SHA-256 fingerprint of a DER certificate, in lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The SHA-256 fingerprint of the first certificate in a PEM text.
pub fn pem_fingerprint(pem: &str) -> Option<String> {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(fingerprint(der.as_ref()))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) -> Result<Micros> {
    let now = now_micros() / 1_000_000;
    let not_after = now + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2);
    // A little slack for clocks that are slightly behind.
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 300).map_err(ca_error)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).map_err(ca_error)?;
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    Ok(not_after * 1_000_000)
}

impl AgentCa {
    /// Loads the CA from the database, creating it on the first start.
    pub async fn load_or_create(store: &Store, keys: &Keys) -> Result<Self> {
        if store.get_sealed_meta(META_KEY).await?.is_none() {
            let key = KeyPair::generate().map_err(ca_error)?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "mailplane agent CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, CA_LIFETIME)?;
            let cert = params.self_signed(&key).map_err(ca_error)?;
            let bundle = format!("{}\n{}", cert.pem(), key.serialize_pem());
            let sealed = keys
                .primary()
                .await?
                .seal(aad::AGENT_CA, bundle.as_bytes())?;
            // Replicas starting together race here; the first one wins, and all read it back.
            store.put_sealed_meta_if_absent(META_KEY, &sealed).await?;
        }
        let sealed = store
            .get_sealed_meta(META_KEY)
            .await?
            .ok_or_else(|| ca_error("missing after creation"))?;
        let bundle = zeroize::Zeroizing::new(keys.open(aad::AGENT_CA, &sealed).await?);
        let bundle = std::str::from_utf8(&bundle).map_err(ca_error)?;
        let split = bundle
            .find("-----BEGIN PRIVATE KEY-----")
            .ok_or_else(|| ca_error("stored CA has no key"))?;
        let (cert_pem, key_pem) = bundle.split_at(split);
        let key = KeyPair::from_pem(key_pem).map_err(ca_error)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(ca_error)?;
        Ok(Self {
            cert_pem: cert_pem.trim().to_owned() + "\n",
            issuer,
        })
    }

    /// The CA certificate (PEM): what agents trust for the listener, and the server for agents.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs an agent's CSR for a certificate valid for `lifetime`. The certificate names the
    /// agent; everything else in the CSR but its public key is ignored.
    pub fn sign_agent(
        &self,
        csr_pem: &str,
        agent: AgentName,
        lifetime: Duration,
    ) -> Result<IssuedCert> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            Error::invalid("csr_pem", format!("is not a valid PKCS#10 request: {e}"))
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent.to_string());
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let not_after = validity(&mut params, lifetime)?;
        csr.params = params;
        let cert = csr.signed_by(&self.issuer).map_err(ca_error)?;
        Ok(IssuedCert {
            pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
            not_after,
        })
    }

    /// A certificate and key (PEM) for the agent listener, valid for `names` (host names or
    /// IP addresses).
    pub fn server_identity(&self, names: &[String]) -> Result<(String, String)> {
        let key = KeyPair::generate().map_err(ca_error)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(ca_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "mailplane agent listener");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, SERVER_CERT_LIFETIME)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(ca_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
