//! SMTP accounts.

use super::Micros;
use super::credential::{CredentialId, CredentialKind};
use crate::error::{Error, Result};

/// An account's code, the `{id}` in `accounts/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub i64);

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "accounts/{}", self.0)
    }
}

/// How the connection to the relay is secured (seed 004's four choices), and the SASL
/// mechanism for AUTH: the session library's own types, so nothing maps one into the other.
pub use mailplane_smtp::{AuthMechanism, Security};

/// The mechanism that fits a credential of `kind`.
pub fn mechanism_for(kind: CredentialKind) -> AuthMechanism {
    match kind {
        CredentialKind::Password => AuthMechanism::Plain,
        CredentialKind::OAuth2Token
        | CredentialKind::OAuth2ClientCredentials
        | CredentialKind::OAuth2RefreshToken => AuthMechanism::XOAuth2,
    }
}

/// The writable fields of an account, already checked one by one at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSpec {
    /// The unique account name.
    pub account_name: String,
    /// Whether the account may send.
    pub enabled: bool,
    /// The From address.
    pub sender_email: String,
    /// The Reply-To address.
    pub reply_to_email: Option<String>,
    /// The Return-Path (envelope sender) address.
    pub return_path_email: Option<String>,
    /// The read-confirmation address.
    pub confirmation_email: Option<String>,
    /// Whether this account is (or should become) the default.
    pub is_default: bool,
    /// Whether to ask for a read confirmation.
    pub send_read_confirmation: bool,
    /// Whether senders must use these settings.
    pub force_settings: bool,
    /// Whether to append the footer.
    pub enable_footer: bool,
    /// The footer text.
    pub footer_text: String,
    /// The relay's host name or address.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// How the connection is secured.
    pub security: Security,
    /// Whether certificate errors are ignored.
    pub ignore_certificate_errors: bool,
    /// Whether to authenticate.
    pub use_authentication: bool,
    /// The SASL mechanism; `None` follows the credential's kind.
    pub auth_mechanism: Option<AuthMechanism>,
    /// The credential to authenticate with.
    pub credential: Option<CredentialId>,
    /// Whether to send through a network connector.
    pub use_network_connector: bool,
    /// The network connector's id.
    pub network_connector: Option<i64>,
    /// The EHLO name.
    pub helo_name: Option<String>,
    /// The message character set.
    pub charset: String,
    /// Whether messages are text/plain only.
    pub plain_text_only: bool,
    /// The attachment size limit in bytes; 0 means none.
    pub attachment_size_limit_bytes: u64,
    /// Whether AUTH may be sent on a connection without TLS (only an admin may turn it on,
    /// see [`super::rules::plaintext_auth_change`]).
    pub allow_plaintext_auth: bool,
}

impl AccountSpec {
    /// Checks the rules that span several fields. Runs on create and on the result of an
    /// update, so both enforce the same rules.
    pub fn check(&self) -> Result<()> {
        if self.security == Security::None && self.ignore_certificate_errors {
            return Err(Error::invalid(
                "ignore_certificate_errors",
                "contradicts security NONE, which uses no TLS and so checks no certificate; \
                 choose a TLS security mode or turn ignore_certificate_errors off",
            ));
        }
        if self.security == Security::None && self.use_authentication && !self.allow_plaintext_auth
        {
            return Err(Error::invalid(
                "allow_plaintext_auth",
                "is required for security NONE with use_authentication, which would send the \
                 credential in clear; choose STARTTLS_REQUIRED or IMPLICIT_TLS, or have an admin \
                 set allow_plaintext_auth",
            ));
        }
        if self.use_authentication && self.credential.is_none() {
            return Err(Error::invalid(
                "credential",
                "is required when use_authentication is set; give a credentials/{id}",
            ));
        }
        if self.use_network_connector && self.network_connector.is_none() {
            return Err(Error::invalid(
                "network_connector",
                "is required when use_network_connector is set; give a connectors/{id}",
            ));
        }
        if self.send_read_confirmation && self.confirmation_email.is_none() {
            return Err(Error::invalid(
                "confirmation_email",
                "is required when send_read_confirmation is set: read confirmations go there",
            ));
        }
        if self.enable_footer && self.footer_text.trim().is_empty() {
            return Err(Error::invalid(
                "footer_text",
                "is required when enable_footer is set",
            ));
        }
        if self.is_default && !self.enabled {
            return Err(Error::invalid(
                "is_default",
                "a default account must be enabled; set enabled too, or leave is_default off",
            ));
        }
        Ok(())
    }

