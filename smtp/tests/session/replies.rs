//! Replies, timeouts, AUTH, `stop_after` and the destination policy.

use super::*;

#[tokio::test]
async fn success_with_queue_id_wire_bytes_headers_and_redaction() {
    let (logs, _guard) = capture_tracing();
    let mut steps = vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO client.example.org"),
        Step::Say(EHLO_PLAIN),
        Step::Expect("AUTH PLAIN "),
        Step::Say("235 2.7.0 Authentication successful"),
    ];
    steps.extend(delivery_steps());
    let (port, peer) = peer::start(steps).await;
    let mut cfg = config(port, Security::None);
    cfg.allow_plaintext_auth = true;
    cfg.auth = Some(
        Credentials::new(AuthMechanism::Plain, "alice", Secret::new(SECRET))
            .allowed_to([cfg.host.parse().unwrap()]),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let report = run_session(&cfg, &DestinationPolicy::default(), Some(&tx))
        .await
        .unwrap();
    drop(tx);
    let log = finish(peer).await;

    let success = report.success().unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(success.queue_id.as_deref(), Some("4Xyz12"));
    assert_eq!(success.stopped_after, StopAfter::Delivery);
    let phases: Vec<(Phase, PhaseStatus)> = report
        .transcript
        .iter()
        .map(|r| (r.phase, r.status))
        .collect();
    assert_eq!(
        phases,
        [
            (Phase::Dns, PhaseStatus::Ok),
            (Phase::Connect, PhaseStatus::Ok),
            (Phase::Banner, PhaseStatus::Ok),
            (Phase::Ehlo, PhaseStatus::Ok),
            (Phase::StartTls, PhaseStatus::Skipped),
            (Phase::TlsHandshake, PhaseStatus::Skipped),
            (Phase::Auth, PhaseStatus::Ok),
            (Phase::MailFrom, PhaseStatus::Ok),
            (Phase::RcptTo, PhaseStatus::Ok),
            (Phase::Data, PhaseStatus::Ok),
            (Phase::Quit, PhaseStatus::Ok),
        ]
    );
    assert!(
        report
            .capabilities
            .iter()
            .any(|c| c == "AUTH PLAIN LOGIN XOAUTH2")
    );
    let banner = report.phases(Phase::Banner).next().unwrap();
    assert_eq!(banner.reply.as_ref().unwrap().code, 220);

    // Live events: a Started and a Finished per record, in order.
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    assert_eq!(events.len(), report.transcript.len() * 2);
    for (pair, rec) in events.chunks(2).zip(&report.transcript) {
        assert_eq!(pair[0], PhaseEvent::Started(rec.phase));
        assert_eq!(pair[1], PhaseEvent::Finished(Box::new(rec.clone())));
    }

    // The wire: AUTH PLAIN really carried the secret, and nothing else shows it.
    let payload = B64.encode(format!("\0alice\0{SECRET}"));
    assert!(
        log.lines
            .iter()
            .any(|l| *l == format!("AUTH PLAIN {payload}")),
        "{:?}",
        log.lines
    );
    let auth = report.phases(Phase::Auth).next().unwrap();
    assert_eq!(auth.commands, ["AUTH PLAIN <redacted>"]);
    let transcript = format!("{report:?} {report:#?} {events:?} {cfg:?}");
    assert!(!transcript.contains(SECRET) && !transcript.contains(&payload));
    let logs = logs.text();
    assert!(logs.contains("C: AUTH PLAIN <redacted>"), "{logs}");
    assert!(logs.contains("S: 250 2.0.0 Ok: queued as 4Xyz12"), "{logs}");
    assert!(!logs.contains(SECRET) && !logs.contains(&payload), "{logs}");

    // DATA: CRLF only, dot-stuffed, one terminator at the very end.
    let data = &log.data;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            assert_eq!(data[i - 1], b'\r', "bare LF at {i}");
        }
        if *b == b'\r' {
            assert_eq!(data[i + 1], b'\n', "bare CR at {i}");
        }
    }
    let text = String::from_utf8(data.clone()).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(
        body,
        "first\r\nbare LF\r\nbare CR\r\n..\r\nafter lone dot\r\n..leading dot\r\n\r\n..\r\nsmuggled\r\n..\r\n\r\n-- footer\r\n.\r\n"
    );
    assert_eq!(text.matches("\r\n.\r\n").count(), 1);
    assert!(text.ends_with("\r\n.\r\n"));
    for header in [
        "From: Alice <alice@example.org>\r\n",
        "To: bob@example.net\r\n",
        "Reply-To: replies@example.org\r\n",
        "Disposition-Notification-To: alice@example.org\r\n",
        "Subject: scripted test\r\n",
        &format!("Message-ID: {}\r\n", report.message_id.as_deref().unwrap()),
    ] {
        assert!(text.contains(header), "missing {header:?} in {text}");
    }
    assert!(text.contains("\r\nDate: "), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain; charset=utf-8\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn silent_banner_times_out_at_banner() {
    let (port, _peer) = peer::start(vec![Step::Stall]).await;
    let mut cfg = config(port, Security::StartTlsRequired);
    cfg.timeouts.banner = Duration::from_millis(300);
    let t0 = Instant::now();
    let report = run(&cfg).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::Timeout, Phase::Banner),
        "{f}"
    );
    assert!(f.hint.contains("IMPLICIT_TLS"), "{f}");
    assert!(f.message.contains("300ms"), "{f}");
    assert_eq!(
        report.transcript.last().unwrap().status,
        PhaseStatus::Failed
    );
}

