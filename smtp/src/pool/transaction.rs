//! One mail transaction on an established connection: `RSET` when the connection was used
//! before, then `MAIL FROM`, the `RCPT TO`s and `DATA` — pipelined (RFC 2920) when the
//! relay offers `PIPELINING`, one at a time otherwise — and the message. `RSET` always
//! goes alone and is answered before the transaction is written: that is how a connection
//! the relay closed while it sat in the pool is found dead before anything is sent.

use std::collections::VecDeque;

use super::conn::Pooled;
use crate::client::Link;
use crate::command::Command;
use crate::context::Ctx;
use crate::delivery::{Envelope, MessageOutcome, RecipientResult, RecipientStatus, Severity};
use crate::recorder::Fail;
use crate::session::delivery::send_and_confirm;
use crate::transcript::{Phase, PhaseRecord, PhaseStatus};
use crate::wire::{Reply, WireError};

/// What a transaction produced, and what it means for the connection.
pub(crate) struct Tx {
    /// One entry per recipient.
    pub(crate) recipients: Vec<RecipientResult>,
    /// The message.
    pub(crate) outcome: MessageOutcome,
    /// Whether the connection can carry another message.
    pub(crate) reusable: bool,
    /// The connection was found dead (closed, reset, `421`) before the relay accepted
    /// anything: the same message can go over a new connection without risk.
    pub(crate) dead_before_accept: bool,
}

/// Most commands written in one pipelined batch. Every reply of a batch is read before
/// the next batch is written, so neither side can fill its socket buffer with data the
/// other is not reading (RFC 2920 §3.2), however many recipients there are.
const PIPELINE_BATCH: usize = 100;

/// The commands of one transaction and how they go out.
struct Exchange<'l, 'c> {
    ctx: &'l Ctx<'c>,
    link: &'l mut Link,
    /// With pipelining: the commands not yet written, in order. Each step writes the next
    /// batch when every reply of the previous one has been read, then reads its reply.
    unsent: Option<VecDeque<Command>>,
    /// Replies still due for commands already written.
    in_flight: usize,
}

impl Exchange<'_, '_> {
    /// The reply to `command` (sent now, or with its batch when pipelining), within the
    /// phase's timeout.
    async fn reply(&mut self, command: &Command, phase: Phase) -> Result<Reply, Fail> {
        let t = self.ctx.cfg.timeouts;
        let configured = match phase {
            Phase::RcptTo => t.rcpt_to,
            Phase::Data => t.data_init,
            _ => t.mail_from,
        };
        let limit = self.ctx.limit(configured);
        let result = match &mut self.unsent {
            Some(unsent) => {
                if self.in_flight == 0 {
                    let n = unsent.len().min(PIPELINE_BATCH);
                    let batch: Vec<Command> = unsent.drain(..n).collect();
                    self.link
                        .client
                        .send_pipelined(&batch, limit)
                        .await
                        .map_err(|e| self.wire_fail(phase, e, configured))?;
                    self.in_flight = n;
                }
                self.in_flight = self.in_flight.saturating_sub(1);
                self.link.client.read_reply(limit).await
            }
            None => self.link.client.command(command, limit).await,
        };
        result.map_err(|e| self.wire_fail(phase, e, configured))
    }

    fn wire_fail(&self, phase: Phase, e: WireError, configured: std::time::Duration) -> Fail {
        self.ctx
            .wire_fail(phase, e, configured, self.link.tls_active)
    }
}

