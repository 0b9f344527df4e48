//! OAuth2 credentials that get their own tokens, against a token endpoint of our own (the
//! providers' cannot be reached from here) and the real Postfix with Dovecot, which accepts
//! AUTH XOAUTH2 only for a JWT that is signed, unexpired, from the issuer, for the user and
//! with the scope.

use crate::smtp::{class, relay, run, state, to};
use mailplane_proto::v1 as pb;
use mailplane_testkit::idp::{Client, Idp};
use mailplane_tests::{Backend, SmtpFixtures, TestServer, create_account};
use std::time::Duration;

pub(crate) const MICROSOFT: &str = "https://outlook.office365.com/.default";
pub(crate) const GOOGLE: &str = "https://mail.google.com/";

pub(crate) async fn server(fx: &SmtpFixtures, backend: Backend) -> TestServer {
    let ca = std::fs::read(fx.var("SMTP_CA")).expect("fixture CA");
    TestServer::start_configured(backend, |c| {
        c.smtp.extra_ca_pem = Some(ca);
        c.smtp.timeouts.banner = Duration::from_secs(3);
        c.smtp.max_tests_per_account = 32;
    })
    .await
}

/// A client-credentials credential for `client_id` (secret `secret`) at `idp`.
pub(crate) async fn client_credentials(
    server: &TestServer,
    fx: &SmtpFixtures,
    idp: &Idp,
    client_id: &str,
    secret: &str,
) -> String {
    server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: format!("m365 {client_id}"),
                username: fx.var("SMTP_USER"),
                kind: pb::CredentialKind::Oauth2ClientCredentials.into(),
                token_url: idp.token_url.clone(),
                client_id: client_id.into(),
                client_secret: secret.into(),
                scope: MICROSOFT.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name
}

/// An XOAUTH2 account on the submission port (STARTTLS required) with `credential`.
pub(crate) fn xoauth2_account(fx: &SmtpFixtures, name: &str, credential: &str) -> pb::SmtpAccount {
    pb::SmtpAccount {
        sender_email: "alerts@mailplane.test".into(),
        use_authentication: true,
        credential: credential.into(),
        auth_mechanism: pb::AuthMechanism::Xoauth2.into(),
        ..relay(
            name,
            fx.port("SMTP_PORT_SUBMISSION"),
            pb::SecurityMode::StarttlsRequired,
        )
    }
}

/// [`xoauth2_account`], created.
pub(crate) async fn account(
    server: &TestServer,
    fx: &SmtpFixtures,
    name: &str,
    credential: &str,
) -> String {
    create_account(
        &mut server.accounts(),
        xoauth2_account(fx, name, credential),
    )
    .await
    .name
}

pub(crate) async fn test(server: &TestServer, account: &str) -> pb::SmtpTest {
    run(
        server,
        account,
        pb::SmtpTest {
            to: to("oauth"),
            ..Default::default()
        },
    )
    .await
    .1
}

pub(crate) fn token_phase(t: &pb::SmtpTest) -> pb::PhaseResult {
    t.transcript
        .iter()
        .find(|p| p.phase == i32::from(pb::Phase::Token))
        .cloned()
        .unwrap_or_else(|| panic!("no TOKEN phase in {:?}", t.transcript))
}

