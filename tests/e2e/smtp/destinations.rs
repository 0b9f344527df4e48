//! The session's own check of a credential's destinations, in case the database's were ever
//! bypassed: with the credential's list changed behind the server's back (straight in SQLite),
//! a test stops before AUTH with CREDENTIAL_DESTINATION_DENIED, and the listener in front of the
//! real Postfix, which records every line the server sent, never sees an AUTH command. And with
//! STARTTLS_REQUIRED, a certificate that did not verify (ignore_certificate_errors) gets no
//! credential either.

use super::plaintext::stripping_proxy;
use super::*;
use mailplane_tests::create_account;

async fn credential_to(server: &TestServer, fx: &SmtpFixtures, destinations: &[&str]) -> String {
    server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "fixture".into(),
                username: fx.var("SMTP_USER"),
                secret: fx.var("SMTP_PASSWORD"),
                allowed_destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name
}

fn auth_lines(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.to_ascii_uppercase().starts_with("AUTH"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_sends_no_auth_outside_the_credentials_destinations() {
    let fx = SmtpFixtures::load();
    let server = server(&fx).await;
    let cred = credential_to(&server, &fx, &["127.0.0.1"]).await;
    let (port, sent) = stripping_proxy(fx.port("SMTP_PORT_SUBMISSION")).await;
    let mut a = server.accounts();
    // In clear through the listener (an admin's allow_plaintext_auth), so that it can read
    // every command.
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            use_authentication: true,
            credential: cred.clone(),
            allow_plaintext_auth: true,
            ..relay("Recorded", port, pb::SecurityMode::StarttlsOpportunistic)
        },
    )
    .await;
    let test = || pb::SmtpTest {
        to: to("destinations"),
        stop_after: pb::StopAfter::Auth.into(),
        ..Default::default()
    };

    // Allowed: the listener sees AUTH (so the check below can fail).
    let (_, done) = run(&server, &acct.name, test()).await;
    let lines = sent.lock().unwrap().clone();
    assert_eq!(auth_lines(&lines).len(), 1, "{lines:?} {:?}", done.result);
    assert_ne!(class(&done), pb::FailureClass::CredentialDestinationDenied);

    // The credential's list changed behind the server's back: the session itself refuses.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.sqlite_path().display()))
        .await
        .unwrap();
    sqlx::query("UPDATE credentials SET allowed_destinations = 'relay.example.com:587'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    sent.lock().unwrap().clear();
    let (_, done) = run(&server, &acct.name, test()).await;
    assert_eq!(state(&done), pb::TestState::Failed, "{:?}", done.result);
    assert_eq!(
        class(&done),
        pb::FailureClass::CredentialDestinationDenied,
        "{:?}",
        done.result
    );
    let result = done.result.clone().unwrap();
    assert_eq!(
        result.failed_phase,
        i32::from(pb::Phase::Auth),
        "{result:?}"
    );
    assert!(
        result.hint.contains(&format!("127.0.0.1:{port}"))
            && result.hint.contains("allowed_destinations"),
        "{result:?}"
    );
    let lines = sent.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.starts_with("EHLO")), "{lines:?}");
    assert!(auth_lines(&lines).is_empty(), "AUTH went out: {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("QUIT"), "{lines:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_sends_no_auth_after_an_unverified_certificate() {
    let fx = SmtpFixtures::load();
    let server = server(&fx).await;
    let cred = credential_to(&server, &fx, &["localhost"]).await;
    let mut a = server.accounts();
    for (i, port) in [
        fx.port("SMTP_PORT_UNKNOWN_CA"),
        fx.port("SMTP_PORT_EXPIRED"),
    ]
    .into_iter()
    .enumerate()
    {
        let acct = create_account(
            &mut a,
            pb::SmtpAccount {
                ignore_certificate_errors: true,
                use_authentication: true,
                credential: cred.clone(),
                ..relay(
                    &format!("Unverified {i}"),
                    port,
                    pb::SecurityMode::StarttlsRequired,
                )
            },
        )
        .await;
        let (_, done) = run(
            &server,
            &acct.name,
            pb::SmtpTest {
                to: to("unverified"),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            class(&done),
            pb::FailureClass::CredentialDestinationDenied,
            "{:?}",
            done.result
        );
        let result = done.result.clone().unwrap();
        assert_eq!(
            result.failed_phase,
            i32::from(pb::Phase::Auth),
            "{result:?}"
        );
        assert!(
            result.message.contains("did not verify") && result.hint.contains("localhost"),
            "{result:?}"
        );
        let tls = done.transcript.iter().find_map(|p| p.tls.clone()).unwrap();
        assert_eq!(tls.verification, i32::from(pb::Verification::Ignored));
    }
    // The same credential on the port with a valid certificate authenticates.
    let good = create_account(
        &mut a,
        pb::SmtpAccount {
            use_authentication: true,
            credential: cred.clone(),
            ..relay(
                "Verified",
                fx.port("SMTP_PORT_SUBMISSION"),
                pb::SecurityMode::StarttlsRequired,
            )
        },
    )
    .await;
    let (_, done) = run(
        &server,
        &good.name,
        pb::SmtpTest {
            to: to("verified"),
            stop_after: pb::StopAfter::Auth.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(state(&done), pb::TestState::Succeeded, "{:?}", done.result);
    server.stop().await.unwrap();
}
