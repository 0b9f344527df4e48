//! The delivery phases: `MAIL FROM`, `RCPT TO` and `DATA` with the message.

use super::Session;
use crate::Failure;
use crate::classify::FailureClass;
use crate::client::Link;
use crate::command::Command;
use crate::context::Ctx;
use crate::message::BuiltMessage;
use crate::recorder::Fail;
use crate::transcript::{Phase, PhaseRecord};
use crate::wire::{Reply, data_payload, parse_queue_id};

impl Session<'_> {
    /// `MAIL FROM` with the envelope sender.
    pub(crate) async fn mail_from(
        &mut self,
        mut link: Link,
        message: &BuiltMessage,
    ) -> Result<Link, Failure> {
        let mut run = self.rec.begin(Phase::MailFrom).await;
        let cmd = Command::MailFrom(message.envelope_from.clone());
        let timeout = self.ctx.cfg.timeouts.mail_from;
        let result = self
            .ctx
            .expect(&mut link, &mut run.rec, &cmd, timeout, &[250])
            .await;
        self.settle(run, result.map(|_| ()), link)
            .await
            .map(|((), l)| l)
    }

    /// `RCPT TO` for one recipient.
    pub(crate) async fn rcpt_to(&mut self, mut link: Link, rcpt: &str) -> Result<Link, Failure> {
        let mut run = self.rec.begin(Phase::RcptTo).await;
        let cmd = Command::RcptTo(rcpt.to_owned());
        let timeout = self.ctx.cfg.timeouts.rcpt_to;
        let result = self
            .ctx
            .expect(&mut link, &mut run.rec, &cmd, timeout, &[250, 251])
            .await;
        self.settle(run, result.map(|_| ()), link)
            .await
            .map(|((), l)| l)
    }

    /// `DATA`, the message, and the final reply with the queue id when there is one.
    pub(crate) async fn data(
        &mut self,
        mut link: Link,
        message: &BuiltMessage,
    ) -> Result<((Reply, Option<String>), Link), Failure> {
        let mut run = self.rec.begin(Phase::Data).await;
        let result = self.data_inner(&mut link, &mut run.rec, message).await;
        self.settle(run, result, link).await
    }

    async fn data_inner(
        &self,
        link: &mut Link,
        rec: &mut PhaseRecord,
        message: &BuiltMessage,
    ) -> Result<(Reply, Option<String>), Fail> {
        let ctx = &self.ctx;
        let t = ctx.cfg.timeouts;
        let go = ctx
            .expect(link, rec, &Command::Data, t.data_init, &[354])
            .await?;
        rec.detail.push(format!("DATA answered {go}"));
        let payload = data_payload(&message.bytes);
        rec.detail.push(format!(
            "sending {} bytes (message {})",
            payload.len(),
            message.message_id
        ));
        send_and_confirm(ctx, link, rec, &payload).await
    }
}

/// After `354`: sends `payload` (from [`data_payload`]) and reads the reply to the final
/// `.`, with the queue id when the server names one. A reply other than 250 fails with the
/// reply; a failure without a reply is a broken or silent connection.
pub(crate) async fn send_and_confirm(
    ctx: &Ctx<'_>,
    link: &mut Link,
    rec: &mut PhaseRecord,
    payload: &[u8],
) -> Result<(Reply, Option<String>), Fail> {
    let t = ctx.cfg.timeouts;
    let per_chunk = t.data_block;
    let total = ctx.limit(t.data_block.max(t.data_end));
    if let Err(e) = link.client.send_data(payload, per_chunk, total).await {
        return Err(ctx.wire_fail(Phase::Data, e, per_chunk, link.tls_active));
    }
    rec.commands.push(".".to_owned());
    let limit = ctx.limit(t.data_end);
    match link.client.read_reply(limit).await {
        Err(e) => {
            let mut fail = ctx.wire_fail(Phase::Data, e, t.data_end, link.tls_active);
            if fail.class == FailureClass::Timeout && !ctx.deadline_passed() {
                fail.hint = format!(
                    "the server did not confirm the message within {:?}; it may still deliver it (check its queue)",
                    t.data_end
                );
            }
            Err(fail)
        }
        Ok(reply) => {
            rec.reply = Some(reply.clone());
            if reply.code == 250 {
                let id = parse_queue_id(&reply);
                if let Some(id) = &id {
                    rec.detail.push(format!("queue id {id}"));
                }
                Ok((reply, id))
            } else {
                Err(ctx.reply_fail(Phase::Data, reply))
            }
        }
    }
}
