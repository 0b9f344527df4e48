//! Failure classes, how server replies map to them, and the hints shown to a person.

use std::fmt;

use crate::Security;
use crate::transcript::Phase;
use crate::wire::Reply;

/// Why a session failed. Closed: callers match on it exhaustively.
///
/// Mapping of replies (the phase decides what a code means):
///
/// | phase | 4xx | 5xx |
/// | --- | --- | --- |
/// | banner, EHLO, QUIT | `TemporaryFailure` | `PermanentFailure` |
/// | STARTTLS | `TemporaryFailure` | `StartTlsUnavailable` |
/// | AUTH | `TemporaryFailure` | 504 → `AuthMechanismUnsupported`; 530/534/535/538 and other 5xx → `AuthRejected` |
/// | MAIL FROM | `TemporaryFailure` | `SenderRejected` |
/// | RCPT TO | `TemporaryFailure` | `RecipientRejected` |
/// | DATA (command or final dot) | `TemporaryFailure` | `MessageRejected` |
///
/// Any 4xx is `TemporaryFailure` whatever the phase, because the one thing a person needs
/// to know is that retrying later may work. Transport problems: no answer in time →
/// `Timeout` (or `ProtocolMismatch` when a plaintext mode gets no greeting from port 465);
/// bytes that are not SMTP → `ProtocolMismatch`; the server closing the connection or a
/// reset in the middle of a session → `TemporaryFailure` (nothing was accepted, and a
/// retry may work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The host name did not resolve.
    Dns,
    /// No address accepted a TCP connection (refused, unreachable, reset).
    ConnectionRefused,
    /// A phase got no answer within its timeout, or the overall deadline passed.
    Timeout,
    /// The TLS handshake failed for a reason other than the certificate.
    TlsHandshake,
    /// The server certificate has expired (or is not yet valid).
    CertificateExpired,
    /// The server certificate does not chain to a trusted root.
    CertificateUntrusted,
    /// The server certificate is not valid for the host name.
    CertificateNameMismatch,
    /// `STARTTLS` was required but the server does not offer it (or refused it), or AUTH
    /// would have gone out on a connection without TLS (and `allow_plaintext_auth` is off).
    StartTlsUnavailable,
    /// The server rejected the credentials.
    AuthRejected,
    /// The server does not offer the configured AUTH mechanism (or AUTH at all).
    AuthMechanismUnsupported,
    /// `MAIL FROM` was rejected permanently.
    SenderRejected,
    /// `RCPT TO` was rejected permanently.
    RecipientRejected,
    /// The message was rejected permanently at or after `DATA`.
    MessageRejected,
    /// A 4xx reply, or the connection dropped mid-session: retrying later may work.
    TemporaryFailure,
    /// A 5xx reply not covered by a more specific class.
    PermanentFailure,
    /// The two ends speak different protocols (plain SMTP vs implicit TLS, or not SMTP).
    ProtocolMismatch,
    /// The destination policy refused every resolved address.
    DestinationNotAllowed,
    /// The credential may not be sent to this relay: its host and port are not in the
    /// credential's `allowed_destinations`, or the relay's certificate was not verified
    /// (AUTH goes only to a relay that proved it is the host). Nothing secret was sent.
    CredentialDestinationDenied,
    /// The OAuth2 token endpoint refused the client (`invalid_client`).
    OAuthClientRejected,
    /// The OAuth2 token endpoint refused the grant (`invalid_grant`).
    OAuthGrantRejected,
    /// The OAuth2 token endpoint could not be reached or gave no usable answer.
    OAuthEndpointUnreachable,
    /// The token granted lacks a scope the credential asks for.
    OAuthScopeMissing,
}

