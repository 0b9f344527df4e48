//! The `mailplane-agent` command.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mailplane_agent::allowlist::Allowlist;
use mailplane_agent::config::ConfigArgs;
use mailplane_agent::{AgentConfig, LogFormat, enroll, state};

/// mailplane's network connector: runs the SMTP sessions of a connector's accounts from
/// inside a network the server cannot reach, over a stream it dials out to the server.
#[derive(Parser)]
#[command(name = "mailplane-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (enrolls first when there is no state and a token is given).
    Run(ConfigArgs),
    /// Enroll with a one-time token, write the state directory, and exit.
    Enroll(ConfigArgs),
    /// Check the configuration, the allowed destinations, the state directory and the
    /// certificate; print a summary (without secrets); exit non-zero on problems.
    CheckConfig(ConfigArgs),
}

fn init_logging(config: &AgentConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}

fn check_config(args: &ConfigArgs) -> bool {
    let mut ok = true;
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            println!("configuration: ERROR {e}");
            return false;
        }
    };
    println!("server:               {}", config.servers.join(", "));
    println!("connections:          {}", config.connections);
    match std::fs::metadata(&config.server_ca) {
        Ok(_) => println!("server_ca:            {}", config.server_ca.display()),
        Err(e) => {
            ok = false;
            println!(
                "server_ca:            {} (ERROR {e})",
                config.server_ca.display()
            );
        }
    }
    if let Some(name) = &config.server_name {
        println!("server_name:          {name}");
    }
    println!(
        "enrollment_token:     {}",
        if config.enrollment_token.is_some() {
            "set"
        } else {
            "not set"
        }
    );
    match Allowlist::parse(&config.allowed_destinations) {
        Ok(list) => {
            let shown: Vec<String> = list.patterns().iter().map(ToString::to_string).collect();
            println!("allowed_destinations: {}", shown.join(", "));
        }
        Err(e) => {
            ok = false;
            println!("allowed_destinations: ERROR {e}");
        }
    }
    println!("trust:                {}", config.trust.as_str());
    match &config.proxy {
        // Display shows no credentials: http://<redacted>@HOST:PORT.
        Some(p) if p.no_proxy.is_empty() => {
            println!("proxy:                {} (from {})", p.url, p.from);
        }
        Some(p) => println!(
            "proxy:                {} (from {}; no_proxy set)",
            p.url, p.from
        ),
        None => println!("proxy:                none"),
    }
    println!("max_concurrent_jobs:  {}", config.max_concurrent_jobs);
    println!("heartbeat_interval:   {:?}", config.heartbeat_interval);
    println!("drain_timeout:        {:?}", config.drain_timeout);
    println!(
        "log:                  {:?} {}",
        config.log_format, config.log_level
    );
    match config.metrics_listen {
        Some(addr) => println!("metrics_listen:       {addr}"),
        None => println!("metrics_listen:       off"),
    }
    println!("state_dir:            {}", config.state_dir.display());
    match state::load(&config.state_dir) {
        Ok(Some(st)) => {
            println!("agent:                {}", st.agent);
            match enroll::certificate_validity(&st.cert_pem) {
                Ok((_, not_after)) => {
                    let now = SystemTime::now();
                    match not_after.duration_since(now) {
                        Ok(left) => println!(
                            "certificate:          valid for {} more days{}",
                            left.as_secs() / 86_400,
                            if enroll::needs_renewal(&st.cert_pem, now).unwrap_or(false) {
                                " (due for renewal)"
                            } else {
                                ""
                            }
                        ),
                        Err(_) => {
                            ok = false;
                            println!(
                                "certificate:          ERROR expired; enroll again with a new token"
                            );
                        }
                    }
                }
                Err(e) => {
                    ok = false;
                    println!("certificate:          ERROR {e}");
                }
            }
        }
        Ok(None) if config.enrollment_token.is_some() => {
            println!("agent:                not enrolled; `run` will enroll with the token");
        }
        Ok(None) => {
            ok = false;
            println!(
                "agent:                ERROR not enrolled: run `mailplane-agent enroll` first"
            );
        }
        Err(e) => {
            ok = false;
            println!("agent:                ERROR {e}");
        }
    }
    ok
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => Ok(if check_config(&args) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Enroll(args) => {
            let config = args.resolve()?;
            init_logging(&config);
            let enrolled = mailplane_agent::enroll(&config)
                .await
                .context("enrollment failed")?;
            println!(
                "enrolled as {} (state in {})",
                enrolled.agent,
                enrolled.state_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let config = args.resolve()?;
            init_logging(&config);
            mailplane_agent::run(config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
