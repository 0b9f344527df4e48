//! Messages through agents: the delivery job and its report, the attempt naming the agent, a
//! lost agent before DATA (queued again, sent by another agent) and after DATA (DEFERRED
//! `CONNECTOR_LOST` until RetryMessage), and an offline connector.

use super::*;
use crate::messages::{message, messages, send, wait_for};

/// A relay's report that it accepted every recipient of `job`.
pub(super) fn accepted(job: &pb::SmtpJob) -> pb::JobOutcome {
    let delivery = job.delivery.as_ref().expect("a delivery job");
    pb::JobOutcome {
        succeeded: true,
        result: None,
        capabilities: Vec::new(),
        delivery: Some(pb::DeliveryResult {
            outcome: pb::delivery_result::Outcome::Sent.into(),
            recipients: delivery
                .recipients
                .iter()
                .map(|a| pb::DeliveryRecipient {
                    address: a.clone(),
                    status: pb::delivery_recipient::Status::Accepted.into(),
                    reply_code: 250,
                    reply_text: "2.1.5 Ok".into(),
                    enhanced_status_code: "2.1.5".into(),
                })
                .collect(),
            reply_code: 250,
            reply_text: "Ok: queued as AGENT7".into(),
            enhanced_status_code: "2.0.0".into(),
            queue_id: "AGENT7".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_through_an_agent_sqlite() {
    messages_go_through_an_agent(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_through_an_agent_postgres() {
    messages_go_through_an_agent(Backend::Postgres).await;
}

async fn messages_go_through_an_agent(backend: Backend) {
    let server = server_on(backend).await;
    let (dc, acct) = connector_account(&server, "Outbound").await;
    let first = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let second = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let mut c = messages(&server);
    let on = |to: &[&str]| pb::Message {
        account: acct.name.clone(),
        ..message(to)
    };

    // The agent gets a delivery job: the account's relay and secret, the envelope, the built
    // message, and its pool key; its report settles the message.
    let mut a = FakeAgent::connect(&server, &first).await.unwrap();
    let m = send(&mut c, on(&["ops@example.com", "dba@example.com"]), "")
        .await
        .unwrap();
    let job = a.next_job().await;
    assert_eq!(job.host, "relay.internal.example");
    assert_eq!(job.auth.as_ref().unwrap().secret, "job-secret-9c1f");
    assert!(
        job.message.is_none(),
        "a delivery job carries no test message"
    );
    let d = job.delivery.as_ref().unwrap();
    assert_eq!(d.pool_key, acct.name);
    assert_eq!(d.recipients, ["ops@example.com", "dba@example.com"]);
    let content = String::from_utf8_lossy(&d.content);
    assert!(content.contains("Subject: Disk almost full"), "{content}");
    assert!(content.contains(&m.message_id), "{content}");
    a.update(
        &job.job_id,
        pb::job_update::Update::Finished(accepted(&job)),
    )
    .await;
    let sent = wait_for(&mut c, &m.name, pb::MessageState::Sent).await;
    assert_eq!(sent.attempts.len(), 1);
    assert_eq!(
        sent.attempts[0].agent, first.name,
        "the attempt names the agent"
    );
    assert_eq!(sent.attempts[0].relay_queue_id, "AGENT7");
    assert!(
        sent.recipients
            .iter()
            .all(|r| r.state == i32::from(pb::RecipientState::Accepted)),
        "{sent:?}"
    );

    // Lost before DATA: the message goes back to the queue and another agent sends it.
    let m = send(&mut c, on(&["ops@example.com"]), "").await.unwrap();
    let job = a.next_job().await;
    let mut b = FakeAgent::connect(&server, &second).await.unwrap();
    a.hang_up().await;
    let again = b.next_job().await;
    assert_ne!(again.job_id, job.job_id, "a new attempt");
    assert_eq!(again.delivery, job.delivery, "the same message");
    b.update(
        &again.job_id,
        pb::job_update::Update::Finished(accepted(&again)),
    )
    .await;
    let sent = wait_for(&mut c, &m.name, pb::MessageState::Sent).await;
    assert_eq!(sent.attempts.len(), 2, "{sent:?}");
    assert_eq!(sent.attempts[0].agent, first.name);
    assert_eq!(
        sent.attempts[0].failure_class,
        i32::from(pb::FailureClass::ConnectorLost)
    );
    assert_eq!(sent.attempts[1].agent, second.name);

    // Lost after DATA started: DEFERRED with CONNECTOR_LOST, and nothing is re-sent until a
    // person calls RetryMessage.
    let m = send(&mut c, on(&["ops@example.com"]), "").await.unwrap();
    let job = b.next_job().await;
    b.update(
        &job.job_id,
        pb::job_update::Update::PhaseStarted(pb::Phase::Data.into()),
    )
    .await;
    b.hang_up().await;
    let deferred = wait_for(&mut c, &m.name, pb::MessageState::Deferred).await;
    assert_eq!(deferred.next_attempt_time, None, "not retried by itself");
    assert!(deferred.last_error.contains("RetryMessage"), "{deferred:?}");
    let last = deferred.attempts.last().unwrap();
    assert_eq!(
        last.failure_class,
        i32::from(pb::FailureClass::ConnectorLost)
    );
    assert_eq!(last.agent, second.name);
    let mut a = FakeAgent::connect(&server, &first).await.unwrap();
    c.retry_message(pb::RetryMessageRequest {
        name: m.name.clone(),
    })
    .await
    .unwrap();
    let job = a.next_job().await;
    a.update(
        &job.job_id,
        pb::job_update::Update::Finished(accepted(&job)),
    )
    .await;
    wait_for(&mut c, &m.name, pb::MessageState::Sent).await;

    // No agent within the wait: DEFERRED as CONNECTOR_OFFLINE, with a hint.
    a.hang_up().await;
    let m = send(&mut c, on(&["ops@example.com"]), "").await.unwrap();
    let deferred = wait_for(&mut c, &m.name, pb::MessageState::Deferred).await;
    let last = deferred.attempts.last().unwrap();
    assert_eq!(
        last.failure_class,
        i32::from(pb::FailureClass::ConnectorOffline)
    );
    assert!(last.hint.contains("mailplane-agent"), "{last:?}");
    assert!(deferred.next_attempt_time.is_some(), "retried by schedule");
    server.stop().await.unwrap();
}
