//! The audit log's hash chain: events are sealed in the background and `VerifyAuditLog` (and
//! `mailplane audit verify`) finds the first link that was changed or removed in the
//! database; replicas writing at once make one chain; the JSON-lines sink carries the links;
//! only admins may verify.

mod sink;

use mailplane_proto::v1 as pb;
use mailplane_server::cli::CliError;
use mailplane_server::cli::audit::{AuditCommand, run};
use mailplane_server::cli::output::Format;
use mailplane_tests::{Backend, TestServer, account, both_backends, create_account, with_token};
use pb::audit_service_client::AuditServiceClient;
use pb::broken_link::Problem;
use sqlx::Connection as _;
use std::time::{Duration, Instant};
use tonic::Code;

both_backends!(
    events_are_sealed_and_the_chain_verifies,
    a_changed_event_breaks_the_chain_at_its_seq,
    a_deleted_event_leaves_a_gap,
    only_admins_verify_and_refusals_wait_for_their_minute,
);

/// Verifies the chain through `server`.
pub(crate) async fn verify(server: &TestServer) -> pb::VerifyAuditLogResponse {
    AuditServiceClient::new(server.channel.clone())
        .verify_audit_log(pb::VerifyAuditLogRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Polls `VerifyAuditLog` until `done` holds for its answer (the sealer runs every second),
/// failing after 30 s.
pub(crate) async fn verify_until(
    server: &TestServer,
    what: &str,
    done: impl Fn(&pb::VerifyAuditLogResponse) -> bool,
) -> pb::VerifyAuditLogResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = verify(server).await;
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "never {what}: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `n` accounts named after `prefix` and waits until every event is sealed.
async fn sealed_accounts(
    server: &TestServer,
    prefix: &str,
    n: usize,
) -> pb::VerifyAuditLogResponse {
    let mut a = server.accounts();
    for i in 0..n {
        create_account(&mut a, account(&format!("{prefix} {i}"))).await;
    }
    verify_until(server, "all sealed", |r| {
        r.unsealed_count == 0 && r.sealed_through_seq >= i64::try_from(n).unwrap()
    })
    .await
}

/// Runs one statement on the server's database, behind its back.
async fn tamper(server: &TestServer, sql: &str) -> u64 {
    match &server.pg {
        Some(pg) => {
            let mut db = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut db)
                .await
                .unwrap()
                .rows_affected()
        }
        None => {
            let url = format!("sqlite://{}", server.sqlite_path().display());
            let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut db)
                .await
                .unwrap()
                .rows_affected()
        }
    }
}

/// The id of the event sealed as `seq`.
async fn event_at(server: &TestServer, seq: i64) -> i64 {
    let sql = format!("SELECT id FROM audit_events WHERE seq = {seq}");
    match &server.pg {
        Some(pg) => {
            let mut db = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::query_scalar(&sql).fetch_one(&mut db).await.unwrap()
        }
        None => {
            let url = format!("sqlite://{}", server.sqlite_path().display());
            let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(&sql).fetch_one(&mut db).await.unwrap()
        }
    }
}

/// `mailplane audit verify` against `server`: what it printed (JSON) and how it ended.
async fn cli_verify(server: &TestServer) -> (serde_json::Value, Result<(), CliError>) {
    let mut out = Vec::new();
    let ended = run(
        server.channel.clone(),
        Format::Json,
        AuditCommand::Verify,
        &mut out,
    )
    .await;
    (serde_json::from_slice(&out).unwrap(), ended)
}

async fn events_are_sealed_and_the_chain_verifies(server: &TestServer) {
    let r = sealed_accounts(server, "Sealed", 5).await;
    // The first admin token's event, and one per account.
    assert_eq!(r.sealed_through_seq, 6, "{r:?}");
    assert_eq!(r.events_checked, 6);
    assert_eq!(r.first_broken_link, None);
    assert_eq!(r.head_hash.len(), 64);
    assert!(r.head_hash.chars().all(|c| c.is_ascii_hexdigit()));
    let (shown, ended) = cli_verify(server).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(shown["status"], "OK");
    assert_eq!(shown["head_hash"], r.head_hash.as_str());
    // More events continue the chain from its head.
    let more = sealed_accounts(server, "Later", 2).await;
    assert_eq!((more.sealed_through_seq, more.first_broken_link), (8, None));
}

