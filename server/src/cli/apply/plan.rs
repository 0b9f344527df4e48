//! The plan: what `apply` would create, update, delete or leave, worked out from the file and
//! what the server holds, with every problem found before anything is written.

use super::file::{DesiredFile, Problem};
use super::lines::Lines;
use super::normalize::{self, Fields};
use super::secrets;
use super::state::{Current, same_name};
use crate::domain::CredentialSpec;
use crate::error::Error;
use crate::secret::Secret;
use mailplane_proto::v1 as pb;
use std::collections::HashMap;

/// What a step works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A network connector.
    Connector,
    /// A credential.
    Credential,
    /// An SMTP account.
    Account,
}

impl Kind {
    /// The word for it in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connector => "connector",
            Self::Credential => "credential",
            Self::Account => "account",
        }
    }

    fn section(self) -> &'static str {
        match self {
            Self::Connector => "connectors",
            Self::Credential => "credentials",
            Self::Account => "accounts",
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create it.
    Create,
    /// Change the fields listed.
    Update,
    /// Delete it (`--prune`).
    Delete,
    /// Nothing: it is as the file says.
    Unchanged,
    /// Nothing: the server has it, the file does not, and `--prune` was not given.
    NotInFile,
}

impl Action {
    /// The word for it in the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Unchanged => "unchanged",
            Self::NotInFile => "not in the file",
        }
    }

    /// Whether it writes.
    pub fn writes(self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Delete)
    }
}

/// A field that changes: its name, the value now, the value after.
pub type Change = (&'static str, String, String);

/// What a step sends.
#[derive(Debug)]
pub enum Payload {
    /// Nothing (delete, unchanged).
    None,
    /// The connector's fields.
    Connector(pb::Connector),
    /// The credential's fields, and the secrets to send with them (read from the environment
    /// or files; never printed).
    Credential(pb::Credential, Vec<(&'static str, Secret)>),
    /// The account's fields; `credential` and `network_connector` hold the names the file
    /// uses, resolved to resource names when the step runs.
    Account(pb::SmtpAccount),
}

/// One step of the plan.
#[derive(Debug)]
pub struct Step {
    /// What it works on.
    pub kind: Kind,
    /// What it does.
    pub action: Action,
    /// The object's unique name (account name or display name).
    pub display: String,
    /// Its resource name on the server; empty until it is created.
    pub name: String,
    /// Its etag when the plan was made: a write fails with ABORTED if it changed since.
    pub etag: String,
    /// The fields that change.
    pub changes: Vec<Change>,
    /// The secrets sent, and where from ("secret from $RELAY_PASSWORD").
    pub secrets_sent: Vec<String>,
    /// What it sends.
    pub payload: Payload,
}

/// The steps, in the order they run: connectors, credentials and accounts are created and
/// updated first, then accounts, credentials and connectors are deleted.
#[derive(Debug, Default)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
}

impl Plan {
    /// How many steps do `action`.
    pub fn count(&self, action: Action) -> usize {
        self.steps.iter().filter(|s| s.action == action).count()
    }

    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.steps.iter().any(|s| s.action.writes())
    }
}

/// How to plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Delete what the server has and the file does not.
    pub prune: bool,
    /// Send every credential's secrets again.
    pub rotate_secrets: bool,
}

/// Collects problems with where they are.
struct Problems<'a> {
    lines: &'a Lines,
    found: Vec<Problem>,
}

impl Problems<'_> {
    fn at(&mut self, kind: Kind, index: usize, field: &str, message: String) {
        self.found.push(Problem {
            line: self.lines.field(kind.section(), index, field),
            message,
        });
    }

    /// A domain error about entry `index`, at the line of the field it names.
    fn domain(&mut self, kind: Kind, index: usize, display: &str, err: &Error) {
        let field = match err {
            Error::InvalidArgument { field, .. } => {
                field.rsplit('.').next().unwrap_or(field).to_owned()
            }
            _ => String::new(),
        };
        self.at(
            kind,
            index,
            &field,
            format!("{} {display:?}: {err}", kind.as_str()),
        );
    }
}

