//! `TokenService`: API tokens. A token's secret appears once, in CreateToken's response.

use super::convert::{self, timestamp};
use super::paging;
use crate::auth::{self, Authenticator};
use crate::domain::{Role, TokenRecord, validate};
use crate::error::{Error, Result};
use crate::store::Store;
use mailplane_proto::v1 as pb;
use pb::token_service_server::TokenService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The token service.
pub struct Tokens {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
}

impl Tokens {
    /// The service.
    pub fn new(store: Arc<Store>, auth: Arc<Authenticator>) -> Self {
        Self { store, auth }
    }
}

fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Admin => pb::Role::Admin,
        Role::Operator => pb::Role::Operator,
        Role::Viewer => pb::Role::Viewer,
        Role::Sender => pb::Role::Sender,
    }
}

fn render(t: &TokenRecord) -> pb::ApiToken {
    pb::ApiToken {
        name: format!("tokens/{}", t.id),
        id: t.id,
        display_name: t.display_name.clone(),
        role: role_to_pb(t.role).into(),
        expire_time: t.expire_time.map(timestamp),
        revoked: t.revoked,
        token: String::new(),
        create_time: Some(timestamp(t.create_time)),
        last_use_time: t.last_use_time.map(timestamp),
    }
}

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::ApiToken>, Status> {
        let ctx = crate::audit::context(&request);
        let msg = request
            .into_inner()
            .token
            .ok_or_else(|| Error::invalid("token", "is required"))?;
        let name = validate::line("token.display_name", &msg.display_name, 100)?;
        let role = match pb::Role::try_from(msg.role) {
            Ok(pb::Role::Admin) => Role::Admin,
            Ok(pb::Role::Operator) => Role::Operator,
            Ok(pb::Role::Viewer) => Role::Viewer,
            Ok(pb::Role::Sender) => Role::Sender,
            Ok(pb::Role::Unspecified) | Err(_) => {
                return Err(Error::invalid(
                    "token.role",
                    "must be ADMIN, OPERATOR, VIEWER or SENDER",
                )
                .into());
            }
        };
        let expire_time = msg
            .expire_time
            .as_ref()
            .map(|t| convert::micros("token.expire_time", t))
            .transpose()?;
        if expire_time.is_some_and(|t| t <= crate::domain::now_micros()) {
            return Err(Error::invalid("token.expire_time", "is in the past").into());
        }
        let new = self.auth.new_secret();
        let record = self
            .store
            .create_token(&ctx, &name, role, &new.hash, expire_time)
            .await?;
        tracing::info!(token = %format!("tokens/{}", record.id), role = role.as_str(), "API token created");
        let mut shown = render(&record);
        shown.token = auth::bearer(record.id, &new.secret);
        Ok(Response::new(shown))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let req = request.into_inner();
        let size = paging::page_size(req.page_size)?;
        let after = paging::decode(&req.page_token, "tokens")?;
        let rows = self.store.list_tokens(after, size + 1).await?;
        let (rows, next_page_token) = paging::finish(rows, size, "tokens", |t| t.id);
        Ok(Response::new(pb::ListTokensResponse {
            tokens: rows.iter().map(render).collect(),
            next_page_token,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::ApiToken>, Status> {
        let ctx = crate::audit::context(&request);
        let id = convert::parse_name("name", "tokens", &request.into_inner().name)?;
        let record = self.store.revoke_token(&ctx, id).await?;
        self.auth.forget(id);
        tracing::info!(token = %format!("tokens/{id}"), "API token revoked");
        Ok(Response::new(render(&record)))
    }
}
