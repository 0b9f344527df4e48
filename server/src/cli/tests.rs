//! `mailplane accounts test` and `mailplane tests …`: run a test e-mail and show each phase
//! live, then a verdict.

use super::Conn;
use super::output::{self, Format};
use super::{CliError, resource_name};
use clap::{Args, Subcommand, ValueEnum};
use mailplane_proto::v1 as pb;
use pb::smtp_test_service_client::SmtpTestServiceClient;
use pb::watch_test_response::Event;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Where a test stops.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StopAfterArg {
    /// After the banner and the first EHLO.
    Connect,
    /// After TLS is up.
    Tls,
    /// After authentication.
    Auth,
    /// After the message is accepted (the default).
    Delivery,
}

/// `accounts test` arguments.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The account: its code or accounts/CODE.
    pub account: String,
    /// The recipient.
    #[arg(long)]
    pub to: String,
    /// The subject [default: "TEST MESSAGE!", pt-BR "MENSAGEM DE TESTE!"].
    #[arg(long)]
    pub subject: Option<String>,
    /// The body [default: "ATTENTION: THIS IS A TEST MESSAGE!"].
    #[arg(long)]
    pub body: Option<String>,
    /// The language of the default subject and body: en or pt-BR.
    #[arg(long)]
    pub locale: Option<String>,
    /// Stop after this phase, sending nothing (like swaks --quit-after).
    #[arg(long, value_enum)]
    pub stop_after: Option<StopAfterArg>,
}

/// The `tests` commands.
#[derive(Debug, Subcommand)]
pub enum TestsCommand {
    /// List an account's tests, newest first.
    List {
        /// The account: its code or accounts/CODE.
        account: String,
        /// Tests per page (at most 500).
        #[arg(long, default_value_t = 30)]
        page_size: i32,
        /// Continue from a previous page.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one test with its transcript.
    Get {
        /// The test: accounts/CODE/tests/ID.
        test: String,
    },
}

use crate::render::short;

fn phase_name(p: i32) -> String {
    pb::Phase::try_from(p).map_or_else(|_| p.to_string(), |p| short(p.as_str_name(), "PHASE_"))
}

fn state_name(s: i32) -> String {
    pb::TestState::try_from(s)
        .map_or_else(|_| s.to_string(), |s| short(s.as_str_name(), "TEST_STATE_"))
}

fn class_name(c: i32) -> String {
    match pb::FailureClass::try_from(c) {
        Ok(pb::FailureClass::Unspecified) => String::new(),
        Ok(c) => short(c.as_str_name(), "FAILURE_CLASS_"),
        Err(_) => c.to_string(),
    }
}

fn millis(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| {
        d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6
    })
}

/// A phase as JSON.
fn phase_json(p: &pb::PhaseResult) -> Value {
    json!({
        "phase": phase_name(p.phase),
        "status": pb::PhaseStatus::try_from(p.status).map_or_else(|_| p.status.to_string(), |s| short(s.as_str_name(), "PHASE_STATUS_")),
        "duration_ms": millis(p.duration.as_ref()),
        "commands": p.commands,
        "reply_code": p.reply_code,
        "reply_text": p.reply_text,
        "detail": p.detail,
        "tls": p.tls.as_ref().map(|t| json!({
            "protocol_version": t.protocol_version,
            "cipher_suite": t.cipher_suite,
            "verification": pb::Verification::try_from(t.verification).map_or_else(|_| String::new(), |v| short(v.as_str_name(), "VERIFICATION_")),
            "verification_detail": t.verification_detail,
            "peer_certificate": t.peer_certificate.as_ref().map(|c| json!({
                "subject": c.subject, "issuer": c.issuer, "sans": c.sans,
                "not_before": c.not_before, "not_after": c.not_after,
            })),
        })),
    })
}

/// A test as JSON.
pub fn test_json(t: &pb::SmtpTest) -> Value {
    let r = t.result.clone().unwrap_or_default();
    json!({
        "name": t.name,
        "state": state_name(t.state),
        "to": t.to,
        "subject": t.subject,
        "locale": t.locale,
        "stop_after": pb::StopAfter::try_from(t.stop_after).map_or_else(|_| String::new(), |s| short(s.as_str_name(), "STOP_AFTER_")),
        "failure_class": class_name(r.failure_class),
        "failed_phase": if r.failed_phase == 0 { String::new() } else { phase_name(r.failed_phase) },
        "message": r.message,
        "hint": r.hint,
        "queue_id": r.queue_id,
        "message_id": r.message_id,
        "executed_by": t.executed_by,
        "capabilities": t.capabilities,
        "create_time": crate::render::time(t.create_time.as_ref()),
        "start_time": crate::render::time(t.start_time.as_ref()),
        "end_time": crate::render::time(t.end_time.as_ref()),
        "transcript": t.transcript.iter().map(phase_json).collect::<Vec<_>>(),
    })
}

/// One line for a finished phase.
fn phase_line(p: &pb::PhaseResult) -> String {
    let mark = match pb::PhaseStatus::try_from(p.status) {
        Ok(pb::PhaseStatus::Ok) => "✓",
        Ok(pb::PhaseStatus::Failed) => "✗",
        Ok(pb::PhaseStatus::Skipped) => "-",
        _ => "?",
    };
    let mut what = if p.reply_code > 0 {
        format!(
            "{} {}",
            p.reply_code,
            p.reply_text.lines().next().unwrap_or("")
        )
    } else {
        p.detail.first().cloned().unwrap_or_default()
    };
    if let Some(tls) = &p.tls {
        what = format!("{} {} {}", tls.protocol_version, tls.cipher_suite, what);
    }
    format!(
        "{mark} {:<14} {:>8.1} ms  {}",
        phase_name(p.phase),
        millis(p.duration.as_ref()),
        what.trim()
    )
}

