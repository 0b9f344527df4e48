//! The `AUTH` phase: PLAIN, LOGIN and XOAUTH2, with every encoding of the secret
//! redacted in the transcript and scrubbed from the server's replies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::Session;
use crate::classify::{
    FailureClass, destination_denied_hint, plaintext_auth_hint, unverified_auth_hint,
};
use crate::client::Link;
use crate::command::Command;
use crate::recorder::Fail;
use crate::transcript::{Phase, PhaseRecord};
use crate::wire::{Reply, escape_preview};
use crate::{AuthMechanism, Credentials, Failure, Secret, Security, destination_allowed};
use zeroize::Zeroizing;

impl Session<'_> {
    /// Authenticates with the configured credentials (skipped without them).
    pub(crate) async fn auth(&mut self, mut link: Link) -> Result<Link, Failure> {
        let Some(creds) = self.ctx.cfg.auth.clone() else {
            self.rec
                .skip(Phase::Auth, "no credentials configured")
                .await;
            return Ok(link);
        };
        let mut run = self.rec.begin(Phase::Auth).await;
        if let Some(fail) = self.refuse_auth(&link, &creds) {
            return self
                .settle(run, Err::<(), _>(fail), link)
                .await
                .map(|((), l)| l);
        }
        let mech = creds.mechanism.as_str();
        if !self.capabilities.offers_auth(mech) {
            let offered = &self.capabilities.auth;
            let hint = if offered.is_empty() {
                let clear = if link.tls_active {
                    ""
                } else {
                    " in clear; it may offer AUTH only after STARTTLS"
                };
                format!("server offers no AUTH{clear}")
            } else {
                format!(
                    "server does not offer AUTH {mech} (offers: {})",
                    offered.join(" ")
                )
            };
            let mut fail = Fail::new(
                FailureClass::AuthMechanismUnsupported,
                format!("AUTH {mech} is not offered"),
                hint,
            );
            fail.can_quit = true;
            return self
                .settle(run, Err::<(), _>(fail), link)
                .await
                .map(|((), l)| l);
        }
        let mut result = self.authenticate(&mut link, &mut run.rec, &creds).await;
        if let (Err(fail), Some(refresher)) = (&result, &creds.refresh)
            && fail.class == FailureClass::AuthRejected
            && creds.mechanism == AuthMechanism::XOAuth2
        {
            // The relay refused a token the server thought valid (revoked, or expired early):
            // one new token, one more try, on the same connection.
            run.rec
                .detail
                .push("the relay refused the access token; getting a new one".to_owned());
            result = match refresher.0.refresh().await {
                Ok(fresh) => {
                    run.rec.detail.push(format!("TOKEN: {}", fresh.summary));
                    let retry = Credentials {
                        secret: fresh.token,
                        refresh: None,
                        ..creds.clone()
                    };
                    self.authenticate(&mut link, &mut run.rec, &retry).await
                }
                Err(e) => {
                    let mut fail = Fail::new(e.class, e.message, e.hint);
                    fail.can_quit = true;
                    Err(fail)
                }
            };
        }
        self.settle(run, result.map(|_| ()), link)
            .await
            .map(|((), l)| l)
    }

    /// Why the credential must not go out on `link`, if it must not: the relay is not among
    /// the credential's allowed destinations; the connection is not encrypted (unless
    /// `allow_plaintext_auth`); or TLS is up but the certificate did not verify for the
    /// host, with `IMPLICIT_TLS` or `STARTTLS_REQUIRED` (always), or with
    /// `STARTTLS_OPPORTUNISTIC` unless `allow_plaintext_auth` (which already accepts a relay
    /// that proved nothing).
    fn refuse_auth(&self, link: &Link, creds: &Credentials) -> Option<Fail> {
        let cfg = self.ctx.cfg;
        let fail = |class, message: String, hint: String| {
            let mut fail = Fail::new(class, message, hint);
            fail.can_quit = true;
            Some(fail)
        };
        if !destination_allowed(&creds.allowed_destinations, &cfg.host, cfg.port) {
            return fail(
                FailureClass::CredentialDestinationDenied,
                format!(
                    "{}:{} is not among the credential's allowed destinations; AUTH was not sent",
                    self.ctx.host, cfg.port
                ),
                destination_denied_hint(&self.ctx.host, cfg.port),
            );
        }
        if !link.tls_active {
            if cfg.allow_plaintext_auth {
                return None;
            }
            // Never send a credential in clear unless the account explicitly allows it: with
            // STARTTLS_OPPORTUNISTIC, someone on the path may have removed STARTTLS.
            return fail(
                FailureClass::StartTlsUnavailable,
                "the connection is not encrypted; AUTH was not sent".to_owned(),
                plaintext_auth_hint(cfg.security).to_owned(),
            );
        }
        let unverified_ok = match cfg.security {
            Security::ImplicitTls | Security::StartTlsRequired => false,
            Security::StartTlsOpportunistic | Security::None => cfg.allow_plaintext_auth,
        };
        if !link.tls_verified && !unverified_ok {
            return fail(
                FailureClass::CredentialDestinationDenied,
                format!(
                    "the certificate of {} did not verify; AUTH was not sent",
                    self.ctx.host
                ),
                unverified_auth_hint(&self.ctx.host),
            );
        }
        None
    }

    /// The exchange for the configured mechanism.
    async fn authenticate(
        &self,
        link: &mut Link,
        rec: &mut PhaseRecord,
        creds: &Credentials,
    ) -> Result<Reply, Fail> {
        let ctx = &self.ctx;
        let timeout = ctx.cfg.timeouts.auth;
        let secret = creds.secret.expose();
        let user = creds.username.as_str();
        match creds.mechanism {
            AuthMechanism::Plain => {
                let payload =
                    Secret::new(B64.encode(Zeroizing::new(format!("\0{user}\0{secret}"))));
                link.client.add_redaction(payload.expose());
                let cmd = Command::Auth {
                    mechanism: AuthMechanism::Plain,
                    initial: Some(payload),
                };
                ctx.expect(link, rec, &cmd, timeout, &[235]).await
            }
            AuthMechanism::Login => {
                let pass = Secret::new(B64.encode(secret));
                link.client.add_redaction(pass.expose());
                let start = Command::Auth {
                    mechanism: AuthMechanism::Login,
                    initial: None,
                };
                ctx.expect(link, rec, &start, timeout, &[334]).await?;
                let user = Command::AuthResponse {
                    data: Secret::new(B64.encode(user)),
                    secret: false,
                };
                ctx.expect(link, rec, &user, timeout, &[334]).await?;
                let pass = Command::AuthResponse {
                    data: pass,
                    secret: true,
                };
                ctx.expect(link, rec, &pass, timeout, &[235]).await
            }
            AuthMechanism::XOAuth2 => {
                let payload = Secret::new(B64.encode(Zeroizing::new(format!(
                    "user={user}\x01auth=Bearer {secret}\x01\x01"
                ))));
                link.client.add_redaction(payload.expose());
                let cmd = Command::Auth {
                    mechanism: AuthMechanism::XOAuth2,
                    initial: Some(payload),
                };
                match ctx.command(link, rec, &cmd, timeout).await? {
                    r if r.code == 235 => Ok(r),
                    r if r.code == 334 => {
                        // The server sent a JSON error challenge; an empty line ends the exchange.
                        if let Some(json) = r.lines.first().and_then(|l| B64.decode(l.trim()).ok())
                        {
                            rec.detail
                                .push(format!("XOAUTH2 error: {}", xoauth2_error(&json)));
                        }
                        let end = Command::AuthResponse {
                            data: Secret::default(),
                            secret: false,
                        };
                        ctx.expect(link, rec, &end, timeout, &[235]).await
                    }
                    r => Err(ctx.reply_fail(Phase::Auth, r)),
                }
            }
        }
    }
}

