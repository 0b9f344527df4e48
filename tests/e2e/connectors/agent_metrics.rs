//! A real `mailplane-agent` with `--metrics-listen`: a test e-mail through its connector moves
//! its finished-jobs counter and its job-duration histogram, `/readyz` is ready while its
//! stream is up; when the server stops, its reconnections count up and `/readyz` turns 503;
//! and `promtool check metrics` finds nothing to report in the classic exposition.

use crate::metrics::{get, promtool_check_metrics, sum};
use crate::netns::harness::{Proc, binary};
use crate::smtp::{relay, run, state, to};
use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, SmtpFixtures, TestServer, create_account};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Scrapes the agent's `/metrics` (a plain GET: the classic text format).
async fn scrape(metrics: SocketAddr) -> String {
    let (code, text) = get(metrics, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    text
}

/// Polls (up to 30 s) until `done` holds for the agent's exposition and `/readyz` status.
pub(crate) async fn until(
    metrics: SocketAddr,
    agent: &Proc,
    what: &str,
    done: impl Fn(&str, u16) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(metrics).await;
        let ready = get(metrics, "/readyz").await.0;
        if done(&text, ready) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: /readyz {ready}, metrics:\n{text}\nagent:\n{}",
            agent.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled sample.
fn plain(exposition: &str, metric: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_serves_its_jobs_streams_and_reconnects_as_metrics() {
    let fx = SmtpFixtures::load();
    let ca = std::fs::read(fx.var("SMTP_CA")).expect("fixture CA");
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.agent_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.connector_wait = Duration::from_secs(10);
        c.smtp.extra_ca_pem = Some(ca);
    })
    .await;
    let connector = server.create_connector("Scraped agent").await;
    let port = fx.port("SMTP_PORT_IMPLICIT");
    let acct = create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..relay("Through the agent", port, pb::SecurityMode::ImplicitTls)
        },
    )
    .await;
    let enrollment = server
        .connectors()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: connector.name.clone(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let dir = tempfile::tempdir().unwrap();
    let server_ca = dir.path().join("server-ca.pem");
    std::fs::write(&server_ca, &enrollment.server_ca_pem).unwrap();
    let url = format!("https://{}", server.agent_addr.unwrap());
    let agent = Proc::spawn({
        let mut cmd = Command::new(binary("mailplane-agent"));
        cmd.args(["run", "--log-format", "json", "--log-level", "info"])
            .args(["--server", &url])
            .args(["--allow", &format!("localhost:{port}")])
            .args(["--heartbeat-interval", "1s"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--server-ca")
            .arg(&server_ca)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("MAILPLANE_AGENT_ENROLLMENT_TOKEN", &enrollment.token);
        cmd
    });
    agent
        .wait_for("connected; waiting for jobs", Duration::from_secs(30))
        .await;
    let metrics: SocketAddr = agent
        .logged_addr("metrics listening")
        .expect("the agent logs its metrics address")
        .parse()
        .unwrap();
    assert_eq!(get(metrics, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(metrics, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(get(metrics, "/nothing").await.0, 404);

    let server_label = format!("server=\"{url}\"");
    let ok = "kind=\"test\",result=\"ok\"";
    let test_kind = "kind=\"test\"";
    let before = scrape(metrics).await;
    assert_eq!(
        plain(&before, "mailplane_agent_streams_connected"),
        Some(1.0)
    );
    assert_eq!(
        sum(
            &before,
            "mailplane_agent_stream_state",
            &format!("{server_label},state=\"connected\"")
        ),
        1.0,
        "{before}"
    );
    let jobs_before = sum(&before, "mailplane_agent_jobs_total", ok);
    let count_before = sum(
        &before,
        "mailplane_agent_job_duration_seconds_count",
        test_kind,
    );
    let reconnects_before = sum(&before, "mailplane_agent_reconnects_total", &server_label);

    // A test e-mail through the connector: the agent runs it.
    let (_, t) = run(
        &server,
        &acct.name,
        pb::SmtpTest {
            to: to("agent-metrics"),
            stop_after: pb::StopAfter::Tls.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    assert!(!t.executed_by.is_empty(), "{t:?}");
    // The agent counts the job when its outcome is sent, which the server may have read
    // (and the test ended) a moment before: poll.
    let after = until(metrics, &agent, "counted the job", |text, _| {
        sum(text, "mailplane_agent_jobs_total", ok) >= jobs_before + 1.0
    })
    .await;
    assert!(
        sum(
            &after,
            "mailplane_agent_job_duration_seconds_count",
            test_kind
        ) >= count_before + 1.0,
        "{after}"
    );
    assert_eq!(
        sum(&after, "mailplane_agent_jobs_running", test_kind),
        0.0,
        "{after}"
    );
    assert_eq!(get(metrics, "/readyz").await.0, 200);
    // No recipient or address became a label.
    assert!(!after.contains("@mailplane.test"), "{after}");
    assert!(!after.contains("localhost"), "{after}");
    // None of the agent's families is named like one of the server's.
    for line in after.lines() {
        if let Some(family) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.split(' ').next())
        {
            assert!(
                !mailplane_server::metrics::FAMILIES.contains(&family),
                "{family} is a server metric's name too"
            );
        }
    }

    // The exposition a plain GET gets passes promtool's linter.
    promtool_check_metrics(&after);

    // The server goes away: the stream is lost, the agent backs off and counts reconnections,
    // and is no longer ready.
    server.stop().await.unwrap();
    let lost = until(metrics, &agent, "counted a reconnection", |text, ready| {
        ready == 503
            && sum(text, "mailplane_agent_reconnects_total", &server_label)
                >= reconnects_before + 1.0
    })
    .await;
    assert_eq!(plain(&lost, "mailplane_agent_streams_connected"), Some(0.0));
    assert_eq!(
        sum(
            &lost,
            "mailplane_agent_stream_state",
            &format!("{server_label},state=\"connected\"")
        ),
        0.0,
        "{lost}"
    );
    assert_eq!(
        get(metrics, "/readyz").await,
        (503, "no stream to a server is connected\n".to_owned())
    );
    promtool_check_metrics(&lost);
    drop(agent);
}
