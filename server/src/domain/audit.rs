//! How resources appear in the audit log: JSON objects built from the domain types, with the
//! API's field names and enum names, compared field by field by [`crate::audit::diff`].

use super::{
    Account, AccountId, AuthMechanism, Connector, Credential, CredentialKind, Micros, TestRequest,
    etag,
};
use serde_json::{Value, json};

/// A stored time in RFC 3339, as the API shows timestamps.
pub fn rfc3339(micros: Micros) -> String {
    mailplane_proto::timestamp(micros).to_string()
}

/// The API's short name of a credential kind.
fn kind_name(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Password => "PASSWORD",
        CredentialKind::OAuth2Token => "OAUTH2_TOKEN",
        CredentialKind::OAuth2ClientCredentials => "OAUTH2_CLIENT_CREDENTIALS",
        CredentialKind::OAuth2RefreshToken => "OAUTH2_REFRESH_TOKEN",
    }
}

impl TestRequest {
    /// What the audit log records of a started test: the account, and the request's fields
    /// that say what was sent where (never the body).
    pub fn audit_json(&self, account: AccountId) -> Value {
        json!({
            "account": account.to_string(),
            "to": self.to,
            "subject": self.subject,
            "stop_after": self.stop_after.as_str(),
        })
    }
}

impl Account {
    /// The account as the audit log records it.
    pub fn audit_json(&self) -> Value {
        let s = &self.spec;
        json!({
            "name": self.id.to_string(),
            "id": self.id.0,
            "account_name": s.account_name,
            "enabled": s.enabled,
            "sender_email": s.sender_email,
            "reply_to_email": s.reply_to_email.clone().unwrap_or_default(),
            "return_path_email": s.return_path_email.clone().unwrap_or_default(),
            "confirmation_email": s.confirmation_email.clone().unwrap_or_default(),
            "is_default": s.is_default,
            "send_read_confirmation": s.send_read_confirmation,
            "force_settings": s.force_settings,
            "enable_footer": s.enable_footer,
            "footer_text": s.footer_text,
            "host": s.host,
            "port": u32::from(s.port),
            "security": s.security.as_str(),
            "ignore_certificate_errors": s.ignore_certificate_errors,
            "use_authentication": s.use_authentication,
            "auth_mechanism": s.auth_mechanism.map_or("UNSPECIFIED", AuthMechanism::as_str),
            "credential": s.credential.map(|c| c.to_string()).unwrap_or_default(),
            "use_network_connector": s.use_network_connector,
            "network_connector": s
                .network_connector
                .map(|c| format!("connectors/{c}"))
                .unwrap_or_default(),
            "helo_name": s.helo_name.clone().unwrap_or_default(),
            "charset": s.charset,
            "plain_text_only": s.plain_text_only,
            "attachment_size_limit_bytes": s.attachment_size_limit_bytes,
            "allow_plaintext_auth": s.allow_plaintext_auth,
            "etag": etag(self.version),
            "create_time": rfc3339(self.create_time),
            "update_time": rfc3339(self.update_time),
        })
    }
}

impl Credential {
    /// The credential as the audit log records it. It has no secret to show.
    pub fn audit_json(&self) -> Value {
        json!({
            "name": self.id.to_string(),
            "id": self.id.0,
            "display_name": self.spec.display_name,
            "username": self.spec.username,
            "kind": kind_name(self.spec.kind),
            "allowed_destinations": self
                .spec
                .allowed_destinations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            "has_secret": self.has_secret,
            "secret_update_time": self.secret_update_time.map(rfc3339).unwrap_or_default(),
            "token_url": self.spec.oauth.token_url,
            "client_id": self.spec.oauth.client_id,
            "scope": self.spec.oauth.scope,
            "token_source": if self.spec.kind.gets_tokens() {
                self.spec.oauth.token_source.api_name()
            } else {
                ""
            },
            "has_client_secret": self.has_client_secret(),
            "has_refresh_token": self.has_refresh_token,
            "etag": etag(self.version),
            "create_time": rfc3339(self.create_time),
            "update_time": rfc3339(self.update_time),
        })
    }
}

impl Connector {
    /// The connector as the audit log records it.
    pub fn audit_json(&self) -> Value {
        json!({
            "display_name": self.spec.display_name,
            "description": self.spec.description,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::tests::spec;
    use crate::domain::oauth::OAuthSettings;
    use crate::domain::{AccountId, CredentialId, CredentialSpec};

    fn account() -> Account {
        Account {
            id: AccountId(7),
            spec: spec(),
            version: 3,
            create_time: 1_700_000_000_123_456,
            update_time: 1_700_000_001_000_000,
        }
    }

    #[test]
    fn account_json_matches_the_api_rendering() {
        let a = account();
        let expected = crate::render::account_json(&(&a).into());
        assert_eq!(a.audit_json(), expected);
        let mut with = account();
        with.spec.auth_mechanism = Some(AuthMechanism::XOAuth2);
        with.spec.credential = Some(CredentialId(2));
        with.spec.network_connector = Some(4);
        with.spec.reply_to_email = Some("r@example.com".into());
        with.spec.helo_name = Some("helo".into());
        with.spec.allow_plaintext_auth = true;
        assert_eq!(with.audit_json()["allow_plaintext_auth"], true);
        assert_eq!(
            with.audit_json(),
            crate::render::account_json(&(&with).into())
        );
    }

    #[test]
    fn credential_json_matches_the_api_rendering() {
        for (kind, time) in [
            (CredentialKind::Password, None),
            (CredentialKind::OAuth2Token, Some(5)),
            (CredentialKind::OAuth2RefreshToken, Some(6)),
        ] {
            let c = Credential {
                id: CredentialId(2),
                spec: CredentialSpec {
                    display_name: "d".into(),
                    username: "u".into(),
                    kind,
                    allowed_destinations: ["relay.example.com:587", "*.example.org"]
                        .map(|d| d.parse().unwrap())
                        .to_vec(),
                    oauth: if kind.gets_tokens() {
                        OAuthSettings {
                            token_url: "https://idp.example.com/token".into(),
                            client_id: "app".into(),
                            scope: "https://mail.google.com/".into(),
                            token_source: crate::domain::oauth::TokenSource::Connector,
                        }
                    } else {
                        OAuthSettings::default()
                    },
                },
                has_secret: time.is_some(),
                has_refresh_token: kind == CredentialKind::OAuth2RefreshToken,
                secret_update_time: time,
                version: 1,
                create_time: 0,
                update_time: -1,
            };
            assert_eq!(c.audit_json(), crate::render::credential_json(&(&c).into()));
        }
    }
}
