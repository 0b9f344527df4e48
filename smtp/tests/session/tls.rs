//! STARTTLS, implicit TLS and certificate verification.

use super::*;

#[tokio::test]
async fn starttls_required_but_not_offered() {
    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_PLAIN),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ])
    .await;
    let mut cfg = config(port, Security::StartTlsRequired);
    cfg.auth = Some(
        Credentials::new(AuthMechanism::Plain, "alice", Secret::new(SECRET))
            .allowed_to([cfg.host.parse().unwrap()]),
    );
    let report = run(&cfg).await;
    let log = finish(peer).await;
    // Nothing sensitive went out: only EHLO and QUIT.
    assert_eq!(log.lines, ["EHLO client.example.org", "QUIT"]);
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::StartTlsUnavailable, Phase::StartTls),
        "{f}"
    );
    assert_eq!(
        f.hint,
        "server offers no STARTTLS; STARTTLS_REQUIRED refuses to send in clear"
    );
}

fn tls_config(port: u16, ca: &TestCa) -> SessionConfig {
    let mut cfg = config(port, Security::StartTlsRequired);
    cfg.host = "localhost".into();
    cfg.extra_ca_pem = Some(ca.pem.clone().into_bytes());
    cfg
}

fn starttls_steps(server: Arc<rustls::ServerConfig>) -> Vec<Step> {
    vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_STARTTLS),
        Step::Expect("STARTTLS"),
        Step::Say("220 2.0.0 Ready to start TLS"),
        Step::Tls(server),
    ]
}

#[tokio::test]
async fn starttls_with_valid_certificate_delivers() {
    let ca = TestCa::new("mailplane test CA");
    let mut steps = starttls_steps(ca.server_config(&["localhost"], false));
    steps.extend([
        Step::Expect("EHLO client.example.org"),
        Step::Say(EHLO_AUTH),
    ]);
    steps.extend(delivery_steps());
    let (port, peer) = peer::start(steps).await;
    let report = run(&tls_config(port, &ca)).await;
    finish(peer).await;
    assert_eq!(
        report
            .success()
            .unwrap_or_else(|| panic!("{report:#?}"))
            .queue_id
            .as_deref(),
        Some("4Xyz12")
    );
    assert_eq!(report.phases(Phase::Ehlo).count(), 2);
    let tls = report
        .phases(Phase::TlsHandshake)
        .next()
        .unwrap()
        .tls
        .clone()
        .unwrap();
    assert_eq!(tls.verification, Verification::Verified);
    assert_eq!(tls.protocol_version, "TLSv1.3");
    assert!(tls.cipher_suite.starts_with("TLS13_"), "{tls:?}");
    let cert = tls.peer_certificate.unwrap();
    assert_eq!(cert.sans, ["localhost"]);
    assert!(
        cert.subject.contains("localhost") && cert.issuer.contains("mailplane test CA"),
        "{cert:?}"
    );
    assert_eq!(report.capabilities, ["AUTH PLAIN LOGIN"]);
}

async fn starttls_failure(
    server: Arc<rustls::ServerConfig>,
    ca: &TestCa,
    ignore: bool,
) -> SessionReport {
    let mut steps = starttls_steps(server);
    if ignore {
        steps.extend([
            Step::Expect("EHLO"),
            Step::Say(EHLO_AUTH),
            Step::Expect("QUIT"),
            Step::Say("221 Bye"),
        ]);
    }
    let (port, peer) = peer::start(steps).await;
    let mut cfg = tls_config(port, ca);
    cfg.ignore_certificate_errors = ignore;
    cfg.stop_after = StopAfter::Tls;
    let report = run(&cfg).await;
    let log = tokio::time::timeout(Duration::from_secs(5), peer)
        .await
        .unwrap()
        .unwrap();
    if ignore {
        assert_eq!(log.error, None);
    }
    report
}