#[tokio::test]
async fn overall_deadline_bounds_a_slow_phase() {
    let (port, _peer) =
        peer::start(vec![Step::Say("220 hi"), Step::Expect("EHLO"), Step::Stall]).await;
    let mut cfg = config(port, Security::None);
    cfg.timeouts.overall = Duration::from_millis(400);
    let t0 = Instant::now();
    let report = run(&cfg).await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::Timeout, Phase::Ehlo),
        "{f}"
    );
    assert!(f.message.contains("overall deadline"), "{f}");
}

#[tokio::test]
async fn rcpt_451_is_temporary() {
    let mut steps = up_to_rcpt();
    steps.extend([
        Step::Say("451 4.7.1 Greylisted, try again later"),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ]);
    let (port, peer) = peer::start(steps).await;
    let report = run(&config(port, Security::StartTlsOpportunistic)).await;
    finish(peer).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::TemporaryFailure, Phase::RcptTo),
        "{f}"
    );
    assert!(
        f.hint.contains("451") && f.hint.contains("retry later"),
        "{f}"
    );
    assert_eq!(f.reply.as_ref().unwrap().enhanced.as_deref(), Some("4.7.1"));
    // Opportunistic without STARTTLS on offer continued in clear.
    assert_eq!(
        report.phases(Phase::StartTls).next().unwrap().status,
        PhaseStatus::Skipped
    );
    assert_eq!(report.transcript.last().unwrap().phase, Phase::Quit);
}

#[tokio::test]
async fn rcpt_550_is_recipient_rejected() {
    let mut steps = up_to_rcpt();
    steps.extend([
        Step::Say("550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ]);
    let (port, peer) = peer::start(steps).await;
    let report = run(&config(port, Security::None)).await;
    finish(peer).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::RecipientRejected, Phase::RcptTo),
        "{f}"
    );
    assert!(
        f.hint.contains("550") && f.hint.contains("User unknown"),
        "{f}"
    );
}

#[tokio::test]
async fn auth_535_is_rejected_and_login_secret_is_redacted() {
    let (logs, _guard) = capture_tracing();
    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_AUTH),
        Step::Expect("AUTH LOGIN"),
        Step::Say("334 VXNlcm5hbWU6"),
        Step::Expect("YWxpY2U="),
        Step::Say("334 UGFzc3dvcmQ6"),
        Step::Expect(""),
        // A hostile server echoing the password must not get it into the transcript.
        Step::Raw(
            format!("535-5.7.8 echo {SECRET}\r\n535 5.7.8 Error: authentication failed\r\n")
                .into_bytes(),
        ),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ])
    .await;
    let mut cfg = config(port, Security::None);
    cfg.allow_plaintext_auth = true;
    cfg.auth = Some(
        Credentials::new(AuthMechanism::Login, "alice", Secret::new(SECRET))
            .allowed_to([cfg.host.parse().unwrap()]),
    );
    let report = run(&cfg).await;
    let log = finish(peer).await;
    assert_eq!(log.lines[3], B64.encode(SECRET));
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::AuthRejected, Phase::Auth),
        "{f}"
    );
    let auth = report.phases(Phase::Auth).next().unwrap();
    assert_eq!(auth.commands, ["AUTH LOGIN", "YWxpY2U=", "<redacted>"]);
    let all = format!("{report:?}{report:#?}{}", logs.text());
    assert!(
        !all.contains(SECRET) && !all.contains(&B64.encode(SECRET)),
        "{all}"
    );
    assert!(all.contains("echo <redacted>"));
}

#[tokio::test]
async fn mechanism_not_offered() {
    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say("250-mail.example.net\r\n250 AUTH LOGIN"),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ])
    .await;
    let mut cfg = config(port, Security::None);
    cfg.allow_plaintext_auth = true;
    cfg.auth = Some(
        Credentials::new(AuthMechanism::Plain, "alice", Secret::new(SECRET))
            .allowed_to([cfg.host.parse().unwrap()]),
    );
    let report = run(&cfg).await;
    finish(peer).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::AuthMechanismUnsupported, Phase::Auth),
        "{f}"
    );
    assert_eq!(f.hint, "server does not offer AUTH PLAIN (offers: LOGIN)");
}

