//! The session orchestrator: runs the phases in order, handing the connection from one
//! phase to the next. The phases live in its submodules: [`connect`] (DNS, connect,
//! greeting), [`handshake`] (STARTTLS and TLS), [`auth`] and [`delivery`].

mod auth;
mod connect;
pub(crate) mod delivery;
mod handshake;

use tokio::sync::mpsc::Sender;
use tokio::time::Instant;

use crate::capabilities::Capabilities;
use crate::client::Link;
use crate::command::Command;
use crate::context::Ctx;
use crate::policy::DestinationCheck;
use crate::recorder::{Closed, Fail, Recorder, Running};
use crate::setup::prepare;
use crate::transcript::{Phase, PhaseEvent, PhaseStatus};
use crate::{Failure, Outcome, Security, SessionConfig, SessionError, SessionReport};
use crate::{StopAfter, Success};

/// Runs one SMTP session as configured.
///
/// `policy` is asked about every resolved address before any packet is sent to it.
/// `events`, when given, receives a [`PhaseEvent::Started`] and a
/// [`PhaseEvent::Finished`] for every phase as it happens (a closed receiver is fine).
///
/// Returns `Err` only for a configuration that cannot run (nothing is sent then); every
/// network or server problem is an [`Outcome::Failure`] in the report.
pub async fn run_session(
    config: &SessionConfig,
    policy: &dyn DestinationCheck,
    events: Option<&Sender<PhaseEvent>>,
) -> Result<SessionReport, SessionError> {
    let prepared = prepare(config)?;
    let secrets = secrets_of(config);
    tracing::info!(
        target: "mailplane::smtp",
        host = %prepared.host,
        port = config.port,
        security = config.security.as_str(),
        stop_after = config.stop_after.as_str(),
        "starting SMTP session"
    );
    let deadline = Instant::now() + config.timeouts.overall;
    let mut session = Session {
        ctx: Ctx {
            cfg: config,
            host: prepared.host,
            helo: prepared.helo,
            deadline,
            extra_ca: prepared.extra_ca,
        },
        rec: Recorder::new(events, deadline, secrets),
        policy,
        capabilities: Capabilities::default(),
    };
    let message = prepared.message;
    let outcome = match session.run(message.as_ref()).await {
        Ok(success) => Outcome::Success(success),
        Err(failure) => {
            tracing::info!(target: "mailplane::smtp", class = failure.class.as_str(), phase = failure.phase.as_str(), "SMTP session failed: {}", failure.message);
            Outcome::Failure(failure)
        }
    };
    Ok(SessionReport {
        transcript: session.rec.into_transcript(),
        capabilities: session.capabilities.lines,
        message_id: message.map(|m| m.message_id),
        outcome,
    })
}

/// The strings to scrub from everything the server says: the configured secret.
pub(crate) fn secrets_of(config: &SessionConfig) -> Vec<crate::Secret> {
    match &config.auth {
        Some(creds) => vec![creds.secret.clone()],
        None => Vec::new(),
    }
}

/// One running session; its phases are methods in the modules named above.
pub(crate) struct Session<'a> {
    /// The fixed facts.
    pub(crate) ctx: Ctx<'a>,
    /// The transcript so far.
    pub(crate) rec: Recorder<'a>,
    /// Asked about every address before connecting.
    pub(crate) policy: &'a dyn DestinationCheck,
    /// What the last successful EHLO advertised.
    pub(crate) capabilities: Capabilities,
}