impl FailureClass {
    /// Every class, in declaration order.
    pub const ALL: [FailureClass; 22] = [
        FailureClass::Dns,
        FailureClass::ConnectionRefused,
        FailureClass::Timeout,
        FailureClass::TlsHandshake,
        FailureClass::CertificateExpired,
        FailureClass::CertificateUntrusted,
        FailureClass::CertificateNameMismatch,
        FailureClass::StartTlsUnavailable,
        FailureClass::AuthRejected,
        FailureClass::AuthMechanismUnsupported,
        FailureClass::SenderRejected,
        FailureClass::RecipientRejected,
        FailureClass::MessageRejected,
        FailureClass::TemporaryFailure,
        FailureClass::PermanentFailure,
        FailureClass::ProtocolMismatch,
        FailureClass::DestinationNotAllowed,
        FailureClass::CredentialDestinationDenied,
        FailureClass::OAuthClientRejected,
        FailureClass::OAuthGrantRejected,
        FailureClass::OAuthEndpointUnreachable,
        FailureClass::OAuthScopeMissing,
    ];

    /// A stable upper-case name, e.g. `"STARTTLS_UNAVAILABLE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Dns => "DNS",
            FailureClass::ConnectionRefused => "CONNECTION_REFUSED",
            FailureClass::Timeout => "TIMEOUT",
            FailureClass::TlsHandshake => "TLS_HANDSHAKE",
            FailureClass::CertificateExpired => "CERTIFICATE_EXPIRED",
            FailureClass::CertificateUntrusted => "CERTIFICATE_UNTRUSTED",
            FailureClass::CertificateNameMismatch => "CERTIFICATE_NAME_MISMATCH",
            FailureClass::StartTlsUnavailable => "STARTTLS_UNAVAILABLE",
            FailureClass::AuthRejected => "AUTH_REJECTED",
            FailureClass::AuthMechanismUnsupported => "AUTH_MECHANISM_UNSUPPORTED",
            FailureClass::SenderRejected => "SENDER_REJECTED",
            FailureClass::RecipientRejected => "RECIPIENT_REJECTED",
            FailureClass::MessageRejected => "MESSAGE_REJECTED",
            FailureClass::TemporaryFailure => "TEMPORARY_FAILURE",
            FailureClass::PermanentFailure => "PERMANENT_FAILURE",
            FailureClass::ProtocolMismatch => "PROTOCOL_MISMATCH",
            FailureClass::DestinationNotAllowed => "DESTINATION_NOT_ALLOWED",
            FailureClass::CredentialDestinationDenied => "CREDENTIAL_DESTINATION_DENIED",
            FailureClass::OAuthClientRejected => "OAUTH_CLIENT_REJECTED",
            FailureClass::OAuthGrantRejected => "OAUTH_GRANT_REJECTED",
            FailureClass::OAuthEndpointUnreachable => "OAUTH_ENDPOINT_UNREACHABLE",
            FailureClass::OAuthScopeMissing => "OAUTH_SCOPE_MISSING",
        }
    }

    /// Whether the same send may succeed later without a configuration change.
    pub fn is_transient(self) -> bool {
        match self {
            FailureClass::Timeout
            | FailureClass::TemporaryFailure
            | FailureClass::OAuthEndpointUnreachable => true,
            FailureClass::Dns
            | FailureClass::ConnectionRefused
            | FailureClass::TlsHandshake
            | FailureClass::CertificateExpired
            | FailureClass::CertificateUntrusted
            | FailureClass::CertificateNameMismatch
            | FailureClass::StartTlsUnavailable
            | FailureClass::AuthRejected
            | FailureClass::AuthMechanismUnsupported
            | FailureClass::SenderRejected
            | FailureClass::RecipientRejected
            | FailureClass::MessageRejected
            | FailureClass::PermanentFailure
            | FailureClass::ProtocolMismatch
            | FailureClass::DestinationNotAllowed
            | FailureClass::CredentialDestinationDenied
            | FailureClass::OAuthClientRejected
            | FailureClass::OAuthGrantRejected
            | FailureClass::OAuthScopeMissing => false,
        }
    }

    /// A generic hint, used when the failure site has nothing more specific to say.
    pub fn default_hint(self) -> &'static str {
        match self {
            FailureClass::Dns => "the relay host name does not resolve; check the host name",
            FailureClass::ConnectionRefused => {
                "nothing accepts connections on that host and port; check the host, the port and any firewall"
            }
            FailureClass::Timeout => {
                "the server did not answer in time; check the port and any firewall"
            }
            FailureClass::TlsHandshake => {
                "the TLS handshake failed; the server may need an older or newer TLS version"
            }
            FailureClass::CertificateExpired => "the server certificate has expired",
            FailureClass::CertificateUntrusted => {
                "the server certificate is not signed by a trusted CA; add the CA or set ignore_certificate_errors"
            }
            FailureClass::CertificateNameMismatch => {
                "the server certificate is for another host name"
            }
            FailureClass::StartTlsUnavailable => {
                "server offers no STARTTLS; STARTTLS_REQUIRED refuses to send in clear"
            }
            FailureClass::AuthRejected => "the server rejected the user name or password",
            FailureClass::AuthMechanismUnsupported => {
                "the server does not offer the configured AUTH mechanism"
            }
            FailureClass::SenderRejected => "the server refuses this sender address",
            FailureClass::RecipientRejected => "the server refuses this recipient address",
            FailureClass::MessageRejected => "the server refused the message content",
            FailureClass::TemporaryFailure => {
                "the server reported a temporary failure; retry later"
            }
            FailureClass::PermanentFailure => "the server refused the session",
            FailureClass::ProtocolMismatch => {
                "the server does not speak the protocol expected for this security mode"
            }
            FailureClass::DestinationNotAllowed => {
                "the destination address is blocked by the destination policy"
            }
            FailureClass::CredentialDestinationDenied => {
                "the credential may not be sent to this relay; an admin can add it to the \
                 credential's allowed_destinations"
            }
            FailureClass::OAuthClientRejected => {
                "the token endpoint refused the client: check the client id and client secret; a \
                 Microsoft 365 client secret may have expired (create a new one in Entra ID, \
                 under App registrations, Certificates & secrets)"
            }
            FailureClass::OAuthGrantRejected => {
                "the token endpoint refused the refresh token: it was revoked, expired or never \
                 consented; consent again and store the new refresh token"
            }
            FailureClass::OAuthEndpointUnreachable => {
                "the token endpoint could not be reached or did not answer as OAuth2 says; check \
                 the token URL, the network path and the destination policy"
            }
            FailureClass::OAuthScopeMissing => {
                "the token does not grant the credential's scope; grant the application that \
                 permission (and admin consent), or fix the credential's scope"
            }
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a negative reply `reply` received in `phase`.
pub fn classify_reply(phase: Phase, reply: &Reply) -> FailureClass {
    let transient = reply.is_transient();
    if transient {
        return FailureClass::TemporaryFailure;
    }
    match phase {
        Phase::Auth => match reply.code {
            504 => FailureClass::AuthMechanismUnsupported,
            _ => FailureClass::AuthRejected,
        },
        Phase::StartTls => FailureClass::StartTlsUnavailable,
        Phase::MailFrom => FailureClass::SenderRejected,
        Phase::RcptTo => FailureClass::RecipientRejected,
        Phase::Data => FailureClass::MessageRejected,
        Phase::Dns
        | Phase::Connect
        | Phase::Banner
        | Phase::Ehlo
        | Phase::TlsHandshake
        | Phase::Quit => FailureClass::PermanentFailure,
        Phase::Token => FailureClass::OAuthEndpointUnreachable,
    }
}

/// The RFC 3463 enhanced status code Exchange Online answers when the authenticated client
/// may not send as the sender ("SendAsDenied").
const SEND_AS_DENIED: &str = "5.7.60";

/// The hint for a negative reply, naming the server's words.
pub(crate) fn reply_hint(phase: Phase, reply: &Reply, class: FailureClass) -> String {
    let hint = generic_reply_hint(phase, reply, class);
    match class {
        FailureClass::SenderRejected | FailureClass::MessageRejected
            if reply.enhanced.as_deref() == Some(SEND_AS_DENIED) =>
        {
            format!(
                "{hint}; 5.7.60 means the client may not send as this sender: in Microsoft 365 \
                 the sender must be the mailbox the credential signs in as, or a mailbox it has \
                 SendAs rights on"
            )
        }
        _ => hint,
    }
}

/// The hint for a negative reply from what its class says, naming the server's words.
fn generic_reply_hint(phase: Phase, reply: &Reply, class: FailureClass) -> String {
    let said = reply.lines.first().cloned().unwrap_or_default();
    match class {
        FailureClass::TemporaryFailure => {
            format!(
                "the server answered {} to {phase} (temporary): {said}; retry later",
                reply.code
            )
        }
        FailureClass::AuthRejected => format!(
            "the server rejected the credentials ({} {said})",
            reply.code
        ),
        FailureClass::AuthMechanismUnsupported => {
            format!(
                "the server refuses this AUTH mechanism ({} {said})",
                reply.code
            )
        }
        FailureClass::SenderRejected => {
            format!("the server refuses the sender ({} {said})", reply.code)
        }
        FailureClass::RecipientRejected => {
            format!("the server refuses the recipient ({} {said})", reply.code)
        }
        FailureClass::MessageRejected => {
            format!("the server refused the message ({} {said})", reply.code)
        }
        FailureClass::StartTlsUnavailable => {
            format!(
                "the server refused STARTTLS ({} {said}); STARTTLS_REQUIRED refuses to send in clear",
                reply.code
            )
        }
        FailureClass::PermanentFailure => {
            format!("the server refused {phase} ({} {said})", reply.code)
        }
        FailureClass::OAuthClientRejected
        | FailureClass::OAuthGrantRejected
        | FailureClass::OAuthEndpointUnreachable
        | FailureClass::OAuthScopeMissing
        | FailureClass::Dns
        | FailureClass::ConnectionRefused
        | FailureClass::Timeout
        | FailureClass::TlsHandshake
        | FailureClass::CertificateExpired
        | FailureClass::CertificateUntrusted
        | FailureClass::CertificateNameMismatch
        | FailureClass::ProtocolMismatch
        | FailureClass::DestinationNotAllowed
        | FailureClass::CredentialDestinationDenied => class.default_hint().to_owned(),
    }
}

/// The hint when a session refuses to send AUTH to a host and port outside the
/// credential's `allowed_destinations`.
pub(crate) fn destination_denied_hint(host: &str, port: u16) -> String {
    format!(
        "the credential is not allowed to {host}:{port}, so it was not sent; point the account at \
         a relay in the credential's allowed_destinations, or have an admin add {host}:{port} \
         (mailplane credentials update --allow-destination)"
    )
}

/// The hint when a session refuses to send AUTH because the relay's certificate did not
/// verify (`ignore_certificate_errors`).
pub(crate) fn unverified_auth_hint(host: &str) -> String {
    format!(
        "the certificate of {host} did not verify (ignore_certificate_errors lets the session \
         go on, but not with the credential), so AUTH was not sent; give the relay a valid \
         certificate for {host} or trust its CA (--smtp-extra-ca)"
    )
}

/// The hint when a session refuses to send AUTH on a connection without TLS.
pub(crate) fn plaintext_auth_hint(security: Security) -> &'static str {
    match security {
        Security::None => {
            "security NONE would send the credential in clear, so it was not sent; use \
             STARTTLS_REQUIRED or IMPLICIT_TLS, or (admin) set allow_plaintext_auth"
        }
        Security::StartTlsOpportunistic | Security::StartTlsRequired | Security::ImplicitTls => {
            "the relay did not offer STARTTLS, so the credential was not sent; use a relay \
             that offers TLS, or (admin) set allow_plaintext_auth"
        }
    }
}

