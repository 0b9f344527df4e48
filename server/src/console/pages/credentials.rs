//! Credentials: the list, creating one, and rotating its secret. Secrets are write-only: no
//! page ever renders one back, not even a form that failed validation (it asks again).

use super::{
    csrf_input, fail, field_error, form_alert, form_error, id_of, pager, secret_field, see_other,
    text_field, time, with_status,
};
use crate::console::Ctx;
use crate::console::ctx::PageResult;
use crate::console::fields::error_note;
use crate::console::i18n::Lang;
use crate::console::layout::{Section, page};
use crate::console::list;
use axum::Form;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use mailplane_proto::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

/// `?page_token=&created=&rotated=` of the list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// The page.
    #[serde(default)]
    pub page_token: String,
    /// The credential just created.
    #[serde(default)]
    pub created: String,
    /// The credential whose secret was just rotated.
    #[serde(default)]
    pub rotated: String,
}

/// A kind in the user's language (the API's name when it is not one of ours).
fn kind_name(lang: Lang, kind: i32) -> String {
    let raw = crate::render::kind(kind);
    let raw = if raw == "UNSPECIFIED" {
        "PASSWORD".to_owned()
    } else {
        raw
    };
    KINDS
        .iter()
        .find(|(k, _)| *k == raw)
        .map_or(raw.clone(), |(_, key)| lang.t(key).to_owned())
}

/// `GET /credentials`.
pub async fn list(ctx: Ctx, Query(q): Query<ListQuery>) -> PageResult {
    let lang = ctx.lang;
    let resp = ctx
        .api()
        .credentials()
        .list_credentials(pb::ListCredentialsRequest {
            page_size: 100,
            page_token: q.page_token.clone(),
        })
        .await
        .map_err(|s| fail(&ctx, s))?
        .into_inner();
    let may_create = ctx.may("CredentialService/CreateCredential");
    let may_rotate = ctx.may("CredentialService/UpdateCredential");
    let body = html! {
        @if !q.created.is_empty() {
            p.notice.ok role="status" data-testid="notice-created" { (lang.t("cred.created")) }
        }
        @if !q.rotated.is_empty() {
            p.notice.ok role="status" data-testid="notice-rotated" { (lang.t("cred.rotated")) }
        }
        @if may_create {
            div.actions {
                a.button #new-credential data-testid="new-credential" href="/credentials/new" {
                    (lang.t("cred.new"))
                }
            }
        }
        @if resp.credentials.is_empty() {
            p.muted data-testid="empty" { (lang.t("cred.none")) }
        } @else {
            table #credentials data-testid="credentials" aria-label=(lang.t("cred.title")) {
                (list::head(
                    &[lang.t("cred.display_name"), lang.t("cred.username"), lang.t("cred.kind"), lang.t("cred.allowed_destinations"), lang.t("cred.has_secret"), lang.t("cred.secret_set")],
                    may_rotate.then(|| html! { span.visually-hidden { (lang.t("pages.actions")) } }),
                ))
                tbody {
                    @for c in &resp.credentials {
                        tr data-testid="credential-row" data-id=(c.id) {
                            td { (c.display_name) }
                            td { (c.username) }
                            td data-kind=(crate::render::kind(c.kind)) { (kind_name(lang, c.kind)) }
                            td { @for d in &c.allowed_destinations { code { (d) } " " } }
                            td {
                                @if c.has_secret || c.has_client_secret || c.has_refresh_token {
                                    (lang.t("pages.yes"))
                                } @else { (lang.t("pages.no")) }
                            }
                            td { (time(c.secret_update_time.as_ref())) }
                            @if may_rotate {
                                td { a data-testid="rotate" href={ "/credentials/" (c.id) "/rotate" } {
                                    (lang.t("cred.rotate"))
                                    span.visually-hidden { " " (c.display_name) }
                                } }
                            }
                        }
                    }
                }
            }
        }
        (pager(lang, "/credentials", "", &resp.next_page_token))
    };
    Ok(page(&ctx, Section::Credentials, lang.t("cred.title"), body).into_response())
}

