//! The SMTP server settings window (`/accounts/new`, `/accounts/{id}/edit`): the seed's two
//! sections, the account and the server, the Alloy fields under "Advanced", and a preset picker
//! that reloads the form with a provider's host, port, security and mechanism.
//!
//! The API validates: its INVALID_ARGUMENT message is `field: message`, shown under that field
//! with the user's values kept. An update sends the etag the form was loaded with; a stale one
//! (ABORTED) keeps the input and offers to reload.

use super::form_view::{Notices, render};
use super::{SECURITY, account_name, forbidden};
use crate::api::convert::ACCOUNT_FIELDS;
use crate::console::ctx::PageResult;
use crate::console::fields::parse_field_error;
use crate::console::{Ctx, PageError};
use axum::Form;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use mailplane_proto::v1 as pb;
use serde::Deserialize;
use std::collections::HashMap;

/// The form's fields, named as in the API (so an API error names the input).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    pub(super) etag: String,
    #[serde(default)]
    pub(super) account_name: String,
    #[serde(default)]
    pub(super) enabled: Option<String>,
    #[serde(default)]
    pub(super) sender_email: String,
    #[serde(default)]
    pub(super) reply_to_email: String,
    #[serde(default)]
    pub(super) return_path_email: String,
    #[serde(default)]
    pub(super) confirmation_email: String,
    #[serde(default)]
    pub(super) is_default: Option<String>,
    #[serde(default)]
    pub(super) send_read_confirmation: Option<String>,
    #[serde(default)]
    pub(super) force_settings: Option<String>,
    #[serde(default)]
    pub(super) enable_footer: Option<String>,
    #[serde(default)]
    pub(super) footer_text: String,
    #[serde(default)]
    pub(super) host: String,
    #[serde(default)]
    pub(super) port: String,
    #[serde(default)]
    pub(super) security: String,
    #[serde(default)]
    pub(super) use_authentication: Option<String>,
    #[serde(default)]
    pub(super) auth_mechanism: String,
    #[serde(default)]
    pub(super) credential: String,
    #[serde(default)]
    pub(super) ignore_certificate_errors: Option<String>,
    #[serde(default)]
    pub(super) use_network_connector: Option<String>,
    #[serde(default)]
    pub(super) network_connector: String,
    #[serde(default)]
    pub(super) charset: String,
    #[serde(default)]
    pub(super) plain_text_only: Option<String>,
    #[serde(default)]
    pub(super) attachment_size_limit_bytes: String,
}

/// The API's account fields the form does not have.
const NOT_ON_FORM: [&str; 2] = ["helo_name", "allow_plaintext_auth"];

/// The fields an update changes: every field of the form (the default flag goes through
/// SetDefaultAccount).
fn update_mask() -> Vec<String> {
    ACCOUNT_FIELDS
        .iter()
        .filter(|f| **f != "is_default" && !NOT_ON_FORM.contains(f))
        .map(|f| (*f).to_owned())
        .collect()
}

pub(super) fn on(b: bool) -> Option<String> {
    b.then(|| "on".to_owned())
}

pub(super) fn security_value(n: i32) -> String {
    SECURITY
        .iter()
        .find(|(m, _, _)| *m as i32 == n)
        .map_or("starttls_required", |(_, v, _)| v)
        .to_owned()
}

impl AccountForm {
    fn from_account(a: &pb::SmtpAccount) -> Self {
        Self {
            csrf: String::new(),
            etag: a.etag.clone(),
            account_name: a.account_name.clone(),
            enabled: on(a.enabled.unwrap_or(true)),
            sender_email: a.sender_email.clone(),
            reply_to_email: a.reply_to_email.clone(),
            return_path_email: a.return_path_email.clone(),
            confirmation_email: a.confirmation_email.clone(),
            is_default: on(a.is_default),
            send_read_confirmation: on(a.send_read_confirmation),
            force_settings: on(a.force_settings),
            enable_footer: on(a.enable_footer),
            footer_text: a.footer_text.clone(),
            host: a.host.clone(),
            port: if a.port == 0 {
                String::new()
            } else {
                a.port.to_string()
            },
            security: security_value(a.security),
            use_authentication: on(a.use_authentication),
            auth_mechanism: a.auth_mechanism.to_string(),
            credential: a.credential.clone(),
            ignore_certificate_errors: on(a.ignore_certificate_errors),
            use_network_connector: on(a.use_network_connector),
            network_connector: a.network_connector.clone(),
            charset: a.charset.clone(),
            plain_text_only: on(a.plain_text_only),
            attachment_size_limit_bytes: if a.attachment_size_limit_bytes == 0 {
                String::new()
            } else {
                a.attachment_size_limit_bytes.to_string()
            },
        }
    }

