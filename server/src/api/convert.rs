//! Conversions between prost messages and domain types. Field syntax is validated here, at the
//! edge, so that nothing malformed gets further in.

use crate::domain::validate;
use crate::domain::{
    Account, AccountFilter, AccountId, AccountSpec, AuthMechanism, CredentialId, Micros, Security,
    StatusFilter, etag,
};
use crate::error::{Error, Result};
use mailplane_proto::v1 as pb;
use mailplane_smtp::proto as smtp_pb;

mod credential;
pub use credential::{
    CREDENTIAL_FIELDS, CREDENTIAL_SECRET_FIELDS, apply_credential_field, check_secret,
    check_secret_field,
};

/// The longest account name.
const MAX_NAME_LEN: usize = 100;
/// The longest footer.
const MAX_FOOTER_LEN: usize = 4000;

/// A stored time as the API's timestamp.
pub use mailplane_proto::timestamp;

/// Parses a resource name `{collection}/{id}` into the id.
pub fn parse_name(field: &str, collection: &str, name: &str) -> Result<i64> {
    let id = name
        .trim()
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| id.parse::<i64>().ok())
        .filter(|id| *id > 0);
    id.ok_or_else(|| {
        Error::invalid(
            field,
            format!(
                "{name:?} is not a resource name; expected {collection}/{{id}}, e.g. {collection}/1"
            ),
        )
    })
}

/// Microseconds since the epoch for a protobuf timestamp from a request.
pub fn micros(field: &str, ts: &prost_types::Timestamp) -> Result<Micros> {
    mailplane_proto::micros(ts).ok_or_else(|| Error::invalid(field, "is out of range"))
}

/// Parses a child resource name `{parent}/{pid}/{child}/{cid}` into both ids.
pub fn parse_child(field: &str, name: &str, parent: &str, child: &str) -> Result<(i64, i64)> {
    let invalid = || {
        Error::invalid(
            field,
            format!("{name:?} is not a resource name; expected {parent}/{{id}}/{child}/{{id}}"),
        )
    };
    let (head, id) = name
        .trim()
        .split_once(&format!("/{child}/"))
        .ok_or_else(invalid)?;
    let parent_id = parse_name(field, parent, head).map_err(|_| invalid())?;
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(invalid)?;
    Ok((parent_id, id))
}

/// An account's resource name.
pub fn account_id(field: &str, name: &str) -> Result<AccountId> {
    parse_name(field, "accounts", name).map(AccountId)
}

/// A credential's resource name.
pub fn credential_id(field: &str, name: &str) -> Result<CredentialId> {
    parse_name(field, "credentials", name).map(CredentialId)
}

/// The version an etag names; an etag we never issued can only be stale.
pub fn expected_version(name: &str, etag: &str) -> Result<Option<i64>> {
    if etag.is_empty() {
        return Ok(None);
    }
    crate::domain::parse_etag(etag).map(Some).ok_or_else(|| {
        Error::Aborted(format!(
            "etag {etag:?} does not match {name}; read it again and reapply your change"
        ))
    })
}

impl From<&Account> for pb::SmtpAccount {
    fn from(a: &Account) -> Self {
        let s = &a.spec;
        Self {
            name: a.id.to_string(),
            id: a.id.0,
            account_name: s.account_name.clone(),
            enabled: Some(s.enabled),
            sender_email: s.sender_email.clone(),
            reply_to_email: s.reply_to_email.clone().unwrap_or_default(),
            return_path_email: s.return_path_email.clone().unwrap_or_default(),
            confirmation_email: s.confirmation_email.clone().unwrap_or_default(),
            is_default: s.is_default,
            send_read_confirmation: s.send_read_confirmation,
            force_settings: s.force_settings,
            enable_footer: s.enable_footer,
            footer_text: s.footer_text.clone(),
            host: s.host.clone(),
            port: u32::from(s.port),
            security: smtp_pb::security_to_pb(s.security).into(),
            ignore_certificate_errors: s.ignore_certificate_errors,
            use_authentication: s.use_authentication,
            auth_mechanism: s
                .auth_mechanism
                .map_or(pb::AuthMechanism::Unspecified, smtp_pb::mechanism_to_pb)
                .into(),
            credential: s.credential.map(|c| c.to_string()).unwrap_or_default(),
            use_network_connector: s.use_network_connector,
            network_connector: s
                .network_connector
                .map(|c| format!("connectors/{c}"))
                .unwrap_or_default(),
            helo_name: s.helo_name.clone().unwrap_or_default(),
            charset: s.charset.clone(),
            plain_text_only: s.plain_text_only,
            attachment_size_limit_bytes: s.attachment_size_limit_bytes,
            allow_plaintext_auth: s.allow_plaintext_auth,
            etag: etag(a.version),
            create_time: Some(timestamp(a.create_time)),
            update_time: Some(timestamp(a.update_time)),
        }
    }
}

