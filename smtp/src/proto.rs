//! Conversions between the session library ([`crate`]) and the API
//! (`mailplane.v1`), shared by the agent and the server so that both describe a session
//! the same way.
//!
//! [`job_from_config`] and [`config_from_job`] are inverses: a [`smtp::SessionConfig`]
//! survives the trip through an [`pb::SmtpJob`] unchanged (optional strings travel as
//! empty strings, so `Some("")` comes back as `None`).

use std::time::Duration;

use mailplane_proto::v1 as pb;

use crate as smtp;

mod delivery;

pub use delivery::{delivery_from_pb, delivery_job, delivery_to_pb, envelope_from_job};

/// A job that cannot become a session configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The port is 0 or above 65535.
    #[error("invalid port {0}")]
    InvalidPort(u32),
    /// An enum field holds a value this version does not know.
    #[error("unknown {field} value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value.
        value: i32,
    },
    /// Authentication is requested without a mechanism.
    #[error("auth.mechanism is not set")]
    MissingAuthMechanism,
    /// A timeout is negative or out of range.
    #[error("invalid timeout {0}")]
    InvalidTimeout(&'static str),
    /// An entry of `auth.allowed_destinations` is not a destination pattern.
    #[error("auth.allowed_destinations: {0}")]
    InvalidDestination(#[from] smtp::AuthDestinationError),
}

/// The API's phase for a session phase.
pub fn phase(p: smtp::Phase) -> pb::Phase {
    match p {
        smtp::Phase::Dns => pb::Phase::DnsResolve,
        smtp::Phase::Connect => pb::Phase::TcpConnect,
        smtp::Phase::Banner => pb::Phase::Banner,
        smtp::Phase::Ehlo => pb::Phase::Ehlo,
        smtp::Phase::StartTls => pb::Phase::Starttls,
        smtp::Phase::TlsHandshake => pb::Phase::TlsHandshake,
        smtp::Phase::Auth => pb::Phase::Auth,
        smtp::Phase::MailFrom => pb::Phase::MailFrom,
        smtp::Phase::RcptTo => pb::Phase::RcptTo,
        smtp::Phase::Data => pb::Phase::Data,
        smtp::Phase::Quit => pb::Phase::Quit,
        smtp::Phase::Token => pb::Phase::Token,
    }
}

/// The API's failure class for a session's.
pub fn failure_class(c: smtp::FailureClass) -> pb::FailureClass {
    match c {
        smtp::FailureClass::Dns => pb::FailureClass::Dns,
        smtp::FailureClass::ConnectionRefused => pb::FailureClass::ConnectionRefused,
        smtp::FailureClass::Timeout => pb::FailureClass::Timeout,
        smtp::FailureClass::TlsHandshake => pb::FailureClass::TlsHandshake,
        smtp::FailureClass::CertificateExpired => pb::FailureClass::CertificateExpired,
        smtp::FailureClass::CertificateUntrusted => pb::FailureClass::CertificateUntrusted,
        smtp::FailureClass::CertificateNameMismatch => pb::FailureClass::CertificateNameMismatch,
        smtp::FailureClass::StartTlsUnavailable => pb::FailureClass::StarttlsUnavailable,
        smtp::FailureClass::AuthRejected => pb::FailureClass::AuthRejected,
        smtp::FailureClass::AuthMechanismUnsupported => pb::FailureClass::AuthMechanismUnsupported,
        smtp::FailureClass::SenderRejected => pb::FailureClass::SenderRejected,
        smtp::FailureClass::RecipientRejected => pb::FailureClass::RecipientRejected,
        smtp::FailureClass::MessageRejected => pb::FailureClass::MessageRejected,
        smtp::FailureClass::TemporaryFailure => pb::FailureClass::TemporaryFailure,
        smtp::FailureClass::PermanentFailure => pb::FailureClass::PermanentFailure,
        smtp::FailureClass::ProtocolMismatch => pb::FailureClass::ProtocolMismatch,
        smtp::FailureClass::DestinationNotAllowed => pb::FailureClass::DestinationNotAllowed,
        smtp::FailureClass::CredentialDestinationDenied => {
            pb::FailureClass::CredentialDestinationDenied
        }
        smtp::FailureClass::OAuthClientRejected => pb::FailureClass::OauthClientRejected,
        smtp::FailureClass::OAuthGrantRejected => pb::FailureClass::OauthGrantRejected,
        smtp::FailureClass::OAuthEndpointUnreachable => pb::FailureClass::OauthEndpointUnreachable,
        smtp::FailureClass::OAuthScopeMissing => pb::FailureClass::OauthScopeMissing,
    }
}

fn phase_status(s: smtp::PhaseStatus) -> pb::PhaseStatus {
    match s {
        smtp::PhaseStatus::Ok => pb::PhaseStatus::Ok,
        smtp::PhaseStatus::Failed => pb::PhaseStatus::Failed,
        smtp::PhaseStatus::Skipped => pb::PhaseStatus::Skipped,
    }
}

fn tls(info: &smtp::TlsInfo) -> pb::TlsDetails {
    let (verification, detail) = match &info.verification {
        smtp::Verification::Verified => (pb::Verification::Verified, String::new()),
        smtp::Verification::IgnoredByConfig { reason } => {
            (pb::Verification::Ignored, reason.clone())
        }
        smtp::Verification::Failed { reason } => (pb::Verification::Failed, reason.clone()),
    };
    pb::TlsDetails {
        protocol_version: info.protocol_version.clone(),
        cipher_suite: info.cipher_suite.clone(),
        peer_certificate: info.peer_certificate.as_ref().map(|c| pb::PeerCertificate {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            sans: c.sans.clone(),
            not_before: c.not_before.clone(),
            not_after: c.not_after.clone(),
        }),
        verification: verification.into(),
        verification_detail: detail,
    }
}

/// One transcript entry. The reply text is the reply's lines joined by `\n`.
pub fn phase_result(r: &smtp::PhaseRecord) -> pb::PhaseResult {
    pb::PhaseResult {
        phase: phase(r.phase).into(),
        status: phase_status(r.status).into(),
        duration: prost_types::Duration::try_from(r.duration).ok(),
        commands: r.commands.clone(),
        reply_code: r.reply.as_ref().map_or(0, |reply| i32::from(reply.code)),
        reply_text: r
            .reply
            .as_ref()
            .map(|reply| reply.lines.join("\n"))
            .unwrap_or_default(),
        detail: r.detail.clone(),
        tls: r.tls.as_ref().map(tls),
    }
}

/// How a session ended, for the agent's stream (and the server's test record).
///
/// On success the message is `accepted: <code> <text>` after delivery, or
/// `stopped after <X> as asked` when the session stopped early.
pub fn outcome(report: &smtp::SessionReport) -> pb::JobOutcome {
    let message_id = report.message_id.clone().unwrap_or_default();
    let (succeeded, result) = match &report.outcome {
        smtp::Outcome::Success(s) => (
            true,
            pb::TestResult {
                message: match s.final_reply.as_ref() {
                    Some(reply) => format!("accepted: {} {}", reply.code, reply.lines.join(" ")),
                    None => format!("stopped after {:?} as asked", s.stopped_after),
                },
                queue_id: s.queue_id.clone().unwrap_or_default(),
                message_id,
                ..Default::default()
            },
        ),
        smtp::Outcome::Failure(f) => (
            false,
            pb::TestResult {
                failure_class: failure_class(f.class).into(),
                failed_phase: phase(f.phase).into(),
                message: f.message.clone(),
                hint: f.hint.clone(),
                queue_id: String::new(),
                message_id,
            },
        ),
    };
    pb::JobOutcome {
        succeeded,
        result: Some(result),
        capabilities: report.capabilities.clone(),
        delivery: None,
    }
}

/// The API's security mode for a session's.
pub fn security_to_pb(s: smtp::Security) -> pb::SecurityMode {
    match s {
        smtp::Security::None => pb::SecurityMode::None,
        smtp::Security::StartTlsOpportunistic => pb::SecurityMode::StarttlsOpportunistic,
        smtp::Security::StartTlsRequired => pb::SecurityMode::StarttlsRequired,
        smtp::Security::ImplicitTls => pb::SecurityMode::ImplicitTls,
    }
}

/// A session's security mode from the API's (unset means `STARTTLS_REQUIRED`).
pub fn security_from_pb(value: i32) -> Result<smtp::Security, ConvertError> {
    match pb::SecurityMode::try_from(value) {
        // Unset means STARTTLS_REQUIRED, as on account creation.
        Ok(pb::SecurityMode::Unspecified | pb::SecurityMode::StarttlsRequired) => {
            Ok(smtp::Security::StartTlsRequired)
        }
        Ok(pb::SecurityMode::None) => Ok(smtp::Security::None),
        Ok(pb::SecurityMode::StarttlsOpportunistic) => Ok(smtp::Security::StartTlsOpportunistic),
        Ok(pb::SecurityMode::ImplicitTls) => Ok(smtp::Security::ImplicitTls),
        Err(_) => Err(ConvertError::UnknownEnum {
            field: "security",
            value,
        }),
    }
}

/// The API's mechanism for a session's.
pub fn mechanism_to_pb(m: smtp::AuthMechanism) -> pb::AuthMechanism {
    match m {
        smtp::AuthMechanism::Plain => pb::AuthMechanism::Plain,
        smtp::AuthMechanism::Login => pb::AuthMechanism::Login,
        smtp::AuthMechanism::XOAuth2 => pb::AuthMechanism::Xoauth2,
    }
}

/// A session's mechanism from the API's (unset is an error).
pub fn mechanism_from_pb(value: i32) -> Result<smtp::AuthMechanism, ConvertError> {
    match pb::AuthMechanism::try_from(value) {
        Ok(pb::AuthMechanism::Plain) => Ok(smtp::AuthMechanism::Plain),
        Ok(pb::AuthMechanism::Login) => Ok(smtp::AuthMechanism::Login),
        Ok(pb::AuthMechanism::Xoauth2) => Ok(smtp::AuthMechanism::XOAuth2),
        Ok(pb::AuthMechanism::Unspecified) => Err(ConvertError::MissingAuthMechanism),
        Err(_) => Err(ConvertError::UnknownEnum {
            field: "auth.mechanism",
            value,
        }),
    }
}

/// The API's stop point for a session's.
pub fn stop_after_to_pb(s: smtp::StopAfter) -> pb::StopAfter {
    match s {
        smtp::StopAfter::Connect => pb::StopAfter::Connect,
        smtp::StopAfter::Tls => pb::StopAfter::Tls,
        smtp::StopAfter::Auth => pb::StopAfter::Auth,
        smtp::StopAfter::Delivery => pb::StopAfter::Delivery,
    }
}

/// A session's stop point from the API's (unset means `DELIVERY`).
pub fn stop_after_from_pb(value: i32) -> Result<smtp::StopAfter, ConvertError> {
    match pb::StopAfter::try_from(value) {
        Ok(pb::StopAfter::Connect) => Ok(smtp::StopAfter::Connect),
        Ok(pb::StopAfter::Tls) => Ok(smtp::StopAfter::Tls),
        Ok(pb::StopAfter::Auth) => Ok(smtp::StopAfter::Auth),
        Ok(pb::StopAfter::Delivery | pb::StopAfter::Unspecified) => Ok(smtp::StopAfter::Delivery),
        Err(_) => Err(ConvertError::UnknownEnum {
            field: "stop_after",
            value,
        }),
    }
}

fn duration_to_pb(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

fn duration_from_pb(
    d: Option<&prost_types::Duration>,
    default: Duration,
    field: &'static str,
) -> Result<Duration, ConvertError> {
    match d {
        None => Ok(default),
        Some(d) => Duration::try_from(*d).map_err(|_| ConvertError::InvalidTimeout(field)),
    }
}

fn timeouts_to_pb(t: &smtp::Timeouts) -> pb::JobTimeouts {
    pb::JobTimeouts {
        dns: duration_to_pb(t.dns),
        connect: duration_to_pb(t.connect),
        banner: duration_to_pb(t.banner),
        ehlo: duration_to_pb(t.ehlo),
        starttls: duration_to_pb(t.starttls),
        tls_handshake: duration_to_pb(t.tls_handshake),
        auth: duration_to_pb(t.auth),
        mail_from: duration_to_pb(t.mail_from),
        rcpt_to: duration_to_pb(t.rcpt_to),
        data_init: duration_to_pb(t.data_init),
        data_block: duration_to_pb(t.data_block),
        data_end: duration_to_pb(t.data_end),
        quit: duration_to_pb(t.quit),
        overall: duration_to_pb(t.overall),
    }
}

fn timeouts_from_pb(t: Option<&pb::JobTimeouts>) -> Result<smtp::Timeouts, ConvertError> {
    let d = smtp::Timeouts::default();
    let Some(t) = t else {
        return Ok(d);
    };
    Ok(smtp::Timeouts {
        dns: duration_from_pb(t.dns.as_ref(), d.dns, "dns")?,
        connect: duration_from_pb(t.connect.as_ref(), d.connect, "connect")?,
        banner: duration_from_pb(t.banner.as_ref(), d.banner, "banner")?,
        ehlo: duration_from_pb(t.ehlo.as_ref(), d.ehlo, "ehlo")?,
        starttls: duration_from_pb(t.starttls.as_ref(), d.starttls, "starttls")?,
        tls_handshake: duration_from_pb(
            t.tls_handshake.as_ref(),
            d.tls_handshake,
            "tls_handshake",
        )?,
        auth: duration_from_pb(t.auth.as_ref(), d.auth, "auth")?,
        mail_from: duration_from_pb(t.mail_from.as_ref(), d.mail_from, "mail_from")?,
        rcpt_to: duration_from_pb(t.rcpt_to.as_ref(), d.rcpt_to, "rcpt_to")?,
        data_init: duration_from_pb(t.data_init.as_ref(), d.data_init, "data_init")?,
        data_block: duration_from_pb(t.data_block.as_ref(), d.data_block, "data_block")?,
        data_end: duration_from_pb(t.data_end.as_ref(), d.data_end, "data_end")?,
        quit: duration_from_pb(t.quit.as_ref(), d.quit, "quit")?,
        overall: duration_from_pb(t.overall.as_ref(), d.overall, "overall")?,
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The job that runs `config` on an agent. The secret goes into the job: send it only
/// over the agent's mTLS stream, and never log the job.
pub fn job_from_config(job_id: impl Into<String>, config: &smtp::SessionConfig) -> pb::SmtpJob {
    pb::SmtpJob {
        job_id: job_id.into(),
        host: config.host.clone(),
        port: u32::from(config.port),
        security: security_to_pb(config.security).into(),
        ignore_certificate_errors: config.ignore_certificate_errors,
        extra_ca_pem: config.extra_ca_pem.clone().unwrap_or_default(),
        helo_name: config.helo_name.clone().unwrap_or_default(),
        auth: config.auth.as_ref().map(|c| pb::JobAuth {
            mechanism: mechanism_to_pb(c.mechanism).into(),
            username: c.username.clone(),
            secret: c.secret.expose().to_owned(),
            allowed_destinations: c
                .allowed_destinations
                .iter()
                .map(ToString::to_string)
                .collect(),
            token_grant: c.token_grant.as_ref().map(|g| pb::JobTokenGrant {
                credential: g.credential.clone(),
                etag: g.etag.clone(),
                token_url: g.token_url.clone(),
                client_id: g.client_id.clone(),
                client_secret: g.client_secret.expose().to_owned(),
                refresh_token: g
                    .refresh_token
                    .as_ref()
                    .map(|t| t.expose().to_owned())
                    .unwrap_or_default(),
                scope: g.scope.clone(),
            }),
        }),
        allow_plaintext_auth: config.allow_plaintext_auth,
        stop_after: stop_after_to_pb(config.stop_after).into(),
        timeouts: Some(timeouts_to_pb(&config.timeouts)),
        message: config.message.as_ref().map(|m| pb::JobMessage {
            sender: m.sender.clone(),
            recipients: m.recipients.clone(),
            reply_to: m.reply_to.clone().unwrap_or_default(),
            return_path: m.return_path.clone().unwrap_or_default(),
            disposition_notification_to: m.disposition_notification_to.clone().unwrap_or_default(),
            subject: m.subject.clone(),
            body: m.body.clone(),
            footer: m.footer.clone().unwrap_or_default(),
            charset: m.charset.clone().unwrap_or_default(),
            plain_text_only: m.plain_text_only,
        }),
        delivery: None,
    }
}

/// The session configuration a job asks for. Unset timeouts take the library's defaults;
/// an unset security mode means STARTTLS_REQUIRED and an unset `stop_after` DELIVERY.
pub fn config_from_job(job: &pb::SmtpJob) -> Result<smtp::SessionConfig, ConvertError> {
    let port = u16::try_from(job.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ConvertError::InvalidPort(job.port))?;
    let auth = match &job.auth {
        None => None,
        Some(a) => {
            let allowed = a
                .allowed_destinations
                .iter()
                .map(|d| d.parse::<smtp::AuthDestination>())
                .collect::<Result<Vec<_>, _>>()?;
            let mut credentials = smtp::Credentials::new(
                mechanism_from_pb(a.mechanism)?,
                a.username.clone(),
                smtp::Secret::new(a.secret.clone()),
            )
            .allowed_to(allowed);
            credentials.token_grant = a.token_grant.as_ref().map(|g| smtp::TokenGrant {
                credential: g.credential.clone(),
                etag: g.etag.clone(),
                token_url: g.token_url.clone(),
                client_id: g.client_id.clone(),
                client_secret: smtp::Secret::new(g.client_secret.clone()),
                refresh_token: (!g.refresh_token.is_empty())
                    .then(|| smtp::Secret::new(g.refresh_token.clone())),
                scope: g.scope.clone(),
            });
            Some(credentials)
        }
    };
    Ok(smtp::SessionConfig {
        host: job.host.clone(),
        port,
        security: security_from_pb(job.security)?,
        ignore_certificate_errors: job.ignore_certificate_errors,
        extra_ca_pem: (!job.extra_ca_pem.is_empty()).then(|| job.extra_ca_pem.clone()),
        // The agent's own setting: the trust store is its host's, not the server's.
        trust: smtp::TrustStore::default(),
        helo_name: non_empty(&job.helo_name),
        auth,
        allow_plaintext_auth: job.allow_plaintext_auth,
        stop_after: stop_after_from_pb(job.stop_after)?,
        timeouts: timeouts_from_pb(job.timeouts.as_ref())?,
        message: job.message.as_ref().map(|m| smtp::MessageSpec {
            sender: m.sender.clone(),
            recipients: m.recipients.clone(),
            reply_to: non_empty(&m.reply_to),
            return_path: non_empty(&m.return_path),
            disposition_notification_to: non_empty(&m.disposition_notification_to),
            subject: m.subject.clone(),
            body: m.body.clone(),
            footer: non_empty(&m.footer),
            charset: non_empty(&m.charset),
            plain_text_only: m.plain_text_only,
        }),
    })
}

#[cfg(test)]
mod tests;