    /// The account to send, or the field whose text is not a number.
    fn to_account(&self, id: Option<i64>) -> Result<pb::SmtpAccount, FieldError> {
        let number = |field: &str, text: &str| -> Result<u64, FieldError> {
            match text.trim() {
                "" => Ok(0),
                t => t.parse().map_err(|_| FieldError {
                    field: field.to_owned(),
                    message: None,
                }),
            }
        };
        let port = number("port", &self.port)?;
        let port = u32::try_from(port).map_err(|_| FieldError {
            field: "port".into(),
            message: None,
        })?;
        Ok(pb::SmtpAccount {
            name: id.map(account_name).unwrap_or_default(),
            etag: self.etag.clone(),
            account_name: self.account_name.trim().to_owned(),
            enabled: Some(self.enabled.is_some()),
            sender_email: self.sender_email.trim().to_owned(),
            reply_to_email: self.reply_to_email.trim().to_owned(),
            return_path_email: self.return_path_email.trim().to_owned(),
            confirmation_email: self.confirmation_email.trim().to_owned(),
            is_default: self.is_default.is_some(),
            send_read_confirmation: self.send_read_confirmation.is_some(),
            force_settings: self.force_settings.is_some(),
            enable_footer: self.enable_footer.is_some(),
            footer_text: self.footer_text.clone(),
            host: self.host.trim().to_owned(),
            port,
            security: SECURITY
                .iter()
                .find(|(_, v, _)| *v == self.security)
                .map_or(0, |(m, _, _)| *m as i32),
            use_authentication: self.use_authentication.is_some(),
            auth_mechanism: self.auth_mechanism.parse().unwrap_or(0),
            credential: self.credential.clone(),
            ignore_certificate_errors: self.ignore_certificate_errors.is_some(),
            use_network_connector: self.use_network_connector.is_some(),
            network_connector: self.network_connector.clone(),
            charset: self.charset.trim().to_owned(),
            plain_text_only: self.plain_text_only.is_some(),
            attachment_size_limit_bytes: number(
                "attachment_size_limit_bytes",
                &self.attachment_size_limit_bytes,
            )?,
            ..Default::default()
        })
    }
}

/// A field the API (or the form) refused; no message means "not a number".
#[derive(Debug, Clone)]
pub struct FieldError {
    pub(super) field: String,
    pub(super) message: Option<String>,
}

/// The form's input names, to tell a field error from a general one.
fn is_input(field: &str) -> bool {
    ACCOUNT_FIELDS.contains(&field) && !NOT_ON_FORM.contains(&field)
}

/// GetAccount, the error page if it fails.
pub async fn get_account(ctx: &Ctx, id: i64) -> Result<pb::SmtpAccount, axum::response::Response> {
    ctx.api()
        .accounts()
        .get_account(pb::GetAccountRequest {
            name: account_name(id),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| ctx.fail(s))
}

/// Applies `?preset=` (and its `ph_*` placeholder values) to the form, or says why not.
async fn apply_preset(
    ctx: &Ctx,
    query: &HashMap<String, String>,
    form: &mut AccountForm,
) -> Option<String> {
    let preset = query.get("preset").filter(|p| !p.is_empty())?;
    let values: HashMap<String, String> = query
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("ph_")?.to_owned(), v.trim().to_owned())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let preset_name = if preset.starts_with("presets/") {
        preset.clone()
    } else {
        format!("presets/{preset}")
    };
    let listed = ctx
        .api()
        .accounts()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .ok()?
        .into_inner()
        .presets;
    let keys: Vec<String> = listed
        .iter()
        .find(|p| p.name == preset_name)
        .map(|p| p.placeholders.iter().map(|ph| ph.key.clone()).collect())
        .unwrap_or_default();
    let placeholder_values = values
        .into_iter()
        .filter(|(k, _)| keys.contains(k))
        .collect();
    match ctx
        .api()
        .accounts()
        .resolve_preset(pb::ResolvePresetRequest {
            name: preset_name,
            placeholder_values,
        })
        .await
    {
        Ok(p) => {
            let p = p.into_inner();
            form.host = p.host;
            form.port = p.port.to_string();
            form.security = security_value(p.security);
            form.auth_mechanism = p.auth_mechanism.to_string();
            form.use_authentication = on(true);
            None
        }
        Err(s) => Some(s.message().to_owned()),
    }
}