/// The writable account fields, as named in the API and in update masks.
pub const ACCOUNT_FIELDS: [&str; 25] = [
    "account_name",
    "enabled",
    "sender_email",
    "reply_to_email",
    "return_path_email",
    "confirmation_email",
    "is_default",
    "send_read_confirmation",
    "force_settings",
    "enable_footer",
    "footer_text",
    "host",
    "port",
    "security",
    "ignore_certificate_errors",
    "use_authentication",
    "auth_mechanism",
    "credential",
    "use_network_connector",
    "network_connector",
    "helo_name",
    "charset",
    "plain_text_only",
    "attachment_size_limit_bytes",
    "allow_plaintext_auth",
];

/// Output-only fields, which a mask may not name.
const OUTPUT_ONLY: [&str; 5] = ["name", "id", "etag", "create_time", "update_time"];

/// Whether a field is being set on create (where zero values take defaults) or on update
/// (where a masked field is set to exactly what was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// CreateAccount.
    Create,
    /// UpdateAccount.
    Update,
}

/// An account with every field unset, the base that create applies its fields to.
fn blank_spec() -> AccountSpec {
    AccountSpec {
        account_name: String::new(),
        enabled: true,
        sender_email: String::new(),
        reply_to_email: None,
        return_path_email: None,
        confirmation_email: None,
        is_default: false,
        send_read_confirmation: false,
        force_settings: false,
        enable_footer: false,
        footer_text: String::new(),
        host: String::new(),
        port: 0,
        security: Security::StartTlsRequired,
        ignore_certificate_errors: false,
        use_authentication: false,
        auth_mechanism: None,
        credential: None,
        use_network_connector: false,
        network_connector: None,
        helo_name: None,
        charset: "UTF-8".into(),
        plain_text_only: false,
        attachment_size_limit_bytes: 0,
        allow_plaintext_auth: false,
    }
}

/// The account to create, validated field by field and then as a whole.
impl TryFrom<pb::SmtpAccount> for AccountSpec {
    type Error = Error;

    fn try_from(msg: pb::SmtpAccount) -> Result<Self> {
        let mut spec = blank_spec();
        for field in ACCOUNT_FIELDS {
            apply_field(&mut spec, &msg, field, Mode::Create)?;
        }
        spec.check()?;
        Ok(spec)
    }
}

/// Expands an update mask into writable field names, refusing unknown and output-only ones.
pub fn mask_fields(mask: Option<&prost_types::FieldMask>) -> Result<Vec<&'static str>> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            "is required: list the fields to change (e.g. host,port), or \"*\" for every field",
        ));
    }
    let mut fields = Vec::new();
    for path in paths {
        if path == "*" {
            return Ok(ACCOUNT_FIELDS.to_vec());
        }
        let field = ACCOUNT_FIELDS
            .iter()
            .find(|f| **f == path.as_str())
            .ok_or_else(|| {
                if OUTPUT_ONLY.contains(&path.as_str()) {
                    Error::invalid("update_mask", format!("{path} is output only"))
                } else {
                    Error::invalid(
                        "update_mask",
                        format!("{path:?} is not a field of SmtpAccount"),
                    )
                }
            })?;
        fields.push(*field);
    }
    Ok(fields)
}

