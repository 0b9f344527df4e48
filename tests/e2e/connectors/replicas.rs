//! Agents and replicas: `GetConnector` on one replica shows the agents connected to another,
//! and where; a test created on one replica runs on an agent of another, with the same
//! failover, loss and offline rules as on one.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_shows_where_each_agent_is_connected() {
    let a = server_on(Backend::Postgres).await;
    let b = second_replica(&a).await;
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

/// A second replica of `a` (same database and key), with its own agent listener.
async fn second_replica(a: &TestServer) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(a.config.key_path(), dir.path().join("mailplane.key")).unwrap();
    let config = mailplane_server::ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..a.config.clone()
    };
    TestServer::start_with(config, dir, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_created_on_one_replica_runs_on_an_agent_of_another() {
    let a = server_on(Backend::Postgres).await;
    let b = second_replica(&a).await;
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