async fn a_changed_event_breaks_the_chain_at_its_seq(server: &TestServer) {
    sealed_accounts(server, "Tampered", 6).await;
    let fourth = event_at(server, 4).await;
    let changed = tamper(
        server,
        "UPDATE audit_events SET diff = '{\"account_name\":{\"after\":\"innocent\"}}' WHERE seq = 4",
    )
    .await;
    assert_eq!(changed, 1);
    let b = verify(server).await.first_broken_link.unwrap();
    assert_eq!((b.seq, b.event_id), (4, fourth), "{b:?}");
    assert_eq!(b.problem(), Problem::HashMismatch);
    // An earlier change to the actor is the first break now.
    tamper(
        server,
        "UPDATE audit_events SET actor = 'system' WHERE seq = 2",
    )
    .await;
    let r = verify(server).await;
    let b = r.first_broken_link.unwrap();
    assert_eq!((b.seq, b.problem()), (2, Problem::HashMismatch), "{b:?}");
    assert_eq!(r.events_checked, 7, "the whole chain is read");
    // The CLI prints the link and fails.
    let (shown, ended) = cli_verify(server).await;
    assert_eq!(shown["status"], "BROKEN");
    assert_eq!(shown["first_broken_link"]["seq"], 2);
    let err = ended.unwrap_err();
    assert!(matches!(err, CliError::AuditChainBroken(_)), "{err}");
    assert!(err.to_string().contains("seq 2"), "{err}");
    // Rewriting the hash too moves the break to the next link.
    tamper(
        server,
        "UPDATE audit_events SET hash = 'ab', actor = 'x' WHERE seq = 2",
    )
    .await;
    let b = verify(server).await.first_broken_link.unwrap();
    assert_eq!((b.seq, b.problem()), (2, Problem::HashMismatch));
}

async fn a_deleted_event_leaves_a_gap(server: &TestServer) {
    sealed_accounts(server, "Gap", 5).await;
    let after = event_at(server, 4).await;
    assert_eq!(
        tamper(server, "DELETE FROM audit_events WHERE seq = 3").await,
        1
    );
    let r = verify(server).await;
    let b = r.first_broken_link.unwrap();
    assert_eq!(
        (b.seq, b.event_id, b.problem()),
        (3, after, Problem::Gap),
        "{b:?}"
    );
    assert!(b.detail.contains("seq 3 is missing"), "{}", b.detail);
    assert_eq!(r.events_checked, 5);
    // Sealing goes on after the gap (the chain's head), and the break stays reported.
    let more = sealed_accounts(server, "After gap", 1).await;
    assert_eq!(more.sealed_through_seq, 7);
    assert_eq!(more.first_broken_link.unwrap().seq, 3);
}

async fn only_admins_verify_and_refusals_wait_for_their_minute(server: &TestServer) {
    let mut tokens = pb::token_service_client::TokenServiceClient::new(server.channel.clone());
    for role in [pb::Role::Viewer, pb::Role::Operator] {
        let token = tokens
            .create_token(pb::CreateTokenRequest {
                token: Some(pb::ApiToken {
                    display_name: format!("{role:?}"),
                    role: role.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let err = AuditServiceClient::new(with_token(&server.raw, Some(&token.token)))
            .verify_audit_log(pb::VerifyAuditLogRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role:?}: {err:?}");
    }
    // The two refusals stay unsealed (their counts may still change); the rest is sealed.
    let r = verify_until(server, "the token events sealed", |r| {
        r.sealed_through_seq == 3
    })
    .await;
    assert_eq!(r.unsealed_count, 2, "{r:?}");
    assert_eq!(r.first_broken_link, None);
}

/// Two replicas on one PostgreSQL database, each sealing every 100 ms while both write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_writing_at_once_make_one_chain() {
    let a = TestServer::start_configured(Backend::Postgres, |c| {
        c.audit_seal_interval = Duration::from_millis(100);
    })
    .await;
    let b = a.start_replica().await;
    let write = |server: &TestServer, side: &'static str| {
        let mut client = server.accounts();
        async move {
            for i in 0..40 {
                create_account(&mut client, account(&format!("{side} {i}"))).await;
            }
        }
    };
    tokio::join!(write(&a, "A"), write(&b, "B"));
    let r = verify_until(&a, "all sealed", |r| {
        r.unsealed_count == 0 && r.sealed_through_seq >= 81
    })
    .await;
    assert_eq!(r.first_broken_link, None, "{r:?}");
    assert_eq!((r.sealed_through_seq, r.events_checked), (81, 81));
    let mut db = sqlx::PgConnection::connect(&a.pg.as_ref().unwrap().url)
        .await
        .unwrap();
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT seq) FROM audit_events")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (81, 81), "every event has its own seq");
    let on_b = verify(&b).await;
    assert_eq!(on_b.head_hash, r.head_hash, "one chain, seen alike by both");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
