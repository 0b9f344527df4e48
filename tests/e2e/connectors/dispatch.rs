//! Jobs through agents: dispatch, the least-loaded replica, failover before DATA and no
//! re-send after it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_to_an_agent_and_fail_over_before_data_only() {
    jobs_go_to_an_agent_and_fail_over_before_data_only_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_to_an_agent_and_fail_over_before_data_only_postgres() {
    jobs_go_to_an_agent_and_fail_over_before_data_only_on(Backend::Postgres).await;
}

async fn jobs_go_to_an_agent_and_fail_over_before_data_only_on(backend: Backend) {
    let server = server_on(backend).await;
    let (dc, acct) = connector_account(&server, "Dispatch").await;
    let first = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let second = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();

    // One agent: it gets the job, with the account's settings and secret, and reports back.
    let mut a = FakeAgent::connect(&server, &first).await.unwrap();
    let name = start_test(&server, &acct.name).await;
    let job = a.next_job().await;
    assert_eq!(job.host, "relay.internal.example");
    assert_eq!(
        job.auth.as_ref().unwrap().secret,
        "job-secret-9c1f",
        "the secret travels inside the job"
    );
    assert_eq!(
        job.message.as_ref().unwrap().recipients,
        vec!["ops@example.com".to_owned()]
    );
    a.finish_ok(&job.job_id).await;
    let done = finished(&server, &name).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        done.result
    );
    assert_eq!(
        done.executed_by, first.name,
        "the transcript says which agent ran it"
    );
    assert_eq!(done.result.unwrap().queue_id, "ABC123");
    assert_eq!(done.transcript.len(), 1);

    // Two agents, the first drops before DATA: the job completes on the second.
    let mut b = FakeAgent::connect(&server, &second).await.unwrap();
    let name = start_test(&server, &acct.name).await;
    let (job, taker) = tokio::select! {
        j = a.next_job() => (j, "a"),
        j = b.next_job() => (j, "b"),
    };
    let (mut survivor, survivor_name) = if taker == "a" {
        drop(a);
        (b, second.name.clone())
    } else {
        drop(b);
        (a, first.name.clone())
    };
    let retried = survivor.next_job().await;
    assert_eq!(retried.job_id, job.job_id);
    survivor.finish_ok(&retried.job_id).await;
    let done = finished(&server, &name).await;
    assert_eq!(
        done.state,
        i32::from(pb::TestState::Succeeded),
        "{:?}",
        done.result
    );
    assert_eq!(done.executed_by, survivor_name);
    assert!(
        done.result.unwrap().message.contains("retried after"),
        "the failover is recorded"
    );

    // After DATA started, losing the agent fails the test and nothing is re-sent.
    let name = start_test(&server, &acct.name).await;
    let job = survivor.next_job().await;
    survivor
        .update(
            &job.job_id,
            pb::job_update::Update::PhaseStarted(pb::Phase::Data.into()),
        )
        .await;
    // Wait until the server has seen DATA start before dropping the stream.
    let mut watch = server
        .tests()
        .watch_test(pb::WatchTestRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    loop {
        let msg = watch.message().await.unwrap().unwrap();
        if matches!(msg.event, Some(pb::watch_test_response::Event::PhaseStarted(p)) if p == i32::from(pb::Phase::Data))
        {
            break;
        }
    }
    drop(survivor);
    let done = finished(&server, &name).await;
    assert_eq!(
        class(&done),
        pb::FailureClass::ConnectorLost,
        "{:?}",
        done.result
    );

    // No agent at all: the test waits (2 s here) and fails CONNECTOR_OFFLINE.
    let name = start_test(&server, &acct.name).await;
    let done = finished(&server, &name).await;
    assert_eq!(
        class(&done),
        pb::FailureClass::ConnectorOffline,
        "{:?}",
        done.result
    );
    assert!(!done.result.unwrap().hint.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_loaded_replica_gets_the_job() {
    let server = server().await;
    let (dc, acct) = connector_account(&server, "Balance").await;
    let mut a = FakeAgent::connect(
        &server,
        &enroll(&server, &token(&server, &dc.name).await)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let mut b = FakeAgent::connect(
        &server,
        &enroll(&server, &token(&server, &dc.name).await)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let t1 = start_test(&server, &acct.name).await;
    let first = tokio::select! { j = a.next_job() => ("a", j), j = b.next_job() => ("b", j) };
    let t2 = start_test(&server, &acct.name).await;
    // The busy one must not get the second job.
    let second = if first.0 == "a" {
        ("b", b.next_job().await)
    } else {
        ("a", a.next_job().await)
    };
    assert_ne!(first.0, second.0, "each replica runs one job");
    for (who, job) in [first, second] {
        if who == "a" {
            a.finish_ok(&job.job_id).await
        } else {
            b.finish_ok(&job.job_id).await
        }
    }
    for name in [t1, t2] {
        assert_eq!(
            finished(&server, &name).await.state,
            i32::from(pb::TestState::Succeeded)
        );
    }
    server.stop().await.unwrap();
}