#[tokio::test]
async fn xoauth2_success_stop_after_auth() {
    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_PLAIN),
        Step::Expect("AUTH XOAUTH2 "),
        Step::Say("235 2.7.0 Accepted"),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ])
    .await;
    let mut cfg = config(port, Security::None);
    cfg.allow_plaintext_auth = true;
    cfg.auth = Some(
        Credentials::new(
            AuthMechanism::XOAuth2,
            "alice@example.org",
            Secret::new(SECRET),
        )
        .allowed_to([cfg.host.parse().unwrap()]),
    );
    cfg.stop_after = StopAfter::Auth;
    let report = run(&cfg).await;
    let log = finish(peer).await;
    let sent = log.lines[1].strip_prefix("AUTH XOAUTH2 ").unwrap();
    assert_eq!(
        B64.decode(sent).unwrap(),
        format!("user=alice@example.org\x01auth=Bearer {SECRET}\x01\x01").into_bytes()
    );
    assert_eq!(report.success().unwrap().stopped_after, StopAfter::Auth);
    assert_eq!(
        report.phases(Phase::MailFrom).next().unwrap().status,
        PhaseStatus::Skipped
    );
    assert!(!format!("{report:?}").contains(SECRET));
}

#[tokio::test]
async fn connection_dropped_mid_data() {
    let mut steps = up_to_rcpt();
    steps.extend([
        Step::Say("250 2.1.5 Ok"),
        Step::Expect("DATA"),
        Step::Say("354 go ahead"),
        Step::ReadSomeThenClose(10),
    ]);
    let (port, peer) = peer::start(steps).await;
    let report = run(&config(port, Security::None)).await;
    finish(peer).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::TemporaryFailure, Phase::Data),
        "{f}"
    );
}

#[tokio::test]
async fn final_dot_timeout_fires_at_data() {
    let mut steps = up_to_rcpt();
    steps.extend([
        Step::Say("250 2.1.5 Ok"),
        Step::Expect("DATA"),
        Step::Say("354 go ahead"),
        Step::ReadData,
        Step::Stall,
    ]);
    let (port, _peer) = peer::start(steps).await;
    let mut cfg = config(port, Security::None);
    cfg.timeouts.data_end = Duration::from_millis(300);
    let report = run(&cfg).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::Timeout, Phase::Data),
        "{f}"
    );
    assert!(f.hint.contains("did not confirm the message"), "{f}");
}

#[tokio::test]
async fn stop_after_connect() {
    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_STARTTLS),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ])
    .await;
    let mut cfg = config(port, Security::StartTlsRequired);
    cfg.stop_after = StopAfter::Connect;
    cfg.message = None;
    let report = run(&cfg).await;
    finish(peer).await;
    assert_eq!(report.success().unwrap().stopped_after, StopAfter::Connect);
    for phase in [
        Phase::StartTls,
        Phase::TlsHandshake,
        Phase::Auth,
        Phase::MailFrom,
        Phase::RcptTo,
        Phase::Data,
    ] {
        assert_eq!(
            report.phases(phase).next().unwrap().status,
            PhaseStatus::Skipped,
            "{phase}"
        );
    }
    assert_eq!(report.transcript.last().unwrap().phase, Phase::Quit);
}

#[tokio::test]
async fn destination_policy_blocks_before_connecting() {
    // Nothing listens on this port: a connect attempt would say CONNECTION_REFUSED.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let policy = DestinationPolicy::with_rules(vec!["127.0.0.0/8".parse().unwrap()], Vec::new());
    let report = run_session(&config(port, Security::None), &policy, None)
        .await
        .unwrap();
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::DestinationNotAllowed, Phase::Connect),
        "{f}"
    );
    assert!(f.message.contains("deny 127.0.0.0/8"), "{f}");

    let report = run(&config(port, Security::None)).await;
    assert_eq!(failure(&report).class, FailureClass::ConnectionRefused);
}

#[tokio::test]
async fn bad_configuration_is_an_error_before_connecting() {
    let mut cfg = config(1, Security::None);
    cfg.helo_name = Some("bad name\r\nRSET".into());
    assert!(matches!(
        run_session(&cfg, &DestinationPolicy::default(), None).await,
        Err(SessionError::InvalidHeloName(_))
    ));
    let mut cfg = config(1, Security::None);
    cfg.message = None;
    assert!(matches!(
        run_session(&cfg, &DestinationPolicy::default(), None).await,
        Err(SessionError::MissingMessage)
    ));
    let mut cfg = config(1, Security::StartTlsRequired);
    cfg.extra_ca_pem = Some(b"not pem".to_vec());
    assert!(matches!(
        run_session(&cfg, &DestinationPolicy::default(), None).await,
        Err(SessionError::Tls(_))
    ));
}

