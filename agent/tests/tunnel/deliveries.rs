//! Delivery jobs: the agent's own pooled session per account, `PHASE_DATA` reported before the
//! outcome, the allowlist on every delivery, and a delivery abandoned before DATA when its
//! stream to the server is lost.

use super::*;

/// A delivery job for `accounts/1` through the relay on `port`, to `rcpt`.
fn delivery(id: &str, port: u16, rcpt: &[&str]) -> pb::SmtpJob {
    let mut c = smtp::SessionConfig::new("127.0.0.1", port, smtp::Security::None);
    c.helo_name = Some("agent.example.org".into());
    // The scripted relays speak in clear.
    c.allow_plaintext_auth = true;
    c.timeouts = smtp::Timeouts::all(Duration::from_secs(60));
    c.auth = Some(
        smtp::Credentials::new(
            smtp::AuthMechanism::Plain,
            "alice",
            smtp::Secret::new(SECRET),
        )
        .allowed_to([c.host.parse().unwrap()]),
    );
    let envelope = smtp::Envelope::new(
        "alice@example.org",
        rcpt.iter().map(|r| (*r).to_owned()).collect(),
    );
    convert::delivery_job(
        id,
        &c,
        "accounts/1",
        &envelope,
        b"Subject: outbox\nMessage-ID: <m1@example.org>\n\n.dot first\nhello\n",
    )
}

fn report(outcome: &pb::JobOutcome) -> smtp::Delivery {
    convert::delivery_from_pb(outcome.delivery.as_ref().expect("a delivery report")).unwrap()
}

#[tokio::test]
async fn deliveries_share_a_pooled_session_and_report_data_first() {
    let (port, peer_log) = peer::start(vec![
        Step::Say("220 relay.test ESMTP"),
        Step::Expect("EHLO agent.example.org"),
        Step::Say("250-relay.test"),
        Step::Say("250 AUTH PLAIN"),
        Step::Expect("AUTH PLAIN "),
        Step::Say("235 2.7.0 ok"),
        Step::Expect("MAIL FROM:<alice@example.org>"),
        Step::Say("250 ok"),
        Step::Expect("RCPT TO:<bob@example.net>"),
        Step::Say("250 ok"),
        Step::Expect("DATA"),
        Step::Say("354 go"),
        Step::ReadData,
        Step::Say("250 2.0.0 Ok: queued as Q1"),
        // The second message reuses the session.
        Step::ExpectAlone("RSET"),
        Step::Say("250 ok"),
        Step::Expect("MAIL FROM:<alice@example.org>"),
        Step::Say("250 ok"),
        Step::Expect("RCPT TO:<carol@example.net>"),
        Step::Say("550 5.1.1 no such user"),
        Step::Expect("RCPT TO:<bob@example.net>"),
        Step::Say("250 ok"),
        Step::Expect("DATA"),
        Step::Say("354 go"),
        Step::ReadData,
        Step::Say("250 2.0.0 Ok: queued as Q2"),
        // The agent's shutdown closes its pooled sessions.
        Step::Expect("QUIT"),
        Step::Say("221 bye"),
    ])
    .await;
    let mut h = Harness::start(vec![format!("127.0.0.1:{port}")]).await;
    let (stop, agent) = h.spawn_run();
    let mut conn = h.conn().await;
    conn.expect_hello().await;

    conn.send_job(delivery("d1", port, &["bob@example.net"]))
        .await;
    let (updates, outcome) = conn.job_updates("d1").await;
    assert_eq!(
        updates,
        [Update::PhaseStarted(pb::Phase::Data.into())],
        "DATA is reported before the outcome"
    );
    assert!(outcome.succeeded, "{outcome:?}");
    let first = report(&outcome);
    assert_eq!(first.queue_id(), Some("Q1"));
    assert_eq!(first.connection, smtp::ConnectionUse::Fresh);

    conn.send_job(delivery(
        "d2",
        port,
        &["carol@example.net", "bob@example.net"],
    ))
    .await;
    let (_, outcome) = conn.job_updates("d2").await;
    let second = report(&outcome);
    assert_eq!(second.queue_id(), Some("Q2"));
    assert_eq!(second.connection, smtp::ConnectionUse::Reused);
    assert!(matches!(
        second.recipients[0].status,
        smtp::RecipientStatus::Rejected {
            severity: smtp::Severity::Permanent,
            ..
        }
    ));
    assert!(second.recipients[1].is_accepted());

    stop.send(()).unwrap();
    while conn.next().await.is_some() {}
    drop(conn);
    agent.await.unwrap().unwrap();
    let log = peer_log.await.unwrap();
    assert_eq!(log.error, None);
    assert_eq!(log.connections, 1, "one pooled session for both");
    let data = String::from_utf8_lossy(&log.data);
    assert!(
        data.contains("\r\n..dot first\r\n"),
        "CRLF and dot-stuffing: {data:?}"
    );
    assert!(
        !log_text().contains(SECRET),
        "the job's secret is in the logs"
    );
}