/// Sets one writable field of `spec` from `msg`, validating its syntax.
pub fn apply_field(
    spec: &mut AccountSpec,
    msg: &pb::SmtpAccount,
    field: &str,
    mode: Mode,
) -> Result<()> {
    let create = mode == Mode::Create;
    match field {
        "account_name" => {
            spec.account_name = validate::line(field, &msg.account_name, MAX_NAME_LEN)?
        }
        "enabled" => spec.enabled = msg.enabled.unwrap_or(create || spec.enabled),
        "sender_email" => spec.sender_email = validate::email(field, &msg.sender_email, true)?,
        "reply_to_email" => {
            spec.reply_to_email = validate::optional_email(field, &msg.reply_to_email)?;
        }
        "return_path_email" => {
            spec.return_path_email = validate::optional_email(field, &msg.return_path_email)?;
        }
        "confirmation_email" => {
            spec.confirmation_email = validate::optional_email(field, &msg.confirmation_email)?;
        }
        "is_default" => spec.is_default = msg.is_default,
        "send_read_confirmation" => spec.send_read_confirmation = msg.send_read_confirmation,
        "force_settings" => spec.force_settings = msg.force_settings,
        "enable_footer" => spec.enable_footer = msg.enable_footer,
        "footer_text" => {
            if msg.footer_text.chars().count() > MAX_FOOTER_LEN {
                return Err(Error::invalid(
                    field,
                    format!("must be at most {MAX_FOOTER_LEN} characters"),
                ));
            }
            spec.footer_text = msg.footer_text.clone();
        }
        "host" => spec.host = validate::host(field, &msg.host)?,
        "port" => {
            spec.port = match (msg.port, mode) {
                (0, Mode::Create) => 0, // filled from the security mode below
                (p, _) => u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| {
                    Error::invalid(field, format!("{p} is out of range; use 1-65535"))
                })?,
            };
        }
        "security" => {
            let mode_value = pb::SecurityMode::try_from(msg.security)
                .map_err(|_| Error::invalid(field, format!("unknown value {}", msg.security)))?;
            spec.security = match mode_value {
                pb::SecurityMode::Unspecified if create => Security::StartTlsRequired,
                pb::SecurityMode::Unspecified => {
                    return Err(Error::invalid(
                        field,
                        "must be NONE, STARTTLS_OPPORTUNISTIC, STARTTLS_REQUIRED or IMPLICIT_TLS",
                    ));
                }
                pb::SecurityMode::None => Security::None,
                pb::SecurityMode::StarttlsOpportunistic => Security::StartTlsOpportunistic,
                pb::SecurityMode::StarttlsRequired => Security::StartTlsRequired,
                pb::SecurityMode::ImplicitTls => Security::ImplicitTls,
            };
            if create && spec.port == 0 && msg.port == 0 {
                spec.port = spec.security.default_port();
            }
        }
        "ignore_certificate_errors" => {
            spec.ignore_certificate_errors = msg.ignore_certificate_errors;
        }
        "use_authentication" => spec.use_authentication = msg.use_authentication,
        "auth_mechanism" => {
            let m = pb::AuthMechanism::try_from(msg.auth_mechanism).map_err(|_| {
                Error::invalid(field, format!("unknown value {}", msg.auth_mechanism))
            })?;
            spec.auth_mechanism = match m {
                pb::AuthMechanism::Unspecified => None,
                pb::AuthMechanism::Plain => Some(AuthMechanism::Plain),
                pb::AuthMechanism::Login => Some(AuthMechanism::Login),
                pb::AuthMechanism::Xoauth2 => Some(AuthMechanism::XOAuth2),
            };
        }
        "credential" => {
            spec.credential = if msg.credential.trim().is_empty() {
                None
            } else {
                Some(credential_id(field, &msg.credential)?)
            };
        }
        "use_network_connector" => spec.use_network_connector = msg.use_network_connector,
        "network_connector" => {
            spec.network_connector = if msg.network_connector.trim().is_empty() {
                None
            } else {
                Some(parse_name(field, "connectors", &msg.network_connector)?)
            };
        }
        "helo_name" => {
            spec.helo_name = if msg.helo_name.trim().is_empty() {
                None
            } else {
                Some(validate::host(field, &msg.helo_name)?)
            };
        }
        "charset" => spec.charset = validate::charset(field, &msg.charset)?,
        "plain_text_only" => spec.plain_text_only = msg.plain_text_only,
        "attachment_size_limit_bytes" => {
            if i64::try_from(msg.attachment_size_limit_bytes).is_err() {
                return Err(Error::invalid(field, "is too large"));
            }
            spec.attachment_size_limit_bytes = msg.attachment_size_limit_bytes;
        }
        "allow_plaintext_auth" => spec.allow_plaintext_auth = msg.allow_plaintext_auth,
        other => {
            return Err(Error::invalid(
                "update_mask",
                format!("{other:?} is not a writable field of SmtpAccount"),
            ));
        }
    }
    Ok(())
}