/// The create form, as posted (the secrets are read, never rendered back).
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    /// CSRF.
    #[serde(default)]
    pub csrf: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// User name.
    #[serde(default)]
    pub username: String,
    /// `PASSWORD`, `OAUTH2_TOKEN`, `OAUTH2_CLIENT_CREDENTIALS`, `OAUTH2_REFRESH_TOKEN`.
    #[serde(default)]
    pub kind: String,
    /// One per line.
    #[serde(default)]
    pub allowed_destinations: String,
    /// The secret.
    #[serde(default)]
    pub secret: String,
    /// OAuth2.
    #[serde(default)]
    pub token_url: String,
    /// OAuth2.
    #[serde(default)]
    pub client_id: String,
    /// OAuth2.
    #[serde(default)]
    pub scope: String,
    /// `SERVER` or `CONNECTOR`.
    #[serde(default)]
    pub token_source: String,
    /// OAuth2.
    #[serde(default)]
    pub client_secret: String,
    /// OAuth2.
    #[serde(default)]
    pub refresh_token: String,
}

const KINDS: [(&str, &str); 4] = [
    ("PASSWORD", "cred.kind_password"),
    ("OAUTH2_TOKEN", "cred.kind_oauth2_token"),
    ("OAUTH2_CLIENT_CREDENTIALS", "cred.kind_client_credentials"),
    ("OAUTH2_REFRESH_TOKEN", "cred.kind_refresh_token"),
];

const FIELDS: [&str; 11] = [
    "display_name",
    "username",
    "kind",
    "allowed_destinations",
    "secret",
    "token_url",
    "client_id",
    "scope",
    "token_source",
    "client_secret",
    "refresh_token",
];

fn create_page(ctx: &Ctx, f: &CreateForm, error: Option<&(String, String)>) -> Markup {
    let lang = ctx.lang;
    let kind = if f.kind.is_empty() {
        "PASSWORD"
    } else {
        f.kind.as_str()
    };
    let body = html! {
        (form_alert(error, &FIELDS))
        @if error.is_some() {
            p.notice data-testid="secret-again" { (lang.t("cred.secret_again")) }
        }
        form #credential-form method="post" action="/credentials" {
            (csrf_input(ctx))
            (text_field(lang, "display_name", "cred.display_name", &f.display_name,
                field_error(error, "display_name"), true))
            (text_field(lang, "username", "cred.username", &f.username,
                field_error(error, "username"), true))
            div.field {
                label for="field-kind" { (lang.t("cred.kind")) }
                select #field-kind name="kind" {
                    @for (value, key) in KINDS {
                        option value=(value) selected[value == kind] { (lang.t(key)) }
                    }
                }
                (error_note("kind", field_error(error, "kind")))
            }
            div.field {
                label for="field-allowed_destinations" { (lang.t("cred.allowed_destinations")) }
                textarea #field-allowed_destinations name="allowed_destinations" rows="4" required
                    aria-describedby=(if field_error(error, "allowed_destinations").is_some() {
                        "field-allowed_destinations-help allowed_destinations-error"
                    } else {
                        "field-allowed_destinations-help"
                    })
                    aria-invalid=[field_error(error, "allowed_destinations").map(|_| "true")] {
                    (f.allowed_destinations)
                }
                p.muted #field-allowed_destinations-help { (lang.t("cred.destinations_help")) }
                (error_note("allowed_destinations", field_error(error, "allowed_destinations")))
            }
            (secret_field(lang, "secret", "cred.secret", field_error(error, "secret"),
                Some("cred.secret_help")))
            fieldset #oauth2 {
                legend { (lang.t("cred.oauth2")) }
                p.muted { (lang.t("cred.oauth2_help")) }
                (text_field(lang, "token_url", "cred.token_url", &f.token_url,
                    field_error(error, "token_url"), false))
                (text_field(lang, "client_id", "cred.client_id", &f.client_id,
                    field_error(error, "client_id"), false))
                (text_field(lang, "scope", "cred.scope", &f.scope,
                    field_error(error, "scope"), false))
                div.field {
                    label for="field-token_source" { (lang.t("cred.token_source")) }
                    select #field-token_source name="token_source" {
                        option value="SERVER" selected[f.token_source != "CONNECTOR"] {
                            (lang.t("cred.source_server"))
                        }
                        option value="CONNECTOR" selected[f.token_source == "CONNECTOR"] {
                            (lang.t("cred.source_connector"))
                        }
                    }
                    (error_note("token_source", field_error(error, "token_source")))
                }
                (secret_field(lang, "client_secret", "cred.client_secret",
                    field_error(error, "client_secret"), None))
                (secret_field(lang, "refresh_token", "cred.refresh_token",
                    field_error(error, "refresh_token"), None))
            }
            div.actions {
                button type="submit" data-testid="create" { (lang.t("cred.create")) }
                a.button.secondary href="/credentials" { (lang.t("pages.cancel")) }
            }
        }
    };
    page(ctx, Section::Credentials, lang.t("cred.new"), body)
}

