//! `mailplane apply -f FILE`: brings the server's connectors, credentials and accounts to the
//! state a YAML file describes, like `kubectl apply` or a Terraform plan. Everything in the
//! file is checked with the server's own domain rules before the first write; the plan shows
//! each create, update (with a field diff), delete (`--prune`) and unchanged object; updates
//! and deletes carry the etags read for the plan, so a concurrent edit stops the run with
//! ABORTED naming the object. A second run reports no change.

pub mod enums;
pub mod execute;
pub mod file;
pub mod lines;
pub mod normalize;
pub mod plan;
pub mod secrets;
pub mod state;
#[cfg(test)]
mod tests;

use super::output::{self, Format};
use super::{CliError, Conn};
use clap::Args;
use plan::{Action, Options, Plan};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// `mailplane apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The YAML file describing connectors, credentials and accounts ("-" for standard input).
    /// `mailplane export` writes one.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the connectors, credentials and accounts the file does not have.
    #[arg(long)]
    pub prune: bool,
    /// Send every credential's secrets again (read from their secret_env or secret_file).
    #[arg(long)]
    pub rotate_secrets: bool,
}

/// Reads and checks the file `text` (named `source` in messages) against what the server holds
/// now, and works out the plan. `Err` lists every problem, each with its line.
pub async fn prepare(
    conn: &Conn,
    source: &str,
    text: &str,
    options: Options,
) -> Result<Plan, CliError> {
    let lines = lines::Lines::new(text);
    let desired = file::parse(text).map_err(|p| report(source, &[p]))?;
    let current = state::Current::read(conn).await?;
    plan::plan(&desired, &lines, &current, options).map_err(|found| report(source, &found))
}

/// The problems as `FILE:LINE: message` lines.
fn report(source: &str, problems: &[file::Problem]) -> CliError {
    let mut text = format!(
        "{source} has {} problem{}; nothing was changed:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        match p.line {
            Some(line) => text.push_str(&format!("\n  {source}:{line}: {}", p.message)),
            None => text.push_str(&format!("\n  {source}: {}", p.message)),
        }
    }
    CliError::File(text)
}

/// Runs `mailplane apply`.
pub async fn run(
    conn: Conn,
    format: Format,
    args: ApplyArgs,
    stdin: &mut impl std::io::Read,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let (source, text) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        stdin.read_to_string(&mut text)?;
        ("<stdin>".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(&args.file)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
        (args.file.display().to_string(), text)
    };
    let options = Options {
        prune: args.prune,
        rotate_secrets: args.rotate_secrets,
    };
    let plan = prepare(&conn, &source, &text, options).await?;
    if format != Format::Table {
        output::one(out, format, &plan_json(&plan, args.dry_run))?;
        if args.dry_run || plan.is_empty() {
            return Ok(());
        }
        execute::execute(&conn, &plan, &mut std::io::sink()).await?;
        return Ok(());
    }
    print_plan(&plan, out)?;
    if plan.is_empty() {
        writeln!(out, "No changes: the server is as {source} describes.")?;
        return Ok(());
    }
    if args.dry_run {
        writeln!(out, "Dry run: nothing was changed.")?;
        return Ok(());
    }
    let done = execute::execute(&conn, &plan, out).await?;
    writeln!(
        out,
        "Applied {done} change{}.",
        if done == 1 { "" } else { "s" }
    )?;
    Ok(())
}

/// The plan for people: one line per object, the changed fields under each update.
pub fn print_plan(plan: &Plan, out: &mut impl Write) -> std::io::Result<()> {
    for s in &plan.steps {
        let mark = match s.action {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Unchanged => '=',
            Action::NotInFile => '?',
        };
        let hint = match s.action {
            Action::NotInFile => " (kept; --prune deletes it)",
            _ => "",
        };
        writeln!(
            out,
            "{mark} {} {:?}: {}{hint}",
            s.kind.as_str(),
            s.display,
            s.action.as_str()
        )?;
        for (field, from, to) in &s.changes {
            writeln!(out, "    {field}: {from:?} -> {to:?}")?;
        }
        for note in &s.secrets_sent {
            writeln!(out, "    {note} (sent, never shown)")?;
        }
    }
    writeln!(
        out,
        "Plan: {} to create, {} to update, {} to delete, {} unchanged, {} not in the file.",
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Delete),
        plan.count(Action::Unchanged),
        plan.count(Action::NotInFile),
    )
}

/// The plan for programs (`-o json|yaml`).
pub fn plan_json(plan: &Plan, dry_run: bool) -> serde_json::Value {
    let steps: Vec<_> = plan
        .steps
        .iter()
        .map(|s| {
            json!({
                "kind": s.kind.as_str(),
                "name": s.display,
                "resource": s.name,
                "action": s.action.as_str(),
                "changes": s.changes.iter().map(|(f, from, to)| json!({
                    "field": f, "from": from, "to": to
                })).collect::<Vec<_>>(),
                "secrets_sent": s.secrets_sent,
            })
        })
        .collect();
    json!({
        "dry_run": dry_run,
        "steps": steps,
        "create": plan.count(Action::Create),
        "update": plan.count(Action::Update),
        "delete": plan.count(Action::Delete),
        "unchanged": plan.count(Action::Unchanged),
        "not_in_file": plan.count(Action::NotInFile),
    })
}