#[tokio::test]
async fn dns_failure() {
    let mut cfg = config(25, Security::None);
    cfg.host = "does-not-exist.invalid".into();
    let report = run(&cfg).await;
    let f = failure(&report);
    assert_eq!((f.class, f.phase), (FailureClass::Dns, Phase::Dns), "{f}");
}

#[tokio::test]
async fn mail_from_553_is_sender_rejected() {
    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_PLAIN),
        Step::Expect("MAIL FROM:<bounces@example.org>"),
        Step::Say("553 5.7.1 <bounces@example.org>: Sender address rejected: not owned by user"),
        Step::Expect("QUIT"),
        Step::Say("221 2.0.0 Bye"),
    ])
    .await;
    let report = run_quick(config(port, Security::None)).await;
    let log = finish(peer).await;
    let f = expect_failure(&report, FailureClass::SenderRejected, Phase::MailFrom);
    assert!(
        f.hint.contains("553") && f.hint.contains("Sender address rejected"),
        "{f}"
    );
    assert_eq!(f.reply.as_ref().unwrap().code, 553);
    assert_eq!(f.reply.as_ref().unwrap().enhanced.as_deref(), Some("5.7.1"));
    // No RCPT TO or DATA after the refusal, just a polite QUIT.
    assert_eq!(
        log.lines,
        [
            "EHLO client.example.org",
            "MAIL FROM:<bounces@example.org>",
            "QUIT"
        ]
    );
    assert_eq!(report.phases(Phase::RcptTo).count(), 0);
    let quit = report.transcript.last().unwrap();
    assert_eq!((quit.phase, quit.status), (Phase::Quit, PhaseStatus::Ok));
}

#[tokio::test]
async fn final_dot_554_is_message_rejected() {
    let mut steps = up_to_rcpt();
    steps.extend([
        Step::Say("250 2.1.5 Ok"),
        Step::Expect("DATA"),
        Step::Say("354 End data with <CR><LF>.<CR><LF>"),
        Step::ReadData,
        Step::Say("554 5.7.1 Message rejected: spam content detected"),
        Step::Expect("QUIT"),
        Step::Say("221 2.0.0 Bye"),
    ]);
    let (port, peer) = peer::start(steps).await;
    let report = run_quick(config(port, Security::None)).await;
    let log = finish(peer).await;
    let f = expect_failure(&report, FailureClass::MessageRejected, Phase::Data);
    assert!(
        f.hint.contains("554") && f.hint.contains("spam content detected"),
        "{f}"
    );
    assert_eq!(f.reply.as_ref().unwrap().code, 554);
    // The whole message went out before the refusal.
    assert!(log.data.ends_with(b"\r\n.\r\n"));
    let data = report.phases(Phase::Data).next().unwrap();
    assert_eq!(data.commands, ["DATA", "."]);
    assert_eq!(data.reply.as_ref().unwrap().code, 554);
    assert_eq!(log.lines.last().map(String::as_str), Some("QUIT"));
    assert_eq!(report.transcript.last().unwrap().phase, Phase::Quit);
}

#[tokio::test]
async fn banner_554_and_ehlo_5xx_are_permanent_failures() {
    // RFC 5321 §3.1: a 554 greeting means "no SMTP service here"; the client should QUIT.
    let (port, peer) = peer::start(vec![
        Step::Say("554 5.3.2 mail.example.net: no SMTP service for you"),
        Step::Expect("QUIT"),
        Step::Say("221 2.0.0 Bye"),
    ])
    .await;
    let report = run_quick(config(port, Security::StartTlsRequired)).await;
    let log = finish(peer).await;
    let f = expect_failure(&report, FailureClass::PermanentFailure, Phase::Banner);
    assert!(
        f.hint.contains("554") && f.hint.contains("no SMTP service"),
        "{f}"
    );
    assert_eq!(log.lines, ["QUIT"]);
    assert_eq!(report.phases(Phase::Ehlo).count(), 0);

    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO client.example.org"),
        Step::Say("550 5.7.1 client.example.org: access denied"),
        Step::Expect("QUIT"),
        Step::Say("221 2.0.0 Bye"),
    ])
    .await;
    let report = run_quick(config(port, Security::None)).await;
    finish(peer).await;
    let f = expect_failure(&report, FailureClass::PermanentFailure, Phase::Ehlo);
    assert!(
        f.hint.contains("550") && f.hint.contains("access denied"),
        "{f}"
    );
    assert_eq!(report.phases(Phase::MailFrom).count(), 0);
}
