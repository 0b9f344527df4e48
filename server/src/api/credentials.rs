//! `CredentialService`: the gRPC edge of credentials. Secrets only ever flow in.

use super::convert;
use super::paging;
use crate::auth::Actor;
use crate::crypto::Cipher;
use crate::domain::{CredentialSpec, rules};
use crate::error::Error;
use crate::secret::Secret;
use crate::store::Store;
use mailplane_proto::v1 as pb;
use pb::credential_service_server::CredentialService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The credential service.
#[derive(Clone)]
pub struct Credentials {
    store: Arc<Store>,
    cipher: Cipher,
}

impl Credentials {
    /// A service backed by `store`, sealing secrets with `cipher`.
    pub fn new(store: Arc<Store>, cipher: Cipher) -> Self {
        Self { store, cipher }
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
        let secret = Secret::new(std::mem::take(&mut msg.secret));
        convert::check_secret(secret.expose())?;
        let spec = CredentialSpec::try_from(&msg)?;
        let created = self
            .store
            .create_credential(&ctx, spec, &secret, &self.cipher)
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
        let secret = Secret::new(std::mem::take(&mut msg.secret));
        let id = convert::credential_id("credential.name", &msg.name)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                "is required: list the fields to change (display_name, username, secret, kind, \
                 allowed_destinations), or \"*\"",
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
        let rotate = fields.iter().any(|f| f == "secret");
        if rotate {
            convert::check_secret(secret.expose())?;
        }
        let expected = convert::expected_version(&id.to_string(), &msg.etag)?;
        let edit = |spec: &mut CredentialSpec| {
            let before = spec.allowed_destinations.clone();
            for field in &fields {
                convert::apply_credential_field(spec, &msg, field)?;
            }
            rules::destinations_change(id, role, rotate, &before, &spec.allowed_destinations)
        };
        let updated = self
            .store
            .update_credential(
                &ctx,
                id,
                expected,
                &edit,
                rotate.then_some(&secret),
                &self.cipher,
            )
            .await?;
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
