//! The `mailplane` binary: the server and its CLI in one, HashiCorp style.

use anyhow::Context as _;
use clap::Parser as _;
use mailplane_server::cli::{self, Cli, Command, LogFormat, ServeArgs};
use mailplane_server::{config, telemetry};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args, cli.client.insecure_plaintext).await,
            Command::Accounts(command) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::accounts::run(channel, cli.client.output, command, &mut out).await?;
                Ok(())
            }
            Command::Connectors(command) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::connectors::run(channel, cli.client.output, command, &mut out).await?;
                Ok(())
            }
            Command::Server(cli::server::ServerCommand::Info { data_dir }) => {
                cli::server::info(data_dir, &mut std::io::stdout().lock())?;
                Ok(())
            }
            Command::Server(cli::server::ServerCommand::Replicas) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::server::replicas(channel, cli.client.output, &mut out).await?;
                Ok(())
            }
            Command::Keys(command) => {
                // Progress lines as they come (a lock of stdout cannot cross an await).
                let mut out = std::io::stdout();
                cli::keys::run(command, cli.client.output, &mut out).await?;
                Ok(())
            }
            Command::Audit(command) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::audit::run(channel, cli.client.output, command, &mut out).await?;
                Ok(())
            }
            Command::Tokens(command) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::tokens::run(channel, cli.client.output, command, &mut out).await?;
                Ok(())
            }
            Command::Tests(command) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::tests::run(channel, cli.client.output, command, &mut out).await?;
                Ok(())
            }
            Command::Send(args) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                let command = cli::messages::MessagesCommand::Send(args);
                cli::messages::run(channel, cli.client.output, command, &mut out).await?;
                Ok(())
            }
            Command::Completion { shell } => {
                match cli::docs::completion(shell, &mut std::io::stdout().lock()) {
                    // `mailplane completion bash | head` is not an error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => other.context("cannot write the completion script"),
                }
            }
            Command::Man { dir } => {
                let n = cli::docs::write_man_pages(&dir)?;
                println!("wrote {n} man pages to {}", dir.display());
                Ok(())
            }
            Command::Messages(command) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::messages::run(channel, cli.client.output, command, &mut out).await?;
                Ok(())
            }
            Command::Credentials(command) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::credentials::run(channel, cli.client.output, command, &mut out).await?;
                Ok(())
            }
            Command::Apply(args) => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                let mut stdin = std::io::stdin().lock();
                cli::apply::run(channel, cli.client.output, args, &mut stdin, &mut out).await?;
                Ok(())
            }
            Command::Export => {
                let channel = cli::connect_with(&cli.client).await?;
                let mut out = std::io::stdout().lock();
                cli::export::run(channel, cli.client.output, &mut out).await?;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs, insecure_plaintext: bool) -> anyhow::Result<()> {
    let file = args.file_config().map_err(anyhow::Error::msg)?;
    let json = match args.log_format {
        Some(f) => f == LogFormat::Json,
        None => file.log_format.as_deref() == Some("json"),
    };
    let level = args
        .log_level
        .clone()
        .or_else(|| file.log_level.clone())
        .unwrap_or_else(|| "info".into());
    telemetry::init(json, &level);

    let mut overrides = args.overrides();
    overrides.insecure_plaintext |= insecure_plaintext;
    // Development mode keeps nothing: a fresh data dir that is removed on exit.
    let _dev_dir = if args.dev && overrides.data_dir.is_none() {
        let dir = tempfile::Builder::new()
            .prefix("mailplane-dev-")
            .tempdir()
            .context("creating the development data dir")?;
        overrides.data_dir = Some(dir.path().to_path_buf());
        Some(dir)
    } else {
        None
    };
    let mut config = config::resolve(overrides, &file).map_err(anyhow::Error::msg)?;
    config.print_bootstrap_token = args.dev;
    if args.dev {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            listen = %config.listen,
            "DEVELOPMENT MODE: plaintext API, and the data is thrown away on exit"
        );
    }
    mailplane_server::run(config, shutdown_signal())
        .await
        .context("mailplane server")?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C will stop the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
