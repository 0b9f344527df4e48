//! Access control: every RPC with every role, unauthenticated calls, expired and revoked
//! tokens, hashed storage, and the brute-force limit.

use mailplane_proto::v1 as pb;
use mailplane_server::auth::{Access, TABLE};
use mailplane_server::domain::Role;
use mailplane_tests::{Backend, TestServer, with_token};
use pb::token_service_client::TokenServiceClient;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

async fn token(server: &TestServer, name: &str, role: pb::Role) -> pb::ApiToken {
    TokenServiceClient::new(server.channel.clone())
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::ApiToken {
                display_name: name.into(),
                role: role.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Calls `path` with an empty message, as `token`, and returns the status code.
async fn call(server: &TestServer, token: Option<&str>, path: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(with_token(&server.raw, token));
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = PathAndQuery::try_from(path).unwrap();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_with_every_role() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = token(&server, "admin", pb::Role::Admin).await;
    let operator = token(&server, "operator", pb::Role::Operator).await;
    let viewer = token(&server, "viewer", pb::Role::Viewer).await;
    let sender = token(&server, "sender", pb::Role::Sender).await;
    let roles = [
        (Role::Admin, admin.token.as_str()),
        (Role::Operator, operator.token.as_str()),
        (Role::Viewer, viewer.token.as_str()),
        (Role::Sender, sender.token.as_str()),
    ];
    let mut checked = 0;
    for (path, access) in TABLE {
        if *access == Access::Public {
            continue;
        }
        // Missing and wrong tokens count towards the brute-force limit (10 a minute): try
        // a few paths, not every one.
        if checked < 5 * 4 {
            assert_eq!(
                call(&server, None, path).await,
                Code::Unauthenticated,
                "{path} without a token"
            );
        }
        if checked < 4 * 4 {
            assert_eq!(
                call(&server, Some("mpt_1_wrong"), path).await,
                Code::Unauthenticated,
                "{path} with a wrong token"
            );
        }
        for (role, tok) in roles {
            let code = call(&server, Some(tok), path).await;
            if access.allows(role) {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{path} as {role:?} must pass the gate, got {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{path} as {role:?}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 26 * 3, "checked {checked} calls");
    // Health needs no token, so load balancers can probe.
    assert_eq!(
        call(&server, None, "/grpc.health.v1.Health/Check").await,
        Code::Ok
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_are_refused_and_only_hashes_are_stored() {
    let server = TestServer::start(Backend::Sqlite).await;
    let viewer = token(&server, "ci-reader", pb::Role::Viewer).await;
    assert!(viewer.token.starts_with("mpt_"));
    let list_path = "/mailplane.v1.SmtpAccountService/ListAccounts";
    assert_eq!(
        call(&server, Some(&viewer.token), list_path).await,
        Code::Ok
    );

    let mut tokens = TokenServiceClient::new(server.channel.clone());
    let listed = tokens
        .list_tokens(pb::ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.tokens.iter().all(|t| t.token.is_empty()),
        "a listed token carries no secret"
    );
    assert!(
        listed
            .tokens
            .iter()
            .any(|t| t.display_name == "bootstrap admin")
    );
    let dup = tokens
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::ApiToken {
                display_name: "CI-READER".into(),
                role: pb::Role::Viewer.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);

    let revoked = tokens
        .revoke_token(pb::RevokeTokenRequest {
            name: viewer.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    assert_eq!(
        call(&server, Some(&viewer.token), list_path).await,
        Code::Unauthenticated,
        "revoked at once"
    );

    let expiring = token(&server, "short-lived", pb::Role::Viewer).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.sqlite_path().display()))
        .await
        .unwrap();
    sqlx::query("UPDATE api_tokens SET expire_time = 1 WHERE display_name = 'short-lived'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        call(&server, Some(&expiring.token), list_path).await,
        Code::Unauthenticated,
        "expired"
    );

    let hashes: Vec<String> = sqlx::query_scalar("SELECT secret_hash FROM api_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    for t in [&viewer.token, &expiring.token, &server.admin_token] {
        let secret = t.rsplit('_').next().unwrap();
        assert!(
            hashes.iter().all(|h| h != secret && !h.contains(secret)),
            "a token is stored as itself"
        );
    }
    pool.close().await;
    for file in std::fs::read_dir(server.data_dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains("mailplane.db") {
            let bytes = std::fs::read(&path).unwrap();
            let secret = viewer.token.rsplit('_').next().unwrap();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_rate_limited_per_address() {
    let server = TestServer::start(Backend::Sqlite).await;
    let path = "/mailplane.v1.SmtpAccountService/ListAccounts";
    for i in 0..10 {
        assert_eq!(
            call(&server, Some(&format!("mpt_1_guess{i}")), path).await,
            Code::Unauthenticated
        );
    }
    assert_eq!(
        call(&server, Some("mpt_1_guess-again"), path).await,
        Code::ResourceExhausted
    );
    // Even the right token waits now: the address is blocked, not the token.
    assert_eq!(
        call(&server, Some(&server.admin_token), path).await,
        Code::ResourceExhausted
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tokens_count_and_refusals_are_collapsed_per_peer_and_minute() {
    let server = TestServer::start(Backend::Sqlite).await;
    let path = "/mailplane.v1.SmtpAccountService/ListAccounts";
    for _ in 0..6 {
        assert_eq!(call(&server, None, path).await, Code::Unauthenticated);
    }
    for i in 0..4 {
        let wrong = format!("mpt_1_guess{i}");
        assert_eq!(
            call(&server, Some(&wrong), path).await,
            Code::Unauthenticated
        );
    }
    // The eleventh refused call within the minute, even without a token, is cut short.
    assert_eq!(call(&server, None, path).await, Code::ResourceExhausted);
    assert_eq!(
        call(&server, None, "/mailplane.v1.TokenService/ListTokens").await,
        Code::ResourceExhausted
    );
    // One event for the ten refusals, carrying their count (the rate-limited ones are not
    // recorded).
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.sqlite_path().display()))
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, peer, diff FROM audit_events WHERE outcome = 'denied'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (actor, peer, diff) = &rows[0];
    assert_eq!(actor, "unauthenticated");
    assert_eq!(peer, "127.0.0.1");
    let diff: serde_json::Value = serde_json::from_str(diff).unwrap();
    assert_eq!(diff["count"], 10, "{diff}");
    assert!(
        diff["reason"]
            .as_str()
            .unwrap()
            .starts_with("Unauthenticated"),
        "{diff}"
    );
    assert_eq!(diff["last_rpc"], path);
    pool.close().await;
    server.stop().await.unwrap();
}