/// The filter of a list or export request.
impl TryFrom<Option<pb::AccountFilter>> for AccountFilter {
    type Error = Error;

    fn try_from(msg: Option<pb::AccountFilter>) -> Result<Self> {
        let msg = msg.unwrap_or_default();
        let text = |field: &str, v: &str| -> Result<Option<String>> {
            validate::no_crlf(field, v)?;
            let v = v.trim();
            if v.len() > 254 {
                return Err(Error::invalid(field, "must be at most 254 characters"));
            }
            Ok((!v.is_empty()).then(|| v.to_owned()))
        };
        if msg.id < 0 {
            return Err(Error::invalid("filter.id", "must not be negative"));
        }
        let status = pb::AccountStatusFilter::try_from(msg.status).map_err(|_| {
            Error::invalid("filter.status", format!("unknown value {}", msg.status))
        })?;
        Ok(Self {
            id: (msg.id > 0).then_some(msg.id),
            account_name: text("filter.account_name", &msg.account_name)?,
            sender_email: text("filter.sender_email", &msg.sender_email)?,
            reply_to_email: text("filter.reply_to_email", &msg.reply_to_email)?,
            return_path_email: text("filter.return_path_email", &msg.return_path_email)?,
            confirmation_email: text("filter.confirmation_email", &msg.confirmation_email)?,
            status: match status {
                pb::AccountStatusFilter::Unspecified | pb::AccountStatusFilter::Any => {
                    StatusFilter::Any
                }
                pb::AccountStatusFilter::Enabled => StatusFilter::Enabled,
                pb::AccountStatusFilter::Disabled => StatusFilter::Disabled,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> pb::SmtpAccount {
        pb::SmtpAccount {
            account_name: "Alerts".into(),
            sender_email: "alerts@example.com".into(),
            host: "smtp.example.com".into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_defaults() {
        let spec = AccountSpec::try_from(msg()).unwrap();
        assert!(spec.enabled);
        assert_eq!(spec.security, Security::StartTlsRequired);
        assert_eq!(spec.port, 587);
        assert_eq!(spec.charset, "UTF-8");
        let spec = AccountSpec::try_from(pb::SmtpAccount {
            security: pb::SecurityMode::ImplicitTls.into(),
            ..msg()
        })
        .unwrap();
        assert_eq!(spec.port, 465);
    }

    #[test]
    fn names_and_ports() {
        assert_eq!(parse_name("n", "accounts", "accounts/12").unwrap(), 12);
        assert!(parse_name("n", "accounts", "accounts/0").is_err());
        assert!(parse_name("n", "accounts", "credentials/1").is_err());
        let err = AccountSpec::try_from(pb::SmtpAccount {
            port: 70000,
            ..msg()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("port:"), "{err}");
    }

    #[test]
    fn masks() {
        assert!(mask_fields(None).is_err());
        let m = prost_types::FieldMask {
            paths: vec!["etag".into()],
        };
        assert!(
            mask_fields(Some(&m))
                .unwrap_err()
                .to_string()
                .contains("output only")
        );
        let m = prost_types::FieldMask {
            paths: vec!["*".into()],
        };
        assert_eq!(mask_fields(Some(&m)).unwrap().len(), ACCOUNT_FIELDS.len());
    }

    #[test]
    fn timestamps() {
        let t = timestamp(1_500_000);
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    }
}
