//! Agents and replicas: `GetConnector` on one replica shows the agents connected to another,
//! and where; a test created on one replica runs on an agent of another, with the same
//! failover, loss and offline rules as on one.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_shows_where_each_agent_is_connected() {
    let a = server_on(Backend::Postgres).await;
    let b = a.start_replica().await;
    let connector = a.create_connector("Across").await;
    let who = enroll(&b, &token(&a, &connector.name).await).await.unwrap();
    let agent = FakeAgent::connect(&b, &who).await.unwrap();

    // Asked on A, which holds no stream: the agent is online, connected to B (B records the
    // stream before it answers the agent's call).
    let get = || async {
        a.connectors()
            .get_connector(pb::GetConnectorRequest {
                name: connector.name.clone(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    let seen = get().await;
    let replica = &seen.agents[0];
    assert_eq!(replica.name, who.name);
    assert_eq!(replica.status, i32::from(pb::AgentStatus::Online));
    assert_eq!(replica.connections.len(), 1, "{replica:?}");
    let conn = &replica.connections[0];
    assert_eq!(conn.replica_address, b.addr.to_string());
    assert!(conn.replica_serving && conn.connect_time.is_some());

    // The stream ends (B forgets it before it closes its side): no connection is left.
    agent.hang_up().await;
    let c = get().await;
    assert!(c.agents[0].connections.is_empty(), "{c:?}");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_created_on_one_replica_runs_on_an_agent_of_another() {
    let a = server_on(Backend::Postgres).await;
    let b = a.start_replica().await;
    let (dc, acct) = connector_account(&a, "Handoff").await;
    let first = enroll(&b, &token(&a, &dc.name).await).await.unwrap();
    let second = enroll(&b, &token(&a, &dc.name).await).await.unwrap();

    // The agent streams to B only; the test is created on A and watched there.
    let mut agent = FakeAgent::connect(&b, &first).await.unwrap();
    let name = start_test(&a, &acct.name).await;
    let job = agent.next_job().await;
    assert_eq!(job.auth.as_ref().unwrap().secret, "job-secret-9c1f");
    agent.finish_ok(&job.job_id).await;
    let done = finished(&a, &name).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        done.result
    );
    assert_eq!(done.executed_by, first.name, "the agent on B is named");
    assert_eq!(done.result.unwrap().queue_id, "ABC123");
    assert_eq!(done.transcript.len(), 1, "the agent's phase came through");

    // The agent on B goes away before DATA: the job goes to another agent (also on B here).
    let name = start_test(&a, &acct.name).await;
    let job = agent.next_job().await;
    let mut other = FakeAgent::connect(&b, &second).await.unwrap();
    agent.hang_up().await;
    let again = other.next_job().await;
    assert_eq!(again.job_id, job.job_id);
    other.finish_ok(&again.job_id).await;
    let done = finished(&a, &name).await;
    assert_eq!(done.state, i32::from(pb::TestState::Succeeded));
    assert_eq!(done.executed_by, second.name);
    assert!(done.result.unwrap().message.contains("retried after"));

    // After DATA started, losing the agent ends the test CONNECTOR_LOST; nothing is re-sent.
    let name = start_test(&a, &acct.name).await;
    let job = other.next_job().await;
    other
        .update(
            &job.job_id,
            pb::job_update::Update::PhaseStarted(pb::Phase::Data.into()),
        )
        .await;
    other.hang_up().await;
    let done = finished(&a, &name).await;
    assert_eq!(class(&done), pb::FailureClass::ConnectorLost, "{done:?}");

    // No agent on any replica: CONNECTOR_OFFLINE after the wait.
    let name = start_test(&a, &acct.name).await;
    let done = finished(&a, &name).await;
    assert_eq!(class(&done), pb::FailureClass::ConnectorOffline, "{done:?}");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_to_one_replica_is_delivered_by_the_replica_with_the_agent() {
    use crate::messages::{message, messages, send, wait_for};
    use sqlx::Connection as _;
    let a = server_on(Backend::Postgres).await;
    let b = a.start_replica().await;
    let (dc, acct) = connector_account(&a, "Outbound across").await;
    let who = enroll(&b, &token(&a, &dc.name).await).await.unwrap();
    let mut agent = FakeAgent::connect(&b, &who).await.unwrap();
    // Sent to A, which has no stream to the agent: only B claims it.
    let mut c = messages(&a);
    let m = send(
        &mut c,
        pb::Message {
            account: acct.name.clone(),
            ..message(&["ops@example.com"])
        },
        "",
    )
    .await
    .unwrap();
    let job = agent.next_job().await;
    assert!(job.delivery.is_some(), "a delivery job");
    // DATA started is on record, for the other replicas, should B die now.
    agent
        .update(
            &job.job_id,
            pb::job_update::Update::PhaseStarted(pb::Phase::Data.into()),
        )
        .await;
    let url = a.pg.as_ref().unwrap().url.clone();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let id: i64 = m.name.trim_start_matches("messages/").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let marked: Option<String> =
            sqlx::query_scalar("SELECT data_agent FROM messages WHERE id = $1")
                .bind(id)
                .fetch_one(&mut db)
                .await
                .unwrap();
        if marked.as_deref() == Some(who.name.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "DATA started was not recorded: {marked:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent
        .update(
            &job.job_id,
            pb::job_update::Update::Finished(super::delivery::accepted(&job)),
        )
        .await;
    let sent = wait_for(&mut c, &m.name, pb::MessageState::Sent).await;
    assert_eq!(
        sent.attempts.len(),
        1,
        "no replica tried it without the agent: {sent:?}"
    );
    assert_eq!(sent.attempts[0].agent, who.name);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_a_replica_that_stopped_beating_are_taken_over() {
    use crate::messages::{held_account, message, messages, send};
    use sqlx::Connection as _;
    let a = TestServer::start(Backend::Postgres).await;
    let acct = held_account(&a, "Orphan").await;
    let mut c = messages(&a);
    let m = send(
        &mut c,
        pb::Message {
            account: acct.name.clone(),
            ..message(&["ops@example.com"])
        },
        "",
    )
    .await
    .unwrap();
    // What a replica that died mid-delivery leaves: its registration, silent for 20 s, and the
    // message SENDING under its name.
    let url = a.pg.as_ref().unwrap().url.clone();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let now = mailplane_server::domain::now_micros();
    sqlx::query(
        "INSERT INTO replicas (id, address, agent_address, hostname, version, start_time, \
         heartbeat_time) VALUES ('dead', '127.0.0.1:1', '', 'gone', '0', $1, $2)",
    )
    .bind(now - 60_000_000)
    .bind(now - 20_000_000)
    .execute(&mut db)
    .await
    .unwrap();
    let id: i64 = m.name.trim_start_matches("messages/").parse().unwrap();
    sqlx::query("UPDATE messages SET state = 'sending', claimed_by = 'dead' WHERE id = $1")
        .bind(id)
        .execute(&mut db)
        .await
        .unwrap();
    // And one whose agent had started DATA: the agent may still hand it to the relay.
    let after_data = send(
        &mut c,
        pb::Message {
            account: acct.name.clone(),
            ..message(&["ops@example.com"])
        },
        "",
    )
    .await
    .unwrap();
    let id: i64 = after_data
        .name
        .trim_start_matches("messages/")
        .parse()
        .unwrap();
    sqlx::query(
        "UPDATE messages SET state = 'sending', claimed_by = 'dead', \
         data_agent = 'connectors/9/agents/9' WHERE id = $1",
    )
    .bind(id)
    .execute(&mut db)
    .await
    .unwrap();
    // The live replica queues it again within its orphan check (5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let taken = loop {
        let got = c
            .get_message(pb::GetMessageRequest {
                name: m.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if got.state == i32::from(pb::MessageState::Queued) && got.last_error.contains("stopped") {
            break got;
        }
        assert!(Instant::now() < deadline, "not taken over: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(taken.next_attempt_time.is_some());
    let deferred = c
        .get_message(pb::GetMessageRequest {
            name: after_data.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        deferred.state,
        i32::from(pb::MessageState::Deferred),
        "{deferred:?}"
    );
    assert!(
        deferred.next_attempt_time.is_none(),
        "it waits for RetryMessage"
    );
    assert!(deferred.last_error.contains("RetryMessage"), "{deferred:?}");
    let attempt = deferred
        .attempts
        .last()
        .expect("the lost attempt is recorded");
    assert_eq!(
        attempt.failure_class,
        i32::from(pb::FailureClass::ConnectorLost)
    );
    assert_eq!(attempt.agent, "connectors/9/agents/9");
    db.close().await.unwrap();
    a.stop().await.unwrap();
}
