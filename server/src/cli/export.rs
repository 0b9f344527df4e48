//! `mailplane export`: the server's connectors, credentials and accounts as the YAML file that
//! `mailplane apply` reads, which applies back with no change. Secrets are write-only, so they
//! are never in it: each credential keeps a reference (`secret_env: MAILPLANE_SECRET_…`) that
//! is read only when the secret has to be sent (a create, or `apply --rotate-secrets`).

use super::apply::enums::{mechanism_from_api, token_source_from_api};
use super::apply::file::{
    AccountEntry, ConnectorEntry, CredentialEntry, CredentialKind, DesiredFile, Security,
};
use super::apply::state::{Current, same_name};
use super::output::Format;
use super::{CliError, Conn};
use mailplane_proto::v1 as pb;
use std::io::Write;

/// The environment variable an exported credential's secret is referenced by.
pub fn secret_env(display_name: &str, field: &str) -> String {
    let mut name = String::from("MAILPLANE_");
    name.push_str(&field.to_uppercase());
    name.push('_');
    let mut last_underscore = true;
    for ch in display_name.trim().chars() {
        if ch.is_ascii_alphanumeric() {
            name.push(ch.to_ascii_uppercase());
            last_underscore = false;
        } else if !last_underscore {
            name.push('_');
            last_underscore = true;
        }
    }
    name.trim_end_matches('_').to_owned()
}

/// The file for what `current` holds.
pub fn desired(current: &Current) -> Result<DesiredFile, CliError> {
    for c in &current.credentials {
        let twins = current
            .credentials
            .iter()
            .filter(|d| same_name(&d.display_name, &c.display_name))
            .count();
        if twins > 1 {
            return Err(CliError::Usage(format!(
                "{twins} credentials are named {:?}, and apply matches credentials by name; \
                 rename all but one (mailplane credentials update {} --display-name …) and \
                 export again",
                c.display_name, c.name
            )));
        }
    }
    let connectors = current
        .connectors
        .iter()
        .map(|c| ConnectorEntry {
            display_name: c.display_name.clone(),
            description: c.description.clone(),
        })
        .collect();
    let credentials = current.credentials.iter().map(credential).collect();
    let accounts = current
        .accounts
        .iter()
        .map(|a| account(a, current))
        .collect();
    Ok(DesiredFile {
        version: 1,
        connectors,
        credentials,
        accounts,
    })
}

fn credential(c: &pb::Credential) -> CredentialEntry {
    let mut entry = CredentialEntry {
        display_name: c.display_name.clone(),
        kind: CredentialKind::from_api(c.kind),
        username: c.username.clone(),
        allowed_destinations: c.allowed_destinations.clone(),
        token_url: c.token_url.clone(),
        client_id: c.client_id.clone(),
        scope: c.scope.clone(),
        token_source: token_source_from_api(c.token_source),
        ..CredentialEntry::default()
    };
    for s in entry.secrets() {
        let env = Some(secret_env(&c.display_name, s.field));
        match s.field {
            "secret" => entry.secret_env = env,
            "client_secret" => entry.client_secret_env = env,
            _ => entry.refresh_token_env = env,
        }
    }
    entry
}

fn account(a: &pb::SmtpAccount, current: &Current) -> AccountEntry {
    AccountEntry {
        account_name: a.account_name.clone(),
        enabled: (a.enabled == Some(false)).then_some(false),
        is_default: a.is_default,
        sender_email: a.sender_email.clone(),
        reply_to_email: a.reply_to_email.clone(),
        return_path_email: a.return_path_email.clone(),
        confirmation_email: a.confirmation_email.clone(),
        send_read_confirmation: a.send_read_confirmation,
        force_settings: a.force_settings,
        enable_footer: a.enable_footer,
        footer_text: a.footer_text.clone(),
        host: a.host.clone(),
        port: Some(a.port),
        security: Security::from_api(a.security),
        ignore_certificate_errors: a.ignore_certificate_errors,
        use_authentication: a.use_authentication,
        auth_mechanism: mechanism_from_api(a.auth_mechanism),
        credential: if a.credential.is_empty() {
            String::new()
        } else {
            current.credential_name(&a.credential)
        },
        use_network_connector: a.use_network_connector,
        network_connector: if a.network_connector.is_empty() {
            String::new()
        } else {
            current.connector_name(&a.network_connector)
        },
        helo_name: a.helo_name.clone(),
        charset: if a.charset.eq_ignore_ascii_case("UTF-8") {
            String::new()
        } else {
            a.charset.clone()
        },
        plain_text_only: a.plain_text_only,
        attachment_size_limit_bytes: a.attachment_size_limit_bytes,
        allow_plaintext_auth: a.allow_plaintext_auth,
    }
}

/// Runs `mailplane export`: YAML on `out` (JSON with `-o json`).
pub async fn run(conn: Conn, format: Format, out: &mut impl Write) -> Result<(), CliError> {
    let current = Current::read(&conn).await?;
    let file = desired(&current)?;
    match format {
        Format::Table | Format::Yaml => {}
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &file)
                .map_err(|e| CliError::Usage(format!("cannot write the JSON: {e}")))?;
            writeln!(out)?;
            return Ok(());
        }
        Format::Csv => {
            return Err(CliError::Usage(
                "export writes YAML (-o yaml) or JSON (-o json), not CSV".into(),
            ));
        }
    }
    let yaml = serde_yaml_ng::to_string(&file)
        .map_err(|e| CliError::Usage(format!("cannot write the YAML: {e}")))?;
    writeln!(
        out,
        "# mailplane export: apply it with `mailplane apply -f FILE`.\n\
         # Secrets are never exported: set the *_env variables named below (or change them to\n\
         # *_file: PATH) before applying this file to a server that lacks the credentials."
    )?;
    out.write_all(yaml.as_bytes())?;
    Ok(())
}
