//! Running a plan: one API call per step, in order, each update and delete sending the etag
//! the plan read, so that an object someone changed since makes the run stop with ABORTED.

use super::plan::{Action, Kind, Payload, Plan, Step};
use super::state::same_name;
use crate::cli::{CliError, Conn};
use mailplane_proto::v1 as pb;
use pb::credential_service_client::CredentialServiceClient;
use pb::network_connector_service_client::NetworkConnectorServiceClient;
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use prost_types::FieldMask;
use std::io::Write;

/// Resource names by unique name, filled as objects are created.
#[derive(Default)]
struct Names {
    connectors: Vec<(String, String)>,
    credentials: Vec<(String, String)>,
}

impl Names {
    fn of(plan: &Plan) -> Self {
        let mut names = Self::default();
        for s in plan.steps.iter().filter(|s| !s.name.is_empty()) {
            names.record(s.kind, &s.display, &s.name);
        }
        names
    }

    fn record(&mut self, kind: Kind, display: &str, name: &str) {
        let list = match kind {
            Kind::Connector => &mut self.connectors,
            Kind::Credential => &mut self.credentials,
            Kind::Account => return,
        };
        list.push((display.to_owned(), name.to_owned()));
    }

    /// The resource name of `display` (empty for none).
    fn resolve(list: &[(String, String)], display: &str) -> String {
        if display.is_empty() {
            return String::new();
        }
        list.iter()
            .find(|(d, _)| same_name(d, display))
            .map_or_else(String::new, |(_, n)| n.clone())
    }
}

fn mask(changes: &[(&'static str, String, String)], extra: &[&'static str]) -> FieldMask {
    FieldMask {
        paths: changes
            .iter()
            .map(|(f, _, _)| (*f).to_owned())
            .chain(extra.iter().map(|f| (*f).to_owned()))
            .collect(),
    }
}

/// Runs the writing steps of `plan`, printing a line for each; returns how many ran.
pub async fn execute(conn: &Conn, plan: &Plan, out: &mut impl Write) -> Result<usize, CliError> {
    let mut names = Names::of(plan);
    let mut done = 0;
    for step in plan.steps.iter().filter(|s| s.action.writes()) {
        let name = run_step(conn, step, &names)
            .await
            .map_err(|status| CliError::Apply {
                what: format!(
                    "{} {} {:?}{}",
                    step.action.as_str(),
                    step.kind.as_str(),
                    step.display,
                    if step.name.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", step.name)
                    }
                ),
                applied: done,
                status,
            })?;
        if step.action == Action::Create {
            names.record(step.kind, &step.display, &name);
        }
        done += 1;
        writeln!(
            out,
            "{} {} {:?} ({name})",
            match step.action {
                Action::Create => "created",
                Action::Update => "updated",
                _ => "deleted",
            },
            step.kind.as_str(),
            step.display
        )?;
    }
    Ok(done)
}

/// One step; returns the object's resource name.
async fn run_step(conn: &Conn, step: &Step, names: &Names) -> Result<String, tonic::Status> {
    match (&step.payload, step.action) {
        (_, Action::Delete) => delete(conn, step).await.map(|()| step.name.clone()),
        (Payload::Connector(c), action) => {
            let mut client = NetworkConnectorServiceClient::new(conn.clone());
            let mut c = c.clone();
            let done = if action == Action::Create {
                client
                    .create_connector(pb::CreateConnectorRequest { connector: Some(c) })
                    .await?
            } else {
                c.name.clone_from(&step.name);
                c.etag.clone_from(&step.etag);
                client
                    .update_connector(pb::UpdateConnectorRequest {
                        connector: Some(c),
                        update_mask: Some(mask(&step.changes, &[])),
                    })
                    .await?
            };
            Ok(done.into_inner().name)
        }
        (Payload::Credential(c, secrets), action) => {
            let mut client = CredentialServiceClient::new(conn.clone());
            let mut c = c.clone();
            let mut sent = Vec::new();
            for (field, secret) in secrets {
                let value = secret.expose().to_owned();
                match *field {
                    "secret" => c.secret = value,
                    "client_secret" => c.client_secret = value,
                    _ => c.refresh_token = value,
                }
                sent.push(*field);
            }
            let done = if action == Action::Create {
                client
                    .create_credential(pb::CreateCredentialRequest {
                        credential: Some(c),
                    })
                    .await
            } else {
                c.name.clone_from(&step.name);
                c.etag.clone_from(&step.etag);
                client
                    .update_credential(pb::UpdateCredentialRequest {
                        credential: Some(c),
                        update_mask: Some(mask(&step.changes, &sent)),
                    })
                    .await
            };
            Ok(done?.into_inner().name)
        }
        (Payload::Account(a), action) => {
            let mut client = SmtpAccountServiceClient::new(conn.clone());
            let mut a = a.clone();
            a.credential = Names::resolve(&names.credentials, &a.credential);
            a.network_connector = Names::resolve(&names.connectors, &a.network_connector);
            let done = if action == Action::Create {
                client
                    .create_account(pb::CreateAccountRequest { account: Some(a) })
                    .await?
            } else {
                a.name.clone_from(&step.name);
                a.etag.clone_from(&step.etag);
                client
                    .update_account(pb::UpdateAccountRequest {
                        account: Some(a),
                        update_mask: Some(mask(&step.changes, &[])),
                    })
                    .await?
            };
            Ok(done.into_inner().name)
        }
        (Payload::None, _) => Ok(step.name.clone()),
    }
}

async fn delete(conn: &Conn, step: &Step) -> Result<(), tonic::Status> {
    let (name, etag) = (step.name.clone(), step.etag.clone());
    match step.kind {
        Kind::Connector => {
            NetworkConnectorServiceClient::new(conn.clone())
                .delete_connector(pb::DeleteConnectorRequest { name, etag })
                .await?;
        }
        Kind::Credential => {
            CredentialServiceClient::new(conn.clone())
                .delete_credential(pb::DeleteCredentialRequest { name, etag })
                .await?;
        }
        Kind::Account => {
            SmtpAccountServiceClient::new(conn.clone())
                .delete_account(pb::DeleteAccountRequest { name, etag })
                .await?;
        }
    }
    Ok(())
}
