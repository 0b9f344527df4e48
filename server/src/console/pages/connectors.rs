//! Network connectors: the list, creating one, a connector with its agent replicas, a one-time
//! enrollment token (shown once, on the response to its POST, with the command to run), and
//! revoking an agent after a confirmation step.

use super::{
    csrf_input, fail, field_error, form_alert, form_error, id_of, pager, see_other, short,
    text_field, time, with_status,
};
use crate::console::Ctx;
use crate::console::ctx::PageResult;
use crate::console::i18n::Lang;
use crate::console::layout::{Section, page};
use crate::console::list;
use axum::Form;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use mailplane_proto::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

/// `?page_token=` of the list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// The page.
    #[serde(default)]
    pub page_token: String,
}

/// The create form.
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    /// CSRF.
    #[serde(default)]
    pub csrf: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// An agent's status: the API's name in `data-state`, the words in the user's language.
fn status_cell(lang: Lang, status: i32) -> Markup {
    let raw = pb::AgentStatus::try_from(status).map_or_else(
        |_| status.to_string(),
        |s| short(s.as_str_name(), "AGENT_STATUS_"),
    );
    let key = match raw.as_str() {
        "ONLINE" => Some("conn.st_online"),
        "OFFLINE" => Some("conn.st_offline"),
        "DRAINING" => Some("conn.st_draining"),
        "REVOKED" => Some("conn.st_revoked"),
        _ => None,
    };
    html! { span data-state=(raw) { (key.map_or(raw.as_str(), |k| lang.t(k))) } }
}

fn list_page(
    ctx: &Ctx,
    resp: &pb::ListConnectorsResponse,
    f: &CreateForm,
    error: Option<&(String, String)>,
) -> Markup {
    let lang = ctx.lang;
    let body = html! {
        @if resp.connectors.is_empty() {
            p.muted data-testid="empty" { (lang.t("conn.none")) }
        } @else {
            table #connectors data-testid="connectors" aria-label=(lang.t("conn.title")) {
                (list::head(&[lang.t("conn.display_name"), lang.t("conn.description"), lang.t("conn.agents_online")], None))
                tbody {
                    @for c in &resp.connectors {
                        tr data-testid="connector-row" data-id=(c.id) {
                            td { a href={ "/connectors/" (c.id) } { (c.display_name) } }
                            td { (c.description) }
                            td {
                                (c.agents.iter().filter(|a| a.status == pb::AgentStatus::Online as i32).count())
                                " / " (c.agents.len())
                            }
                        }
                    }
                }
            }
        }
        (pager(lang, "/connectors", "", &resp.next_page_token))
        @if ctx.may("NetworkConnectorService/CreateConnector") {
            h2 { (lang.t("conn.new")) }
            (form_alert(error, &["display_name", "description"]))
            form #connector-form method="post" action="/connectors" {
                (csrf_input(ctx))
                (text_field(lang, "display_name", "conn.display_name", &f.display_name,
                    field_error(error, "display_name"), true))
                (text_field(lang, "description", "conn.description", &f.description,
                    field_error(error, "description"), false))
                div.actions { button type="submit" data-testid="create-connector" { (lang.t("conn.create")) } }
            }
        }
    };
    page(ctx, Section::Connectors, lang.t("conn.title"), body)
}

async fn list_connectors(
    ctx: &Ctx,
    page_token: String,
) -> Result<pb::ListConnectorsResponse, axum::response::Response> {
    ctx.api()
        .connectors()
        .list_connectors(pb::ListConnectorsRequest {
            page_size: 100,
            page_token,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| fail(ctx, s))
}

/// `GET /connectors`.
pub async fn list(ctx: Ctx, Query(q): Query<ListQuery>) -> PageResult {
    let resp = list_connectors(&ctx, q.page_token).await?;
    Ok(list_page(&ctx, &resp, &CreateForm::default(), None).into_response())
}

/// `POST /connectors`.
pub async fn create(ctx: Ctx, Form(f): Form<CreateForm>) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    match ctx
        .api()
        .connectors()
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector {
                display_name: f.display_name.trim().to_owned(),
                description: f.description.trim().to_owned(),
                ..Default::default()
            }),
        })
        .await
    {
        Ok(c) => Ok(see_other(&format!("/connectors/{}", c.into_inner().id))),
        Err(status) => match form_error(&status) {
            Some(error) => {
                let resp = list_connectors(&ctx, String::new()).await?;
                Ok(with_status(
                    StatusCode::BAD_REQUEST,
                    list_page(&ctx, &resp, &f, Some(&error)),
                ))
            }
            None => Err(fail(&ctx, status)),
        },
    }
}

