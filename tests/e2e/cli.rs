//! The CLI's client commands, parsed from real argument lists and run against a real server.

use clap::Parser as _;
use mailplane_server::cli::{self, Cli, CliError, Command};
use mailplane_tests::{Backend, TestServer};

/// Runs `mailplane ARGS…` against `server` and returns stdout.
async fn mailplane(server: &TestServer, args: &[&str]) -> Result<String, CliError> {
    let addr = format!("http://{}", server.addr);
    let argv = [
        "mailplane",
        "--server",
        addr.as_str(),
        "--token",
        server.admin_token.as_str(),
    ]
    .into_iter()
    .chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).map_err(|e| CliError::Usage(e.to_string()))?;
    let channel = cli::connect(&cli.client.server, cli.client.token.as_deref()).await?;
    let mut out = Vec::new();
    match cli.command {
        Command::Accounts(c) => cli::accounts::run(channel, cli.client.output, c, &mut out).await?,
        Command::Credentials(c) => {
            cli::credentials::run(channel, cli.client.output, c, &mut out).await?
        }
        Command::Tests(c) => cli::tests::run(channel, cli.client.output, c, &mut out).await?,
        Command::Tokens(c) => cli::tokens::run(channel, cli.client.output, c, &mut out).await?,
        Command::Audit(c) => cli::audit::run(channel, cli.client.output, c, &mut out).await?,
        Command::Connectors(c) => {
            cli::connectors::run(channel, cli.client.output, c, &mut out).await?
        }
        Command::Send(args) => {
            let c = cli::messages::MessagesCommand::Send(args);
            cli::messages::run(channel, cli.client.output, c, &mut out).await?
        }
        Command::Messages(c) => cli::messages::run(channel, cli.client.output, c, &mut out).await?,
        Command::Queue => {
            let c = cli::messages::MessagesCommand::Queue;
            cli::messages::run(channel, cli.client.output, c, &mut out).await?
        }
        Command::Serve(_) | Command::Server(_) => unreachable!("not a client command"),
    }
    Ok(String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_commands_round_trip() {
    let server = TestServer::start(Backend::Sqlite).await;
    let out = mailplane(
        &server,
        &[
            "accounts",
            "create",
            "--name",
            "Alerts",
            "--sender",
            "Alerts <alerts@example.com>",
            "--host",
            "smtp.example.com",
            "--security",
            "ssl",
            "--reply-to",
            "ops@example.com",
        ],
    )
    .await
    .unwrap();
    assert!(
        out.contains("account_name") && out.contains("Alerts"),
        "{out}"
    );
    assert!(
        out.contains("IMPLICIT_TLS") && out.contains("465"),
        "the seeds' SSL means implicit TLS: {out}"
    );

    mailplane(
        &server,
        &[
            "accounts",
            "create",
            "--name",
            "Ops",
            "--sender",
            "ops@example.com",
            "--host",
            "relay.internal",
            "--enabled=false",
        ],
    )
    .await
    .unwrap();
    let table = mailplane(&server, &["accounts", "list"]).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CODE") && lines[0].contains("SECURITY"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[2].contains("Ops") && lines[2].contains("no"),
        "{table}"
    );

    let json = mailplane(
        &server,
        &["accounts", "list", "--status", "disabled", "-o", "json"],
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(v["accounts"][0]["account_name"], "Ops");

    let yaml = mailplane(&server, &["accounts", "get", "1", "-o", "yaml"])
        .await
        .unwrap();
    assert!(yaml.contains("account_name: Alerts"), "{yaml}");

    let updated = mailplane(
        &server,
        &[
            "accounts",
            "update",
            "2",
            "--port",
            "2525",
            "--footer",
            "Sent by Ops",
            "-o",
            "json",
        ],
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&updated).unwrap();
    assert_eq!(v["port"], 2525);
    assert_eq!(v["enable_footer"], true);

    let csv = mailplane(&server, &["accounts", "export"]).await.unwrap();
    assert!(csv.starts_with("Code,Account name,Status"), "{csv}");
    assert_eq!(csv.lines().count(), 3);

    let err = mailplane(&server, &["accounts", "get", "999"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("NotFound") && err.to_string().contains("accounts/999"),
        "{err}"
    );
    let err = mailplane(
        &server,
        &[
            "accounts",
            "create",
            "--name",
            "Bad",
            "--sender",
            "nope",
            "--host",
            "x.example",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sender_email"), "{err}");
    let err = mailplane(&server, &["accounts", "update", "1"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nothing to change"), "{err}");
    let err = mailplane(&server, &["accounts", "delete", "1"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FailedPrecondition"), "{err}");
    mailplane(&server, &["accounts", "set-default", "2"])
        .await
        .unwrap_err(); // disabled
    mailplane(&server, &["accounts", "update", "2", "--enabled"])
        .await
        .unwrap();
    mailplane(&server, &["accounts", "set-default", "accounts/2"])
        .await
        .unwrap();
    mailplane(&server, &["accounts", "delete", "1"])
        .await
        .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_says_what_to_do() {
    // Bind and drop a listener to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = cli::connect(&format!("127.0.0.1:{port}"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mailplane serve"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_messages_and_queue_commands() {
    let server = TestServer::start(Backend::Sqlite).await;
    let connector = server.create_connector("Hold").await;
    let acct = mailplane_tests::create_account(
        &mut server.accounts(),
        mailplane_proto::v1::SmtpAccount {
            use_network_connector: true,
            network_connector: connector.name.clone(),
            ..mailplane_tests::account("Hold")
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.csv");
    std::fs::write(&report, "a,b\n1,2\n").unwrap();
    let out = mailplane(
        &server,
        &[
            "--output",
            "json",
            "send",
            "--to",
            "ops@example.com",
            "--bcc",
            "audit@example.com",
            "--subject",
            "Nightly report",
            "--body",
            "See the attachment.",
            "--attach",
            report.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let sent: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sent["state"], "QUEUED", "{out}");
    assert_eq!(sent["account"], acct.name.as_str());
    let name = sent["name"].as_str().unwrap().to_owned();
    let out = mailplane(&server, &["messages", "list", "--recipient", "audit@"])
        .await
        .unwrap();
    assert!(out.contains("Nightly report"), "{out}");
    let out = mailplane(&server, &["--output", "json", "queue"])
        .await
        .unwrap();
    assert!(
        out.contains("\"queued\": 1") || out.contains("\"queued\":1"),
        "{out}"
    );
    let out = mailplane(&server, &["messages", "cancel", &name])
        .await
        .unwrap();
    assert!(out.contains("CANCELLED"), "{out}");
    let err = mailplane(&server, &["messages", "retry", &name])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FailedPrecondition"), "{err}");
    let out = mailplane(&server, &["messages", "pause", &acct.name])
        .await
        .unwrap();
    assert!(out.contains("paused    yes"), "{out}");
    server.stop().await.unwrap();
}