impl Session<'_> {
    async fn run(&mut self, message: Option<&crate::BuiltMessage>) -> Result<Success, Failure> {
        let link = self.open().await?;
        let stop = self.ctx.cfg.stop_after;
        if stop == StopAfter::Connect {
            return Ok(self.stop_early(link, StopAfter::Connect).await);
        }
        let link = self.starttls(link).await?;
        if stop == StopAfter::Tls {
            return Ok(self.stop_early(link, StopAfter::Tls).await);
        }
        let link = self.auth(link).await?;
        if stop == StopAfter::Auth {
            return Ok(self.stop_early(link, StopAfter::Auth).await);
        }
        let Some(message) = message else {
            return Ok(self.stop_early(link, StopAfter::Auth).await);
        };
        let mut link = self.mail_from(link, message).await?;
        for rcpt in &message.envelope_to {
            link = self.rcpt_to(link, rcpt).await?;
        }
        let ((final_reply, queue_id), link) = self.data(link, message).await?;
        self.quit(link).await;
        Ok(Success {
            stopped_after: StopAfter::Delivery,
            queue_id,
            final_reply: Some(final_reply),
        })
    }

    /// DNS, connect, implicit TLS when configured, the greeting and the first `EHLO`.
    async fn open(&mut self) -> Result<Link, Failure> {
        let addrs = self.resolve().await?;
        let mut link = self.connect(&addrs).await?;
        if self.ctx.cfg.security == Security::ImplicitTls {
            link = self.tls_handshake(link, true).await?;
        }
        let link = self.banner(link).await?;
        self.ehlo(link).await
    }

    /// Every phase up to and including AUTH, exactly as [`run_session`] runs them: an
    /// established, authenticated connection ready for a mail transaction (the pool's
    /// way in).
    pub(crate) async fn establish(&mut self) -> Result<Link, Failure> {
        let link = self.open().await?;
        let link = self.starttls(link).await?;
        self.auth(link).await
    }

    /// Skips the phases after `at`, says `QUIT`, and reports success.
    async fn stop_early(&mut self, link: Link, at: StopAfter) -> Success {
        let reason = format!("stop_after {}", at.as_str());
        let mut rest = Vec::new();
        if at == StopAfter::Connect {
            if self.ctx.cfg.security != Security::ImplicitTls {
                rest.extend([Phase::StartTls, Phase::TlsHandshake]);
            } else {
                rest.push(Phase::StartTls);
            }
        }
        if at <= StopAfter::Tls {
            rest.push(Phase::Auth);
        }
        rest.extend([Phase::MailFrom, Phase::RcptTo, Phase::Data]);
        for phase in rest {
            self.rec.skip(phase, &reason).await;
        }
        self.quit(link).await;
        Success {
            stopped_after: at,
            queue_id: None,
            final_reply: None,
        }
    }

    /// Closes a phase that has no connection (yet, or any more).
    pub(crate) async fn close<T>(
        &mut self,
        run: Running,
        result: Result<T, Fail>,
    ) -> Result<T, Failure> {
        self.rec.close(run, result).await.map_err(|c| c.failure)
    }

    /// Closes a phase that holds `link`: on success hands it on; on failure says `QUIT`
    /// when the connection allows it, else hangs up.
    pub(crate) async fn settle<T>(
        &mut self,
        run: Running,
        result: Result<T, Fail>,
        mut link: Link,
    ) -> Result<(T, Link), Failure> {
        match self.rec.close(run, result).await {
            Ok(v) => Ok((v, link)),
            Err(Closed { failure, can_quit }) => {
                if can_quit {
                    self.quit(link).await;
                } else {
                    link.client.shutdown().await;
                }
                Err(failure)
            }
        }
    }

    /// `EHLO`; a success replaces the capabilities.
    pub(crate) async fn ehlo(&mut self, mut link: Link) -> Result<Link, Failure> {
        let mut run = self.rec.begin(Phase::Ehlo).await;
        let cmd = Command::Ehlo(self.ctx.helo.clone());
        let timeout = self.ctx.cfg.timeouts.ehlo;
        let result = self
            .ctx
            .expect(&mut link, &mut run.rec, &cmd, timeout, &[250])
            .await;
        if let Ok(reply) = &result {
            self.capabilities = Capabilities::from_ehlo(reply);
            run.rec.detail.push(format!(
                "capabilities: {}",
                self.capabilities.lines.join(", ")
            ));
        }
        self.settle(run, result.map(|_| ()), link)
            .await
            .map(|((), l)| l)
    }

    /// Sends `QUIT` (recorded; its failure does not change the outcome) and closes.
    pub(crate) async fn quit(&mut self, mut link: Link) {
        let mut run = self.rec.begin(Phase::Quit).await;
        let status = if self.ctx.deadline_passed() {
            run.rec
                .detail
                .push("skipped: overall deadline reached".to_owned());
            PhaseStatus::Skipped
        } else {
            let timeout = self.ctx.cfg.timeouts.quit;
            match self
                .ctx
                .command(&mut link, &mut run.rec, &Command::Quit, timeout)
                .await
            {
                Ok(r) if r.code == 221 => PhaseStatus::Ok,
                Ok(r) => {
                    run.rec.detail.push(format!("unexpected reply {r}"));
                    PhaseStatus::Failed
                }
                Err(f) => {
                    run.rec.detail.push(f.message);
                    PhaseStatus::Failed
                }
            }
        };
        link.client.shutdown().await;
        self.rec.finish(run, status).await;
    }
}