async fn get_connector(ctx: &Ctx, id: &str) -> Result<pb::Connector, axum::response::Response> {
    ctx.api()
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: format!("connectors/{}", id_of(id)),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| fail(ctx, s))
}

fn agents_table(ctx: &Ctx, c: &pb::Connector) -> Markup {
    let lang = ctx.lang;
    let may_revoke = ctx.may("NetworkConnectorService/RevokeAgent");
    html! {
        h2 { (lang.t("conn.agents")) }
        @if c.agents.is_empty() {
            p.muted data-testid="no-agents" { (lang.t("conn.no_agents")) }
        } @else {
            table #agents data-testid="agents" aria-label=(lang.t("conn.agents")) {
                (list::head(
                    &[lang.t("conn.agent"), lang.t("conn.status"), lang.t("conn.hostname"), lang.t("conn.version"), lang.t("conn.connected_since"), lang.t("conn.last_heartbeat"), lang.t("conn.jobs"), lang.t("conn.cert_expiry"), lang.t("conn.connections")],
                    may_revoke.then(|| html! { span.visually-hidden { (lang.t("pages.actions")) } }),
                ))
                tbody {
                    @for a in &c.agents {
                        tr data-testid="agent-row" data-agent=(a.agent_id) {
                            td { code { (a.agent_id) } }
                            td data-testid="agent-status" { (status_cell(lang, a.status)) }
                            td { (a.hostname) }
                            td { (a.version) }
                            td { (time(a.connected_since.as_ref())) }
                            td { (time(a.last_heartbeat_time.as_ref())) }
                            td { (a.jobs_in_flight) }
                            td { (time(a.certificate_expire_time.as_ref())) }
                            td {
                                @for conn in &a.connections {
                                    span.connection {
                                        code { (conn.replica_address) }
                                        @if !conn.replica_serving { " " span.failed { (lang.t("conn.replica_down")) } }
                                        " · " (time(conn.connect_time.as_ref()))
                                    }
                                    br;
                                }
                            }
                            @if may_revoke {
                                td {
                                    @if a.status != pb::AgentStatus::Revoked as i32 {
                                        a data-testid="revoke" href={ "/connectors/" (c.id) "/agents/" (id_of(&a.name)) "/revoke" } {
                                            (lang.t("conn.revoke"))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /connectors/{id}`.
pub async fn show(ctx: Ctx, Path(id): Path<String>) -> PageResult {
    let lang = ctx.lang;
    let c = get_connector(&ctx, &id).await?;
    let body = html! {
        dl.meta {
            dt { (lang.t("conn.name")) } dd { code { (c.name) } }
            dt { (lang.t("conn.description")) } dd { (c.description) }
            dt { (lang.t("conn.created")) } dd { (time(c.create_time.as_ref())) }
        }
        (agents_table(&ctx, &c))
        @if ctx.may("NetworkConnectorService/CreateEnrollmentToken") {
            h2 { (lang.t("conn.enroll_title")) }
            p.muted { (lang.t("conn.enroll_help")) }
            form #enroll-form method="post" action={ "/connectors/" (c.id) "/enrollment-tokens" } {
                (csrf_input(&ctx))
                div.field {
                    label for="field-ttl" { (lang.t("conn.ttl")) }
                    select #field-ttl name="ttl_minutes" {
                        option value="30" selected { (lang.t("conn.ttl_30m")) }
                        option value="240" { (lang.t("conn.ttl_4h")) }
                        option value="1440" { (lang.t("conn.ttl_1d")) }
                        option value="10080" { (lang.t("conn.ttl_7d")) }
                    }
                }
                div.actions { button type="submit" data-testid="create-token" { (lang.t("conn.enroll_button")) } }
            }
        }
        p { a href="/connectors" { (lang.t("conn.back")) } }
    };
    Ok(page(&ctx, Section::Connectors, &c.display_name, body).into_response())
}

/// The enrollment token form.
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    /// CSRF.
    #[serde(default)]
    pub csrf: String,
    /// How long the token stays valid, in minutes.
    #[serde(default)]
    pub ttl_minutes: u32,
}

/// The agents' URL for the command: the agent listener's address when it names one, else the
/// host the browser reached the console at, with the listener's port.
fn agent_server_url(listen: std::net::SocketAddr, headers: &HeaderMap) -> String {
    if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        format!("https://{}:{}", server_host(headers), listen.port())
    } else {
        format!("https://{listen}")
    }
}

/// The host the browser reached the console at.
fn server_host(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("SERVER");
    let host = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(h, _)| h).to_owned() + "]"
    } else {
        host.split(':').next().unwrap_or(host).to_owned()
    };
    if host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
    {
        host
    } else {
        "SERVER".to_owned()
    }
}

/// `POST /connectors/{id}/enrollment-tokens`: the token, once, with the agent's command.
pub async fn enrollment_token(
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<TokenForm>,
) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    let lang = ctx.lang;
    let parent = format!("connectors/{}", id_of(&id));
    let ttl = (f.ttl_minutes > 0).then(|| prost_types::Duration {
        seconds: i64::from(f.ttl_minutes.min(7 * 24 * 60)) * 60,
        nanos: 0,
    });
    let t = ctx
        .api()
        .connectors()
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            parent: parent.clone(),
            ttl,
        })
        .await
        .map_err(|s| fail(&ctx, s))?
        .into_inner();
    let server = agent_server_url(ctx.console.agent_listen, &headers);
    let enroll = format!(
        "mailplane-agent enroll --server {server} --server-ca server-ca.pem --enrollment-token {}",
        t.token
    );
    let run = format!(
        "mailplane-agent run --server {server} --server-ca server-ca.pem --allow 'RELAY:587'"
    );
    let body = html! {
        p.notice role="status" { (lang.t("conn.token_once")) }
        dl.meta {
            dt { (lang.t("conn.token")) }
            dd { code #enrollment-token data-testid="enrollment-token" { (t.token) } }
            dt { (lang.t("conn.expires")) }
            dd { (time(t.expire_time.as_ref())) }
        }
        h2 { (lang.t("conn.step_ca")) }
        p.muted { (lang.t("conn.step_ca_help")) }
        pre.copy #server-ca data-testid="server-ca" { (t.server_ca_pem) }
        h2 { (lang.t("conn.step_enroll")) }
        p.muted { (lang.t("conn.step_enroll_help")) }
        pre.copy #enroll-command data-testid="enroll-command" { (enroll) }
        h2 { (lang.t("conn.step_run")) }
        pre.copy #run-command data-testid="run-command" { (run) }
        p { a href={ "/connectors/" (id_of(&id)) } { (lang.t("conn.back_to_connector")) } }
    };
    Ok(page(&ctx, Section::Connectors, lang.t("conn.token_title"), body).into_response())
}

/// `GET /connectors/{id}/agents/{agent}/revoke`: the confirmation step.
pub async fn revoke_confirm(ctx: Ctx, Path((id, agent)): Path<(String, String)>) -> PageResult {
    let lang = ctx.lang;
    if !ctx.may("NetworkConnectorService/RevokeAgent") {
        return Err(fail(&ctx, tonic::Status::permission_denied("")));
    }
    let c = get_connector(&ctx, &id).await?;
    let name = format!("connectors/{}/agents/{}", c.id, id_of(&agent));
    let Some(a) = c.agents.iter().find(|a| a.name == name) else {
        return Err(fail(&ctx, tonic::Status::not_found(name)));
    };
    let body = html! {
        p role="alert" data-testid="revoke-warning" {
            (lang.tf("conn.revoke_confirm", &[("agent", &a.agent_id), ("host", &a.hostname), ("connector", &c.display_name)]))
        }
        form #revoke-form method="post" action={ "/connectors/" (c.id) "/agents/" (id_of(&agent)) "/revoke" } {
            (csrf_input(&ctx))
            div.actions {
                button.danger type="submit" data-testid="revoke-submit" { (lang.t("conn.revoke")) }
                a.button.secondary href={ "/connectors/" (c.id) } { (lang.t("pages.cancel")) }
            }
        }
    };
    Ok(page(&ctx, Section::Connectors, lang.t("conn.revoke_title"), body).into_response())
}

/// A form with only its CSRF token.
#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    /// CSRF.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /connectors/{id}/agents/{agent}/revoke`.
pub async fn revoke(
    ctx: Ctx,
    Path((id, agent)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    ctx.check_csrf(&f.csrf).map_err(|e| ctx.fail(e))?;
    let name = format!("connectors/{}/agents/{}", id_of(&id), id_of(&agent));
    ctx.api()
        .connectors()
        .revoke_agent(pb::RevokeAgentRequest { name })
        .await
        .map_err(|s| fail(&ctx, s))?;
    Ok(see_other(&format!("/connectors/{}", id_of(&id))))
}