/// Runs one transaction on `conn` for `envelope` with `payload` (already from
/// [`data_payload`](crate::data_payload)): `RSET` first when the connection carried a
/// message before, pipelined when the relay offers it. `on_data` is called when the relay
/// answers `354`, before the payload goes out.
pub(crate) async fn run(
    ctx: &Ctx<'_>,
    conn: &mut Pooled,
    envelope: &Envelope,
    payload: &[u8],
    on_data: Option<&(dyn Fn() + Send + Sync)>,
) -> Tx {
    let (rset, pipelining) = (conn.messages > 0, conn.capabilities.pipelining);
    conn.messages += 1;
    let (link, mail_from, rcpt_to) = (&mut conn.link, &envelope.mail_from, &envelope.rcpt_to);
    let mut recipients: Vec<RecipientResult> = rcpt_to
        .iter()
        .map(|a| RecipientResult {
            address: a.clone(),
            status: RecipientStatus::NotTried,
        })
        .collect();
    let dead = |fail: Fail, phase: Phase, recipients: Vec<RecipientResult>| Tx {
        recipients,
        outcome: MessageOutcome::failed(fail.into_failure(phase)),
        reusable: false,
        dead_before_accept: true,
    };
    if rset {
        let limit = ctx.limit(ctx.cfg.timeouts.mail_from);
        match link.client.command(&Command::Rset, limit).await {
            Ok(r) if r.code == 250 => {}
            Ok(r) => {
                return dead(
                    ctx.reply_fail(Phase::MailFrom, r),
                    Phase::MailFrom,
                    recipients,
                );
            }
            Err(e) => {
                let fail = ctx.wire_fail(Phase::MailFrom, e, limit, link.tls_active);
                return dead(fail, Phase::MailFrom, recipients);
            }
        }
    }
    let mail = Command::MailFrom(mail_from.clone());
    let rcpts: Vec<Command> = rcpt_to.iter().map(|a| Command::RcptTo(a.clone())).collect();
    let unsent = pipelining.then(|| {
        let mut all = VecDeque::from([mail.clone()]);
        all.extend(rcpts.iter().cloned());
        all.push_back(Command::Data);
        all
    });
    let mut ex = Exchange {
        ctx,
        link,
        unsent,
        in_flight: 0,
    };
    let broken = |fail: Fail, phase: Phase, recipients: Vec<RecipientResult>| Tx {
        recipients,
        outcome: MessageOutcome::failed(fail.into_failure(phase)),
        reusable: false,
        dead_before_accept: false,
    };

    // MAIL FROM: a dead connection here has accepted nothing.
    let mail_reply = match ex.reply(&mail, Phase::MailFrom).await {
        Ok(r) if r.code == 421 => {
            return dead(
                ctx.reply_fail(Phase::MailFrom, r),
                Phase::MailFrom,
                recipients,
            );
        }
        Ok(r) => r,
        Err(fail) => return dead(fail, Phase::MailFrom, recipients),
    };
    let mut mail_refused =
        (mail_reply.code != 250).then(|| ctx.reply_fail(Phase::MailFrom, mail_reply));
    if !pipelining && let Some(fail) = mail_refused.take() {
        return refused(fail, Phase::MailFrom, recipients);
    }

    // RCPT TO: with pipelining every reply is read, even after a refused MAIL FROM.
    for (rcpt, result) in rcpts.iter().zip(recipients.iter_mut()) {
        let reply = match ex.reply(rcpt, Phase::RcptTo).await {
            Ok(r) => r,
            Err(fail) => return broken(fail, Phase::RcptTo, recipients),
        };
        if mail_refused.is_some() {
            continue;
        }
        let closing = (reply.code == 421).then(|| reply.clone());
        result.status = if matches!(reply.code, 250 | 251) {
            RecipientStatus::Accepted { reply }
        } else {
            RecipientStatus::Rejected {
                severity: Severity::of(&reply),
                reply,
            }
        };
        if let Some(reply) = closing {
            // The relay is closing the connection: the rest will not be answered.
            return broken(
                ctx.reply_fail(Phase::RcptTo, reply),
                Phase::RcptTo,
                recipients,
            );
        }
    }
    let accepted = recipients.iter().any(RecipientResult::is_accepted);
    let refusal = match (mail_refused, accepted) {
        (Some(fail), _) => Some((fail, Phase::MailFrom)),
        (None, false) => Some((recipients_fail(ctx, &recipients), Phase::RcptTo)),
        (None, true) => None,
    };
    let refusal = match refusal {
        // Nothing to send DATA for.
        Some((fail, phase)) if !pipelining => return refused(fail, phase, recipients),
        other => other,
    };

    // DATA.
    let data_reply = match ex.reply(&Command::Data, Phase::Data).await {
        Ok(r) => r,
        Err(fail) => return broken(fail, Phase::Data, recipients),
    };
    let link = ex.link;
    if let Some((fail, phase)) = refusal {
        // Pipelined DATA after a refused transaction: a relay that still says 354 gets an
        // empty message, which it rejects for want of recipients (RFC 2920 §3.1).
        let mut reusable = data_reply.code != 421;
        if data_reply.code == 354 {
            let limit = ctx.limit(ctx.cfg.timeouts.data_end);
            let sent = link.client.send_data(b".\r\n", limit, limit).await;
            reusable = sent.is_ok() && link.client.read_reply(limit).await.is_ok();
        }
        return Tx {
            recipients,
            outcome: MessageOutcome::failed(fail.into_failure(phase)),
            reusable,
            dead_before_accept: false,
        };
    }
    if data_reply.code != 354 {
        let reusable = data_reply.code != 421;
        return Tx {
            recipients,
            outcome: MessageOutcome::failed(
                ctx.reply_fail(Phase::Data, data_reply)
                    .into_failure(Phase::Data),
            ),
            reusable,
            dead_before_accept: false,
        };
    }

    // The message: from here on a broken connection leaves the relay's state unknown.
    if let Some(on_data) = on_data {
        on_data();
    }
    let mut scratch = PhaseRecord::new(Phase::Data, PhaseStatus::Ok);
    match send_and_confirm(ctx, link, &mut scratch, payload).await {
        Ok((reply, queue_id)) => Tx {
            recipients,
            outcome: MessageOutcome::Sent { queue_id, reply },
            reusable: true,
            dead_before_accept: false,
        },
        Err(fail) if fail.reply.is_none() => Tx {
            recipients,
            outcome: MessageOutcome::AmbiguousAfterData {
                failure: fail.into_failure(Phase::Data),
            },
            reusable: false,
            dead_before_accept: false,
        },
        Err(fail) => {
            let reusable = fail.reply.as_ref().is_some_and(|r| r.code != 421);
            Tx {
                recipients,
                outcome: MessageOutcome::failed(fail.into_failure(Phase::Data)),
                reusable,
                dead_before_accept: false,
            }
        }
    }
}

/// The transaction was refused by a reply; the connection stays usable.
fn refused(fail: Fail, phase: Phase, recipients: Vec<RecipientResult>) -> Tx {
    Tx {
        recipients,
        outcome: MessageOutcome::failed(fail.into_failure(phase)),
        reusable: true,
        dead_before_accept: false,
    }
}

/// The failure when no recipient was accepted: the first transient refusal if any (a
/// retry may work for it), else the first permanent one.
fn recipients_fail(ctx: &Ctx<'_>, recipients: &[RecipientResult]) -> Fail {
    let refused = |want: Severity| {
        recipients.iter().find_map(|r| match &r.status {
            RecipientStatus::Rejected { severity, reply } if *severity == want => {
                Some(reply.clone())
            }
            RecipientStatus::Rejected { .. }
            | RecipientStatus::Accepted { .. }
            | RecipientStatus::NotTried => None,
        })
    };
    match refused(Severity::Transient).or_else(|| refused(Severity::Permanent)) {
        Some(reply) => ctx.reply_fail(Phase::RcptTo, reply),
        None => Fail::new(
            crate::FailureClass::RecipientRejected,
            "no recipient was accepted",
            "the relay accepted none of the recipients",
        ),
    }
}