/// What a transcript shows of a relay's XOAUTH2 error challenge: only the documented fields
/// (`status`, `schemes`, `scope`), each escaped and cut short. Anything else the relay put
/// there (it may echo the user, or worse) is left out.
fn xoauth2_error(json: &[u8]) -> String {
    const FIELDS: [&str; 3] = ["status", "schemes", "scope"];
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(json)
    else {
        return format!(
            "({} bytes that are not a JSON object, not shown)",
            json.len()
        );
    };
    let shown: Vec<String> = FIELDS
        .iter()
        .filter_map(|&key| {
            let value = match map.get(key)? {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(format!("{key}={}", escape_preview(value.as_bytes(), 100)))
        })
        .collect();
    let left_out = map.keys().filter(|k| !FIELDS.contains(&k.as_str())).count();
    let mut text = if shown.is_empty() {
        "no status".to_owned()
    } else {
        shown.join(" ")
    };
    if left_out > 0 {
        text.push_str(&format!(" ({left_out} other fields not shown)"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::xoauth2_error;

    #[test]
    fn xoauth2_errors_show_only_the_documented_fields() {
        let google = br#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#;
        assert_eq!(
            xoauth2_error(google),
            "status=400 schemes=Bearer scope=https://mail.google.com/"
        );
        let echo = br#"{"status":"401","token":"ya29.secret-token","user":"ops@example.com"}"#;
        let shown = xoauth2_error(echo);
        assert_eq!(shown, "status=401 (2 other fields not shown)");
        assert!(!shown.contains("ya29") && !shown.contains("ops@"));
        let junk = b"user=ops@example.com auth=Bearer ya29.secret";
        let shown = xoauth2_error(junk);
        assert!(
            !shown.contains("ya29") && shown.contains("not shown"),
            "{shown}"
        );
        let control = br#"{"status":"4\r\n00"}"#;
        assert_eq!(xoauth2_error(control), "status=4\\r\\n00");
    }
}
