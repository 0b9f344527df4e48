//! Replicas on one database: each registers itself, lists the others, and leaves when it
//! stops; on SQLite there is the one.

use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, create_account, with_token};
use pb::replica_service_client::ReplicaServiceClient;
use pb::watch_test_response::Event;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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
    let b = a.start_replica().await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_running_on_one_replica_is_watched_live_from_another() {
    // A relay that holds the session after EHLO until the test lets it go.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = relay.local_addr().unwrap().port();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(async move {
        let (tcp, _) = relay.accept().await.unwrap();
        let mut io = BufReader::new(tcp);
        let mut line = String::new();
        io.get_mut().write_all(b"220 relay.test\r\n").await.unwrap();
        io.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("EHLO"), "{line}");
        io.get_mut().write_all(b"250 relay.test\r\n").await.unwrap();
        released.await.unwrap();
        line.clear();
        io.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("QUIT"), "{line}");
        io.get_mut().write_all(b"221 bye\r\n").await.unwrap();
    });
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.start_replica().await;
    let acct = create_account(
        &mut a.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: port.into(),
            security: pb::SecurityMode::None.into(),
            ..account("Watched")
        },
    )
    .await;
    let name = a
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: acct.name.clone(),
            test: Some(pb::SmtpTest {
                to: "ops@example.com".into(),
                stop_after: pb::StopAfter::Connect.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    // Watched from B, where it does not run: the banner and EHLO arrive while the relay still
    // holds the session, so they came live, not from the final record.
    let mut watch = pb::smtp_test_service_client::SmtpTestServiceClient::new(with_token(
        &b.raw,
        Some(&a.admin_token),
    ))
    .watch_test(pb::WatchTestRequest { name: name.clone() })
    .await
    .unwrap()
    .into_inner();
    let mut phases = Vec::new();
    while !phases.contains(&pb::Phase::Ehlo) {
        let msg = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("the phases arrive live")
            .unwrap()
            .expect("the stream is open");
        match msg.event {
            Some(Event::PhaseFinished(r)) => phases.push(r.phase()),
            Some(Event::Finished(t)) => panic!("finished before the relay let go: {t:?}"),
            _ => {}
        }
    }
    assert_eq!(
        phases,
        [
            pb::Phase::DnsResolve,
            pb::Phase::TcpConnect,
            pb::Phase::Banner,
            pb::Phase::Ehlo
        ]
    );
    release.send(()).unwrap();
    let done = loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("the end arrives")
            .unwrap()
            .expect("the stream is open");
        if let Some(Event::Finished(t)) = msg.event {
            break t;
        }
    };
    assert_eq!(done.state, i32::from(pb::TestState::Succeeded), "{done:?}");
    peer.await.unwrap();
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