/// `GET /accounts/new`.
pub async fn new_form(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> PageResult {
    if !ctx.may("SmtpAccountService/CreateAccount") {
        return Err(forbidden(&ctx));
    }
    let mut form = AccountForm {
        enabled: on(true),
        security: "starttls_required".into(),
        port: "587".into(),
        ..Default::default()
    };
    let preset = apply_preset(&ctx, &q, &mut form).await;
    let notices = Notices {
        preset,
        ..Default::default()
    };
    Ok(render(&ctx, None, &form, &notices, &q)
        .await
        .into_response())
}

/// `GET /accounts/{id}/edit`.
pub async fn edit_form(
    ctx: Ctx,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    if !ctx.may("SmtpAccountService/UpdateAccount") {
        return Err(forbidden(&ctx));
    }
    let account = get_account(&ctx, id).await?;
    let mut form = AccountForm::from_account(&account);
    let preset = apply_preset(&ctx, &q, &mut form).await;
    let notices = Notices {
        preset,
        ..Default::default()
    };
    Ok(render(&ctx, Some(id), &form, &notices, &q)
        .await
        .into_response())
}

/// The form again after a refusal, with the user's values.
async fn refused(ctx: &Ctx, id: Option<i64>, form: &AccountForm, s: tonic::Status) -> PageResult {
    let mut notices = Notices::default();
    let status = match s.code() {
        tonic::Code::InvalidArgument => {
            match parse_field_error(s.message()).filter(|(f, _)| is_input(f)) {
                Some((field, message)) => {
                    notices.field = Some(FieldError {
                        field,
                        message: Some(message),
                    });
                }
                None => notices.general = Some(s.message().to_owned()),
            }
            StatusCode::BAD_REQUEST
        }
        tonic::Code::AlreadyExists => {
            notices.field = Some(FieldError {
                field: "account_name".into(),
                message: Some(s.message().to_owned()),
            });
            StatusCode::BAD_REQUEST
        }
        tonic::Code::FailedPrecondition => {
            notices.general = Some(s.message().to_owned());
            StatusCode::BAD_REQUEST
        }
        tonic::Code::Aborted => {
            notices.conflict = true;
            StatusCode::CONFLICT
        }
        _ => return Err(ctx.fail(PageError::Api(s))),
    };
    let page = render(ctx, id, form, &notices, &HashMap::new()).await;
    Ok((status, page).into_response())
}

/// `POST /accounts/new`.
pub async fn create(ctx: Ctx, Form(form): Form<AccountForm>) -> PageResult {
    ctx.check_csrf(&form.csrf).map_err(|e| ctx.fail(e))?;
    if !ctx.may("SmtpAccountService/CreateAccount") {
        return Err(forbidden(&ctx));
    }
    let account = match form.to_account(None) {
        Ok(a) => a,
        Err(field) => return not_a_number(&ctx, None, &form, field).await,
    };
    match ctx
        .api()
        .accounts()
        .create_account(pb::CreateAccountRequest {
            account: Some(account),
        })
        .await
    {
        Ok(_) => Ok(Redirect::to("/accounts").into_response()),
        Err(s) => refused(&ctx, None, &form, s).await,
    }
}

/// `POST /accounts/{id}/edit`.
pub async fn update(ctx: Ctx, Path(id): Path<i64>, Form(form): Form<AccountForm>) -> PageResult {
    ctx.check_csrf(&form.csrf).map_err(|e| ctx.fail(e))?;
    if !ctx.may("SmtpAccountService/UpdateAccount") {
        return Err(forbidden(&ctx));
    }
    let account = match form.to_account(Some(id)) {
        Ok(a) => a,
        Err(field) => return not_a_number(&ctx, Some(id), &form, field).await,
    };
    let make_default = account.is_default;
    let mut api = ctx.api().accounts();
    let updated = api
        .update_account(pb::UpdateAccountRequest {
            account: Some(account),
            update_mask: Some(prost_types::FieldMask {
                paths: update_mask(),
            }),
        })
        .await;
    let updated = match updated {
        Ok(a) => a.into_inner(),
        Err(s) => return refused(&ctx, Some(id), &form, s).await,
    };
    if make_default
        && !updated.is_default
        && let Err(s) = api
            .set_default_account(pb::SetDefaultAccountRequest {
                name: account_name(id),
            })
            .await
    {
        let form = AccountForm {
            is_default: None,
            ..AccountForm::from_account(&updated)
        };
        return refused(&ctx, Some(id), &form, s).await;
    }
    Ok(Redirect::to("/accounts").into_response())
}

async fn not_a_number(
    ctx: &Ctx,
    id: Option<i64>,
    form: &AccountForm,
    field: FieldError,
) -> PageResult {
    let notices = Notices {
        field: Some(field),
        ..Default::default()
    };
    let page = render(ctx, id, form, &notices, &HashMap::new()).await;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_round_trips_an_account() {
        let a = pb::SmtpAccount {
            account_name: "Alerts".into(),
            enabled: Some(false),
            sender_email: "a@example.com".into(),
            host: "smtp.example.com".into(),
            port: 465,
            security: pb::SecurityMode::ImplicitTls.into(),
            attachment_size_limit_bytes: 1024,
            etag: "e1".into(),
            ..Default::default()
        };
        let back = AccountForm::from_account(&a).to_account(Some(3)).unwrap();
        assert_eq!(back.name, "accounts/3");
        assert_eq!(back.enabled, Some(false));
        assert_eq!(back.port, 465);
        assert_eq!(back.security, a.security);
        assert_eq!(back.attachment_size_limit_bytes, 1024);
        assert_eq!(back.etag, "e1");
        let bad = AccountForm {
            port: "x".into(),
            ..Default::default()
        };
        assert_eq!(bad.to_account(None).unwrap_err().field, "port");
    }
}