pub(crate) fn token_requests(idp: &Idp, client: &str) -> usize {
    idp.requests()
        .iter()
        .filter(|r| r.client_id == client)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_use_fetches_a_token_and_the_next_reuses_it() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    idp.client(
        "app",
        Client::new("s3cret-app", &fx.var("SMTP_USER"), MICROSOFT),
    );
    let server = server(&fx, Backend::Sqlite).await;
    let cred = client_credentials(&server, &fx, &idp, "app", "s3cret-app").await;
    let acct = account(&server, &fx, "M365", &cred).await;

    let first = test(&server, &acct).await;
    assert_eq!(
        state(&first),
        pb::TestState::Succeeded,
        "{:?}",
        first.result
    );
    let phase = token_phase(&first);
    assert_eq!(phase.status, i32::from(pb::PhaseStatus::Ok));
    assert_eq!(phase.reply_code, 200, "{phase:?}");
    assert!(
        phase.commands[0].contains("grant_type=client_credentials")
            && phase.commands[0].contains(&idp.token_url),
        "{phase:?}"
    );
    assert!(
        phase
            .detail
            .iter()
            .any(|d| d == &format!("scope: {MICROSOFT}"))
            && phase.detail.iter().any(|d| d.starts_with("expires in 3")),
        "{phase:?}"
    );
    assert_eq!(
        first.transcript[0].phase,
        i32::from(pb::Phase::Token),
        "the token comes first"
    );
    assert_eq!(token_requests(&idp, "app"), 1);

    let second = test(&server, &acct).await;
    assert_eq!(
        state(&second),
        pb::TestState::Succeeded,
        "{:?}",
        second.result
    );
    let phase = token_phase(&second);
    assert!(
        phase
            .detail
            .iter()
            .any(|d| d.starts_with("cached access token")),
        "{phase:?}"
    );
    assert_eq!(
        token_requests(&idp, "app"),
        1,
        "the cached token was reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_renewed() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    // The endpoint says each token expires at once (the JWT itself stays valid): every use
    // must get a new one.
    idp.client(
        "short",
        Client {
            expires_in: 0,
            ..Client::new("s3cret-short", &fx.var("SMTP_USER"), MICROSOFT)
        },
    );
    let server = server(&fx, Backend::Sqlite).await;
    let cred = client_credentials(&server, &fx, &idp, "short", "s3cret-short").await;
    let acct = account(&server, &fx, "Short", &cred).await;
    for round in 1..=2 {
        let t = test(&server, &acct).await;
        assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
        assert_eq!(token_phase(&t).reply_code, 200);
        assert_eq!(token_requests(&idp, "short"), round);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_stored_and_used() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    idp.client(
        "gmail",
        Client {
            expires_in: 0,
            rotate_refresh_tokens: true,
            refresh_tokens: vec!["rt-initial".into()],
            ..Client::new("s3cret-g", &fx.var("SMTP_USER"), GOOGLE)
        },
    );
    let server = server(&fx, Backend::Sqlite).await;
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "google".into(),
                username: fx.var("SMTP_USER"),
                kind: pb::CredentialKind::Oauth2RefreshToken.into(),
                token_url: idp.token_url.clone(),
                client_id: "gmail".into(),
                client_secret: "s3cret-g".into(),
                refresh_token: "rt-initial".into(),
                scope: GOOGLE.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cred.has_client_secret && cred.has_refresh_token, "{cred:?}");
    assert!(cred.client_secret.is_empty() && cred.refresh_token.is_empty());
    let acct = account(&server, &fx, "Google", &cred.name).await;
    for round in 1..=3 {
        let t = test(&server, &acct).await;
        assert_eq!(
            state(&t),
            pb::TestState::Succeeded,
            "round {round}: {:?}",
            t.result
        );
        let phase = token_phase(&t);
        assert!(
            phase.commands[0].contains("grant_type=refresh_token"),
            "{phase:?}"
        );
        assert!(
            phase
                .detail
                .iter()
                .any(|d| d.contains("rotated the refresh token")),
            "{phase:?}"
        );
    }
    // Each grant used the refresh token the one before rotated to: none was refused.
    let requests = idp.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    assert_ne!(idp.get("gmail").unwrap().refresh_tokens, ["rt-initial"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_clients_grants_and_scopes_have_their_classes() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    let user = fx.var("SMTP_USER");
    idp.client(
        "revoked",
        Client {
            revoked: true,
            ..Client::new("s3cret-r", &user, MICROSOFT)
        },
    );
    idp.client(
        "narrow",
        Client {
            grant_scope: Some("openid".into()),
            ..Client::new("s3cret-n", &user, MICROSOFT)
        },
    );
    idp.client("g", Client::new("s3cret-g", &user, GOOGLE));
    let server = server(&fx, Backend::Sqlite).await;

    let cred = client_credentials(&server, &fx, &idp, "revoked", "s3cret-r").await;
    let t = test(&server, &account(&server, &fx, "Revoked", &cred).await).await;
    assert_eq!(
        class(&t),
        pb::FailureClass::OauthClientRejected,
        "{:?}",
        t.result
    );
    let result = t.result.clone().unwrap();
    assert_eq!(result.failed_phase, i32::from(pb::Phase::Token));
    assert!(
        result.hint.contains("client id and client secret"),
        "{result:?}"
    );
    assert!(result.hint.contains("Microsoft 365"), "{result:?}");
    assert_eq!(token_phase(&t).reply_code, 401);
    assert_eq!(
        t.transcript.len(),
        1,
        "nothing went to the relay: {:?}",
        t.transcript
    );

    let cred = client_credentials(&server, &fx, &idp, "narrow", "s3cret-n").await;
    let t = test(&server, &account(&server, &fx, "Narrow", &cred).await).await;
    assert_eq!(
        class(&t),
        pb::FailureClass::OauthScopeMissing,
        "{:?}",
        t.result
    );

    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "stale".into(),
                username: user.clone(),
                kind: pb::CredentialKind::Oauth2RefreshToken.into(),
                token_url: idp.token_url.clone(),
                client_id: "g".into(),
                client_secret: "s3cret-g".into(),
                refresh_token: "rt-revoked".into(),
                scope: GOOGLE.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    let t = test(&server, &account(&server, &fx, "Stale", &cred).await).await;
    assert_eq!(
        class(&t),
        pb::FailureClass::OauthGrantRejected,
        "{:?}",
        t.result
    );
    assert!(
        t.result.unwrap().hint.contains("consent again"),
        "the hint says what to do"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_relay_refuses_is_renewed_once() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    // The first token's JWT has expired although the endpoint says it is good for an hour:
    // Dovecot refuses it, and the session gets one new token and tries again.
    idp.client(
        "early",
        Client {
            expire_next: 1,
            ..Client::new("s3cret-e", &fx.var("SMTP_USER"), MICROSOFT)
        },
    );
    let server = server(&fx, Backend::Sqlite).await;
    let cred = client_credentials(&server, &fx, &idp, "early", "s3cret-e").await;
    let acct = account(&server, &fx, "Early", &cred).await;
    let t = test(&server, &acct).await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    assert_eq!(token_requests(&idp, "early"), 2, "one refresh");
    let auth = t
        .transcript
        .iter()
        .find(|p| p.phase == i32::from(pb::Phase::Auth))
        .unwrap();
    assert!(
        auth.detail
            .iter()
            .any(|d| d.contains("refused the access token")),
        "{auth:?}"
    );
    // The renewed token is the cached one now.
    let again = test(&server, &acct).await;
    assert_eq!(
        state(&again),
        pb::TestState::Succeeded,
        "{:?}",
        again.result
    );
    assert_eq!(token_requests(&idp, "early"), 2);
}

/// Twenty tests at once on a credential with no token yet make one token request, on SQLite
/// and on PostgreSQL with two replicas sharing the credential.
async fn one_request_for_many_tests(backend: Backend) {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    idp.client(
        "busy",
        Client::new("s3cret-b", &fx.var("SMTP_USER"), MICROSOFT),
    );
    let a = server(&fx, backend).await;
    // On PostgreSQL a second replica (same config) runs every other test.
    let b = match backend {
        Backend::Postgres => Some(a.start_replica().await),
        Backend::Sqlite => None,
    };
    let cred = client_credentials(&a, &fx, &idp, "busy", "s3cret-b").await;
    let acct = account(&a, &fx, "Busy", &cred).await;
    let runs = (0..20).map(|i| {
        let server = match (&b, i % 2) {
            (Some(b), 1) => b,
            _ => &a,
        };
        let acct = acct.clone();
        async move { test(server, &acct).await }
    });
    let done = futures::future::join_all(runs).await;
    for t in &done {
        assert_eq!(state(t), pb::TestState::Succeeded, "{:?}", t.result);
    }
    assert_eq!(token_requests(&idp, "busy"), 1, "{:?}", idp.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tests_at_once_make_one_token_request_sqlite() {
    one_request_for_many_tests(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tests_at_once_make_one_token_request_on_two_replicas_postgres() {
    one_request_for_many_tests(Backend::Postgres).await;
}