#[tokio::test]
async fn a_delivery_outside_the_allowlist_never_connects() {
    let forbidden = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    forbidden.set_nonblocking(true).unwrap();
    let forbidden_port = forbidden.local_addr().unwrap().port();
    let mut h = Harness::start(vec!["127.0.0.1:1-2".into()]).await;
    let (stop, agent) = h.spawn_run();
    let mut conn = h.conn().await;
    conn.expect_hello().await;
    conn.send_job(delivery("far", forbidden_port, &["bob@example.net"]))
        .await;
    let (updates, outcome) = conn.job_updates("far").await;
    assert!(updates.is_empty(), "no DATA: {updates:?}");
    let d = report(&outcome);
    let failure = d.message.failure().expect("a failure");
    assert_eq!(failure.class, smtp::FailureClass::DestinationNotAllowed);
    assert!(matches!(d.message, smtp::MessageOutcome::Permanent { .. }));
    let accepted = forbidden.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the forbidden listener saw a connection: {accepted:?}"
    );
    stop.send(()).unwrap();
    while conn.next().await.is_some() {}
    drop(conn);
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_delivery_whose_stream_is_lost_before_data_is_abandoned() {
    // A relay that never answers MAIL FROM (the job's own timeouts are a minute): it says
    // when MAIL FROM arrived, then reads until the agent hangs up.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = relay.local_addr().unwrap().port();
    let (at_mail, mail_seen) = oneshot::channel::<()>();
    let peer = tokio::spawn(async move {
        let (tcp, _) = relay.accept().await.unwrap();
        let mut io = BufReader::new(tcp);
        let mut line = String::new();
        io.get_mut().write_all(b"220 relay.test\r\n").await.unwrap();
        for (expect, reply) in [
            ("EHLO", "250-relay.test\r\n250 AUTH PLAIN\r\n"),
            ("AUTH PLAIN", "235 2.7.0 ok\r\n"),
        ] {
            line.clear();
            io.read_line(&mut line).await.unwrap();
            assert!(line.starts_with(expect), "{line}");
            io.get_mut().write_all(reply.as_bytes()).await.unwrap();
        }
        line.clear();
        io.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("MAIL FROM"), "{line}");
        at_mail.send(()).unwrap();
        let mut rest = String::new();
        while io.read_line(&mut line).await.unwrap() > 0 {
            rest.push_str(&line);
            line.clear();
        }
        rest
    });
    let mut h = Harness::start(vec![format!("127.0.0.1:{port}")]).await;
    let (stop, agent) = h.spawn_run();
    let mut conn = h.conn().await;
    conn.expect_hello().await;
    conn.send_job(delivery("lost", port, &["bob@example.net"]))
        .await;
    mail_seen.await.unwrap();
    // The server goes away while the relay holds MAIL FROM: the agent drops the session at
    // once (well within the job's minute), and never sends DATA.
    drop(conn);
    let rest = tokio::time::timeout(Duration::from_secs(30), peer)
        .await
        .expect("the agent dropped the session when its stream was lost")
        .unwrap();
    assert!(!rest.contains("DATA"), "{rest:?}");
    let mut again = h.conn().await;
    again.expect_hello().await;
    stop.send(()).unwrap();
    while again.next().await.is_some() {}
    drop(again);
    agent.await.unwrap().unwrap();
    assert!(log_text().contains("delivery abandoned before DATA"));
}