#[tokio::test]
async fn expired_certificate() {
    let ca = TestCa::new("mailplane test CA");
    let report = starttls_failure(ca.server_config(&["localhost"], true), &ca, false).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::CertificateExpired, Phase::TlsHandshake),
        "{f}"
    );
    assert_eq!(f.hint, "certificate expired on 2021-01-01T00:00:00Z");
    let tls = report
        .phases(Phase::TlsHandshake)
        .next()
        .unwrap()
        .tls
        .clone()
        .unwrap();
    assert!(
        matches!(tls.verification, Verification::Failed { .. }),
        "{tls:?}"
    );

    let report = starttls_failure(ca.server_config(&["localhost"], true), &ca, true).await;
    assert_eq!(
        report
            .success()
            .unwrap_or_else(|| panic!("{report:#?}"))
            .stopped_after,
        StopAfter::Tls
    );
    let tls = report
        .phases(Phase::TlsHandshake)
        .next()
        .unwrap()
        .tls
        .clone()
        .unwrap();
    match tls.verification {
        Verification::IgnoredByConfig { reason } => {
            assert!(reason.to_lowercase().contains("expired"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_ca() {
    let ca = TestCa::new("mailplane test CA");
    let other = TestCa::new("somebody else's CA");
    let report = starttls_failure(other.server_config(&["localhost"], false), &ca, false).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::CertificateUntrusted, Phase::TlsHandshake),
        "{f}"
    );
    assert!(f.hint.contains("somebody else's CA"), "{f}");
}

#[tokio::test]
async fn wrong_name() {
    let ca = TestCa::new("mailplane test CA");
    let report = starttls_failure(ca.server_config(&["mail.example.org"], false), &ca, false).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::CertificateNameMismatch, Phase::TlsHandshake),
        "{f}"
    );
    assert_eq!(f.hint, "certificate is for mail.example.org, not localhost");
}

#[tokio::test]
async fn implicit_tls_against_plain_smtp_port() {
    let (port, _peer) =
        peer::start(vec![Step::Say("220 mail.example.net ESMTP"), Step::Stall]).await;
    let report = run(&config(port, Security::ImplicitTls)).await;
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::ProtocolMismatch, Phase::TlsHandshake),
        "{f}"
    );
    assert_eq!(
        f.hint,
        format!("port {port} speaks plain SMTP (STARTTLS); set security to STARTTLS_REQUIRED")
    );
}

#[tokio::test]
async fn plaintext_against_tls_bytes() {
    let (port, _peer) = peer::start(vec![
        Step::Raw(b"\x15\x03\x03\x00\x02\x02\x28".to_vec()),
        Step::Stall,
    ])
    .await;
    let mut cfg = config(port, Security::StartTlsRequired);
    cfg.timeouts.banner = Duration::from_millis(500);
    let report = run(&cfg).await;
    let f = failure(&report);
    assert_eq!(f.phase, Phase::Banner, "{f}");
    assert_eq!(f.class, FailureClass::ProtocolMismatch, "{f}");
    assert_eq!(
        f.hint,
        format!("port {port} speaks implicit TLS; set security to IMPLICIT_TLS")
    );
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let ca = TestCa::new("mailplane test CA");
    let mut steps = vec![
        Step::Tls(ca.server_config(&["localhost"], false)),
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_AUTH),
    ];
    steps.extend(delivery_steps());
    let (port, peer) = peer::start(steps).await;
    let mut cfg = tls_config(port, &ca);
    cfg.security = Security::ImplicitTls;
    let report = run(&cfg).await;
    finish(peer).await;
    assert!(report.success().is_some(), "{report:#?}");
    let order: Vec<Phase> = report.transcript.iter().map(|r| r.phase).take(5).collect();
    assert_eq!(
        order,
        [
            Phase::Dns,
            Phase::Connect,
            Phase::TlsHandshake,
            Phase::Banner,
            Phase::Ehlo
        ]
    );
}

