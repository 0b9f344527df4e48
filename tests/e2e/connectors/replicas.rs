//! Agents as every replica sees them: `GetConnector` on one replica shows the agents connected
//! to another, and where.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_shows_where_each_agent_is_connected() {
    let a = server_on(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(a.config.key_path(), dir.path().join("mailplane.key")).unwrap();
    let config = mailplane_server::ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..a.config.clone()
    };
    let b = TestServer::start_with(config, dir, None).await;
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
