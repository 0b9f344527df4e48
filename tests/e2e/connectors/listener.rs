//! The agent listener's guard: enrollment attempts limited per address (a bad token takes
//! no lock: a unit test of the store shows it), the agent's `AgentHello` checked like `Enroll`'s fields, and refusals
//! (bad, used or expired tokens, unknown or revoked certificates) in the audit log,
//! collapsed per peer and minute.

use super::*;

fn bogus() -> pb::EnrollmentToken {
    pb::EnrollmentToken {
        token: "mpe_not-a-real-token".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_attempts_are_limited_per_address() {
    let server = server().await;
    let dc = server.create_connector("Limited").await;
    let good = token(&server, &dc.name).await;
    let bad = pb::EnrollmentToken {
        server_ca_pem: good.server_ca_pem.clone(),
        ..bogus()
    };
    for attempt in 1..=10 {
        let err = enroll(&server, &bad).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "attempt {attempt}");
    }
    let err = enroll(&server, &good).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::ResourceExhausted,
        "the 11th attempt in a minute is refused, good token or not: {err:?}"
    );
    assert!(err.message().contains("wait a minute"), "{}", err.message());
    // Nothing changed: the good token was not used up.
    let got = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: dc.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.agents.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hello_is_checked_like_enrollment() {
    let server = server().await;
    let dc = server.create_connector("Hello").await;
    let who = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let hello = |hostname: &str, version: &str| pb::AgentHello {
        hostname: hostname.into(),
        version: version.into(),
        max_concurrent_jobs: 4,
        stream: 0,
    };
    for (h, v, field) in [
        ("bad\u{7}host", "1.0", "hello.hostname"),
        (&"h".repeat(254), "1.0", "hello.hostname"),
        ("", "1.0", "hello.hostname"),
        ("host", "1.0\r\nX: y", "hello.version"),
        ("host", &"9".repeat(65), "hello.version"),
    ] {
        let err = FakeAgent::connect_hello(&server, &who, hello(h, v))
            .await
            .err()
            .expect("a bad hello is refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{h:?} {v:?}: {err:?}");
        assert!(err.message().contains(field), "{}", err.message());
    }
    let got = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: dc.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.agents[0].hostname, "agent-host", "nothing was recorded");
    FakeAgent::connect_hello(&server, &who, hello("agent-host.dmz", ""))
        .await
        .expect("a good hello is taken");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_the_agent_listener_are_audited_once_per_peer_and_minute() {
    let server = server().await;
    let dc = server.create_connector("Refused").await;
    let good = token(&server, &dc.name).await;
    let bad = pb::EnrollmentToken {
        server_ca_pem: good.server_ca_pem.clone(),
        ..bogus()
    };
    for _ in 0..3 {
        enroll(&server, &bad).await.unwrap_err();
    }
    let who = enroll(&server, &good).await.unwrap();
    let err = enroll(&server, &good).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "a used token");

    let denied = |events: Vec<pb::AuditEvent>, rpc: &str, actor: &str| {
        events
            .into_iter()
            .filter(|e| e.outcome == "denied" && e.rpc.ends_with(rpc) && e.actor == actor)
            .collect::<Vec<_>>()
    };
    let enrolls = denied(
        audit_events(&server, "").await,
        "/Enroll",
        "enrollment token",
    );
    assert_eq!(enrolls.len(), 1, "collapsed into one event: {enrolls:?}");
    let d: serde_json::Value = serde_json::from_str(&enrolls[0].diff).unwrap();
    assert_eq!(d["count"], 4, "{d}");
    assert!(
        d["last_reason"].as_str().unwrap().contains("already used"),
        "{d}"
    );
    assert!(!enrolls[0].diff.contains("mpe_"), "no token in the log");
    assert_eq!(enrolls[0].peer, "127.0.0.1");

    // A stream without a certificate, and a revoked agent's.
    let mut anonymous = AgentServiceClient::new(channel(&server, tls(&who.ca_pem)).await);
    let (_up, rx) = tokio::sync::mpsc::channel(1);
    let err = anonymous
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    server
        .connectors()
        .revoke_agent(pb::RevokeAgentRequest {
            name: who.name.clone(),
        })
        .await
        .unwrap();
    for _ in 0..2 {
        let err = FakeAgent::connect(&server, &who).await.err().unwrap();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let events = audit_events(&server, "").await;
    assert_eq!(
        denied(events.clone(), "/Connect", "agent certificate").len(),
        1,
        "{events:?}"
    );
    let revoked = denied(events, "/Connect", &who.name);
    assert_eq!(revoked.len(), 1);
    let d: serde_json::Value = serde_json::from_str(&revoked[0].diff).unwrap();
    assert_eq!(d["count"], 2, "{d}");
    server.stop().await.unwrap();
}
