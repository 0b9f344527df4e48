//! Replicas on one database: each registers itself, lists the others, and leaves when it
//! stops; on SQLite there is the one.

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, with_token};
use pb::replica_service_client::ReplicaServiceClient;

async fn replicas(server: &TestServer, token: &str) -> Vec<pb::Replica> {
    ReplicaServiceClient::new(with_token(&server.raw, Some(token)))
        .list_replicas(pb::ListReplicasRequest {})
        .await
        .unwrap()
        .into_inner()
        .replicas
}

fn serving(r: &pb::Replica) -> bool {
    r.status == i32::from(pb::ReplicaStatus::Serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_database_list_each_other_and_leave_when_they_stop() {
    let a = TestServer::start(Backend::Postgres).await;
    // A second replica: the same database and key file, its own data dir and port.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(a.config.key_path(), dir.path().join("mailplane.key")).unwrap();
    let config = mailplane_server::ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..a.config.clone()
    };
    let b = TestServer::start_with(config, dir, None).await;

    let seen = replicas(&b, &a.admin_token).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(serving), "{seen:?}");
    let current: Vec<_> = seen.iter().filter(|r| r.current).collect();
    assert_eq!(current.len(), 1, "{seen:?}");
    assert_eq!(current[0].address, b.addr.to_string());
    assert!(seen.iter().any(|r| r.address == a.addr.to_string()));
    assert!(seen.iter().all(|r| r.name.starts_with("replicas/")
        && r.version == env!("CARGO_PKG_VERSION")
        && r.start_time.is_some()));

    // A replica that stops cleanly leaves the list.
    b.stop().await.unwrap();
    let seen = replicas(&a, &a.admin_token).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].current && seen[0].address == a.addr.to_string());
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_has_one_replica_and_forgets_a_previous_run() {
    let server = TestServer::start(Backend::Sqlite).await;
    let token = server.admin_token.clone();
    let config = server.config.clone();
    let (stopped, dir) = server.stop_keeping_data().await;
    stopped.unwrap();
    // What a run killed with -9 leaves: its registration.
    {
        use mailplane_server::domain::replica::{Replica, ReplicaId};
        let db = mailplane_server::store::DatabaseUrl::Sqlite(dir.path().join("mailplane.db"));
        let store = mailplane_server::store::open(&db).await.unwrap();
        store
            .register_replica(&Replica {
                id: ReplicaId::new(),
                address: "127.0.0.1:1".into(),
                agent_address: String::new(),
                hostname: "gone".into(),
                version: "0".into(),
                start_time: 1,
                heartbeat_time: 1,
            })
            .await
            .unwrap();
    }
    let server = TestServer::start_with(config, dir, None).await;
    let seen = replicas(&server, &token).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].current && serving(&seen[0]));
    server.stop().await.unwrap();
}
