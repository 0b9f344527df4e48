//! `AuditService`: reading the audit log. There is no call to change or delete an event.

use super::convert::{self, timestamp};
use super::paging;
use crate::audit::{AuditEvent, AuditFilter};
use crate::domain::audit_chain::{Break, Problem};
use crate::domain::validate;
use crate::error::Result;
use crate::store::Store;
use mailplane_proto::v1 as pb;
use pb::audit_service_server::AuditService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The audit service.
pub struct Audit {
    store: Arc<Store>,
}

impl Audit {
    /// The service.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

fn render(e: &AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id,
        time: Some(timestamp(e.time)),
        actor: e.actor.clone(),
        peer: e.peer.clone(),
        rpc: e.rpc.clone(),
        resource: e.resource.clone(),
        outcome: e.outcome.clone(),
        diff: e.diff.clone(),
    }
}

fn render_break(b: &Break) -> pb::BrokenLink {
    let problem = match b.problem {
        Problem::HashMismatch => pb::broken_link::Problem::HashMismatch,
        Problem::PrevHashMismatch => pb::broken_link::Problem::PrevHashMismatch,
        Problem::Gap => pb::broken_link::Problem::Gap,
    };
    pb::BrokenLink {
        seq: b.seq,
        event_id: b.event_id,
        problem: problem.into(),
        detail: b.detail.clone(),
    }
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn verify_audit_log(
        &self,
        _request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        let report = self.store.verify_audit_chain().await?;
        let v = &report.verifier;
        Ok(Response::new(pb::VerifyAuditLogResponse {
            events_checked: i64::try_from(v.checked).unwrap_or(i64::MAX),
            sealed_through_seq: v.head_seq,
            head_hash: v.head_hash.clone(),
            unsealed_count: report.unsealed,
            first_broken_link: v.broken.as_ref().map(render_break),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = request.into_inner();
        validate::no_crlf("resource", &req.resource)?;
        validate::no_crlf("actor", &req.actor)?;
        let filter = AuditFilter {
            resource: (!req.resource.trim().is_empty()).then(|| req.resource.trim().to_owned()),
            actor: (!req.actor.trim().is_empty()).then(|| req.actor.trim().to_owned()),
            start: req
                .start_time
                .as_ref()
                .map(|t| convert::micros("start_time", t))
                .transpose()?,
            end: req
                .end_time
                .as_ref()
                .map(|t| convert::micros("end_time", t))
                .transpose()?,
        };
        let size = paging::page_size(req.page_size)?;
        let context = filter.fingerprint();
        let before = paging::decode(&req.page_token, &context)?;
        let rows = self
            .store
            .list_audit_events(&filter, before, size + 1)
            .await?;
        let (rows, next_page_token) = paging::finish(rows, size, &context, |e| e.id);
        Ok(Response::new(pb::ListEventsResponse {
            events: rows.iter().map(render).collect(),
            next_page_token,
        }))
    }
}
