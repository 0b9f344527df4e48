//! The markup of the SMTP server settings window: the preset picker, the account and server
//! sections, the "Advanced" details, each input with its label and, after a refusal, its error.

use super::form::{AccountForm, FieldError};
use super::{SECURITY, account_nav};
use crate::console::Ctx;
use crate::console::fields::Field;
use crate::console::layout::{self, Section};
use mailplane_proto::v1 as pb;
use maud::{Markup, html};
use std::collections::HashMap;

/// The mechanisms, as form values (the enum's numbers) and catalogue keys.
const MECHANISMS: [(pb::AuthMechanism, &str); 4] = [
    (pb::AuthMechanism::Unspecified, "accounts.mechanism.auto"),
    (pb::AuthMechanism::Plain, "accounts.mechanism.plain"),
    (pb::AuthMechanism::Login, "accounts.mechanism.login"),
    (pb::AuthMechanism::Xoauth2, "accounts.mechanism.xoauth2"),
];

/// What the page shows besides the fields.
#[derive(Debug, Default)]
pub(super) struct Notices {
    pub(super) field: Option<FieldError>,
    pub(super) general: Option<String>,
    pub(super) conflict: bool,
    pub(super) preset: Option<String>,
}

/// The choices of the selects: credentials, connectors, presets (empty when not visible).
pub(super) struct Choices {
    credentials: Vec<(String, String)>,
    connectors: Vec<(String, String)>,
    presets: Vec<pb::Preset>,
}

pub(super) async fn choices(ctx: &Ctx) -> Choices {
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

/// The label of input `field`, for the summary of a refusal.
fn field_label(ctx: &Ctx, field: &str) -> &'static str {
    let lang = ctx.lang;
    match field {
        "account_name" => lang.t("accounts.field.account_name"),
        "enabled" => lang.t("accounts.field.enabled"),
        "sender_email" => lang.t("accounts.field.sender_email"),
        "reply_to_email" => lang.t("accounts.field.reply_to_email"),
        "return_path_email" => lang.t("accounts.field.return_path_email"),
        "confirmation_email" => lang.t("accounts.field.confirmation_email"),
        "is_default" => lang.t("accounts.field.is_default"),
        "send_read_confirmation" => lang.t("accounts.field.send_read_confirmation"),
        "force_settings" => lang.t("accounts.field.force_settings"),
        "enable_footer" => lang.t("accounts.field.enable_footer"),
        "footer_text" => lang.t("accounts.field.footer_text"),
        "host" => lang.t("accounts.field.host"),
        "port" => lang.t("accounts.field.port"),
        "security" => lang.t("accounts.field.security"),
        "use_authentication" => lang.t("accounts.field.use_authentication"),
        "auth_mechanism" => lang.t("accounts.field.auth_mechanism"),
        "credential" => lang.t("accounts.field.credential"),
        "ignore_certificate_errors" => lang.t("accounts.field.ignore_certificate_errors"),
        "use_network_connector" => lang.t("accounts.field.use_network_connector"),
        "network_connector" => lang.t("accounts.field.network_connector"),
        "charset" => lang.t("accounts.field.charset"),
        "plain_text_only" => lang.t("accounts.field.plain_text_only"),
        "attachment_size_limit_bytes" => lang.t("accounts.field.attachment_size_limit_bytes"),
        _ => lang.t("accounts.form.field"),
    }
}

/// The message under `field`, if the refusal was about it.
pub(super) fn error_for<'a>(ctx: &Ctx, n: &'a Notices, field: &str) -> Option<&'a str> {
    let e = n.field.as_ref().filter(|e| e.field == field)?;
    Some(
        e.message
            .as_deref()
            .unwrap_or_else(|| ctx.lang.t("accounts.not_a_number")),
    )
}

/// Input `field` of the form, labelled by catalogue key `key`, with its error.
fn field<'a>(ctx: &Ctx, n: &'a Notices, field: &'a str, key: &'static str) -> Field<'a> {
    Field::new("", field, ctx.lang.t(key)).error(error_for(ctx, n, field))
}

fn text(
    ctx: &Ctx,
    n: &Notices,
    name: &str,
    key: &'static str,
    kind: &str,
    value: &str,
    required: bool,
) -> Markup {
    field(ctx, n, name, key).input(kind, value, required)
}

fn check(ctx: &Ctx, n: &Notices, name: &str, key: &'static str, value: bool) -> Markup {
    field(ctx, n, name, key).checkbox(value)
}

fn select(
    ctx: &Ctx,
    n: &Notices,
    name: &str,
    key: &'static str,
    value: &str,
    none: Option<&'static str>,
    options: &[(String, String)],
) -> Markup {
    field(ctx, n, name, key).select(value, none.map(|k| ctx.lang.t(k)), options)
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
    let applied = presets
        .iter()
        .find(|p| !chosen.is_empty() && p.preset_id == chosen && error.is_none());
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
                @if let Some(p) = applied {
                    div.notice.ok role="status" data-testid="preset-applied" {
                        p { (lang.tf("accounts.preset.applied", &[("name", &p.display_name)])) }
                        p { (p.sender_rules) }
                        @if !p.username.is_empty() {
                            p { (lang.tf("accounts.preset.username", &[("username", &p.username)])) }
                        }
                    }
                }
                p.muted { (lang.t("accounts.preset.help")) }
                div.actions { button.secondary type="submit" data-testid="apply-preset" { (lang.t("accounts.preset.apply")) } }
            }
        }
    }
}

pub(super) async fn render(
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
                a href={ "#" (e.field) } { (field_label(ctx, &e.field)) }
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
                (field(ctx, n, "footer_text", "accounts.field.footer_text").textarea(&f.footer_text, 3))
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