/// What the peer does after `220` to STARTTLS, in a STARTTLS handshake that fails.
async fn failed_handshake(
    after_starttls: Vec<Step>,
    class: FailureClass,
) -> (SessionReport, PeerLog) {
    let mut steps = vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_STARTTLS),
        Step::Expect("STARTTLS"),
        Step::Say("220 2.0.0 Ready to start TLS"),
    ];
    steps.extend(after_starttls);
    let (port, peer) = peer::start(steps).await;
    let mut cfg = config(port, Security::StartTlsRequired);
    cfg.auth = Some(
        Credentials::new(AuthMechanism::Plain, "alice", Secret::new(SECRET))
            .allowed_to([cfg.host.parse().unwrap()]),
    );
    let report = run_quick(cfg).await;
    let log = finish(peer).await;
    let f = expect_failure(&report, class, Phase::TlsHandshake);
    // The connection is unusable: nothing follows the failed handshake, in clear or not.
    assert_eq!(
        report.transcript.last().unwrap().phase,
        Phase::TlsHandshake,
        "{f}"
    );
    assert_eq!(log.lines, ["EHLO client.example.org", "STARTTLS"], "{f}");
    let tls = report
        .phases(Phase::TlsHandshake)
        .next()
        .unwrap()
        .tls
        .clone()
        .unwrap();
    assert!(
        matches!(tls.verification, Verification::Failed { .. }),
        "{tls:?}"
    );
    assert_eq!(tls.peer_certificate, None);
    (report, log)
}

#[tokio::test]
async fn tls_handshake_failures() {
    // A legacy server that speaks only TLS 1.0 answers the ClientHello in TLS 1.0.
    let (report, log) = failed_handshake(
        vec![
            Step::ExpectClientHello,
            Step::Raw(peer::tls10_server_hello()),
            Step::ReadUntilClosed,
        ],
        FailureClass::TlsHandshake,
    )
    .await;
    let f = failure(&report);
    assert_eq!(
        f.hint,
        "the server supports no TLS version or cipher this client accepts (TLS 1.2+)"
    );
    assert!(f.message.contains("TLS handshake failed"), "{f}");
    // The client said why before it hung up: a fatal protocol_version alert.
    assert_eq!(log.tail.first(), Some(&0x15), "{:02x?}", log.tail);
    assert!(log.tail.ends_with(&[2, 70]), "{:02x?}", log.tail);

    // A server that aborts with a handshake_failure alert (no common version or cipher).
    let (report, _) = failed_handshake(
        vec![
            Step::ExpectClientHello,
            Step::Raw(b"\x15\x03\x03\x00\x02\x02\x28".to_vec()),
            Step::ReadUntilClosed,
        ],
        FailureClass::TlsHandshake,
    )
    .await;
    let f = failure(&report);
    assert!(
        f.hint.contains("alert") && f.hint.contains("HandshakeFailure"),
        "{f}"
    );

    // A server that accepts STARTTLS, then answers the ClientHello with something that is not
    // TLS: the port does not really speak TLS.
    let (report, _) = failed_handshake(
        vec![
            Step::ExpectClientHello,
            Step::Say("500 5.5.1 what is this?"),
            Step::ReadUntilClosed,
        ],
        FailureClass::ProtocolMismatch,
    )
    .await;
    let f = failure(&report);
    assert!(f.message.contains("did not answer in TLS"), "{f}");
    assert!(f.hint.contains("did not speak TLS"), "{f}");

    // A server that hangs up in the middle of the handshake.
    let (report, _) = failed_handshake(
        vec![Step::ExpectClientHello, Step::Close],
        FailureClass::TlsHandshake,
    )
    .await;
    let f = failure(&report);
    assert!(f.message.contains("TLS handshake failed"), "{f}");
    assert!(f.hint.contains("hung up during the TLS handshake"), "{f}");
}
