//! `SmtpAccountService`: the gRPC edge of SMTP accounts.

use super::caller_role;
use super::convert::{self, Mode};
use super::paging;
use crate::domain::{AccountFilter, AccountSpec, rules};
use crate::error::Error;
use crate::render;
use crate::store::Store;
use futures::Stream;
use mailplane_proto::v1 as pb;
use pb::smtp_account_service_server::SmtpAccountService;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Accounts fetched per batch while exporting.
const EXPORT_BATCH: u32 = 500;

/// The account service.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<Store>,
}

impl Accounts {
    /// A service backed by `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

/// The stream of an export.
type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportAccountsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SmtpAccountService for Accounts {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::SmtpAccount>, Status> {
        let ctx = crate::audit::context(&request);
        let role = caller_role(&request);
        let msg = request
            .into_inner()
            .account
            .ok_or_else(|| Error::invalid("account", "is required"))?;
        let spec = AccountSpec::try_from(msg)?;
        rules::plaintext_auth_change(role, false, spec.allow_plaintext_auth)?;
        let account = self.store.create_account(&ctx, spec).await?;
        tracing::info!(account = %account.id, name = %account.spec.account_name, "account created");
        Ok(Response::new((&account).into()))
    }

    async fn list_presets(
        &self,
        _request: Request<pb::ListPresetsRequest>,
    ) -> Result<Response<pb::ListPresetsResponse>, Status> {
        Ok(Response::new(super::presets::list()))
    }

    async fn resolve_preset(
        &self,
        request: Request<pb::ResolvePresetRequest>,
    ) -> Result<Response<pb::Preset>, Status> {
        Ok(Response::new(super::presets::resolve(request.get_ref())?))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::SmtpAccount>, Status> {
        let id = convert::account_id("name", &request.into_inner().name)?;
        let account = self.store.get_account(id).await?;
        Ok(Response::new((&account).into()))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let req = request.into_inner();
        let size = paging::page_size(req.page_size)?;
        let filter = AccountFilter::try_from(req.filter)?;
        let context = filter.fingerprint();
        let after = paging::decode(&req.page_token, &context)?;
        let rows = self.store.list_accounts(&filter, after, size + 1).await?;
        let (rows, next_page_token) = paging::finish(rows, size, &context, |a| a.id.0);
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: rows.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::SmtpAccount>, Status> {
        let ctx = crate::audit::context(&request);
        let role = caller_role(&request);
        let req = request.into_inner();
        let msg = req
            .account
            .ok_or_else(|| Error::invalid("account", "is required"))?;
        let id = convert::account_id("account.name", &msg.name)?;
        let fields = convert::mask_fields(req.update_mask.as_ref())?;
        let expected = convert::expected_version(&id.to_string(), &msg.etag)?;
        let edit = |spec: &mut AccountSpec| {
            let before = spec.allow_plaintext_auth;
            for field in &fields {
                convert::apply_field(spec, &msg, field, Mode::Update)?;
            }
            rules::plaintext_auth_change(role, before, spec.allow_plaintext_auth)
        };
        let account = self.store.update_account(&ctx, id, expected, &edit).await?;
        tracing::info!(account = %id, fields = ?fields, "account updated");
        Ok(Response::new((&account).into()))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = crate::audit::context(&request);
        let req = request.into_inner();
        let id = convert::account_id("name", &req.name)?;
        let expected = convert::expected_version(&id.to_string(), &req.etag)?;
        self.store.delete_account(&ctx, id, expected).await?;
        tracing::info!(account = %id, "account deleted");
        Ok(Response::new(()))
    }

    async fn set_default_account(
        &self,
        request: Request<pb::SetDefaultAccountRequest>,
    ) -> Result<Response<pb::SmtpAccount>, Status> {
        let ctx = crate::audit::context(&request);
        let id = convert::account_id("name", &request.into_inner().name)?;
        let account = self.store.set_default_account(&ctx, id).await?;
        tracing::info!(account = %id, "default account set");
        Ok(Response::new((&account).into()))
    }

    type ExportAccountsStream = ExportStream;

    async fn export_accounts(
        &self,
        request: Request<pb::ExportAccountsRequest>,
    ) -> Result<Response<Self::ExportAccountsStream>, Status> {
        let req = request.into_inner();
        let filter = AccountFilter::try_from(req.filter)?;
        let format = pb::ExportFormat::try_from(req.format)
            .map_err(|_| Error::invalid("format", format!("unknown value {}", req.format)))?;
        let store = Arc::clone(&self.store);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut after = 0;
            let mut first = true;
            loop {
                let batch = match store.list_accounts(&filter, after, EXPORT_BATCH).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let rows: Vec<pb::SmtpAccount> = batch.iter().map(Into::into).collect();
                let data = match encode_batch(&rows, format, first) {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::error!(error = %e, "export encoding failed");
                        let _ = tx
                            .send(Err(Status::internal("export encoding failed")))
                            .await;
                        return;
                    }
                };
                first = false;
                if !data.is_empty()
                    && tx
                        .send(Ok(pb::ExportAccountsResponse { data }))
                        .await
                        .is_err()
                {
                    return; // the client went away
                }
                match batch.last() {
                    Some(last) if batch.len() == EXPORT_BATCH as usize => after = last.id.0,
                    _ => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Encodes one batch of an export; the CSV header goes with the first batch, even if empty.
fn encode_batch(
    rows: &[pb::SmtpAccount],
    format: pb::ExportFormat,
    first: bool,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let mut out = Vec::new();
    match format {
        pb::ExportFormat::Unspecified | pb::ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            if first {
                w.write_record(render::ACCOUNT_CSV_HEADER)?;
            }
            for row in rows {
                w.write_record(render::account_csv_row(row))?;
            }
            w.flush()?;
        }
        pb::ExportFormat::JsonLines => {
            for row in rows {
                serde_json::to_writer(&mut out, &render::account_json(row))?;
                out.push(b'\n');
            }
        }
    }
    Ok(out)
}
