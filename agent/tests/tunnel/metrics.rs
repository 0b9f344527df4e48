//! The agent's metrics listener, handed over bound (`run_with`): the stream states of a
//! server that is down and one that is up, a job counted by its result, a lost stream counted
//! as a reconnection, `/readyz` following the streams, and the listener closed once `run`
//! returns.

use std::net::SocketAddr;

use super::servers::{next_conn, stop_agent};
use super::*;
use tokio::io::AsyncReadExt as _;

/// `GET path` over HTTP/1.0: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Ok((code, body.to_owned()))
}

/// The value of `series` (its name and labels, exactly) in an exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` (up to 20 s) until `series` has the value `want`; the exposition then.
async fn until(addr: SocketAddr, series: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, text) = get(addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        if value(&text, series) == Some(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_metrics_follow_the_streams_and_the_jobs_and_stop_with_the_agent() {
    let mut h = Harness::start(vec!["127.0.0.1:25".into()]).await;
    let up = h.config.servers[0].clone();
    let down = format!("https://127.0.0.1:{}", closed_port());
    h.config.servers = vec![down.clone(), up.clone()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(mailplane_agent::run_with(
        h.config.clone(),
        Some(listener),
        async move {
            let _ = stopped.await;
        },
    ));
    assert_eq!(get(addr, "/healthz").await.unwrap(), (200, "ok\n".into()));

    let mut conn = next_conn(&mut h.conns).await;
    conn.expect_hello().await;
    let state = |server: &str, state: &str| {
        format!("mailplane_agent_stream_state{{server=\"{server}\",state=\"{state}\"}}")
    };
    let text = until(addr, &state(&up, "connected"), 1.0).await;
    assert_eq!(value(&text, &state(&down, "connecting")), Some(0.0));
    assert_eq!(value(&text, "mailplane_agent_streams_connected"), Some(1.0));
    assert_eq!(get(addr, "/readyz").await.unwrap().0, 200);

    // A job the allowlist refuses: it fails, and is counted so.
    conn.send_job(job("m1", "127.0.0.1", 26, smtp::StopAfter::Connect))
        .await;
    let (_, outcome) = conn.job_updates("m1").await;
    assert_eq!(class(&outcome), pb::FailureClass::DestinationNotAllowed);
    let failed = "mailplane_agent_jobs_total{kind=\"test\",result=\"failed\"}";
    let text = until(addr, failed, 1.0).await;
    assert_eq!(
        value(
            &text,
            "mailplane_agent_job_duration_seconds_count{kind=\"test\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "mailplane_agent_jobs_running{kind=\"test\"}"),
        Some(0.0)
    );

    // The server ends the stream: one reconnection, counted for it, and a new stream.
    let reconnects = format!("mailplane_agent_reconnects_total{{server=\"{up}\"}}");
    assert_eq!(value(&text, &reconnects), Some(0.0));
    drop(conn);
    let mut conn = next_conn(&mut h.conns).await;
    conn.expect_hello().await;
    until(addr, &reconnects, 1.0).await;
    until(addr, &state(&up, "connected"), 1.0).await;
    assert_eq!(get(addr, "/readyz").await.unwrap().0, 200);

    // Stopped, the agent closes its metrics listener too.
    stop_agent(stop, agent, vec![conn]).await;
    assert!(
        get(addr, "/healthz").await.is_err(),
        "the metrics listener outlived the agent"
    );
}
