//! The stream: jobs, reconnection, draining, and dead-link detection.

use super::*;

#[tokio::test]
async fn runs_jobs_reconnects_and_drains() {
    // A scripted relay for a delivery with AUTH.
    let (smtp_port, peer_log) = peer::start(vec![
        Step::Say("220 relay.test ESMTP"),
        Step::Expect("EHLO agent.example.org"),
        Step::Say("250-relay.test"),
        Step::Say("250 AUTH PLAIN LOGIN"),
        Step::Expect("AUTH PLAIN "),
        Step::Say("235 2.7.0 ok"),
        Step::Expect("MAIL FROM:<alice@example.org>"),
        Step::Say("250 ok"),
        Step::Expect("RCPT TO:<bob@example.net>"),
        Step::Say("250 ok"),
        Step::Expect("DATA"),
        Step::Say("354 go"),
        Step::ReadData,
        Step::Say("250 2.0.0 Ok: queued as ABC123"),
        Step::Expect("QUIT"),
        Step::Say("221 bye"),
    ])
    .await;
    let refused_port = closed_port();
    // A listener outside the allowlist: it must never see a connection.
    let forbidden = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    forbidden.set_nonblocking(true).unwrap();
    let forbidden_port = forbidden.local_addr().unwrap().port();
    // A relay that waits before greeting, to have a job in flight while draining.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    let (release, released) = oneshot::channel::<()>();
    let slow_peer = tokio::spawn(async move {
        let (tcp, _) = slow.accept().await.unwrap();
        let mut io = BufReader::new(tcp);
        released.await.unwrap();
        io.get_mut().write_all(b"220 slow.test\r\n").await.unwrap();
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("EHLO"), "{line}");
        io.get_mut().write_all(b"250 slow.test\r\n").await.unwrap();
        line.clear();
        io.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("QUIT"), "{line}");
        io.get_mut().write_all(b"221 bye\r\n").await.unwrap();
    });

    let mut h = Harness::start(vec![
        format!("127.0.0.1:{smtp_port}"),
        format!("127.0.0.0/8:{refused_port}"),
        format!("localhost:{slow_port}"),
    ])
    .await;
    let (stop, agent) = h.spawn_run();

    // The first start enrolls with the token, then connects with the new certificate.
    let mut conn = h.conn().await;
    let hello = conn.expect_hello().await;
    assert_eq!(h.enrolls.load(Ordering::SeqCst), 1);
    assert_eq!(hello.max_concurrent_jobs, 3);
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    assert!(!hello.hostname.is_empty());
    assert!(h.state_dir().join("key.pem").exists());

    // A delivery through the scripted relay: live phases, then the outcome.
    conn.send_job(job(
        "job-ok",
        "127.0.0.1",
        smtp_port,
        smtp::StopAfter::Delivery,
    ))
    .await;
    let (updates, outcome) = conn.job_updates("job-ok").await;
    assert!(outcome.succeeded, "{outcome:?}");
    let result = outcome.result.as_ref().unwrap();
    assert_eq!(result.message, "accepted: 250 Ok: queued as ABC123");
    assert_eq!(result.queue_id, "ABC123");
    assert!(result.message_id.contains('@'));
    assert!(outcome.capabilities.iter().any(|c| c.starts_with("AUTH")));
    let started: Vec<pb::Phase> = updates
        .iter()
        .filter_map(|u| match u {
            Update::PhaseStarted(p) => pb::Phase::try_from(*p).ok(),
            _ => None,
        })
        .collect();
    let finished: Vec<&pb::PhaseResult> = updates
        .iter()
        .filter_map(|u| match u {
            Update::PhaseFinished(r) => Some(r),
            _ => None,
        })
        .collect();
    for phase in [
        pb::Phase::DnsResolve,
        pb::Phase::TcpConnect,
        pb::Phase::Banner,
        pb::Phase::Ehlo,
        pb::Phase::Auth,
        pb::Phase::MailFrom,
        pb::Phase::RcptTo,
        pb::Phase::Data,
        pb::Phase::Quit,
    ] {
        assert!(
            started.contains(&phase),
            "{phase:?} not started: {started:?}"
        );
        assert!(
            finished.iter().any(|r| r.phase() == phase),
            "{phase:?} not finished"
        );
    }
    let auth = finished
        .iter()
        .find(|r| r.phase() == pb::Phase::Auth)
        .unwrap();
    assert_eq!(auth.reply_code, 235);
    assert!(auth.commands.iter().all(|c| !c.contains(SECRET)));
    let log = peer_log.await.unwrap();
    assert!(log.error.is_none(), "{:?}", log.error);

    // Nothing listens on an allowed port: CONNECTION_REFUSED.
    conn.send_job(job(
        "job-refused",
        "127.0.0.1",
        refused_port,
        smtp::StopAfter::Connect,
    ))
    .await;
    let (_, outcome) = conn.job_updates("job-refused").await;
    assert!(!outcome.succeeded);
    assert_eq!(class(&outcome), pb::FailureClass::ConnectionRefused);

    // Outside the allowlist: DESTINATION_NOT_ALLOWED, and no connection at all.
    conn.send_job(job(
        "job-forbidden",
        "127.0.0.1",
        forbidden_port,
        smtp::StopAfter::Connect,
    ))
    .await;
    let (updates, outcome) = conn.job_updates("job-forbidden").await;
    assert_eq!(class(&outcome), pb::FailureClass::DestinationNotAllowed);
    assert_eq!(
        outcome.result.as_ref().unwrap().failed_phase(),
        pb::Phase::TcpConnect
    );
    assert!(updates.iter().any(|u| matches!(
        u,
        Update::PhaseFinished(r) if r.detail.iter().any(|d| d.contains("allowed_destinations"))
    )));
    let accepted = forbidden.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the forbidden listener saw a connection: {accepted:?}"
    );

    // The server drops the stream: the agent reconnects with a second hello.
    drop(conn);
    let mut conn = h.conn().await;
    conn.expect_hello().await;
    assert!(log_text().contains("reconnecting in"));

    // Shutdown with a job in flight: AgentDraining first, the job still finishes, then
    // the agent closes the stream and `run` returns Ok.
    conn.send_job(job(
        "job-slow",
        "localhost",
        slow_port,
        smtp::StopAfter::Connect,
    ))
    .await;
    match conn.next().await {
        Some(Event::JobUpdate(u)) => assert_eq!(u.job_id, "job-slow"),
        other => panic!("expected the slow job to start, got {other:?}"),
    }
    stop.send(()).unwrap();
    loop {
        match conn.next().await {
            Some(Event::Draining(_)) => break,
            Some(Event::JobUpdate(u)) => {
                assert!(!matches!(u.update, Some(Update::Finished(_))), "{u:?}")
            }
            Some(Event::Heartbeat(_)) => {}
            other => panic!("expected AgentDraining, got {other:?}"),
        }
    }
    release.send(()).unwrap();
    let (_, outcome) = conn.job_updates("job-slow").await;
    assert!(outcome.succeeded, "{outcome:?}");
    assert_eq!(
        outcome.result.as_ref().unwrap().message,
        "stopped after Connect as asked"
    );
    // The agent closes its side; the server then closes its own.
    while let Some(event) = conn.next().await {
        assert!(matches!(event, Event::Heartbeat(_)), "{event:?}");
    }
    drop(conn);
    agent.await.unwrap().unwrap();
    slow_peer.await.unwrap();

    let text = log_text();
    assert!(text.contains("job finished"), "logs are not captured");
    assert!(!text.contains(SECRET), "the job's secret is in the logs");
    assert!(!text.contains(TOKEN), "the enrollment token is in the logs");
}