/// Prints the verdict of a finished test; true when it succeeded.
fn verdict(out: &mut impl Write, t: &pb::SmtpTest) -> std::io::Result<bool> {
    let r = t.result.clone().unwrap_or_default();
    let ok = t.state == i32::from(pb::TestState::Succeeded);
    if ok {
        writeln!(out, "SUCCEEDED: {}", r.message)?;
        if !r.queue_id.is_empty() {
            writeln!(out, "queue id: {}", r.queue_id)?;
        }
    } else {
        writeln!(
            out,
            "{}: {} at {}: {}",
            state_name(t.state),
            class_name(r.failure_class),
            phase_name(r.failed_phase),
            r.message
        )?;
        if !r.hint.is_empty() {
            writeln!(out, "hint: {}", r.hint)?;
        }
    }
    writeln!(out, "test: {}", t.name)?;
    Ok(ok)
}

/// Runs `accounts test`: creates the test, follows it phase by phase, prints the verdict.
/// Fails (exit non-zero) unless the test succeeded.
pub async fn run_test(
    channel: Conn,
    format: Format,
    args: TestArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = SmtpTestServiceClient::new(channel);
    let test = client
        .create_test(pb::CreateTestRequest {
            parent: resource_name("accounts", &args.account),
            test: Some(pb::SmtpTest {
                to: args.to,
                subject: args.subject.unwrap_or_default(),
                body: args.body.unwrap_or_default(),
                locale: args.locale.unwrap_or_default(),
                stop_after: match args.stop_after {
                    None => pb::StopAfter::Unspecified,
                    Some(StopAfterArg::Connect) => pb::StopAfter::Connect,
                    Some(StopAfterArg::Tls) => pb::StopAfter::Tls,
                    Some(StopAfterArg::Auth) => pb::StopAfter::Auth,
                    Some(StopAfterArg::Delivery) => pb::StopAfter::Delivery,
                }
                .into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    let mut stream = client
        .watch_test(pb::WatchTestRequest {
            name: test.name.clone(),
        })
        .await?
        .into_inner();
    let live = format == Format::Table;
    let spin = live && std::io::stderr().is_terminal();
    let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut running: Option<String> = None;
    let mut frame = 0;
    if live {
        writeln!(
            out,
            "testing {} → {}",
            test.name.split("/tests/").next().unwrap_or(""),
            test.to
        )?;
    }
    let finished = loop {
        tokio::select! {
            message = stream.message() => match message? {
                Some(pb::WatchTestResponse { event: Some(Event::PhaseStarted(p)) }) => {
                    running = Some(phase_name(p));
                }
                Some(pb::WatchTestResponse { event: Some(Event::PhaseFinished(p)) }) => {
                    if spin {
                        eprint!("\r\x1b[2K");
                    }
                    running = None;
                    if live {
                        writeln!(out, "{}", phase_line(&p))?;
                        out.flush()?;
                    }
                }
                Some(pb::WatchTestResponse { event: Some(Event::Finished(t)) }) => break t,
                Some(pb::WatchTestResponse { event: None }) => {}
                None => return Err(CliError::Usage("the server ended the watch before the test finished; see `mailplane tests get`".into())),
            },
            _ = tick.tick(), if spin => {
                if let Some(phase) = &running {
                    frame = (frame + 1) % frames.len();
                    eprint!("\r\x1b[2K{} {phase}…", frames[frame]);
                }
            }
        }
    };
    if spin {
        eprint!("\r\x1b[2K");
    }
    let ok = if live {
        verdict(out, &finished)?
    } else {
        output::one(out, format, &test_json(&finished))?;
        finished.state == i32::from(pb::TestState::Succeeded)
    };
    if ok {
        Ok(())
    } else {
        Err(CliError::TestFailed(format!(
            "{} did not succeed",
            finished.name
        )))
    }
}

const COLUMNS: [(&str, &str); 6] = [
    ("NAME", "name"),
    ("STATE", "state"),
    ("TO", "to"),
    ("FAILURE", "failure_class"),
    ("QUEUE ID", "queue_id"),
    ("CREATED", "create_time"),
];

/// Runs a `tests` command.
pub async fn run(
    channel: Conn,
    format: Format,
    command: TestsCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = SmtpTestServiceClient::new(channel);
    match command {
        TestsCommand::List {
            account,
            page_size,
            page_token,
        } => {
            let page = client
                .list_tests(pb::ListTestsRequest {
                    parent: resource_name("accounts", &account),
                    page_size,
                    page_token: page_token.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let items: Vec<Value> = page.tests.iter().map(test_json).collect();
            output::list(out, format, &items, &COLUMNS, "tests")?;
            if !page.next_page_token.is_empty() {
                eprintln!("more tests: add --page-token {}", page.next_page_token);
            }
        }
        TestsCommand::Get { test } => {
            let t = client
                .get_test(pb::GetTestRequest { name: test })
                .await?
                .into_inner();
            if format == Format::Table {
                for p in &t.transcript {
                    writeln!(out, "{}", phase_line(p))?;
                }
                if t.state == i32::from(pb::TestState::Queued)
                    || t.state == i32::from(pb::TestState::Running)
                {
                    writeln!(out, "{}", state_name(t.state))?;
                    writeln!(out, "test: {}", t.name)?;
                } else {
                    verdict(out, &t)?;
                }
            } else {
                output::one(out, format, &test_json(&t))?;
            }
        }
    }
    Ok(())
}
