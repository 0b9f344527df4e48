//! OAuth2 credentials around their tokens: no token or secret is ever shown, logged or stored
//! in clear; the Microsoft 365 preset end to end; the destination policy on the token
//! endpoint; the CLI; and key rotation of the stored tokens.

use super::oauth::{
    GOOGLE, MICROSOFT, account, client_credentials, server, test, token_phase, token_requests,
};
use crate::smtp::{class, state};
use mailplane_proto::v1 as pb;
use mailplane_testkit::idp::{Client, Idp};
use mailplane_tests::{Backend, SmtpFixtures, TestServer, create_account};
use std::time::Duration;

#[tokio::test(flavor = "current_thread")]
async fn no_token_or_secret_is_logged_shown_audited_or_stored_in_clear() {
    let (logs, _guard) = mailplane_testkit::logs::capture_tracing();
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    idp.client(
        "quiet",
        Client {
            expire_next: 1,
            rotate_refresh_tokens: true,
            refresh_tokens: vec!["rt-quiet-initial".into()],
            ..Client::new("s3cret-quiet-9f2", &fx.var("SMTP_USER"), GOOGLE)
        },
    );
    let server = server(&fx, Backend::Sqlite).await;
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "quiet".into(),
                username: fx.var("SMTP_USER"),
                kind: pb::CredentialKind::Oauth2RefreshToken.into(),
                token_url: idp.token_url.clone(),
                client_id: "quiet".into(),
                client_secret: "s3cret-quiet-9f2".into(),
                refresh_token: "rt-quiet-initial".into(),
                scope: GOOGLE.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let acct = account(&server, &fx, "Quiet", &cred.name).await;
    let t = test(&server, &acct).await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    let got = server
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            name: cred.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let audit = pb::audit_service_client::AuditServiceClient::new(server.channel.clone())
        .list_events(pb::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let db = std::fs::read(server.sqlite_path()).unwrap();
    let mut secrets: Vec<String> = idp.issued();
    secrets.extend(idp.get("quiet").unwrap().refresh_tokens);
    secrets.push("rt-quiet-initial".into());
    secrets.push("s3cret-quiet-9f2".into());
    assert!(secrets.len() >= 4, "{secrets:?}");
    let logs = logs.text();
    assert!(
        logs.contains("got an OAuth2 access token"),
        "logs were captured"
    );
    let shown = [
        ("log", logs),
        ("transcript", format!("{t:?}")),
        ("credential", format!("{got:?}")),
        ("audit", format!("{audit:?}")),
    ];
    for secret in &secrets {
        for (place, text) in &shown {
            assert!(!text.contains(secret.as_str()), "{place} shows a secret");
        }
        let needle = secret.as_bytes();
        assert!(
            !db.windows(needle.len()).any(|w| w == needle),
            "the database file holds a secret in clear"
        );
    }
}

/// The `microsoft365` preset end to end: its credential kind, scope, mechanism and security,
/// with the token endpoint and relay moved to the local ones (the real ones cannot be reached
/// from here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_microsoft365_preset_runs_end_to_end() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    let server = server(&fx, Backend::Sqlite).await;
    let preset = server
        .accounts()
        .resolve_preset(pb::ResolvePresetRequest {
            name: "presets/microsoft365".into(),
            placeholder_values: [("tenant".to_owned(), "contoso.onmicrosoft.com".to_owned())]
                .into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        preset.token_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    idp.client(
        "m365-app",
        Client::new("s3cret-m365", &fx.var("SMTP_USER"), &preset.scope),
    );
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "Microsoft 365".into(),
                username: fx.var("SMTP_USER"),
                kind: preset.credential_kind,
                token_url: idp.token_url.clone(),
                client_id: "m365-app".into(),
                client_secret: "s3cret-m365".into(),
                scope: preset.scope.clone(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let acct = create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            sender_email: "alerts@mailplane.test".into(),
            use_authentication: true,
            credential: cred.name,
            auth_mechanism: preset.auth_mechanism,
            security: preset.security,
            host: "localhost".into(),
            port: fx.port("SMTP_PORT_SUBMISSION").into(),
            ..mailplane_tests::account("M365 preset")
        },
    )
    .await;
    let t = test(&server, &acct.name).await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    assert_eq!(token_phase(&t).reply_code, 200);
    assert_eq!(token_requests(&idp, "m365-app"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destination_policy_applies_to_the_token_endpoint() {
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    idp.client(
        "fenced",
        Client::new("s3cret-f", &fx.var("SMTP_USER"), MICROSOFT),
    );
    // The relay stays allowed; only the endpoint's port is denied.
    let port = idp
        .token_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/token");
    let ca = std::fs::read(fx.var("SMTP_CA")).expect("fixture CA");
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.smtp.extra_ca_pem = Some(ca);
        c.smtp
            .policy
            .deny
            .push(format!("127.0.0.0/8 {port}").parse().unwrap());
    })
    .await;
    let cred = client_credentials(&server, &fx, &idp, "fenced", "s3cret-f").await;
    let t = test(&server, &account(&server, &fx, "Fenced", &cred).await).await;
    assert_eq!(
        class(&t),
        pb::FailureClass::DestinationNotAllowed,
        "{:?}",
        t.result
    );
    assert_eq!(
        t.result.unwrap().failed_phase,
        i32::from(pb::Phase::Token),
        "refused before anything was sent"
    );
    assert!(idp.requests().is_empty(), "the endpoint was never asked");
}

/// The CLI takes OAuth2 credentials' secrets from files (never argv), and fills a preset's
/// kind, token endpoint and scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_and_updates_oauth2_credentials() {
    use crate::cli::{json, mailplane};
    let server = TestServer::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    let refresh = dir.path().join("refresh-token");
    std::fs::write(&secret, "cli-client-secret-31\n").unwrap();
    std::fs::write(&refresh, "cli-refresh-token-77\n").unwrap();
    let (secret, refresh) = (secret.to_str().unwrap(), refresh.to_str().unwrap());
    let made = json(
        &mailplane(
            &server,
            &[
                "-o",
                "json",
                "credentials",
                "create",
                "--display-name",
                "Google",
                "--username",
                "alerts@example.com",
                "--kind",
                "oauth2-refresh-token",
                "--allow-destination",
                "smtp.gmail.com:587",
                "--token-url",
                "https://oauth2.googleapis.com/token",
                "--client-id",
                "cli-app",
                "--scope",
                GOOGLE,
                "--client-secret-file",
                secret,
                "--refresh-token-file",
                refresh,
            ],
        )
        .await
        .unwrap(),
    );
    assert_eq!(made["kind"], "OAUTH2_REFRESH_TOKEN");
    assert_eq!(made["token_url"], "https://oauth2.googleapis.com/token");
    assert_eq!(made["has_client_secret"], true);
    assert_eq!(made["has_refresh_token"], true);
    assert!(!made.to_string().contains("cli-client-secret-31"));
    let id = made["id"].to_string();
    let updated = json(
        &mailplane(
            &server,
            &[
                "-o",
                "json",
                "credentials",
                "update",
                &id,
                "--rotate-refresh-token",
                "--refresh-token-file",
                refresh,
            ],
        )
        .await
        .unwrap(),
    );
    assert_ne!(updated["etag"], made["etag"]);

    let preset = json(
        &mailplane(
            &server,
            &[
                "-o",
                "json",
                "credentials",
                "create",
                "--preset",
                "microsoft365",
                "--tenant",
                "contoso.onmicrosoft.com",
                "--display-name",
                "M365",
                "--username",
                "alerts@contoso.com",
                "--client-id",
                "m365-app",
                "--client-secret-file",
                secret,
            ],
        )
        .await
        .unwrap(),
    );
    assert_eq!(preset["kind"], "OAUTH2_CLIENT_CREDENTIALS");
    assert_eq!(
        preset["token_url"],
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(preset["scope"], MICROSOFT);
    assert_eq!(preset["allowed_destinations"][0], "smtp.office365.com:587");
}

/// Key rotation re-encrypts refresh tokens and cached access tokens too: after it, with the old
/// key gone and the server restarted, the cached token still serves and everything decrypts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_re_encrypts_refresh_and_access_tokens() {
    use mailplane_server::keys::rotate::RotateOptions;
    let fx = SmtpFixtures::load();
    let idp = Idp::start(&fx).await;
    idp.client(
        "rotated",
        Client {
            refresh_tokens: vec!["rt-rotated".into()],
            ..Client::new("s3cret-k", &fx.var("SMTP_USER"), GOOGLE)
        },
    );
    let server = server(&fx, Backend::Sqlite).await;
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "rotated".into(),
                username: fx.var("SMTP_USER"),
                kind: pb::CredentialKind::Oauth2RefreshToken.into(),
                token_url: idp.token_url.clone(),
                client_id: "rotated".into(),
                client_secret: "s3cret-k".into(),
                refresh_token: "rt-rotated".into(),
                scope: GOOGLE.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let acct = account(&server, &fx, "Rotated", &cred.name).await;
    assert_eq!(state(&test(&server, &acct).await), pb::TestState::Succeeded);

    let mut maintenance = crate::keys::open(&server).await;
    let before = maintenance.status().await.unwrap();
    let one = before.keys.iter().find(|k| k.id == 1).unwrap();
    assert_eq!((one.usage.refresh_tokens, one.usage.access_tokens), (1, 1));
    let options = RotateOptions {
        batch_size: 10,
        pause: Duration::ZERO,
    };
    maintenance
        .rotate(&options, &mut Vec::new())
        .await
        .expect("rotate");
    let after = maintenance.status().await.unwrap();
    assert_eq!((after.primary, after.pending), (2, 0), "{after:?}");
    let two = after.keys.iter().find(|k| k.id == 2).unwrap();
    assert_eq!((two.usage.refresh_tokens, two.usage.access_tokens), (1, 1));
    assert_eq!(maintenance.prune(&[], &mut Vec::new()).await.unwrap(), [1]);
    let report = maintenance.verify().await.unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    drop(maintenance);

    let server = server.restart().await;
    let t = test(&server, &acct).await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    assert!(
        token_phase(&t)
            .detail
            .iter()
            .any(|d| d.starts_with("cached access token")),
        "the re-encrypted cached token serves"
    );
    assert_eq!(token_requests(&idp, "rotated"), 1);
}
