//! `CredentialService`: the gRPC edge of credentials. Secrets only ever flow in.

use super::convert;
use super::paging;
use crate::auth::Actor;
use crate::domain::{CredentialKind, CredentialSpec, rules};
use crate::error::Error;
use crate::keys::Keys;
use crate::secret::Secret;
use crate::store::Store;
use crate::store::credentials::SecretChange;
use mailplane_proto::v1 as pb;
use pb::credential_service_server::CredentialService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The credential service.
#[derive(Clone)]
pub struct Credentials {
    store: Arc<Store>,
    keys: Arc<Keys>,
}

impl Credentials {
    /// A service backed by `store`, sealing secrets under the primary key of `keys`.
    pub fn new(store: Arc<Store>, keys: Arc<Keys>) -> Self {
        Self { store, keys }
    }
}

/// The write-only fields of a request, taken out of the message so they never sit in
/// anything that might be logged.
struct Given {
    secret: Secret,
    client_secret: Secret,
    refresh_token: Secret,
}

impl Given {
    fn take(msg: &mut pb::Credential) -> Self {
        Self {
            secret: Secret::new(std::mem::take(&mut msg.secret)),
            client_secret: Secret::new(std::mem::take(&mut msg.client_secret)),
            refresh_token: Secret::new(std::mem::take(&mut msg.refresh_token)),
        }
    }

    /// The stored secret and refresh token to set for a credential of `kind`, among the
    /// write-only fields `named` (all three for a create or `*`): the password or token is
    /// `secret`; the kinds that get tokens keep `client_secret` there, and a refresh token
    /// apart. A field that does not apply to the kind must be neither given nor named alone,
    /// and a named field that applies must be given.
    fn for_kind(
        &self,
        kind: CredentialKind,
        named: &[&str],
    ) -> Result<(Option<Secret>, Option<Secret>), Error> {
        let all = named.len() == convert::CREDENTIAL_SECRET_FIELDS.len();
        let advice = if kind.gets_tokens() {
            "give the client secret as client_secret (and a refresh token as refresh_token)"
        } else {
            "give the password or access token as secret"
        };
        let mut secret = None;
        let mut refresh = None;
        for (field, value, applies) in [
            ("secret", &self.secret, !kind.gets_tokens()),
            ("client_secret", &self.client_secret, kind.gets_tokens()),
            (
                "refresh_token",
                &self.refresh_token,
                kind == CredentialKind::OAuth2RefreshToken,
            ),
        ] {
            let wanted = named.contains(&field);
            match (applies, wanted) {
                (true, true) => {
                    convert::check_secret_field(field, value.expose())?;
                    if field == "refresh_token" {
                        refresh = Some(value.clone());
                    } else {
                        secret = Some(value.clone());
                    }
                }
                (false, _) if !value.is_empty() || (wanted && !all) => {
                    return Err(Error::invalid(
                        field,
                        format!("does not apply to kind {}: {advice}", kind.as_str()),
                    ));
                }
                (true, false) if !value.is_empty() => {
                    return Err(Error::invalid(
                        field,
                        format!("is given but not named in update_mask: add {field} to it"),
                    ));
                }
                _ => {}
            }
        }
        Ok((secret, refresh))
    }
}

#[tonic::async_trait]
impl CredentialService for Credentials {
    async fn create_credential(
        &self,
        request: Request<pb::CreateCredentialRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        let ctx = crate::audit::context(&request);
        let mut msg = request
            .into_inner()
            .credential
            .ok_or_else(|| Error::invalid("credential", "is required"))?;
        let given = Given::take(&mut msg);
        let spec = CredentialSpec::try_from(&msg)?;
        let (secret, refresh) = given.for_kind(spec.kind, &convert::CREDENTIAL_SECRET_FIELDS)?;
        let secret = secret.ok_or_else(|| Error::invalid("secret", "is required"))?;
        let primary = self.keys.primary().await?;
        let created = self
            .store
            .create_credential(&ctx, spec, &secret, refresh.as_ref(), &primary)
            .await?;
        tracing::info!(credential = %created.id, "credential created");
        Ok(Response::new((&created).into()))
    }

    async fn get_credential(
        &self,
        request: Request<pb::GetCredentialRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        let id = convert::credential_id("name", &request.into_inner().name)?;
        Ok(Response::new(
            (&self.store.get_credential(id).await?).into(),
        ))
    }

    async fn list_credentials(
        &self,
        request: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        let req = request.into_inner();
        let size = paging::page_size(req.page_size)?;
        let after = paging::decode(&req.page_token, "credentials")?;
        let rows = self.store.list_credentials(after, size + 1).await?;
        let (rows, next_page_token) = paging::finish(rows, size, "credentials", |c| c.id.0);
        Ok(Response::new(pb::ListCredentialsResponse {
            credentials: rows.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_credential(
        &self,
        request: Request<pb::UpdateCredentialRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        let ctx = crate::audit::context(&request);
        let role = request.extensions().get::<Actor>().map(|a| a.role);
        let req = request.into_inner();
        let mut msg = req
            .credential
            .ok_or_else(|| Error::invalid("credential", "is required"))?;
        let given = Given::take(&mut msg);
        let id = convert::credential_id("credential.name", &msg.name)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                "is required: list the fields to change (display_name, username, secret, kind, \
                 allowed_destinations, token_url, client_id, client_secret, refresh_token, \
                 scope, token_source), or \"*\"",
            )
            .into());
        }
        let fields: Vec<String> = if paths.iter().any(|p| p == "*") {
            convert::CREDENTIAL_FIELDS
                .iter()
                .map(|f| (*f).to_owned())
                .collect()
        } else {
            paths
        };
        let named: Vec<&str> = fields
            .iter()
            .map(String::as_str)
            .filter(|f| convert::CREDENTIAL_SECRET_FIELDS.contains(f))
            .collect();
        let expected = convert::expected_version(&id.to_string(), &msg.etag)?;
        // The secrets are checked against the kind the edit leaves, inside the edit.
        let secrets = std::sync::Mutex::new(SecretChange::default());
        let edit = |spec: &mut CredentialSpec| {
            let before = spec.clone();
            for field in &fields {
                convert::apply_credential_field(spec, &msg, field)?;
            }
            spec.check()?;
            let (secret, refresh) = given.for_kind(spec.kind, &named)?;
            let rotate = secret.is_some();
            rules::destinations_change(
                id,
                role,
                rotate,
                &before.allowed_destinations,
                &spec.allowed_destinations,
            )?;
            rules::token_url_change(id, role, rotate, &before.oauth, &spec.oauth)?;
            *secrets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = SecretChange {
                secret,
                refresh_token: refresh,
            };
            Ok(())
        };
        // A new secret is sealed under the primary key.
        let primary = self.keys.primary().await?;
        let updated = self
            .store
            .update_credential(&ctx, id, expected, &edit, &secrets, &primary)
            .await?;
        let rotate = !named.is_empty();
        tracing::info!(credential = %id, rotated = rotate, "credential updated");
        Ok(Response::new((&updated).into()))
    }

    async fn delete_credential(
        &self,
        request: Request<pb::DeleteCredentialRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = crate::audit::context(&request);
        let req = request.into_inner();
        let id = convert::credential_id("name", &req.name)?;
        let expected = convert::expected_version(&id.to_string(), &req.etag)?;
        self.store.delete_credential(&ctx, id, expected).await?;
        tracing::info!(credential = %id, "credential deleted");
        Ok(Response::new(()))
    }
}