/// `GET /credentials/new`.
pub async fn new_form(ctx: Ctx) -> PageResult {
    if !ctx.may("CredentialService/CreateCredential") {
        return Err(fail(&ctx, tonic::Status::permission_denied("")));
    }
    Ok(create_page(&ctx, &CreateForm::default(), None).into_response())
}

fn kind_value(kind: &str) -> i32 {
    pb::CredentialKind::from_str_name(&format!("CREDENTIAL_KIND_{kind}")).map_or(0, |k| k as i32)
}

/// `POST /credentials`.
pub async fn create(ctx: Ctx, Form(f): Form<CreateForm>) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    let kind = kind_value(&f.kind);
    let oauth = kind == pb::CredentialKind::Oauth2ClientCredentials as i32
        || kind == pb::CredentialKind::Oauth2RefreshToken as i32;
    let credential = pb::Credential {
        display_name: f.display_name.trim().to_owned(),
        username: f.username.trim().to_owned(),
        kind,
        secret: f.secret.clone(),
        allowed_destinations: f
            .allowed_destinations
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        token_url: if oauth {
            f.token_url.trim().to_owned()
        } else {
            String::new()
        },
        client_id: if oauth {
            f.client_id.trim().to_owned()
        } else {
            String::new()
        },
        scope: if oauth {
            f.scope.trim().to_owned()
        } else {
            String::new()
        },
        client_secret: if oauth {
            f.client_secret.clone()
        } else {
            String::new()
        },
        refresh_token: if oauth {
            f.refresh_token.clone()
        } else {
            String::new()
        },
        token_source: if oauth && f.token_source == "CONNECTOR" {
            pb::TokenSource::Connector as i32
        } else {
            0
        },
        ..Default::default()
    };
    match ctx
        .api()
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(credential),
        })
        .await
    {
        Ok(c) => Ok(see_other(&format!(
            "/credentials?created={}",
            c.into_inner().id
        ))),
        Err(status) => match form_error(&status) {
            Some(error) => Ok(with_status(
                StatusCode::BAD_REQUEST,
                create_page(&ctx, &f, Some(&error)),
            )),
            None => Err(fail(&ctx, status)),
        },
    }
}

/// The rotate form, as posted.
#[derive(Debug, Default, Deserialize)]
pub struct RotateForm {
    /// CSRF.
    #[serde(default)]
    pub csrf: String,
    /// The new secret (password or access token).
    #[serde(default)]
    pub secret: String,
    /// The new OAuth2 client secret.
    #[serde(default)]
    pub client_secret: String,
    /// The new OAuth2 refresh token.
    #[serde(default)]
    pub refresh_token: String,
}

