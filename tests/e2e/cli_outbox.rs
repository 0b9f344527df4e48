//! The CLI's outbox commands (`send`, `messages …`, `queue …`), parsed from real argument
//! lists and run against a real server.

use super::cli::{json, mailplane, mailplane_with_stdin};
use mailplane_proto::v1 as pb;
use mailplane_server::cli::CliError;
use mailplane_tests::{Backend, TestServer};
/// A message as the API returns it.
async fn get_message(server: &TestServer, name: &str) -> pb::Message {
    pb::message_service_client::MessageServiceClient::new(server.channel.clone())
        .get_message(pb::GetMessageRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_messages_and_queue_commands() {
    let server = TestServer::start(Backend::Sqlite).await;
    let acct =
        mailplane_tests::create_account(&mut server.accounts(), mailplane_tests::account("Hold"))
            .await;
    let id = acct.id.to_string();
    // A paused account keeps its messages QUEUED: nothing races the assertions below.
    let paused = json(
        &mailplane(&server, &["-o", "json", "queue", "pause", &id])
            .await
            .unwrap(),
    );
    assert_eq!(paused["account"], acct.name.as_str());
    assert_eq!(paused["paused"], true);

    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.csv");
    std::fs::write(&report, "a,b\n1,2\n").unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, "<p>See the attachment.</p>").unwrap();
    let out = mailplane(
        &server,
        &[
            "send",
            "--html-file",
            page.to_str().unwrap(),
            "--reply-to",
            "replies@example.com",
            "--to",
            "ops@example.com",
            "--cc",
            "lead@example.com",
            "--bcc",
            "audit@example.com",
            "--subject",
            "Nightly report",
            "--body",
            "See the attachment.",
            "--attach",
            report.to_str().unwrap(),
            "--header",
            "X-Ticket: 42",
            "-o",
            "json",
        ],
    )
    .await
    .unwrap();
    let first = json(&out);
    assert_eq!(first["state"], "QUEUED", "{out}");
    assert_eq!(first["account"], acct.name.as_str(), "the default account");
    assert_eq!(first["attachments"], "report.csv", "{out}");
    let first = first["name"].as_str().unwrap().to_owned();
    let stored = get_message(&server, &first).await;
    assert_eq!(stored.attachments[0].content_type, "text/csv");
    assert_eq!(stored.headers[0].name, "X-Ticket");
    assert_eq!(stored.html_body, "<p>See the attachment.</p>");
    assert_eq!(stored.reply_to, "replies@example.com");

    // The body from standard input; the table form shows the name and the state.
    let out = mailplane_with_stdin(
        &server,
        &[
            "send",
            "--to",
            "dba@example.com",
            "--subject",
            "Backup done",
            "--body-file",
            "-",
            "--account",
            &acct.name,
            "--request-id",
            "backup-2026-12-01",
        ],
        "The backup took 42 minutes.\n".as_bytes(),
    )
    .await
    .unwrap();
    let line = |key: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key}: {out}"))
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(line("state"), "QUEUED", "{out}");
    let second = line("name");
    assert!(second.starts_with("messages/"), "{out}");
    let stored = get_message(&server, &second).await;
    assert_eq!(stored.text_body.trim_end(), "The backup took 42 minutes.");

    let table = mailplane(&server, &["messages", "list"]).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("SUBJECT"));
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].contains("Backup done"), "newest first: {table}");
    assert!(lines[2].contains("Nightly report") && lines[2].contains("QUEUED"));
    let count = |out: String| json(&out)["messages"].as_array().unwrap().len();
    let list = |args: &'static [&'static str]| {
        let server = &server;
        async move {
            let argv: Vec<&str> = ["-o", "json", "messages", "list"]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            mailplane(server, &argv).await.unwrap()
        }
    };
    assert_eq!(count(list(&["--recipient", "AUDIT@"]).await), 1);
    assert_eq!(count(list(&["--state", "queued", "--all"]).await), 2);
    assert_eq!(count(list(&["--state", "sent"]).await), 0);
    assert_eq!(count(list(&["--since", "2000-01-01T00:00:00Z"]).await), 2);
    assert_eq!(count(list(&["--until", "2000-01-01T00:00:00Z"]).await), 0);
    let err = mailplane(&server, &["messages", "list", "--since", "yesterday"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("RFC 3339"), "{err}");

    // get by bare id: the message, its recipients with their state, and the attempts.
    let bare = first.trim_start_matches("messages/");
    let out = mailplane(&server, &["messages", "get", bare])
        .await
        .unwrap();
    assert!(out.contains("Nightly report"), "{out}");
    assert!(
        out.contains("RECIPIENT") && out.contains("LAST REPLY"),
        "{out}"
    );
    let audit = out.lines().find(|l| l.starts_with("audit@")).unwrap();
    assert!(audit.contains("BCC") && audit.contains("PENDING"), "{out}");
    assert!(out.contains("no delivery attempts yet"), "{out}");
    let v = json(
        &mailplane(&server, &["-o", "json", "messages", "get", &first])
            .await
            .unwrap(),
    );
    let recipients = v["recipients"].as_array().unwrap();
    assert!(
        recipients
            .iter()
            .any(|r| r["address"] == "audit@example.com" && r["kind"] == "BCC"),
        "{v}"
    );
    assert_eq!(v["recipients"].as_array().unwrap().len(), 3);
    assert_eq!(v["attempts"].as_array().unwrap().len(), 0);

    let queue = json(&mailplane(&server, &["-o", "json", "queue"]).await.unwrap());
    let mine = &queue["queue_summaries"][0];
    assert_eq!(
        (mine["queued"].as_i64(), mine["paused"].as_bool()),
        (Some(2), Some(true))
    );
    let table = mailplane(&server, &["queue"]).await.unwrap();
    assert!(
        table.starts_with("ACCOUNT") && table.contains("OLDEST"),
        "{table}"
    );

    let out = mailplane(&server, &["messages", "cancel", &first])
        .await
        .unwrap();
    assert!(out.contains("CANCELLED"), "{out}");
    let err = mailplane(&server, &["messages", "retry", &first])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FailedPrecondition"), "{err}");
    mailplane(&server, &["messages", "cancel", &second])
        .await
        .unwrap();
    let resumed = json(
        &mailplane(&server, &["-o", "json", "queue", "resume", &acct.name])
            .await
            .unwrap(),
    );
    assert_eq!(
        (resumed["paused"].as_bool(), resumed["queued"].as_i64()),
        (Some(false), Some(0))
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_errors_print_the_servers_message() {
    let server = TestServer::start(Backend::Sqlite).await;
    mailplane_tests::create_account(&mut server.accounts(), mailplane_tests::account("Ops")).await;
    let err = mailplane(&server, &["send", "--subject", "Nobody", "--body", "x"])
        .await
        .unwrap_err();
    assert!(
        matches!(err, CliError::Status(_)),
        "the server refused it: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("InvalidArgument") && text.contains("at least one recipient"),
        "{text}"
    );
    let err = mailplane(
        &server,
        &[
            "send",
            "--to",
            "a@example.com",
            "--subject",
            "s",
            "--body",
            "x",
            "--header",
            "X-No-Colon",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("X-Name: value"), "{err}");
    let err = mailplane(
        &server,
        &[
            "send",
            "--to",
            "a@example.com",
            "--subject",
            "s",
            "--body",
            "x",
            "--attach",
            "/nonexistent/file.pdf",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/file.pdf"), "{err}");
    let err = mailplane(&server, &["messages", "get", "999"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NotFound"), "{err}");
    let err = mailplane(&server, &["queue", "pause", "999"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NotFound"), "{err}");
    let out = mailplane(&server, &["messages", "list"]).await.unwrap();
    assert_eq!(out.lines().count(), 1, "nothing was stored: {out}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_message_shows_its_attempts_and_can_be_retried() {
    let server = TestServer::start(Backend::Sqlite).await;
    // Bind and drop a listener to find a port nobody listens on: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    mailplane_tests::create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: u32::from(port),
            ..mailplane_tests::account("Down")
        },
    )
    .await;
    let out = mailplane(
        &server,
        &[
            "-o",
            "json",
            "send",
            "--to",
            "ops@example.com",
            "--subject",
            "Relay down",
            "--body",
            "x",
        ],
    )
    .await
    .unwrap();
    let name = json(&out)["name"].as_str().unwrap().to_owned();
    let mut client = crate::messages::messages(&server);
    crate::messages::wait_for(&mut client, &name, pb::MessageState::Deferred).await;

    let out = mailplane(&server, &["messages", "get", &name])
        .await
        .unwrap();
    assert!(out.contains("DEFERRED"), "{out}");
    let attempts = out
        .lines()
        .skip_while(|l| !l.starts_with("ATTEMPT"))
        .collect::<Vec<_>>();
    assert!(attempts.len() >= 2, "a header and an attempt: {out}");
    assert!(attempts[1].contains("CONNECTION_REFUSED"), "{out}");
    let recipient = out.lines().find(|l| l.starts_with("ops@")).unwrap();
    assert!(recipient.contains("PENDING") && recipient.contains("CONNECTION_REFUSED"));
    let listed = json(
        &mailplane(
            &server,
            &["-o", "json", "messages", "list", "--state", "deferred"],
        )
        .await
        .unwrap(),
    );
    assert_eq!(listed["messages"][0]["name"], name.as_str());

    let retried = json(
        &mailplane(&server, &["-o", "json", "messages", "retry", &name])
            .await
            .unwrap(),
    );
    assert_eq!(retried["state"], "QUEUED", "due now: {retried}");
    server.stop().await.unwrap();
}

/// `--watch` keeps `messages list` running and prints it again when a message arrives; the
/// real binary, stopped by the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_list_watch_prints_new_messages() {
    use crate::netns::harness::{Proc, binary};
    let server = TestServer::start(Backend::Sqlite).await;
    mailplane_tests::create_account(
        &mut server.accounts(),
        pb::SmtpAccount {
            host: "localhost".into(),
            port: 1,
            ..mailplane_tests::account("Watched")
        },
    )
    .await;
    let watch = Proc::spawn({
        let mut cmd = std::process::Command::new(binary("mailplane"));
        cmd.args(["messages", "list", "--watch", "--watch-interval", "1"])
            .args(["--output", "json", "--insecure-plaintext"])
            .args(["--server", &server.addr.to_string()])
            .env("MAILPLANE_TOKEN", &server.admin_token);
        cmd
    });
    watch
        .wait_for("[]", std::time::Duration::from_secs(20))
        .await;
    let sent = mailplane(
        &server,
        &[
            "send",
            "--to",
            "ops@example.com",
            "--subject",
            "watched",
            "--body",
            "hi",
            "-o",
            "json",
        ],
    )
    .await
    .unwrap();
    let name = json(&sent)["name"].as_str().unwrap().to_owned();
    watch
        .wait_for(&name, std::time::Duration::from_secs(20))
        .await;
    assert!(!watch.text().contains("panicked"), "{}", watch.text());
}
