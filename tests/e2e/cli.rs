//! The CLI's client commands, parsed from real argument lists and run against a real server.

use clap::Parser as _;

use mailplane_server::cli::{self, Cli, CliError, Command, messages::MessagesCommand};
use mailplane_tests::{Backend, TestServer};

/// Runs `mailplane ARGS…` against `server` and returns stdout.
pub(crate) async fn mailplane(server: &TestServer, args: &[&str]) -> Result<String, CliError> {
    mailplane_with_stdin(server, args, b"").await
}

/// Runs `mailplane ARGS…` against `server` with `stdin` as standard input; returns stdout.
/// An `Err` is what the binary prints before it exits non-zero.
pub(crate) async fn mailplane_with_stdin(
    server: &TestServer,
    args: &[&str],
    mut stdin: &[u8],
) -> Result<String, CliError> {
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
    let format = cli.client.output;
    let outbox = match cli.command {
        Command::Send(args) => Some(MessagesCommand::Send(args)),
        Command::Messages(c) => Some(c),
        other => {
            run_other(channel.clone(), format, other, &mut stdin, &mut out).await?;
            None
        }
    };
    if let Some(c) = outbox {
        cli::messages::run_with_input(channel, format, c, &mut stdin, &mut out).await?;
    }
    Ok(String::from_utf8(out).unwrap())
}

/// Runs a client command of the other resources.
async fn run_other(
    channel: cli::Conn,
    format: cli::output::Format,
    command: Command,
    stdin: &mut &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CliError> {
    match command {
        Command::Accounts(c) => cli::accounts::run(channel, format, c, out).await?,
        Command::Credentials(c) => cli::credentials::run(channel, format, c, out).await?,
        Command::Tests(c) => cli::tests::run(channel, format, c, out).await?,
        Command::Tokens(c) => cli::tokens::run(channel, format, c, out).await?,
        Command::Audit(c) => cli::audit::run(channel, format, c, out).await?,
        Command::Connectors(c) => cli::connectors::run(channel, format, c, out).await?,
        Command::Server(cli::server::ServerCommand::Replicas) => {
            cli::server::replicas(channel, format, out).await?;
        }
        Command::Apply(args) => cli::apply::run(channel, format, args, stdin, out).await?,
        Command::Export => cli::export::run(channel, format, out).await?,
        Command::Serve(_)
        | Command::Server(_)
        | Command::Keys(_)
        | Command::Completion { .. }
        | Command::Man { .. } => {
            unreachable!("not a client command")
        }
        Command::Send(_) | Command::Messages(_) => unreachable!("the outbox"),
    }
    Ok(())
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

/// The JSON that `-o json` printed.
pub(crate) fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_replicas_lists_this_replica() {
    let server = TestServer::start(Backend::Sqlite).await;
    let table = mailplane(&server, &["server", "replicas"]).await.unwrap();
    assert!(
        table.contains("ADDRESS") && table.contains("HEARTBEAT"),
        "{table}"
    );
    let line = table
        .lines()
        .find(|l| l.contains(&server.addr.to_string()))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.starts_with('*') && line.contains("SERVING"), "{table}");
    server.stop().await.unwrap();
}
