//! Several servers and several connections: a server that is down is skipped within the
//! round, the agent goes back to the server it was last connected to, a name is tried
//! address by address, and two connections hold streams to two servers.

use super::*;

/// How long a test waits for something the agent does at once; far less than a backoff
/// where a test sets one.
const WAIT: Duration = Duration::from_secs(20);

fn allowed() -> Vec<String> {
    vec!["127.0.0.1:25".into()]
}

/// A job the agent answers without connecting anywhere (port 26 is not allowed): it shows
/// that the stream is up and served.
async fn round_trip(conn: &mut Conn, id: &str) {
    conn.send_job(job(id, "127.0.0.1", 26, smtp::StopAfter::Connect))
        .await;
    let (_, outcome) = conn.job_updates(id).await;
    assert_eq!(class(&outcome), pb::FailureClass::DestinationNotAllowed);
}

pub(super) async fn next_conn(conns: &mut mpsc::UnboundedReceiver<Conn>) -> Conn {
    tokio::time::timeout(WAIT, conns.recv())
        .await
        .expect("a stream in time")
        .unwrap()
}

/// Stops the agent: each stream says it is draining and closes; then `run` returns.
pub(super) async fn stop_agent(
    stop: oneshot::Sender<()>,
    agent: tokio::task::JoinHandle<Result<(), AgentError>>,
    conns: Vec<Conn>,
) {
    stop.send(()).unwrap();
    for mut conn in conns {
        loop {
            match conn.next().await {
                Some(Event::Draining(_)) => break,
                Some(Event::Heartbeat(_)) => {}
                other => panic!("expected AgentDraining, got {other:?}"),
            }
        }
        while let Some(event) = conn.next().await {
            assert!(matches!(event, Event::Heartbeat(_)), "{event:?}");
        }
    }
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
}

