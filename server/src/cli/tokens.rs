//! `mailplane tokens …`: API tokens (admin only).

use super::output::{self, Format};
use super::{CliError, Conn, resource_name};
use clap::{Subcommand, ValueEnum};
use mailplane_proto::v1 as pb;
use pb::token_service_client::TokenServiceClient;
use serde_json::{Value, json};
use std::io::Write;

/// The token commands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; it is shown once.
    Create {
        /// A unique name, e.g. the system that will use it.
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Make it expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token: it is refused from now on.
    Revoke {
        /// The token: its code or tokens/CODE.
        token: String,
    },
}

/// Roles.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Everything, including tokens and connectors.
    Admin,
    /// Manage accounts and credentials, run tests.
    Operator,
    /// Read accounts, tests and connectors.
    Viewer,
    /// Send messages and read them back, nothing else.
    Sender,
}

fn token_json(t: &pb::ApiToken) -> Value {
    json!({
        "name": t.name,
        "id": t.id,
        "display_name": t.display_name,
        "role": pb::Role::try_from(t.role).map_or_else(|_| String::new(), |r| crate::render::short(r.as_str_name(), "ROLE_")),
        "expire_time": crate::render::time(t.expire_time.as_ref()),
        "revoked": t.revoked,
        "create_time": crate::render::time(t.create_time.as_ref()),
        "last_use_time": crate::render::time(t.last_use_time.as_ref()),
    })
}

const COLUMNS: [(&str, &str); 6] = [
    ("CODE", "id"),
    ("NAME", "display_name"),
    ("ROLE", "role"),
    ("REVOKED", "revoked"),
    ("EXPIRES", "expire_time"),
    ("LAST USED", "last_use_time"),
];

/// Runs a token command.
pub async fn run(
    channel: Conn,
    format: Format,
    command: TokensCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut client = TokenServiceClient::new(channel);
    match command {
        TokensCommand::Create {
            name,
            role,
            expires_in_days,
        } => {
            let expire_time = expires_in_days.map(|days| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                prost_types::Timestamp {
                    seconds: i64::try_from(now + u64::from(days) * 86_400).unwrap_or(i64::MAX),
                    nanos: 0,
                }
            });
            let created = client
                .create_token(pb::CreateTokenRequest {
                    token: Some(pb::ApiToken {
                        display_name: name,
                        role: match role {
                            RoleArg::Admin => pb::Role::Admin,
                            RoleArg::Operator => pb::Role::Operator,
                            RoleArg::Viewer => pb::Role::Viewer,
                            RoleArg::Sender => pb::Role::Sender,
                        }
                        .into(),
                        expire_time,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            let mut value = token_json(&created);
            if let Value::Object(map) = &mut value {
                map.insert("token".into(), Value::String(created.token.clone()));
            }
            output::one(out, format, &value)?;
            eprintln!("the token is shown only now: keep it in a secret store");
        }
        TokensCommand::List => {
            let page = client
                .list_tokens(pb::ListTokensRequest::default())
                .await?
                .into_inner();
            let items: Vec<Value> = page.tokens.iter().map(token_json).collect();
            output::list(out, format, &items, &COLUMNS, "tokens")?;
        }
        TokensCommand::Revoke { token } => {
            let revoked = client
                .revoke_token(pb::RevokeTokenRequest {
                    name: resource_name("tokens", &token),
                })
                .await?
                .into_inner();
            output::one(out, format, &token_json(&revoked))?;
        }
    }
    Ok(())
}
