//! The SMTP server settings window (`/accounts/new`, `/accounts/{id}/edit`): the seed's two
//! sections, the account and the server, the Alloy fields under "Advanced", and a preset picker
//! that reloads the form with a provider's host, port, security and mechanism.
//!
//! The API validates: its INVALID_ARGUMENT message is `field: message`, shown under that field
//! with the user's values kept. An update sends the etag the form was loaded with; a stale one
//! (ABORTED) keeps the input and offers to reload.

use super::{SECURITY, account_name, account_nav, forbidden};
use crate::console::ctx::PageResult;
use crate::console::layout::{self, Section};
use crate::console::{Ctx, PageError};
use axum::Form;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use mailplane_proto::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::HashMap;

/// The form's fields, named as in the API (so an API error names the input).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    account_name: String,
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    sender_email: String,
    #[serde(default)]
    reply_to_email: String,
    #[serde(default)]
    return_path_email: String,
    #[serde(default)]
    confirmation_email: String,
    #[serde(default)]
    is_default: Option<String>,
    #[serde(default)]
    send_read_confirmation: Option<String>,
    #[serde(default)]
    force_settings: Option<String>,
    #[serde(default)]
    enable_footer: Option<String>,
    #[serde(default)]
    footer_text: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    security: String,
    #[serde(default)]
    use_authentication: Option<String>,
    #[serde(default)]
    auth_mechanism: String,
    #[serde(default)]
    credential: String,
    #[serde(default)]
    ignore_certificate_errors: Option<String>,
    #[serde(default)]
    use_network_connector: Option<String>,
    #[serde(default)]
    network_connector: String,
    #[serde(default)]
    charset: String,
    #[serde(default)]
    plain_text_only: Option<String>,
    #[serde(default)]
    attachment_size_limit_bytes: String,
}

/// The fields an update changes: every field of the form (the default flag goes through
/// SetDefaultAccount).
const UPDATE_MASK: [&str; 22] = [
    "account_name",
    "enabled",
    "sender_email",
    "reply_to_email",
    "return_path_email",
    "confirmation_email",
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
    "charset",
    "plain_text_only",
    "attachment_size_limit_bytes",
];

/// The mechanisms, as form values (the enum's numbers) and catalogue keys.
const MECHANISMS: [(pb::AuthMechanism, &str); 4] = [
    (pb::AuthMechanism::Unspecified, "accounts.mechanism.auto"),
    (pb::AuthMechanism::Plain, "accounts.mechanism.plain"),
    (pb::AuthMechanism::Login, "accounts.mechanism.login"),
    (pb::AuthMechanism::Xoauth2, "accounts.mechanism.xoauth2"),
];

fn on(b: bool) -> Option<String> {
    b.then(|| "on".to_owned())
}

fn security_value(n: i32) -> String {
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
    field: String,
    message: Option<String>,
}

/// What the page shows besides the fields.
#[derive(Debug, Default)]
struct Notices {
    field: Option<FieldError>,
    general: Option<String>,
    conflict: bool,
    preset: Option<String>,
}

/// The form's input names, to tell a field error from a general one.
fn is_input(field: &str) -> bool {
    UPDATE_MASK.contains(&field) || field == "is_default"
}

