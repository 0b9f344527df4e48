//! The Test Email window over real HTTP: the run page and its event stream, to the end of a
//! test and while one is running.

use super::accounts::console;
use super::http::{attr_of, count, input_value};
use mailplane_proto::v1 as pb;
use mailplane_tests::{account, create_account};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_window_runs_a_test_and_streams_its_phases_and_verdict() {
    let (server, mut b) = console().await;
    // A port nothing listens on: the test fails fast at the TCP connection.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = server.accounts();
    let acct = create_account(
        &mut api,
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: u32::from(port),
            security: pb::SecurityMode::None.into(),
            ..account("Closed")
        },
    )
    .await;
    let window = b.get(&format!("/accounts/{}/test", acct.id)).await;
    assert_eq!(window.status, 200, "{}", window.body);
    assert_eq!(
        input_value(&window.body, "subject").as_deref(),
        Some("TEST MESSAGE!")
    );
    assert!(window.body.contains("ATTENTION: THIS IS A TEST MESSAGE!"));
    let csrf = input_value(&window.body, "csrf").unwrap();

    let sent = b
        .post(
            &format!("/accounts/{}/test", acct.id),
            &[
                ("csrf", &csrf),
                ("to", "someone@example.com"),
                ("subject", "TEST MESSAGE!"),
                ("body", "ATTENTION: THIS IS A TEST MESSAGE!"),
                ("stop_after", "connect"),
            ],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let run_url = sent.location().to_owned();
    assert!(
        run_url.starts_with(&format!("/accounts/{}/tests/", acct.id)),
        "{run_url}"
    );

    // The event stream: phases, then the verdict, then the end.
    let events = b.get(&format!("{run_url}/events")).await;
    assert_eq!(events.status, 200);
    assert!(
        events
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = &events.body;
    let phase = body.find("event: phase").expect("a phase event");
    let verdict = body.find("event: verdict").expect("the verdict");
    assert!(phase < verdict, "{body}");
    assert!(body.contains("TCP_CONNECT"), "{body}");
    assert!(body[verdict..].contains("TEST_STATE_FAILED"), "{body}");
    assert!(body[verdict..].contains("data-testid=\"hint\""), "{body}");
    assert!(
        !body[verdict..].contains("event: phase"),
        "the verdict is the last event: {body}"
    );

    // The run page without script: the finished test, its phases and verdict.
    let run = b.get(&run_url).await;
    assert_eq!(run.status, 200);
    assert!(
        run.body.contains("data-testid=\"verdict-result\""),
        "{}",
        run.body
    );
    assert!(run.body.contains("data-phase=\"PHASE_TCP_CONNECT\""));

    // The history, one click away.
    let history_url = attr_of(&run.body, "data-testid=\"nav-history\"", "href").unwrap();
    let history = b.get(&history_url).await;
    assert_eq!(count(&history.body, "data-testid=\"test-row\""), 1);
    assert!(history.body.contains("someone@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_test_page_connects_to_its_event_stream() {
    let (server, mut b) = console().await;
    // A relay that accepts the connection and never greets: the test runs until the banner's
    // timeout, long after the run page was shown.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let acct = create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: u32::from(port),
            security: pb::SecurityMode::None.into(),
            ..account("Silent")
        },
    )
    .await;
    let url = format!("/accounts/{}/test", acct.id);
    let csrf = input_value(&b.get(&url).await.body, "csrf").unwrap();

    // A bad recipient: the API's message under the field, nothing started.
    let bad = b
        .post(
            &url,
            &[("csrf", &csrf), ("to", "nope"), ("stop_after", "connect")],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("data-testid=\"error-to\""),
        "{}",
        bad.body
    );

    let sent = b
        .post(
            &url,
            &[
                ("csrf", &csrf),
                ("to", "someone@example.com"),
                ("stop_after", "delivery"),
            ],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let run_url = sent.location().to_owned();
    let run = b.get(&run_url).await;
    assert_eq!(
        attr_of(&run.body, "data-testid=\"live\"", "sse-connect").as_deref(),
        Some(format!("{run_url}/events").as_str()),
        "{}",
        run.body
    );
    assert_eq!(
        attr_of(&run.body, "data-testid=\"live\"", "hx-ext").as_deref(),
        Some("sse")
    );
    assert_eq!(
        attr_of(&run.body, "data-testid=\"refresh\"", "href").as_deref(),
        Some(run_url.as_str())
    );
    let events = b.get(&format!("{run_url}/events")).await;
    let verdict = events.body.find("event: verdict").expect("a verdict");
    assert!(
        events.body[..verdict].contains("PHASE_BANNER"),
        "{}",
        events.body
    );
    drop(silent);
}
