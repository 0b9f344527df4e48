//! The file's entries as the API's messages, validated by the same domain rules the server
//! applies, and normalized the way the server would store them (defaults filled in), so that
//! comparing them with what the server returns shows only real differences.

use super::enums::{mechanism_to_api, token_source_to_api};
use super::file::{AccountEntry, ConnectorEntry, CredentialEntry};
use crate::domain::{
    Account, AccountId, AccountSpec, Credential, CredentialId, CredentialSpec, rules,
};
use crate::error::Error;
use mailplane_proto::v1 as pb;

/// A stand-in id for a credential or connector named by the file: the names are resolved to
/// real ids only when the plan runs.
const PLACEHOLDER: i64 = 900_000_000_001;

/// A field of a resource and its value, as the plan shows it.
pub type Fields = Vec<(&'static str, String)>;

/// Replaces the stand-in resource name in a domain message by what the file calls it.
fn named(err: Error, collection: &str, name: &str) -> Error {
    let placeholder = format!("{collection}/{PLACEHOLDER}");
    match err {
        Error::InvalidArgument { field, message } => Error::InvalidArgument {
            field,
            message: message.replace(&placeholder, &format!("{name:?}")),
        },
        Error::FailedPrecondition(m) => {
            Error::FailedPrecondition(m.replace(&placeholder, &format!("{name:?}")))
        }
        other => other,
    }
}

/// The connector to create or compare.
pub fn connector(entry: &ConnectorEntry) -> Result<pb::Connector, Error> {
    let msg = pb::Connector {
        display_name: entry.display_name.clone(),
        description: entry.description.clone(),
        ..Default::default()
    };
    let spec = crate::api::connectors::connector_spec(&msg)?;
    Ok(pb::Connector {
        display_name: spec.display_name,
        description: spec.description,
        ..Default::default()
    })
}

/// A connector's compared fields.
pub fn connector_fields(c: &pb::Connector) -> Fields {
    vec![
        ("display_name", c.display_name.clone()),
        ("description", c.description.clone()),
    ]
}

/// The credential to create or compare (without secrets), validated.
pub fn credential(entry: &CredentialEntry) -> Result<(pb::Credential, CredentialSpec), Error> {
    let msg = pb::Credential {
        display_name: entry.display_name.clone(),
        username: entry.username.clone(),
        kind: pb::CredentialKind::from(entry.kind).into(),
        allowed_destinations: entry.allowed_destinations.clone(),
        token_url: entry.token_url.clone(),
        client_id: entry.client_id.clone(),
        scope: entry.scope.clone(),
        token_source: token_source_to_api(entry.token_source).into(),
        ..Default::default()
    };
    let spec = CredentialSpec::try_from(&msg)?;
    let stored = Credential {
        id: CredentialId(PLACEHOLDER),
        spec: spec.clone(),
        has_secret: false,
        secret_update_time: None,
        has_refresh_token: false,
        version: 0,
        create_time: 0,
        update_time: 0,
    };
    let mut out = pb::Credential::from(&stored);
    out.name.clear();
    out.id = 0;
    out.etag.clear();
    out.create_time = None;
    out.update_time = None;
    Ok((out, spec))
}

/// A credential's compared fields.
pub fn credential_fields(c: &pb::Credential) -> Fields {
    let kind = pb::CredentialKind::try_from(c.kind)
        .map_or_else(|_| c.kind.to_string(), |k| k.as_str_name().to_owned());
    let source = pb::TokenSource::try_from(c.token_source).map_or_else(
        |_| c.token_source.to_string(),
        |s| s.as_str_name().to_owned(),
    );
    vec![
        ("display_name", c.display_name.clone()),
        ("username", c.username.clone()),
        ("kind", kind),
        ("allowed_destinations", c.allowed_destinations.join(", ")),
        ("token_url", c.token_url.clone()),
        ("client_id", c.client_id.clone()),
        ("scope", c.scope.clone()),
        ("token_source", source),
    ]
}

/// The account to create or compare, validated and normalized. `credential` is the spec of the
/// credential it names (from the file or the server), `None` when it names none.
pub fn account(
    entry: &AccountEntry,
    credential: Option<&CredentialSpec>,
) -> Result<pb::SmtpAccount, Error> {
    let placeholder = |collection: &str, given: &str| {
        if given.trim().is_empty() {
            String::new()
        } else {
            format!("{collection}/{PLACEHOLDER}")
        }
    };
    let msg = pb::SmtpAccount {
        account_name: entry.account_name.clone(),
        enabled: entry.enabled,
        sender_email: entry.sender_email.clone(),
        reply_to_email: entry.reply_to_email.clone(),
        return_path_email: entry.return_path_email.clone(),
        confirmation_email: entry.confirmation_email.clone(),
        is_default: entry.is_default,
        send_read_confirmation: entry.send_read_confirmation,
        force_settings: entry.force_settings,
        enable_footer: entry.enable_footer,
        footer_text: entry.footer_text.clone(),
        host: entry.host.clone(),
        port: entry.port.unwrap_or(0),
        security: pb::SecurityMode::from(entry.security).into(),
        ignore_certificate_errors: entry.ignore_certificate_errors,
        use_authentication: entry.use_authentication,
        auth_mechanism: mechanism_to_api(entry.auth_mechanism).into(),
        credential: placeholder("credentials", &entry.credential),
        use_network_connector: entry.use_network_connector,
        network_connector: placeholder("connectors", &entry.network_connector),
        helo_name: entry.helo_name.clone(),
        charset: entry.charset.clone(),
        plain_text_only: entry.plain_text_only,
        attachment_size_limit_bytes: entry.attachment_size_limit_bytes,
        allow_plaintext_auth: entry.allow_plaintext_auth,
        ..Default::default()
    };
    if entry.port == Some(0) {
        return Err(Error::invalid("port", "0 is out of range; use 1-65535"));
    }
    let mut spec = AccountSpec::try_from(msg).map_err(|e| {
        named(
            named(e, "credentials", &entry.credential),
            "connectors",
            &entry.network_connector,
        )
    })?;
    if let (Some(id), Some(cred)) = (spec.credential, credential) {
        rules::account_credential(&mut spec, id, Some(cred))
            .map_err(|e| named(e, "credentials", &entry.credential))?;
    }
    let stored = Account {
        id: AccountId(0),
        spec,
        version: 0,
        create_time: 0,
        update_time: 0,
    };
    let mut out = pb::SmtpAccount::from(&stored);
    out.name.clear();
    out.id = 0;
    out.etag.clear();
    out.create_time = None;
    out.update_time = None;
    // The names the file uses; the plan resolves them to ids when it runs.
    out.credential = entry.credential.trim().to_owned();
    out.network_connector = entry.network_connector.trim().to_owned();
    Ok(out)
}

/// An account's compared fields (`is_default` aside: only moving the flag to an account is
/// a change), with the credential and connector by the names `credential` and `connector`.
pub fn account_fields(a: &pb::SmtpAccount, credential: &str, connector: &str) -> Fields {
    let enum_name = |v: i32, f: fn(i32) -> Option<&'static str>| {
        f(v).map_or_else(|| v.to_string(), str::to_owned)
    };
    let security = enum_name(a.security, |v| {
        pb::SecurityMode::try_from(v).ok().map(|m| m.as_str_name())
    });
    let mechanism = enum_name(a.auth_mechanism, |v| {
        pb::AuthMechanism::try_from(v).ok().map(|m| m.as_str_name())
    });
    let b = |v: bool| v.to_string();
    vec![
        ("account_name", a.account_name.clone()),
        ("enabled", b(a.enabled.unwrap_or(true))),
        ("sender_email", a.sender_email.clone()),
        ("reply_to_email", a.reply_to_email.clone()),
        ("return_path_email", a.return_path_email.clone()),
        ("confirmation_email", a.confirmation_email.clone()),
        ("send_read_confirmation", b(a.send_read_confirmation)),
        ("force_settings", b(a.force_settings)),
        ("enable_footer", b(a.enable_footer)),
        ("footer_text", a.footer_text.clone()),
        ("host", a.host.clone()),
        ("port", a.port.to_string()),
        ("security", security),
        ("ignore_certificate_errors", b(a.ignore_certificate_errors)),
        ("use_authentication", b(a.use_authentication)),
        ("auth_mechanism", mechanism),
        ("credential", credential.to_owned()),
        ("use_network_connector", b(a.use_network_connector)),
        ("network_connector", connector.to_owned()),
        ("helo_name", a.helo_name.clone()),
        ("charset", a.charset.clone()),
        ("plain_text_only", b(a.plain_text_only)),
        (
            "attachment_size_limit_bytes",
            a.attachment_size_limit_bytes.to_string(),
        ),
        ("allow_plaintext_auth", b(a.allow_plaintext_auth)),
    ]
}

/// The fields whose values differ, with both values.
pub fn diff(current: &Fields, desired: &Fields) -> Vec<(&'static str, String, String)> {
    current
        .iter()
        .zip(desired)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((field, a), (_, b))| (*field, a.clone(), b.clone()))
        .collect()
}
