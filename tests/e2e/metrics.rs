//! `--metrics-listen`: `/healthz`, `/readyz`, and `/metrics` scraped by a real Prometheus
//! (Debian's, started here on a free port), whose query API shows the counter a test e-mail
//! moved, and `promtool check metrics` lints the classic text format a plain GET gets.

use crate::netns::harness::Proc;
use crate::smtp::{relay, run, state};
use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, SmtpFixtures, TestServer, create_account};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over HTTP/1.0: the status code and the body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_accepting(addr, path, "*/*").await
}

/// `GET path` with an `Accept` header: the status code and the body.
async fn get_accepting(addr: SocketAddr, path: &str, accept: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (code, body.to_owned())
}

/// The sum of the samples of `metric` whose labels contain `labels`, in an exposition.
pub(crate) fn sum(exposition: &str, metric: &str, labels: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn tool(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: install Debian's prometheus package (bash .ci/services.sh does)",
        path.display()
    );
    path
}

/// `promtool check metrics` reads `exposition` and finds nothing to report.
pub(crate) fn promtool_check_metrics(exposition: &str) {
    use std::io::Write as _;
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nothing listens on now, for Prometheus's own web listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asks Prometheus for `query`'s value (the sum over its series), if it has one yet.
async fn query(prometheus: SocketAddr, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (code, body) = get(prometheus, &format!("/api/v1/query?query={encoded}")).await;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| r["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_counter_a_test_email_moved() {
    let fx = SmtpFixtures::load();
    let ca = std::fs::read(fx.var("SMTP_CA")).expect("fixture CA");
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.extra_ca_pem = Some(ca);
    })
    .await;
    let metrics = server.metrics_addr.expect("a metrics listener");

    assert_eq!(get(metrics, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(metrics, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(get(metrics, "/nothing").await.0, 404);

    // Asked for OpenMetrics (as Prometheus asks), the exposition is OpenMetrics, ending with
    // its EOF marker; a plain GET gets the classic text format.
    let openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";
    let (code, before) = get_accepting(metrics, "/metrics", openmetrics).await;
    assert_eq!(code, 200);
    assert!(before.ends_with("# EOF\n"), "{before}");
    let (_, classic) = get(metrics, "/metrics").await;
    assert!(
        classic.contains("# TYPE mailplane_api_calls_total counter"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    let succeeded = "result=\"SUCCEEDED\"";
    let tests_before = sum(&before, "mailplane_tests_total", succeeded);

    // A real Prometheus scraping this server every second.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mailplane\n    \
             static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prometheus = Proc::spawn({
        let mut c = Command::new(tool("prometheus"));
        c.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"));
        c
    });
    prometheus
        .wait_for(
            "Server is ready to receive web requests",
            Duration::from_secs(30),
        )
        .await;

    // A test e-mail that succeeds moves mailplane_tests_total{result="SUCCEEDED"}.
    let acct = create_account(
        &mut server.accounts(),
        relay(
            "Scraped",
            fx.port("SMTP_PORT_IMPLICIT"),
            pb::SecurityMode::ImplicitTls,
        ),
    )
    .await;
    let (_, t) = run(
        &server,
        &acct.name,
        pb::SmtpTest {
            to: crate::smtp::to("metrics"),
            stop_after: pb::StopAfter::Tls.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(state(&t), pb::TestState::Succeeded, "{:?}", t.result);
    let (_, after) = get(metrics, "/metrics").await;
    assert!(
        sum(&after, "mailplane_tests_total", succeeded) >= tests_before + 1.0,
        "{after}"
    );
    assert!(
        after.lines().any(
            |l| l.starts_with("mailplane_test_phase_duration_seconds_bucket{")
                && l.contains("phase=\"PHASE_TLS_HANDSHAKE\"")
        ),
        "{after}"
    );
    assert!(
        after.contains(
            "mailplane_api_calls_total{method=\"/mailplane.v1.SmtpTestService/CreateTest\",code=\"Ok\"}"
        ),
        "{after}"
    );

    // The exposition a plain GET gets (the classic text format) passes promtool's linter.
    promtool_check_metrics(&after);

    let want = tests_before + 1.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = query(web, "sum(mailplane_tests_total{result=\"SUCCEEDED\"})").await;
        if seen.is_some_and(|v| v >= want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {want} succeeded tests (last: {seen:?}):\n{}",
            prometheus.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Prometheus found the target up.
    assert_eq!(query(web, "up{job=\"mailplane\"}").await, Some(1.0));
    drop(prometheus);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_share_one_label() {
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics = server.metrics_addr.unwrap();
    // A call to a method the API does not have is counted as `unknown`.
    let mut raw = tonic::client::Grpc::new(server.raw.clone());
    raw.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/evil.Service/x9f3");
    let e = raw
        .unary::<(), (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_ne!(e.code(), tonic::Code::Ok);
    let (_, text) = get(metrics, "/metrics").await;
    assert!(
        !text.contains("x9f3"),
        "an unknown path became a label:\n{text}"
    );
    assert!(
        text.contains("mailplane_api_calls_total{method=\"unknown\""),
        "{text}"
    );
    server.stop().await.unwrap();
}

/// The alert rules pass `promtool check rules`, and the rules and the Grafana dashboard in
/// `deploy/` query only metrics the server exposes.
#[test]
fn the_alert_rules_and_the_dashboard_use_real_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = root.join("deploy/prometheus/mailplane-alerts.yml");
    let checked = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/mailplane-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    exprs.push(std::fs::read_to_string(&rules).unwrap());
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("mailplane_") {
                continue;
            }
            let known = mailplane_server::metrics::FAMILIES
                .iter()
                .any(|f| word == *f || word.strip_prefix(f).is_some_and(|s| s == "_bucket"));
            assert!(
                known,
                "{word} in {expr:?} is not a metric the server exposes"
            );
        }
    }
}

/// A connector without a connected agent shows 0 agents: what the
/// `MailplaneConnectorWithoutAgent` alert fires on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_without_agents_shows_zero() {
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let connector = server.create_connector("Lonely").await;
    let id = connector.name.trim_start_matches("connectors/");
    let (code, text) = get(server.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.lines()
            .any(|l| l == format!("mailplane_connector_agents{{connector=\"{id}\"}} 0")),
        "{text}"
    );
    server.stop().await.unwrap();
}