fn last_server(h: &Harness) -> String {
    std::fs::read_to_string(h.state_dir().join("last-server"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_server_that_is_down_is_skipped_without_a_backoff() {
    let mut h = Harness::start(allowed()).await;
    let up = h.config.servers[0].clone();
    let down = format!("https://127.0.0.1:{}", closed_port());
    h.config.servers = vec![down, up.clone()];
    // A backoff would outlast the test's wait.
    h.config.backoff.initial = Duration::from_secs(600);
    h.config.backoff.max = Duration::from_secs(600);
    let (stop, agent) = h.spawn_run();
    let mut conn = next_conn(&mut h.conns).await;
    assert_eq!(conn.expect_hello().await.stream, 0);
    assert_eq!(
        h.enrolls.load(Ordering::SeqCst),
        1,
        "enrolled with the second"
    );
    round_trip(&mut conn, "a1").await;
    assert_eq!(
        last_server(&h),
        up,
        "the server is noted in the state directory"
    );
    stop_agent(stop, agent, vec![conn]).await;
}

#[tokio::test]
async fn it_goes_back_to_the_server_it_was_last_connected_to() {
    let mut h = Harness::start(allowed()).await;
    let b_url = h.config.servers[0].clone();
    // A comes first in the list, but is down when the agent starts.
    let a_port = closed_port();
    let a_url = format!("https://127.0.0.1:{a_port}");
    h.config.servers = vec![a_url.clone(), b_url.clone()];
    let (stop, agent) = h.spawn_run();
    let mut conn = next_conn(&mut h.conns).await;
    conn.expect_hello().await;
    round_trip(&mut conn, "b1").await;

    // A comes up, and B drops the stream: the agent reconnects to B, where it was.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a_port))
        .await
        .unwrap();
    let mut a = h.serve_another(listener);
    assert_eq!(a.url, a_url);
    drop(conn);
    let mut conn = next_conn(&mut h.conns).await;
    conn.expect_hello().await;
    round_trip(&mut conn, "b2").await;
    assert!(a.conns.try_recv().is_err(), "A got a stream");

    // A works: when B refuses streams, the agent moves to A within the round.
    h.refuse.store(true, Ordering::SeqCst);
    drop(conn);
    let mut on_a = a.conn().await;
    on_a.expect_hello().await;
    round_trip(&mut on_a, "a1").await;
    assert_eq!(last_server(&h), a_url);
    stop_agent(stop, agent, vec![on_a]).await;
}

#[tokio::test]
async fn a_name_is_tried_address_by_address() {
    let mut h = Harness::start(allowed()).await;
    let port = h.config.servers[0].rsplit(':').next().unwrap().to_owned();
    // `localhost` may resolve to ::1 as well, where nothing listens: the agent goes on to
    // 127.0.0.1, and expects the certificate's name, `localhost`, from the URL.
    let url = format!("https://localhost:{port}");
    h.config.servers = vec![url.clone()];
    h.config.server_name = None;
    h.config.backoff.initial = Duration::from_secs(600);
    h.config.backoff.max = Duration::from_secs(600);
    let (stop, agent) = h.spawn_run();
    let mut conn = next_conn(&mut h.conns).await;
    conn.expect_hello().await;
    round_trip(&mut conn, "n1").await;
    let connected = format!("{url} (127.0.0.1:{port})");
    assert!(
        log_text().contains(&connected),
        "no {connected:?} in the logs"
    );
    stop_agent(stop, agent, vec![conn]).await;
}

#[tokio::test]
async fn two_connections_hold_streams_to_two_servers() {
    let mut h = Harness::start(allowed()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut b = h.serve_another(listener);
    h.config.servers.push(b.url.clone());
    h.config.connections = 2;
    let (stop, agent) = h.spawn_run();

    // Stream 0 starts on the first server, stream 1 on the second.
    let mut on_a = next_conn(&mut h.conns).await;
    let mut on_b = next_conn(&mut b.conns).await;
    assert_eq!(on_a.expect_hello().await.stream, 0);
    assert_eq!(on_b.expect_hello().await.stream, 1);
    round_trip(&mut on_a, "a1").await;
    round_trip(&mut on_b, "b1").await;

    // A loses its stream: B still takes jobs, and stream 0 comes back to A.
    drop(on_a);
    round_trip(&mut on_b, "b2").await;
    let mut on_a = next_conn(&mut h.conns).await;
    assert_eq!(on_a.expect_hello().await.stream, 0);
    round_trip(&mut on_a, "a2").await;

    // A refuses streams now: stream 0 joins stream 1 on B rather than staying away.
    h.refuse.store(true, Ordering::SeqCst);
    drop(on_a);
    let mut second_on_b = next_conn(&mut b.conns).await;
    assert_eq!(second_on_b.expect_hello().await.stream, 0);
    round_trip(&mut second_on_b, "b3").await;
    round_trip(&mut on_b, "b4").await;
    assert!(
        h.conns.try_recv().is_err(),
        "A took a stream while refusing"
    );

    stop_agent(stop, agent, vec![on_b, second_on_b]).await;
}

#[tokio::test]
async fn a_restarted_agent_starts_with_the_server_it_last_used() {
    let mut h = Harness::start(allowed()).await;
    let a_url = h.config.servers[0].clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut b = h.serve_another(listener);
    h.config.servers = vec![a_url.clone(), b.url.clone()];
    let (stop, agent) = h.spawn_run();
    let mut on_a = next_conn(&mut h.conns).await;
    on_a.expect_hello().await;
    round_trip(&mut on_a, "a1").await;
    stop_agent(stop, agent, vec![on_a]).await;
    assert_eq!(last_server(&h), a_url);

    // B now comes first in the list, but the agent starts where it was, on A.
    h.config.servers = vec![b.url.clone(), a_url.clone()];
    let (stop, agent) = h.spawn_run();
    let mut on_a = next_conn(&mut h.conns).await;
    on_a.expect_hello().await;
    round_trip(&mut on_a, "a2").await;
    assert!(b.conns.try_recv().is_err(), "B got a stream");
    stop_agent(stop, agent, vec![on_a]).await;
}