/// Works out the plan, or every problem that stops it.
pub fn plan(
    file: &DesiredFile,
    lines: &Lines,
    current: &Current,
    options: Options,
) -> Result<Plan, Vec<Problem>> {
    let mut problems = Problems {
        lines,
        found: super::file::check_shape(file, lines),
    };
    let mut writes = Vec::new();
    let mut removals = Vec::new();

    // Connectors.
    let mut kept_connectors = Vec::new();
    for (i, entry) in file.connectors.iter().enumerate() {
        let desired = match normalize::connector(entry) {
            Ok(d) => d,
            Err(e) => {
                problems.domain(Kind::Connector, i, &entry.display_name, &e);
                continue;
            }
        };
        let found: Vec<_> = current
            .connectors
            .iter()
            .filter(|c| same_name(&c.display_name, &entry.display_name))
            .collect();
        let existing = found.first().copied();
        kept_connectors.extend(existing.map(|c| c.name.clone()));
        let changes = existing.map_or_else(Vec::new, |c| {
            normalize::diff(
                &normalize::connector_fields(c),
                &normalize::connector_fields(&desired),
            )
        });
        writes.push(step(
            Kind::Connector,
            &entry.display_name,
            existing.map(|c| (c.name.as_str(), c.etag.as_str())),
            changes,
            Vec::new(),
            Payload::Connector(desired),
        ));
    }

    // Credentials.
    let mut specs: HashMap<String, CredentialSpec> = HashMap::new();
    let mut kept_credentials = Vec::new();
    for (i, entry) in file.credentials.iter().enumerate() {
        let (desired, spec) = match normalize::credential(entry) {
            Ok(d) => d,
            Err(e) => {
                problems.domain(Kind::Credential, i, &entry.display_name, &e);
                continue;
            }
        };
        specs.insert(entry.display_name.trim().to_lowercase(), spec);
        let found: Vec<_> = current
            .credentials
            .iter()
            .filter(|c| same_name(&c.display_name, &entry.display_name))
            .collect();
        if found.len() > 1 {
            problems.at(
                Kind::Credential,
                i,
                "display_name",
                format!(
                    "credential {:?}: the server has {} credentials with this name ({}); rename \
                     all but one (mailplane credentials update NAME --display-name …)",
                    entry.display_name,
                    found.len(),
                    found
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            continue;
        }
        let existing = found.first().copied();
        kept_credentials.extend(existing.map(|c| c.name.clone()));
        let changes = existing.map_or_else(Vec::new, |c| {
            normalize::diff(
                &normalize::credential_fields(c),
                &normalize::credential_fields(&desired),
            )
        });
        // Secrets go with a create, with a change that needs them given again (a destination
        // or token endpoint the old ones do not cover), and when asked to rotate.
        let resend = changes.iter().any(|(f, _, _)| {
            matches!(
                *f,
                "allowed_destinations" | "token_url" | "token_source" | "kind"
            )
        });
        let mut sent = Vec::new();
        let mut notes = Vec::new();
        for s in entry.secrets() {
            let needed = existing.is_none()
                || options.rotate_secrets
                || (resend && secrets::is_given(&s.reference));
            // A secret given in the file itself is refused (reported already).
            if !needed || entry.inline(s.field) {
                continue;
            }
            match secrets::resolve(s.field, &s.reference) {
                Ok(secret) => {
                    notes.push(format!("{} {}", s.field, secrets::describe(&s.reference)));
                    sent.push((s.field, secret));
                }
                Err(message) => {
                    let key = if s.reference.file.is_some() && s.reference.env.is_none() {
                        format!("{}_file", s.field)
                    } else {
                        format!("{}_env", s.field)
                    };
                    problems.at(
                        Kind::Credential,
                        i,
                        &key,
                        format!("credential {:?}: {message}", entry.display_name),
                    );
                }
            }
        }
        let mut s = step(
            Kind::Credential,
            &entry.display_name,
            existing.map(|c| (c.name.as_str(), c.etag.as_str())),
            changes,
            notes,
            Payload::Credential(desired, sent),
        );
        if s.action == Action::Unchanged && !s.secrets_sent.is_empty() {
            s.action = Action::Update;
        }
        writes.push(s);
    }

    // Accounts.
    let mut kept_accounts = Vec::new();
    for (i, entry) in file.accounts.iter().enumerate() {
        let credential = match resolve_credential(entry, file, current, &specs, options) {
            Ok(c) => c,
            Err(message) => {
                problems.at(Kind::Account, i, "credential", message);
                continue;
            }
        };
        if let Err(message) = check_connector(entry, file, current, options) {
            problems.at(Kind::Account, i, "network_connector", message);
            continue;
        }
        let desired = match normalize::account(entry, credential.as_ref()) {
            Ok(d) => d,
            Err(e) => {
                problems.domain(Kind::Account, i, &entry.account_name, &e);
                continue;
            }
        };
        let existing = current
            .accounts
            .iter()
            .find(|a| same_name(&a.account_name, &entry.account_name));
        kept_accounts.extend(existing.map(|a| a.name.clone()));
        let changes = existing.map_or_else(Vec::new, |a| {
            let mut changes = normalize::diff(
                &account_fields_now(a, current),
                &account_fields_wanted(&desired, file, current),
            );
            if desired.is_default && !a.is_default {
                changes.push(("is_default", "false".into(), "true".into()));
            }
            changes
        });
        writes.push(step(
            Kind::Account,
            &entry.account_name,
            existing.map(|a| (a.name.as_str(), a.etag.as_str())),
            changes,
            Vec::new(),
            Payload::Account(desired),
        ));
    }

    // What the server has and the file does not: deleted with --prune, reported otherwise.
    let leftover = |kind: Kind, name: &str, display: &str, etag: &str| Step {
        kind,
        action: if options.prune {
            Action::Delete
        } else {
            Action::NotInFile
        },
        display: display.to_owned(),
        name: name.to_owned(),
        etag: etag.to_owned(),
        changes: Vec::new(),
        secrets_sent: Vec::new(),
        payload: Payload::None,
    };
    for a in current
        .accounts
        .iter()
        .filter(|a| !kept_accounts.contains(&a.name))
    {
        if options.prune
            && a.is_default
            && !file.accounts.is_empty()
            && !file.accounts.iter().any(|e| e.is_default)
        {
            problems.found.push(Problem {
                line: lines.top_key("accounts"),
                message: format!(
                    "--prune would delete the default account {:?} while others remain; mark \
                     the account that should be the default with is_default: true",
                    a.account_name
                ),
            });
        }
        removals.push(leftover(Kind::Account, &a.name, &a.account_name, &a.etag));
    }
    for c in current
        .credentials
        .iter()
        .filter(|c| !kept_credentials.contains(&c.name))
    {
        removals.push(leftover(
            Kind::Credential,
            &c.name,
            &c.display_name,
            &c.etag,
        ));
    }
    for c in current
        .connectors
        .iter()
        .filter(|c| !kept_connectors.contains(&c.name))
    {
        removals.push(leftover(Kind::Connector, &c.name, &c.display_name, &c.etag));
    }

    if !problems.found.is_empty() {
        let mut found = problems.found;
        found.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        found.dedup();
        return Err(found);
    }
    writes.extend(removals);
    Ok(Plan { steps: writes })
}

/// A create (no `existing`), an update (changes), or unchanged.
fn step(
    kind: Kind,
    display: &str,
    existing: Option<(&str, &str)>,
    changes: Vec<Change>,
    secrets_sent: Vec<String>,
    payload: Payload,
) -> Step {
    let action = match (existing, changes.is_empty()) {
        (None, _) => Action::Create,
        (Some(_), false) => Action::Update,
        (Some(_), true) => Action::Unchanged,
    };
    Step {
        kind,
        action,
        display: display.trim().to_owned(),
        name: existing.map(|(n, _)| n.to_owned()).unwrap_or_default(),
        etag: existing.map(|(_, e)| e.to_owned()).unwrap_or_default(),
        changes,
        secrets_sent,
        payload,
    }
}

/// The spec of the credential an account names: from the file, or from the server when the
/// file does not have it (and `--prune` will not delete it).
fn resolve_credential(
    entry: &super::file::AccountEntry,
    file: &DesiredFile,
    current: &Current,
    specs: &HashMap<String, CredentialSpec>,
    options: Options,
) -> Result<Option<CredentialSpec>, String> {
    let name = entry.credential.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if let Some(spec) = specs.get(&name.to_lowercase()) {
        return Ok(Some(spec.clone()));
    }
    if file
        .credentials
        .iter()
        .any(|c| same_name(&c.display_name, name))
    {
        // In the file, but with its own problem (reported there).
        return Err(format!(
            "account {:?}: credential {name:?} has problems of its own (see above)",
            entry.account_name
        ));
    }
    let found: Vec<_> = current
        .credentials
        .iter()
        .filter(|c| same_name(&c.display_name, name))
        .collect();
    match (found.as_slice(), options.prune) {
        ([], _) => Err(format!(
            "account {:?}: credential {name:?} is neither in the file's credentials nor on \
             the server",
            entry.account_name
        )),
        ([_], true) => Err(format!(
            "account {:?}: credential {name:?} is not in the file, so --prune would delete \
             it; add it to the file's credentials",
            entry.account_name
        )),
        ([c], false) => CredentialSpec::try_from(*c)
            .map(Some)
            .map_err(|e| format!("account {:?}: credential {name:?}: {e}", entry.account_name)),
        (many, _) => Err(format!(
            "account {:?}: the server has {} credentials named {name:?}; rename all but one",
            entry.account_name,
            many.len()
        )),
    }
}

/// The connector an account names exists in the file, or on the server and stays there.
fn check_connector(
    entry: &super::file::AccountEntry,
    file: &DesiredFile,
    current: &Current,
    options: Options,
) -> Result<(), String> {
    let name = entry.network_connector.trim();
    if name.is_empty()
        || file
            .connectors
            .iter()
            .any(|c| same_name(&c.display_name, name))
    {
        return Ok(());
    }
    let on_server = current
        .connectors
        .iter()
        .any(|c| same_name(&c.display_name, name));
    match (on_server, options.prune) {
        (false, _) => Err(format!(
            "account {:?}: network connector {name:?} is neither in the file's connectors nor \
             on the server",
            entry.account_name
        )),
        (true, true) => Err(format!(
            "account {:?}: network connector {name:?} is not in the file, so --prune would \
             delete it; add it to the file's connectors",
            entry.account_name
        )),
        (true, false) => Ok(()),
    }
}

/// An account's fields as the server has them, its credential and connector by name.
fn account_fields_now(a: &pb::SmtpAccount, current: &Current) -> Fields {
    let credential = if a.credential.is_empty() {
        String::new()
    } else {
        current.credential_name(&a.credential)
    };
    let connector = if a.network_connector.is_empty() {
        String::new()
    } else {
        current.connector_name(&a.network_connector)
    };
    normalize::account_fields(a, &credential, &connector)
}

/// An account's fields as the file wants them, its credential and connector by the names
/// they will have (the file's spelling of them when the file has them).
fn account_fields_wanted(a: &pb::SmtpAccount, file: &DesiredFile, current: &Current) -> Fields {
    let credential = file
        .credentials
        .iter()
        .map(|c| c.display_name.as_str())
        .chain(current.credentials.iter().map(|c| c.display_name.as_str()))
        .find(|c| same_name(c, &a.credential))
        .map_or_else(|| a.credential.clone(), |c| c.trim().to_owned());
    let connector = file
        .connectors
        .iter()
        .map(|c| c.display_name.as_str())
        .chain(current.connectors.iter().map(|c| c.display_name.as_str()))
        .find(|c| same_name(c, &a.network_connector))
        .map_or_else(|| a.network_connector.clone(), |c| c.trim().to_owned());
    normalize::account_fields(a, &credential, &connector)
}