#[tokio::test]
async fn a_silent_server_is_a_dead_link() {
    let mut h = Harness::start(vec!["smtp.example.org:25".into()]).await;
    h.config.heartbeat_interval = Duration::from_millis(100);
    let (stop, agent) = h.spawn_run();
    let mut conn = h.conn().await;
    conn.expect_hello().await;
    // The server says nothing: the agent keeps sending heartbeats, then gives up on the
    // link after three intervals and connects again.
    match conn.next().await {
        Some(Event::Heartbeat(hb)) => assert_eq!(hb.jobs_in_flight, 0),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    let mut second = h.conn().await;
    second.expect_hello().await;
    // Server heartbeats keep the link alive and are not answered with anything else.
    second
        .out
        .send(Ok(pb::ConnectResponse {
            event: Some(ServerEvent::Heartbeat(pb::ServerHeartbeat {})),
        }))
        .await
        .unwrap();
    // Stop once the stream is fully up (the agent's first heartbeat says so).
    assert!(matches!(second.next().await, Some(Event::Heartbeat(_))));
    stop.send(()).unwrap();
    loop {
        match second.next().await {
            Some(Event::Draining(_)) => break,
            Some(Event::Heartbeat(_)) => {}
            other => panic!("expected AgentDraining, got {other:?}\n{}", log_text()),
        }
    }
    while second.next().await.is_some() {}
    drop((conn, second));
    agent.await.unwrap().unwrap();
    let _ = std::io::stderr().flush();
}

#[tokio::test]
async fn refuses_auth_in_clear_unless_the_job_allows_it() {
    // A relay that offers AUTH but no STARTTLS (as if someone on the path removed it).
    let (smtp_port, peer_log) = peer::start(vec![
        Step::Say("220 relay.test ESMTP"),
        Step::Expect("EHLO agent.example.org"),
        Step::Say("250-relay.test"),
        Step::Say("250 AUTH PLAIN LOGIN"),
        Step::Expect("QUIT"),
        Step::Say("221 bye"),
    ])
    .await;
    let mut h = Harness::start(vec![format!("127.0.0.1:{smtp_port}")]).await;
    let (stop, agent) = h.spawn_run();
    let mut conn = h.conn().await;
    conn.expect_hello().await;
    let mut clear = job(
        "job-clear",
        "127.0.0.1",
        smtp_port,
        smtp::StopAfter::Delivery,
    );
    clear.security = pb::SecurityMode::StarttlsOpportunistic.into();
    clear.allow_plaintext_auth = false;
    conn.send_job(clear).await;
    let (_, outcome) = conn.job_updates("job-clear").await;
    assert!(!outcome.succeeded, "{outcome:?}");
    let result = outcome.result.unwrap();
    assert_eq!(
        result.failure_class,
        i32::from(pb::FailureClass::StarttlsUnavailable),
        "{result:?}"
    );
    assert_eq!(result.failed_phase, i32::from(pb::Phase::Auth));
    assert!(result.hint.contains("allow_plaintext_auth"), "{result:?}");
    let log = peer_log.await.unwrap();
    assert_eq!(log.error, None, "{log:?}");
    assert_eq!(
        log.lines,
        ["EHLO agent.example.org", "QUIT"],
        "no AUTH was sent"
    );
    stop.send(()).unwrap();
    while conn.next().await.is_some() {}
    drop(conn);
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn refuses_auth_outside_the_jobs_allowed_destinations() {
    // A relay the agent may reach (its allowlist), but the credential may not go to.
    let (smtp_port, peer_log) = peer::start(vec![
        Step::Say("220 relay.test ESMTP"),
        Step::Expect("EHLO agent.example.org"),
        Step::Say("250-relay.test"),
        Step::Say("250 AUTH PLAIN LOGIN"),
        Step::Expect("QUIT"),
        Step::Say("221 bye"),
    ])
    .await;
    let mut h = Harness::start(vec![format!("127.0.0.1:{smtp_port}")]).await;
    let (stop, agent) = h.spawn_run();
    let mut conn = h.conn().await;
    conn.expect_hello().await;
    let mut elsewhere = job(
        "job-elsewhere",
        "127.0.0.1",
        smtp_port,
        smtp::StopAfter::Delivery,
    );
    elsewhere.auth.as_mut().unwrap().allowed_destinations = vec!["relay.example.com:587".into()];
    conn.send_job(elsewhere).await;
    let (_, outcome) = conn.job_updates("job-elsewhere").await;
    assert!(!outcome.succeeded, "{outcome:?}");
    let result = outcome.result.unwrap();
    assert_eq!(
        result.failure_class,
        i32::from(pb::FailureClass::CredentialDestinationDenied),
        "{result:?}"
    );
    assert_eq!(result.failed_phase, i32::from(pb::Phase::Auth));
    assert!(
        result.hint.contains(&format!("127.0.0.1:{smtp_port}")),
        "{result:?}"
    );
    let log = peer_log.await.unwrap();
    assert_eq!(log.error, None, "{log:?}");
    assert_eq!(
        log.lines,
        ["EHLO agent.example.org", "QUIT"],
        "no AUTH was sent"
    );
    stop.send(()).unwrap();
    while conn.next().await.is_some() {}
    drop(conn);
    agent.await.unwrap().unwrap();
}
