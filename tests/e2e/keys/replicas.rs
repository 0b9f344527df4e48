//! A replica whose key file lacks the new primary key (PostgreSQL) fails the calls that need
//! it with `FailedPrecondition` naming the key and its key file, serves the rest, and takes the
//! key by itself once its key file has it; with `keys add` first, no call fails at all. A key
//! file without the primary key is a start-up error that names the key.

use super::{create_credential, open};
use mailplane_proto::v1 as pb;
use mailplane_server::StartupError;
use mailplane_server::crypto::{KeyError, Keyring};
use mailplane_server::domain::keys::Plan;
use mailplane_server::keys::rotate::RotateOptions;
use mailplane_tests::{Backend, TestServer};
use std::time::{Duration, Instant};
use tonic::Code;

async fn try_create(server: &TestServer) -> Result<pb::Credential, tonic::Status> {
    server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "after".into(),
                username: "u".into(),
                secret: "after-rotation".into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_new_key_fails_clearly_until_its_key_file_has_it() {
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.start_replica().await;
    let id = create_credential(&a, "u", "before-rotation").await;
    let mut keys = open(&a).await;
    let report = keys
        .rotate(&RotateOptions::default(), &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(report.plan, Plan::Generate(2));

    // B seals under the primary key, 2, which its key file lacks.
    let err = try_create(&b).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let b_file = b.config.key_path().display().to_string();
    assert!(
        err.message().contains("key 2") && err.message().contains(&b_file),
        "{err}"
    );
    // What needs no key still works, with the token.
    b.credentials()
        .get_credential(pb::GetCredentialRequest {
            name: format!("credentials/{id}"),
        })
        .await
        .unwrap();

    // Its key file gets the key: B takes it by itself.
    std::fs::copy(a.config.key_path(), b.config.key_path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_create(&b).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("B never took key 2 from its key file: {e}"),
        }
    }

    // The procedure for replicas: `keys add`, copy the key file, then `keys rotate`.
    assert_eq!(keys.add(&mut Vec::new()).await.unwrap(), 3);
    std::fs::copy(a.config.key_path(), b.config.key_path()).unwrap();
    let report = keys
        .rotate(&RotateOptions::default(), &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(report.plan, Plan::Adopt(3));
    try_create(&b)
        .await
        .expect("a replica whose key file got the key first never fails");
    try_create(&a).await.unwrap();
    drop(keys);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_without_the_primary_key_is_a_clear_startup_error() {
    let server = TestServer::start(Backend::Sqlite).await;
    create_credential(&server, "u", "s").await;
    open(&server)
        .await
        .rotate(&RotateOptions::default(), &mut Vec::new())
        .await
        .unwrap();
    let config = server.config.clone();
    let (stopped, _data) = server.stop_keeping_data().await;
    stopped.unwrap();
    let path = config.key_path();
    let mut ring = Keyring::load(&path).unwrap().unwrap();
    assert!(ring.remove(2).is_some());
    ring.write(&path).unwrap();
    let err = mailplane_server::server::open_state(&config)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, StartupError::Key(KeyError::MissingKey { id: 2, .. })),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("lacks key 2")
            && text.contains("primary")
            && text.contains(&path.display().to_string()),
        "{text}"
    );
}