/// The hint when a plaintext mode gets no greeting or non-SMTP bytes.
pub(crate) fn implicit_tls_hint(port: u16) -> String {
    format!("port {port} speaks implicit TLS; set security to IMPLICIT_TLS")
}

/// The hint when implicit TLS meets a plain SMTP greeting.
pub(crate) fn plain_smtp_hint(port: u16) -> String {
    format!("port {port} speaks plain SMTP (STARTTLS); set security to STARTTLS_REQUIRED")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_reply;

    fn reply(s: &str) -> Reply {
        parse_reply(format!("{s}\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn reply_classes() {
        let cases = [
            (
                Phase::Auth,
                "535 5.7.8 Error: authentication failed",
                FailureClass::AuthRejected,
            ),
            (
                Phase::Auth,
                "534 5.7.9 Please log in with your web browser",
                FailureClass::AuthRejected,
            ),
            (
                Phase::Auth,
                "530 5.7.0 Must issue a STARTTLS command first",
                FailureClass::AuthRejected,
            ),
            (
                Phase::Auth,
                "504 5.5.4 Unrecognized authentication type",
                FailureClass::AuthMechanismUnsupported,
            ),
            (
                Phase::Auth,
                "454 4.7.0 Temporary authentication failure",
                FailureClass::TemporaryFailure,
            ),
            (
                Phase::MailFrom,
                "553 5.7.1 Sender address rejected",
                FailureClass::SenderRejected,
            ),
            (
                Phase::MailFrom,
                "451 4.3.0 try later",
                FailureClass::TemporaryFailure,
            ),
            (
                Phase::RcptTo,
                "550 5.1.1 User unknown",
                FailureClass::RecipientRejected,
            ),
            (
                Phase::RcptTo,
                "451 4.7.1 Greylisted",
                FailureClass::TemporaryFailure,
            ),
            (Phase::Data, "554 5.7.1 spam", FailureClass::MessageRejected),
            (
                Phase::Data,
                "452 4.3.1 Insufficient system storage",
                FailureClass::TemporaryFailure,
            ),
            (
                Phase::Banner,
                "554 5.7.1 go away",
                FailureClass::PermanentFailure,
            ),
            (
                Phase::Banner,
                "421 4.3.2 busy",
                FailureClass::TemporaryFailure,
            ),
            (Phase::Ehlo, "502 5.5.2 no", FailureClass::PermanentFailure),
            (
                Phase::StartTls,
                "454 4.7.0 TLS not available",
                FailureClass::TemporaryFailure,
            ),
            (
                Phase::StartTls,
                "502 5.5.1 unknown command",
                FailureClass::StartTlsUnavailable,
            ),
        ];
        for (phase, text, class) in cases {
            assert_eq!(classify_reply(phase, &reply(text)), class, "{phase} {text}");
        }
    }

    #[test]
    fn names_are_unique_and_hints_present() {
        let mut names: Vec<&str> = FailureClass::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FailureClass::ALL.len());
        for c in FailureClass::ALL {
            assert!(!c.default_hint().is_empty());
        }
        assert!(FailureClass::Timeout.is_transient());
        assert!(!FailureClass::AuthRejected.is_transient());
    }

    #[test]
    fn send_as_denied_says_what_microsoft_365_needs() {
        for (phase, text) in [
            (
                Phase::MailFrom,
                "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
            ),
            (
                Phase::Data,
                "554 5.7.60 SMTP; Client does not have permissions to send as this sender",
            ),
        ] {
            let r = reply(text);
            let h = reply_hint(phase, &r, classify_reply(phase, &r));
            assert!(
                h.contains("SendAs rights") && h.contains("Microsoft 365"),
                "{h}"
            );
            assert!(h.contains("permissions to send as this sender"), "{h}");
        }
        let other = reply("550 5.7.1 Sender address rejected");
        let h = reply_hint(Phase::MailFrom, &other, FailureClass::SenderRejected);
        assert!(!h.contains("SendAs"), "{h}");
        let temporary = reply("451 4.7.60 try later");
        let h = reply_hint(
            Phase::Data,
            &temporary,
            classify_reply(Phase::Data, &temporary),
        );
        assert!(!h.contains("SendAs"), "{h}");
    }

    #[test]
    fn hints_name_the_reply() {
        let r = reply("550 5.1.1 <nobody@example.org>: Recipient address rejected");
        let h = reply_hint(Phase::RcptTo, &r, classify_reply(Phase::RcptTo, &r));
        assert!(
            h.contains("550") && h.contains("Recipient address rejected"),
            "{h}"
        );
        assert_eq!(
            implicit_tls_hint(465),
            "port 465 speaks implicit TLS; set security to IMPLICIT_TLS"
        );
    }
}