    /// Checks the account against the credential it names (the credential must exist, which
    /// the store checks, and its kind must suit the mechanism).
    pub fn check_credential(&self, kind: CredentialKind) -> Result<()> {
        let Some(mechanism) = self.auth_mechanism else {
            return Ok(());
        };
        let fits = match mechanism {
            AuthMechanism::XOAuth2 => kind.is_oauth2(),
            AuthMechanism::Plain | AuthMechanism::Login => !kind.is_oauth2(),
        };
        if fits {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!(
                "auth_mechanism {} does not fit a credential of kind {}; XOAUTH2 needs an \
                 OAuth2 kind, PLAIN and LOGIN need a password",
                mechanism.as_str(),
                kind.as_str()
            )))
        }
    }
}

/// A stored account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// The account's code.
    pub id: AccountId,
    /// Its fields.
    pub spec: AccountSpec,
    /// Bumped on every change; the etag is derived from it.
    pub version: i64,
    /// When it was created.
    pub create_time: Micros,
    /// When it last changed.
    pub update_time: Micros,
}

/// Which accounts match by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    /// Every account.
    #[default]
    Any,
    /// Enabled accounts.
    Enabled,
    /// Disabled accounts.
    Disabled,
}

/// The accounts report's search fields. Text fields match a case-insensitive substring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFilter {
    /// The account's code.
    pub id: Option<i64>,
    /// A substring of the account name.
    pub account_name: Option<String>,
    /// A substring of the sender.
    pub sender_email: Option<String>,
    /// A substring of the Reply-To.
    pub reply_to_email: Option<String>,
    /// A substring of the Return-Path.
    pub return_path_email: Option<String>,
    /// A substring of the confirmation address.
    pub confirmation_email: Option<String>,
    /// The status.
    pub status: StatusFilter,
}

impl AccountFilter {
    /// A stable text form, used to tie a page token to the filter it was made for.
    pub fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}

/// The key that makes account names unique regardless of case.
pub fn name_key(account_name: &str) -> String {
    account_name.trim().to_lowercase()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> AccountSpec {
        AccountSpec {
            account_name: "Alerts".into(),
            enabled: true,
            sender_email: "alerts@example.com".into(),
            reply_to_email: None,
            return_path_email: None,
            confirmation_email: None,
            is_default: false,
            send_read_confirmation: false,
            force_settings: false,
            enable_footer: false,
            footer_text: String::new(),
            host: "smtp.example.com".into(),
            port: 587,
            security: Security::StartTlsRequired,
            ignore_certificate_errors: false,
            use_authentication: false,
            auth_mechanism: None,
            credential: None,
            use_network_connector: false,
            network_connector: None,
            helo_name: None,
            charset: "UTF-8".into(),
            plain_text_only: false,
            attachment_size_limit_bytes: 0,
            allow_plaintext_auth: false,
        }
    }

    #[test]
    fn cross_field_rules() {
        assert!(spec().check().is_ok());
        let s = AccountSpec {
            security: Security::None,
            ignore_certificate_errors: true,
            ..spec()
        };
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .starts_with("ignore_certificate_errors")
        );
        let s = AccountSpec {
            use_authentication: true,
            ..spec()
        };
        assert!(s.check().unwrap_err().to_string().starts_with("credential"));
        let s = AccountSpec {
            use_network_connector: true,
            ..spec()
        };
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .starts_with("network_connector")
        );
        let s = AccountSpec {
            is_default: true,
            enabled: false,
            ..spec()
        };
        assert!(s.check().unwrap_err().to_string().starts_with("is_default"));
    }

    #[test]
    fn security_none_with_authentication_needs_allow_plaintext_auth() {
        let s = AccountSpec {
            security: Security::None,
            use_authentication: true,
            credential: Some(CredentialId(1)),
            ..spec()
        };
        let err = s.check().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "allow_plaintext_auth"),
            "{err}"
        );
        assert!(
            AccountSpec {
                allow_plaintext_auth: true,
                ..s.clone()
            }
            .check()
            .is_ok()
        );
        // Without authentication there is nothing to protect; with TLS nothing goes in clear.
        assert!(
            AccountSpec {
                use_authentication: false,
                credential: None,
                ..s.clone()
            }
            .check()
            .is_ok()
        );
        for security in [
            Security::StartTlsOpportunistic,
            Security::StartTlsRequired,
            Security::ImplicitTls,
        ] {
            assert!(
                AccountSpec {
                    security,
                    ..s.clone()
                }
                .check()
                .is_ok()
            );
        }
    }

    #[test]
    fn mechanism_must_fit_credential() {
        let s = AccountSpec {
            auth_mechanism: Some(AuthMechanism::XOAuth2),
            ..spec()
        };
        assert!(s.check_credential(CredentialKind::Password).is_err());
        assert!(s.check_credential(CredentialKind::OAuth2Token).is_ok());
    }
}
