//! A credential goes only where it is allowed: to a host and port among its
//! `allowed_destinations`, and over TLS only to a relay whose certificate verified.

use super::*;

fn credentials(allowed: &[&str]) -> Credentials {
    Credentials::new(AuthMechanism::Plain, "alice", Secret::new(SECRET))
        .allowed_to(allowed.iter().map(|d| d.parse().unwrap()))
}

/// A relay in clear that offers AUTH, and expects the client to give up politely.
fn offers_auth_then_quit() -> Vec<Step> {
    vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_PLAIN),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ]
}

fn assert_no_auth(log: &PeerLog) {
    assert!(
        !log.lines
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "AUTH was sent: {log:?}"
    );
}

#[tokio::test]
async fn auth_to_a_destination_outside_the_list_is_refused() {
    for allowed in [
        &["relay.example.com"][..],
        &["127.0.0.1:1"],
        &["*.example.com", "127.0.0.2"],
        &[],
    ] {
        let (port, peer) = peer::start(offers_auth_then_quit()).await;
        let mut cfg = config(port, Security::None);
        // Only the destination rule stands in the way.
        cfg.allow_plaintext_auth = true;
        cfg.auth = Some(credentials(allowed));
        let report = run(&cfg).await;
        let log = finish(peer).await;
        assert_eq!(
            log.lines,
            ["EHLO client.example.org", "QUIT"],
            "{allowed:?}"
        );
        assert_no_auth(&log);
        let f = failure(&report);
        assert_eq!(
            (f.class, f.phase),
            (FailureClass::CredentialDestinationDenied, Phase::Auth),
            "{allowed:?}: {f}"
        );
        let target = format!("127.0.0.1:{port}");
        assert!(f.message.contains(&target), "{f}");
        assert!(
            f.hint.contains(&target) && f.hint.contains("allowed_destinations"),
            "{f}"
        );
        assert!(!format!("{report:?}").contains(SECRET));
    }
}

#[tokio::test]
async fn auth_to_an_allowed_destination_goes_out() {
    for allowed in [&["127.0.0.1"][..], &["relay.example.com", "127.0.0.1:PORT"]] {
        let (port, peer) = peer::start(vec![
            Step::Say("220 mail.example.net ESMTP"),
            Step::Expect("EHLO"),
            Step::Say(EHLO_PLAIN),
            Step::Expect("AUTH PLAIN"),
            Step::Say("235 2.7.0 Authentication successful"),
            Step::Expect("QUIT"),
            Step::Say("221 Bye"),
        ])
        .await;
        let allowed: Vec<String> = allowed
            .iter()
            .map(|a| a.replace("PORT", &port.to_string()))
            .collect();
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        let mut cfg = config(port, Security::None);
        cfg.allow_plaintext_auth = true;
        cfg.auth = Some(credentials(&allowed));
        cfg.stop_after = StopAfter::Auth;
        let report = run(&cfg).await;
        finish(peer).await;
        assert!(report.success().is_some(), "{allowed:?}: {report:#?}");
    }
}

/// STARTTLS to a relay whose certificate comes from a CA the session does not trust, with
/// `ignore_certificate_errors`: the session goes on, but AUTH is not sent.
async fn unverified_starttls(
    security: Security,
    allow_plaintext_auth: bool,
) -> (SessionReport, PeerLog) {
    let trusted = TestCa::new("mailplane test CA");
    let other = TestCa::new("someone else's CA");
    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_STARTTLS),
        Step::Expect("STARTTLS"),
        Step::Say("220 2.0.0 Ready to start TLS"),
        Step::Tls(other.server_config(&["localhost"], false)),
        Step::Expect("EHLO client.example.org"),
        Step::Say(EHLO_AUTH),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ])
    .await;
    let mut cfg = config(port, security);
    cfg.host = "localhost".into();
    cfg.extra_ca_pem = Some(trusted.pem.clone().into_bytes());
    cfg.ignore_certificate_errors = true;
    cfg.allow_plaintext_auth = allow_plaintext_auth;
    cfg.auth = Some(credentials(&["localhost"]));
    let report = run(&cfg).await;
    let log = finish(peer).await;
    (report, log)
}

#[tokio::test]
async fn starttls_required_sends_no_auth_to_an_unverified_certificate() {
    for (security, allow_plaintext_auth) in [
        (Security::StartTlsRequired, false),
        // Not even an admin's allow_plaintext_auth lets AUTH go to an unverified relay when
        // the account asks for TLS.
        (Security::StartTlsRequired, true),
        (Security::StartTlsOpportunistic, false),
    ] {
        let (report, log) = unverified_starttls(security, allow_plaintext_auth).await;
        assert_no_auth(&log);
        let f = failure(&report);
        assert_eq!(
            (f.class, f.phase),
            (FailureClass::CredentialDestinationDenied, Phase::Auth),
            "{security:?}: {f}"
        );
        assert!(
            f.message
                .contains("certificate of localhost did not verify"),
            "{f}"
        );
        assert!(f.hint.contains("ignore_certificate_errors"), "{f}");
        let tls = report
            .phases(Phase::TlsHandshake)
            .next()
            .and_then(|p| p.tls.clone())
            .unwrap();
        assert!(
            matches!(tls.verification, Verification::IgnoredByConfig { .. }),
            "{tls:?}"
        );
    }
}
