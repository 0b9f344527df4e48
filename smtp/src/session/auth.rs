//! The `AUTH` phase: PLAIN, LOGIN and XOAUTH2, with every encoding of the secret
//! redacted in the transcript and scrubbed from the server's replies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::Session;
use crate::classify::{FailureClass, plaintext_auth_hint};
use crate::client::Link;
use crate::command::Command;
use crate::recorder::Fail;
use crate::transcript::{Phase, PhaseRecord};
use crate::wire::{Reply, escape_preview};
use crate::{AuthMechanism, Credentials, Failure, Secret};
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
        if !link.tls_active && !self.ctx.cfg.allow_plaintext_auth {
            // Never send a credential in clear unless the account explicitly allows it: with
            // STARTTLS_OPPORTUNISTIC, someone on the path may have removed STARTTLS.
            let mut fail = Fail::new(
                FailureClass::StartTlsUnavailable,
                "the connection is not encrypted; AUTH was not sent",
                plaintext_auth_hint(self.ctx.cfg.security),
            );
            fail.can_quit = true;
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
        let result = self.authenticate(&mut link, &mut run.rec, &creds).await;
        self.settle(run, result.map(|_| ()), link)
            .await
            .map(|((), l)| l)
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
                                .push(format!("XOAUTH2 error: {}", escape_preview(&json, 200)));
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
