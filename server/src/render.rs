//! How resources look in downloads and on the console: JSON objects, CSV rows. Shared by the
//! export RPC and the CLI, so that a downloaded report and `--output json` agree.

use mailplane_proto::v1 as pb;
use serde_json::{Value, json};

/// An RFC 3339 form of a protobuf timestamp.
pub fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map(ToString::to_string).unwrap_or_default()
}

/// The short name of an enum value: `SECURITY_MODE_IMPLICIT_TLS` becomes `IMPLICIT_TLS`.
pub fn short(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_owned()
}

/// The security mode's short name.
pub fn security(value: i32) -> String {
    pb::SecurityMode::try_from(value)
        .map(|m| short(m.as_str_name(), "SECURITY_MODE_"))
        .unwrap_or_else(|_| value.to_string())
}

/// The auth mechanism's short name.
pub fn mechanism(value: i32) -> String {
    pb::AuthMechanism::try_from(value)
        .map(|m| short(m.as_str_name(), "AUTH_MECHANISM_"))
        .unwrap_or_else(|_| value.to_string())
}

/// The credential kind's short name.
pub fn kind(value: i32) -> String {
    pb::CredentialKind::try_from(value)
        .map(|m| short(m.as_str_name(), "CREDENTIAL_KIND_"))
        .unwrap_or_else(|_| value.to_string())
}

/// A token source's short name (`SERVER`, `CONNECTOR`), empty when unset.
pub fn token_source(value: i32) -> String {
    match pb::TokenSource::try_from(value) {
        Ok(pb::TokenSource::Unspecified) => String::new(),
        Ok(m) => short(m.as_str_name(), "TOKEN_SOURCE_"),
        Err(_) => value.to_string(),
    }
}

/// An account as a JSON object with the API's field names.
pub fn account_json(a: &pb::SmtpAccount) -> Value {
    json!({
        "name": a.name,
        "id": a.id,
        "account_name": a.account_name,
        "enabled": a.enabled.unwrap_or(true),
        "sender_email": a.sender_email,
        "reply_to_email": a.reply_to_email,
        "return_path_email": a.return_path_email,
        "confirmation_email": a.confirmation_email,
        "is_default": a.is_default,
        "send_read_confirmation": a.send_read_confirmation,
        "force_settings": a.force_settings,
        "enable_footer": a.enable_footer,
        "footer_text": a.footer_text,
        "host": a.host,
        "port": a.port,
        "security": security(a.security),
        "ignore_certificate_errors": a.ignore_certificate_errors,
        "use_authentication": a.use_authentication,
        "auth_mechanism": mechanism(a.auth_mechanism),
        "credential": a.credential,
        "use_network_connector": a.use_network_connector,
        "network_connector": a.network_connector,
        "helo_name": a.helo_name,
        "charset": a.charset,
        "plain_text_only": a.plain_text_only,
        "attachment_size_limit_bytes": a.attachment_size_limit_bytes,
        "allow_plaintext_auth": a.allow_plaintext_auth,
        "etag": a.etag,
        "create_time": time(a.create_time.as_ref()),
        "update_time": time(a.update_time.as_ref()),
    })
}

/// A provider preset as a JSON object with the API's field names.
pub fn preset_json(p: &pb::Preset) -> Value {
    json!({
        "name": p.name,
        "preset_id": p.preset_id,
        "display_name": p.display_name,
        "host": p.host,
        "port": p.port,
        "security": security(p.security),
        "auth_mechanism": mechanism(p.auth_mechanism),
        "credential_kind": kind(p.credential_kind),
        "token_url": p.token_url,
        "scope": p.scope,
        "username": p.username,
        "sender_rules": p.sender_rules,
        "placeholders": p.placeholders.iter().map(|h| h.key.clone()).collect::<Vec<_>>(),
    })
}

/// A credential as a JSON object. It has no secret to show.
pub fn credential_json(c: &pb::Credential) -> Value {
    json!({
        "name": c.name,
        "id": c.id,
        "display_name": c.display_name,
        "username": c.username,
        "kind": kind(c.kind),
        "allowed_destinations": c.allowed_destinations,
        "has_secret": c.has_secret,
        "secret_update_time": time(c.secret_update_time.as_ref()),
        "token_url": c.token_url,
        "client_id": c.client_id,
        "scope": c.scope,
        "token_source": token_source(c.token_source),
        "has_client_secret": c.has_client_secret,
        "has_refresh_token": c.has_refresh_token,
        "etag": c.etag,
        "create_time": time(c.create_time.as_ref()),
        "update_time": time(c.update_time.as_ref()),
    })
}

/// The columns of the accounts report, as downloaded.
pub const ACCOUNT_CSV_HEADER: [&str; 15] = [
    "Code",
    "Account name",
    "Status",
    "Sender e-mail",
    "Reply-To",
    "Return-Path",
    "Confirmation e-mail",
    "Default",
    "Secure connection",
    "Force settings",
    "Read confirmation",
    "Footer",
    "Host",
    "Port",
    "Security",
];

fn yes_no(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_owned()
}

/// Keeps a spreadsheet from reading a cell as a formula (CSV injection): a value that starts
/// with `=`, `+`, `-`, `@`, tab or CR gets a leading apostrophe.
pub fn csv_cell(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// An account as a row of the accounts report.
pub fn account_csv_row(a: &pb::SmtpAccount) -> [String; 15] {
    let enabled = a.enabled.unwrap_or(true);
    [
        a.id.to_string(),
        csv_cell(&a.account_name),
        if enabled { "Enabled" } else { "Disabled" }.to_owned(),
        csv_cell(&a.sender_email),
        csv_cell(&a.reply_to_email),
        csv_cell(&a.return_path_email),
        csv_cell(&a.confirmation_email),
        yes_no(a.is_default),
        yes_no(a.security != i32::from(pb::SecurityMode::None)),
        yes_no(a.force_settings),
        yes_no(a.send_read_confirmation),
        yes_no(a.enable_footer),
        csv_cell(&a.host),
        a.port.to_string(),
        security(a.security),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_cell("alerts"), "alerts");
    }

    #[test]
    fn enum_names_are_short() {
        assert_eq!(
            security(pb::SecurityMode::ImplicitTls.into()),
            "IMPLICIT_TLS"
        );
        assert_eq!(mechanism(pb::AuthMechanism::Xoauth2.into()), "XOAUTH2");
    }
}