/// Splits the API's INVALID_ARGUMENT message `field: message` (the field may be a path such
/// as `account.sender_email`).
pub fn parse_field_error(message: &str) -> Option<(String, String)> {
    let (field, text) = message.split_once(": ")?;
    let field = field.rsplit('.').next().unwrap_or(field);
    (!field.is_empty() && field.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .then(|| (field.to_owned(), text.to_owned()))
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

/// The choices of the selects: credentials, connectors, presets (empty when not visible).
struct Choices {
    credentials: Vec<(String, String)>,
    connectors: Vec<(String, String)>,
    presets: Vec<pb::Preset>,
}

async fn choices(ctx: &Ctx) -> Choices {
    let api = ctx.api();
    let credentials = api
        .credentials()
        .list_credentials(pb::ListCredentialsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .map(|r| {
            r.into_inner()
                .credentials
                .into_iter()
                .map(|c| (c.name, c.display_name))
                .collect()
        })
        .unwrap_or_default();
    let connectors = api
        .connectors()
        .list_connectors(pb::ListConnectorsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .map(|r| {
            r.into_inner()
                .connectors
                .into_iter()
                .map(|c| (c.name, c.display_name))
                .collect()
        })
        .unwrap_or_default();
    let presets = api
        .accounts()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .map(|r| r.into_inner().presets)
        .unwrap_or_default();
    Choices {
        credentials,
        connectors,
        presets,
    }
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
                paths: UPDATE_MASK.iter().map(|f| (*f).to_owned()).collect(),
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

/// The message under `field`, if the refusal was about it.
fn error_for<'a>(ctx: &Ctx, n: &'a Notices, field: &str) -> Option<&'a str> {
    let e = n.field.as_ref().filter(|e| e.field == field)?;
    Some(
        e.message
            .as_deref()
            .unwrap_or_else(|| ctx.lang.t("accounts.not_a_number")),
    )
}

fn described(field: &str, error: Option<&str>) -> Option<String> {
    error.map(|_| format!("{field}-error"))
}

fn field_error(field: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.error id={ (field) "-error" } data-testid={ "error-" (field) } { (error) }
        }
    }
}

fn text(
    ctx: &Ctx,
    n: &Notices,
    field: &str,
    key: &'static str,
    kind: &str,
    value: &str,
    required: bool,
) -> Markup {
    let error = error_for(ctx, n, field);
    html! {
        div.field {
            label for=(field) { (ctx.lang.t(key)) }
            input id=(field) name=(field) type=(kind) value=(value) required[required]
                aria-invalid=[error.map(|_| "true")] aria-describedby=[described(field, error)];
            (field_error(field, error))
        }
    }
}

fn check(ctx: &Ctx, n: &Notices, field: &str, key: &'static str, value: bool) -> Markup {
    let error = error_for(ctx, n, field);
    html! {
        div.field.check {
            label for=(field) { (ctx.lang.t(key)) }
            input id=(field) name=(field) type="checkbox" value="on" checked[value]
                aria-invalid=[error.map(|_| "true")] aria-describedby=[described(field, error)];
            (field_error(field, error))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn select(
    ctx: &Ctx,
    n: &Notices,
    field: &str,
    key: &'static str,
    value: &str,
    none: Option<&'static str>,
    options: &[(String, String)],
) -> Markup {
    let error = error_for(ctx, n, field);
    html! {
        div.field {
            label for=(field) { (ctx.lang.t(key)) }
            select id=(field) name=(field)
                aria-invalid=[error.map(|_| "true")] aria-describedby=[described(field, error)] {
                @if let Some(none) = none {
                    option value="" selected[value.is_empty()] { (ctx.lang.t(none)) }
                }
                @for (v, label) in options {
                    option value=(v) selected[v == value] { (label) }
                }
            }
            (field_error(field, error))
        }
    }
}

fn preset_picker(
    ctx: &Ctx,
    id: Option<i64>,
    presets: &[pb::Preset],
    q: &HashMap<String, String>,
    error: Option<&str>,
) -> Markup {
    let lang = ctx.lang;
    let action = match id {
        Some(id) => format!("/accounts/{id}/edit"),
        None => "/accounts/new".to_owned(),
    };
    let chosen = q.get("preset").map(String::as_str).unwrap_or_default();
    let mut keys: Vec<&pb::PresetPlaceholder> = Vec::new();
    for p in presets {
        for ph in &p.placeholders {
            if !keys.iter().any(|k| k.key == ph.key) {
                keys.push(ph);
            }
        }
    }
    html! {
        form.preset.noprint method="get" action=(action) data-testid="preset-picker" {
            fieldset {
                legend { (lang.t("accounts.preset.legend")) }
                @if let Some(error) = error {
                    p.error role="alert" data-testid="preset-error" { (error) }
                }
                div.field {
                    label for="preset" { (lang.t("accounts.preset.label")) }
                    select #preset name="preset" {
                        option value="" { (lang.t("accounts.preset.none")) }
                        @for p in presets {
                            option value=(p.preset_id) selected[p.preset_id == chosen] { (p.display_name) }
                        }
                    }
                }
                @for ph in keys {
                    div.field {
                        label for={ "ph_" (ph.key) } { (ph.description) }
                        input type="text" id={ "ph_" (ph.key) } name={ "ph_" (ph.key) }
                            placeholder=(ph.example)
                            value=(q.get(&format!("ph_{}", ph.key)).map(String::as_str).unwrap_or_default());
                    }
                }
                p.muted { (lang.t("accounts.preset.help")) }
                div.actions { button.secondary type="submit" data-testid="apply-preset" { (lang.t("accounts.preset.apply")) } }
            }
        }
    }
}

async fn render(
    ctx: &Ctx,
    id: Option<i64>,
    f: &AccountForm,
    n: &Notices,
    q: &HashMap<String, String>,
) -> Markup {
    let lang = ctx.lang;
    let c = choices(ctx).await;
    let (title, action) = match id {
        Some(id) => (
            lang.t("accounts.form.edit_title"),
            format!("/accounts/{id}/edit"),
        ),
        None => (
            lang.t("accounts.form.new_title"),
            "/accounts/new".to_owned(),
        ),
    };
    let security: Vec<(String, String)> = SECURITY
        .iter()
        .map(|(_, v, key)| ((*v).to_owned(), lang.t(key).to_owned()))
        .collect();
    let mechanisms: Vec<(String, String)> = MECHANISMS
        .iter()
        .map(|(m, key)| ((*m as i32).to_string(), lang.t(key).to_owned()))
        .collect();
    let body = html! {
        @if let Some(id) = id { (account_nav(lang, id, true)) }
        (preset_picker(ctx, id, &c.presets, q, n.preset.as_deref()))
        @if n.conflict {
            div.notice.conflict role="alert" data-testid="conflict" {
                p { (lang.t("accounts.form.conflict")) }
                @if let Some(id) = id {
                    a href={ "/accounts/" (id) "/edit" } data-testid="reload" { (lang.t("accounts.form.reload")) }
                }
            }
        }
        @if let Some(general) = &n.general {
            p.error role="alert" data-testid="form-error" { (general) }
        }
        @if let Some(e) = &n.field {
            p.error role="alert" data-testid="form-error-summary" {
                (lang.t("accounts.form.check_field")) " "
                a href={ "#" (e.field) } { (e.field) }
            }
        }
        form method="post" action=(action) data-testid="account-form" novalidate {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            input type="hidden" name="etag" value=(f.etag);
            fieldset data-testid="section-account" {
                legend { (lang.t("accounts.form.account_section")) }
                (text(ctx, n, "account_name", "accounts.field.account_name", "text", &f.account_name, true))
                (check(ctx, n, "enabled", "accounts.field.enabled", f.enabled.is_some()))
                (text(ctx, n, "sender_email", "accounts.field.sender_email", "email", &f.sender_email, true))
                (text(ctx, n, "reply_to_email", "accounts.field.reply_to_email", "email", &f.reply_to_email, false))
                (text(ctx, n, "return_path_email", "accounts.field.return_path_email", "email", &f.return_path_email, false))
                (text(ctx, n, "confirmation_email", "accounts.field.confirmation_email", "email", &f.confirmation_email, false))
                (check(ctx, n, "is_default", "accounts.field.is_default", f.is_default.is_some()))
                (check(ctx, n, "send_read_confirmation", "accounts.field.send_read_confirmation", f.send_read_confirmation.is_some()))
                (check(ctx, n, "force_settings", "accounts.field.force_settings", f.force_settings.is_some()))
                (check(ctx, n, "enable_footer", "accounts.field.enable_footer", f.enable_footer.is_some()))
                @let footer_error = error_for(ctx, n, "footer_text");
                div.field {
                    label for="footer_text" { (lang.t("accounts.field.footer_text")) }
                    textarea #footer_text name="footer_text" rows="3"
                        aria-invalid=[footer_error.map(|_| "true")]
                        aria-describedby=[described("footer_text", footer_error)] { (f.footer_text) }
                    (field_error("footer_text", footer_error))
                }
            }
            fieldset data-testid="section-server" {
                legend { (lang.t("accounts.form.server_section")) }
                (text(ctx, n, "host", "accounts.field.host", "text", &f.host, true))
                (text(ctx, n, "port", "accounts.field.port", "number", &f.port, false))
                (select(ctx, n, "security", "accounts.field.security", &f.security, None, &security))
                (check(ctx, n, "use_authentication", "accounts.field.use_authentication", f.use_authentication.is_some()))
                (select(ctx, n, "auth_mechanism", "accounts.field.auth_mechanism", &f.auth_mechanism, None, &mechanisms))
                (select(ctx, n, "credential", "accounts.field.credential", &f.credential, Some("accounts.choose_none"), &c.credentials))
                (check(ctx, n, "ignore_certificate_errors", "accounts.field.ignore_certificate_errors", f.ignore_certificate_errors.is_some()))
                (check(ctx, n, "use_network_connector", "accounts.field.use_network_connector", f.use_network_connector.is_some()))
                (select(ctx, n, "network_connector", "accounts.field.network_connector", &f.network_connector, Some("accounts.choose_none"), &c.connectors))
            }
            details data-testid="advanced" open[["charset", "attachment_size_limit_bytes", "plain_text_only"].iter().any(|f| error_for(ctx, n, f).is_some())] {
                summary { (lang.t("accounts.form.advanced")) }
                (text(ctx, n, "charset", "accounts.field.charset", "text", &f.charset, false))
                (check(ctx, n, "plain_text_only", "accounts.field.plain_text_only", f.plain_text_only.is_some()))
                (text(ctx, n, "attachment_size_limit_bytes", "accounts.field.attachment_size_limit_bytes", "number", &f.attachment_size_limit_bytes, false))
            }
            div.actions {
                button type="submit" data-testid="save" { (lang.t("accounts.form.send")) }
                a.button.secondary href="/accounts" { (lang.t("accounts.cancel")) }
            }
        }
    };
    layout::page(ctx, Section::Accounts, title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_field_errors_are_split_at_the_field() {
        assert_eq!(
            parse_field_error("sender_email: is not an e-mail address"),
            Some(("sender_email".into(), "is not an e-mail address".into()))
        );
        assert_eq!(
            parse_field_error("account.port: 0 is out of range"),
            Some(("port".into(), "0 is out of range".into()))
        );
        assert_eq!(parse_field_error("no field here"), None);
        assert_eq!(parse_field_error("Two Words: x"), None);
    }

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
