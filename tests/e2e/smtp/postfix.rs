//! Test e-mails through the real Postfix with Dovecot SASL.

use super::*;
use mailplane_tests::create_account;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn delivers_with_every_header_and_a_full_transcript() {
    let fx = SmtpFixtures::load();
    let server = server(&fx).await;
    let cred = credential(&server, &fx, true).await;
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            sender_email: "Alerts <alerts@mailplane.test>".into(),
            reply_to_email: "replies@mailplane.test".into(),
            return_path_email: "bounces@mailplane.test".into(),
            confirmation_email: "reads@mailplane.test".into(),
            send_read_confirmation: true,
            enable_footer: true,
            footer_text: "-- \nmailplane footer".into(),
            use_authentication: true,
            credential: cred,
            helo_name: "probe.mailplane.test".into(),
            ..relay(
                "Submission",
                fx.port("SMTP_PORT_SUBMISSION"),
                pb::SecurityMode::StarttlsRequired,
            )
        },
    )
    .await;
    let rcpt = to("full");
    let (events, done) = run(
        &server,
        &acct.name,
        pb::SmtpTest {
            to: rcpt.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(state(&done), pb::TestState::Succeeded, "{:?}", done.result);
    let result = done.result.clone().unwrap();
    assert!(
        !result.queue_id.is_empty(),
        "Postfix's queue id is reported: {result:?}"
    );
    assert_eq!(done.subject, "TEST MESSAGE!");
    assert!(done.start_time.is_some() && done.end_time.is_some());
    assert_eq!(done.executed_by, "direct");
    assert_eq!(
        phases(&done),
        vec![
            pb::Phase::DnsResolve,
            pb::Phase::TcpConnect,
            pb::Phase::Banner,
            pb::Phase::Ehlo,
            pb::Phase::Starttls,
            pb::Phase::TlsHandshake,
            pb::Phase::Ehlo,
            pb::Phase::Auth,
            pb::Phase::MailFrom,
            pb::Phase::RcptTo,
            pb::Phase::Data,
            pb::Phase::Quit,
        ]
    );
    let tls = done
        .transcript
        .iter()
        .find_map(|p| p.tls.clone())
        .expect("TLS details");
    assert_eq!(tls.verification, i32::from(pb::Verification::Verified));
    assert!(
        tls.protocol_version.contains("1.3") || tls.protocol_version.contains("1.2"),
        "{tls:?}"
    );
    assert!(!tls.cipher_suite.is_empty());
    let cert = tls.peer_certificate.unwrap();
    assert!(
        cert.sans.iter().any(|s| s.contains("localhost")),
        "{cert:?}"
    );
    assert!(!cert.not_after.is_empty() && !cert.issuer.is_empty());
    assert!(
        done.capabilities.iter().any(|c| c.starts_with("AUTH")),
        "{:?}",
        done.capabilities
    );
    // Live events: every phase started before it finished, and the stream ended with the test.
    let started = events
        .iter()
        .filter(|e| matches!(e, Event::PhaseStarted(_)))
        .count();
    let finished = events
        .iter()
        .filter(|e| matches!(e, Event::PhaseFinished(_)))
        .count();
    assert_eq!(finished, done.transcript.len());
    assert!(
        started >= finished - 1,
        "started {started}, finished {finished}"
    );

    let mail = fx.delivered(&rcpt).await;
    let headers = mail.split("\n\n").next().unwrap().to_owned();
    assert!(
        headers.contains("Return-Path: <bounces@mailplane.test>"),
        "{headers}"
    );
    assert!(
        headers.contains("From: Alerts <alerts@mailplane.test>"),
        "{headers}"
    );
    assert!(
        headers.contains("Reply-To: replies@mailplane.test"),
        "{headers}"
    );
    assert!(
        headers.contains("Disposition-Notification-To: reads@mailplane.test")
            || headers.contains("Disposition-Notification-To: <reads@mailplane.test>"),
        "{headers}"
    );
    assert!(headers.contains("Subject: TEST MESSAGE!"), "{headers}");
    assert!(
        headers.contains("Message-ID: ") && headers.contains("Date: "),
        "{headers}"
    );
    assert!(
        headers.contains(&result.message_id),
        "the reported Message-ID is the one sent"
    );
    assert!(
        mail.contains("charset=UTF-8") || mail.contains("charset=\"UTF-8\""),
        "{mail}"
    );
    assert!(
        mail.contains("ATTENTION: THIS IS A TEST MESSAGE!"),
        "{mail}"
    );
    assert!(
        mail.contains("mailplane footer"),
        "the footer is appended: {mail}"
    );
    assert!(
        mail.contains("helo=probe.mailplane.test") || mail.contains("probe.mailplane.test"),
        "the HELO name is used"
    );

    // The history keeps it.
    let list = server
        .tests()
        .list_tests(pb::ListTestsRequest {
            parent: acct.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.tests.len(), 1);
    assert_eq!(list.tests[0].name, done.name);
    let got = server
        .tests()
        .get_test(pb::GetTestRequest {
            name: done.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.transcript.len(), done.transcript.len());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn security_modes_on_the_right_and_the_wrong_port() {
    let fx = SmtpFixtures::load();
    let server = server(&fx).await;
    let cred = credential(&server, &fx, true).await;
    let mut a = server.accounts();
    let (plain, submission, implicit) = (
        fx.port("SMTP_PORT_PLAIN"),
        fx.port("SMTP_PORT_SUBMISSION"),
        fx.port("SMTP_PORT_IMPLICIT"),
    );
    let cases = [
        (
            "none on plain",
            plain,
            pb::SecurityMode::None,
            false,
            Ok(()),
        ),
        (
            "opportunistic on plain",
            plain,
            pb::SecurityMode::StarttlsOpportunistic,
            false,
            Ok(()),
        ),
        (
            "required on submission",
            submission,
            pb::SecurityMode::StarttlsRequired,
            true,
            Ok(()),
        ),
        (
            "implicit on 465",
            implicit,
            pb::SecurityMode::ImplicitTls,
            true,
            Ok(()),
        ),
        (
            "implicit on a STARTTLS port",
            submission,
            pb::SecurityMode::ImplicitTls,
            true,
            Err(pb::FailureClass::ProtocolMismatch),
        ),
        (
            "STARTTLS on the implicit port",
            implicit,
            pb::SecurityMode::StarttlsRequired,
            true,
            Err(pb::FailureClass::ProtocolMismatch),
        ),
    ];
    for (i, (what, port, security, auth, expect)) in cases.into_iter().enumerate() {
        let acct = create_account(
            &mut a,
            pb::SmtpAccount {
                use_authentication: auth,
                credential: if auth { cred.clone() } else { String::new() },
                ..relay(&format!("mode {i}"), port, security)
            },
        )
        .await;
        let (_, done) = run(
            &server,
            &acct.name,
            pb::SmtpTest {
                to: to("mode"),
                ..Default::default()
            },
        )
        .await;
        match expect {
            Ok(()) => assert_eq!(
                state(&done),
                pb::TestState::Succeeded,
                "{what}: {:?}",
                done.result
            ),
            Err(want) => {
                assert_eq!(state(&done), pb::TestState::Failed, "{what}");
                assert_eq!(class(&done), want, "{what}: {:?}", done.result);
                let hint = done.result.clone().unwrap().hint;
                assert!(
                    hint.contains("IMPLICIT_TLS") || hint.contains("STARTTLS"),
                    "{what}: hint {hint:?}"
                );
            }
        }
        if security == pb::SecurityMode::None {
            assert!(
                !phases(&done).contains(&pb::Phase::TlsHandshake),
                "NONE never starts TLS"
            );
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn certificates_and_auth_failures_are_classified() {
    let fx = SmtpFixtures::load();
    let server = server(&fx).await;
    let right = credential(&server, &fx, true).await;
    let wrong = credential(&server, &fx, false).await;
    let mut a = server.accounts();
    let cases = [
        (
            "expired",
            fx.port("SMTP_PORT_EXPIRED"),
            false,
            None,
            pb::FailureClass::CertificateExpired,
        ),
        (
            "unknown CA",
            fx.port("SMTP_PORT_UNKNOWN_CA"),
            false,
            None,
            pb::FailureClass::CertificateUntrusted,
        ),
        (
            "wrong password",
            fx.port("SMTP_PORT_SUBMISSION"),
            false,
            Some(wrong.clone()),
            pb::FailureClass::AuthRejected,
        ),
    ];
    for (i, (what, port, ignore, cred, want)) in cases.into_iter().enumerate() {
        let acct = create_account(
            &mut a,
            pb::SmtpAccount {
                ignore_certificate_errors: ignore,
                use_authentication: cred.is_some(),
                credential: cred.unwrap_or_default(),
                ..relay(
                    &format!("cert {i}"),
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
                to: to("cert"),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(class(&done), want, "{what}: {:?}", done.result);
        assert!(
            !done.result.clone().unwrap().hint.is_empty(),
            "{what} has a hint"
        );
    }
    // Ignoring certificate errors gets through both bad certificates, and says so.
    for (i, port) in [
        fx.port("SMTP_PORT_EXPIRED"),
        fx.port("SMTP_PORT_UNKNOWN_CA"),
    ]
    .into_iter()
    .enumerate()
    {
        let acct = create_account(
            &mut a,
            pb::SmtpAccount {
                ignore_certificate_errors: true,
                ..relay(
                    &format!("ignore {i}"),
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
                to: to("ignore"),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(state(&done), pb::TestState::Succeeded, "{:?}", done.result);
        let tls = done.transcript.iter().find_map(|p| p.tls.clone()).unwrap();
        assert_eq!(tls.verification, i32::from(pb::Verification::Ignored));
        assert!(!tls.verification_detail.is_empty());
    }
    let _ = right;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn stop_after_and_locales() {
    let fx = SmtpFixtures::load();
    let server = server(&fx).await;
    let cred = credential(&server, &fx, true).await;
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            use_authentication: true,
            credential: cred,
            ..relay(
                "Stops",
                fx.port("SMTP_PORT_SUBMISSION"),
                pb::SecurityMode::StarttlsRequired,
            )
        },
    )
    .await;
    for (stop, last) in [
        (pb::StopAfter::Connect, pb::Phase::Ehlo),
        (pb::StopAfter::Tls, pb::Phase::Ehlo),
        (pb::StopAfter::Auth, pb::Phase::Auth),
    ] {
        let rcpt = to("stop");
        let (_, done) = run(
            &server,
            &acct.name,
            pb::SmtpTest {
                to: rcpt,
                stop_after: stop.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            state(&done),
            pb::TestState::Succeeded,
            "{stop:?}: {:?}",
            done.result
        );
        let ph = phases(&done);
        assert!(
            !ph.contains(&pb::Phase::MailFrom),
            "{stop:?} sends nothing: {ph:?}"
        );
        let before_quit: Vec<_> = ph.iter().filter(|p| **p != pb::Phase::Quit).collect();
        assert_eq!(**before_quit.last().unwrap(), last, "{stop:?}: {ph:?}");
    }
    let rcpt = to("ptbr");
    let (_, done) = run(
        &server,
        &acct.name,
        pb::SmtpTest {
            to: rcpt.clone(),
            locale: "pt-BR".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(state(&done), pb::TestState::Succeeded);
    assert_eq!(done.subject, "MENSAGEM DE TESTE!");
    assert_eq!(done.body, "ATENÇÃO: ESTA É UMA MENSAGEM DE TESTE!");
    let mail = fx.delivered(&rcpt).await;
    assert!(mail.contains("Subject: MENSAGEM DE TESTE!"), "{mail}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn an_unreadable_credential_is_its_own_failure_class() {
    // Nothing listens here, and nothing may be sent: the test must fail before connecting.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::start(Backend::Sqlite).await;
    let credential = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "sealed".into(),
                username: "alice".into(),
                secret: "s3cret".into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            use_authentication: true,
            credential,
            allow_plaintext_auth: true,
            ..relay("Sealed", port, pb::SecurityMode::None)
        },
    )
    .await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.sqlite_path().display()))
        .await
        .unwrap();
    // A secret this server's key cannot open (as if it were sealed under another key), then
    // no secret at all.
    for corrupt in [
        "UPDATE credentials SET secret_ciphertext = x'00112233445566778899aabbccddeeff0011'",
        "UPDATE credentials SET secret_nonce = NULL, secret_ciphertext = NULL",
    ] {
        sqlx::query(corrupt).execute(&pool).await.unwrap();
        let (events, done) = run(
            &server,
            &acct.name,
            pb::SmtpTest {
                to: to("sealed"),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(state(&done), pb::TestState::Failed, "{corrupt}");
        assert_eq!(
            class(&done),
            pb::FailureClass::CredentialUnavailable,
            "{corrupt}: {:?}",
            done.result
        );
        let result = done.result.clone().unwrap();
        assert!(result.hint.contains("key file"), "{}", result.hint);
        assert!(
            done.transcript.is_empty(),
            "no phase ran: {:?}",
            done.transcript
        );
        assert!(
            !events.iter().any(|e| matches!(e, Event::PhaseStarted(_))),
            "{events:?}"
        );
        // Stored the same way.
        let got = server
            .tests()
            .get_test(pb::GetTestRequest {
                name: done.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(class(&got), pb::FailureClass::CredentialUnavailable);
    }
    pool.close().await;
    server.stop().await.unwrap();
}
