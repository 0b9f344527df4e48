//! Test e-mails against silent, refusing and denied destinations, and the runner's limits.

use super::*;
use mailplane_tests::create_account;
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn denied_destination_sends_nothing() {
    // A listener in the denied range: if anything connected, accept() would return.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.smtp.policy.deny.push("127.0.0.0/8".parse().unwrap());
    })
    .await;
    let mut a = server.accounts();
    let acct = create_account(&mut a, relay("Denied", port, pb::SecurityMode::None)).await;
    let acct_v4 = create_account(
        &mut a,
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            ..relay("Denied v4", port, pb::SecurityMode::None)
        },
    )
    .await;
    let err = server
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: acct_v4.name.clone(),
            test: Some(pb::SmtpTest {
                to: to("deny"),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("127.0.0.0/8"),
        "the rule is named: {}",
        err.message()
    );
    let listed = server
        .tests()
        .list_tests(pb::ListTestsRequest {
            parent: acct_v4.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tests.is_empty(), "a refused test is not stored");
    // "localhost" may also resolve to ::1, which the rule does not cover: then the session
    // checks every address it tries and never connects to a denied one.
    match server
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: acct.name.clone(),
            test: Some(pb::SmtpTest {
                to: to("deny"),
                ..Default::default()
            }),
        })
        .await
    {
        Err(e) => assert_eq!(e.code(), Code::PermissionDenied),
        Ok(t) => {
            let done = wait(&server, &t.into_inner().name).await;
            assert_eq!(state(&done), pb::TestState::Failed);
        }
    }
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "no packet reached the denied destination"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn silent_server_times_out_at_the_banner_and_the_cap_holds() {
    // Accepts connections (the kernel does) but never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.smtp.timeouts.banner = Duration::from_secs(2);
        c.smtp.max_tests_per_account = 2;
    })
    .await;
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            ..relay("Silent", port, pb::SecurityMode::None)
        },
    )
    .await;
    let create = || {
        let mut c = server.tests();
        let parent = acct.name.clone();
        async move {
            c.create_test(pb::CreateTestRequest {
                parent,
                test: Some(pb::SmtpTest {
                    to: to("silent"),
                    ..Default::default()
                }),
            })
            .await
        }
    };
    let first = create().await.unwrap().into_inner();
    let second = create().await.unwrap().into_inner();
    let third = create().await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{}", third.message());
    for name in [first.name, second.name] {
        let done = wait(&server, &name).await;
        assert_eq!(class(&done), pb::FailureClass::Timeout, "{:?}", done.result);
        assert_eq!(
            done.result.unwrap().failed_phase,
            i32::from(pb::Phase::Banner),
            "it stalled at the banner"
        );
    }
    // The slots are free again.
    let again = create().await.unwrap().into_inner();
    wait(&server, &again.name).await;
    drop(listener);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn refused_connection_and_bad_requests() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::start(Backend::Postgres).await;
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            ..relay("Refused", port, pb::SecurityMode::None)
        },
    )
    .await;
    let (_, done) = run(
        &server,
        &acct.name,
        pb::SmtpTest {
            to: to("refused"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        class(&done),
        pb::FailureClass::ConnectionRefused,
        "{:?}",
        done.result
    );
    let mut t = server.tests();
    let bad = [
        (
            pb::CreateTestRequest {
                parent: acct.name.clone(),
                test: Some(pb::SmtpTest {
                    to: "nope".into(),
                    ..Default::default()
                }),
            },
            Code::InvalidArgument,
        ),
        (
            pb::CreateTestRequest {
                parent: acct.name.clone(),
                test: None,
            },
            Code::InvalidArgument,
        ),
        (
            pb::CreateTestRequest {
                parent: acct.name.clone(),
                test: Some(pb::SmtpTest {
                    to: to("x"),
                    locale: "fr".into(),
                    ..Default::default()
                }),
            },
            Code::InvalidArgument,
        ),
        (
            pb::CreateTestRequest {
                parent: "accounts/999".into(),
                test: Some(pb::SmtpTest {
                    to: to("x"),
                    ..Default::default()
                }),
            },
            Code::NotFound,
        ),
    ];
    for (req, code) in bad {
        assert_eq!(t.create_test(req).await.unwrap_err().code(), code);
    }
    let err = t
        .get_test(pb::GetTestRequest {
            name: format!("{}/tests/999", acct.name),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn shutdown_leaves_no_test_running() {
    // A relay that never greets: the test is mid-session when the server stops.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = TestServer::start(Backend::Sqlite).await;
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            ..relay("Stalled", port, pb::SecurityMode::None)
        },
    )
    .await;
    let test = server
        .tests()
        .create_test(pb::CreateTestRequest {
            parent: acct.name.clone(),
            test: Some(pb::SmtpTest {
                to: to("stalled"),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    // Wait until the session is waiting for the banner.
    let mut watch = server
        .tests()
        .watch_test(pb::WatchTestRequest {
            name: test.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let msg = watch.message().await.unwrap().unwrap();
        if matches!(msg.event, Some(Event::PhaseStarted(p)) if p == i32::from(pb::Phase::Banner)) {
            break;
        }
    }
    drop(watch);
    let config = server.config.clone();
    let (stopped, _data) = server.stop_keeping_data().await;
    stopped.unwrap();
    let state = mailplane_server::server::open_state(&config).await.unwrap();
    let name = mailplane_server::api::smtp_tests::test_name("name", &test.name).unwrap();
    let stored = state.store.get_test(name).await.unwrap();
    assert_eq!(
        stored.state,
        mailplane_server::domain::TestState::Cancelled,
        "nothing is left RUNNING"
    );
    drop(listener);
}
