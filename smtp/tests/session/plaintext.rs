//! AUTH never goes out in clear unless the configuration allows it: a relay that offers no
//! STARTTLS (or had it stripped from its EHLO reply) gets no credential.

use super::*;

fn with_credentials(mut cfg: SessionConfig) -> SessionConfig {
    cfg.auth = Some(
        Credentials::new(AuthMechanism::Plain, "alice", Secret::new(SECRET))
            .allowed_to([cfg.host.parse().unwrap()]),
    );
    cfg
}

/// A relay that offers AUTH but no STARTTLS, and expects the client to give up politely.
fn no_starttls_then_quit() -> Vec<Step> {
    vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_PLAIN),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ]
}

#[tokio::test]
async fn opportunistic_without_starttls_stops_before_auth() {
    let (port, peer) = peer::start(no_starttls_then_quit()).await;
    let cfg = with_credentials(config(port, Security::StartTlsOpportunistic));
    let report = run(&cfg).await;
    let log = finish(peer).await;
    assert_eq!(log.lines, ["EHLO client.example.org", "QUIT"]);
    assert!(
        !log.lines
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "{log:?}"
    );
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::StartTlsUnavailable, Phase::Auth),
        "{f}"
    );
    assert!(
        f.hint.contains("did not offer STARTTLS") && f.hint.contains("allow_plaintext_auth"),
        "{f}"
    );
    assert!(
        report
            .transcript
            .iter()
            .all(|r| r.commands.iter().all(|c| !c.starts_with("AUTH"))),
        "{report:#?}"
    );
}

#[tokio::test]
async fn security_none_with_credentials_stops_before_auth() {
    let (port, peer) = peer::start(no_starttls_then_quit()).await;
    let cfg = with_credentials(config(port, Security::None));
    let report = run(&cfg).await;
    let log = finish(peer).await;
    assert_eq!(log.lines, ["EHLO client.example.org", "QUIT"]);
    let f = failure(&report);
    assert_eq!(
        (f.class, f.phase),
        (FailureClass::StartTlsUnavailable, Phase::Auth),
        "{f}"
    );
    assert!(
        f.hint.contains("security NONE") && f.hint.contains("allow_plaintext_auth"),
        "{f}"
    );
}

#[tokio::test]
async fn allow_plaintext_auth_sends_auth_in_clear() {
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
    let mut cfg = with_credentials(config(port, Security::StartTlsOpportunistic));
    cfg.allow_plaintext_auth = true;
    cfg.stop_after = StopAfter::Auth;
    let report = run(&cfg).await;
    finish(peer).await;
    assert!(report.success().is_some(), "{report:#?}");
}

#[tokio::test]
async fn opportunistic_without_credentials_continues_in_clear() {
    let (port, peer) = peer::start(vec![
        Step::Say("220 mail.example.net ESMTP"),
        Step::Expect("EHLO"),
        Step::Say(EHLO_PLAIN),
        Step::Expect("QUIT"),
        Step::Say("221 Bye"),
    ])
    .await;
    let mut cfg = config(port, Security::StartTlsOpportunistic);
    cfg.stop_after = StopAfter::Auth;
    let report = run(&cfg).await;
    finish(peer).await;
    assert!(report.success().is_some(), "{report:#?}");
}