fn rotate_page(ctx: &Ctx, c: &pb::Credential, error: Option<&(String, String)>) -> Markup {
    let lang = ctx.lang;
    let oauth = c.kind == pb::CredentialKind::Oauth2ClientCredentials as i32
        || c.kind == pb::CredentialKind::Oauth2RefreshToken as i32;
    let refresh = c.kind == pb::CredentialKind::Oauth2RefreshToken as i32;
    let fields = ["secret", "client_secret", "refresh_token"];
    let body = html! {
        p {
            (lang.t("cred.rotating")) " "
            strong { (c.display_name) } " (" code { (c.username) } ", " (kind_name(lang, c.kind)) ")"
        }
        p.muted { (lang.t("cred.last_set")) " " (time(c.secret_update_time.as_ref())) }
        (form_alert(error, &fields))
        form #rotate-form method="post" action={ "/credentials/" (c.id) "/rotate" } {
            (csrf_input(ctx))
            @if oauth {
                (secret_field(lang, "client_secret", "cred.client_secret",
                    field_error(error, "client_secret"), Some("cred.keep_help")))
                @if refresh {
                    (secret_field(lang, "refresh_token", "cred.refresh_token",
                        field_error(error, "refresh_token"), Some("cred.keep_help")))
                }
            } @else {
                (secret_field(lang, "secret", "cred.new_secret", field_error(error, "secret"), None))
            }
            div.actions {
                button type="submit" data-testid="rotate-submit" { (lang.t("cred.rotate")) }
                a.button.secondary href="/credentials" { (lang.t("pages.cancel")) }
            }
        }
    };
    page(ctx, Section::Credentials, lang.t("cred.rotate_title"), body)
}

async fn get_credential(ctx: &Ctx, id: &str) -> Result<pb::Credential, axum::response::Response> {
    ctx.api()
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            name: format!("credentials/{}", id_of(id)),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| fail(ctx, s))
}

/// `GET /credentials/{id}/rotate`.
pub async fn rotate_form(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    if !ctx.may("CredentialService/UpdateCredential") {
        return Err(fail(&ctx, tonic::Status::permission_denied("")));
    }
    let c = get_credential(&ctx, &id).await?;
    Ok(rotate_page(&ctx, &c, None).into_response())
}

/// `POST /credentials/{id}/rotate`: UpdateCredential with the mask of the secrets given.
pub async fn rotate(ctx: Ctx, Path(id): Path<String>, Form(f): Form<RotateForm>) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    let name = format!("credentials/{}", id_of(&id));
    let mut mask = Vec::new();
    for (field, value) in [
        ("secret", &f.secret),
        ("client_secret", &f.client_secret),
        ("refresh_token", &f.refresh_token),
    ] {
        if !value.is_empty() {
            mask.push(field.to_owned());
        }
    }
    let result = if mask.is_empty() {
        Err(tonic::Status::invalid_argument(format!(
            "secret: {}",
            ctx.lang.t("cred.secret_required")
        )))
    } else {
        ctx.api()
            .credentials()
            .update_credential(pb::UpdateCredentialRequest {
                credential: Some(pb::Credential {
                    name: name.clone(),
                    secret: f.secret.clone(),
                    client_secret: f.client_secret.clone(),
                    refresh_token: f.refresh_token.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: mask }),
            })
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Ok(see_other(&format!("/credentials?rotated={}", id_of(&id)))),
        Err(status) => match form_error(&status) {
            Some(error) => {
                let c = get_credential(&ctx, &id).await?;
                let error = if error.0 == "secret"
                    && c.kind >= pb::CredentialKind::Oauth2ClientCredentials as i32
                {
                    ("client_secret".to_owned(), error.1)
                } else {
                    error
                };
                Ok(with_status(
                    StatusCode::BAD_REQUEST,
                    rotate_page(&ctx, &c, Some(&error)),
                ))
            }
            None => Err(fail(&ctx, status)),
        },
    }
}
