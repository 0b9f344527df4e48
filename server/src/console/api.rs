//! The console calls the API in-process, through the same tower stack as a gRPC client (the
//! metrics and authentication layers, then the routes), with the signed-in user's token: the
//! same validation, the same roles, the same audit trail, and no second service layer.

use mailplane_proto::v1 as pb;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::http;
use tower::util::BoxCloneSyncService;

/// The API's routes behind its layers, as one cloneable service.
pub type ApiService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The API, called as one user from one browser: every request carries the user's token and
/// the browser's address (for the rate limit on failed sign-ins and the audit log).
#[derive(Clone)]
pub struct UserApi {
    inner: ApiService,
    authorization: http::HeaderValue,
    peer: Option<SocketAddr>,
}

impl UserApi {
    /// Calls `inner` as the holder of `token` from `peer`.
    pub fn new(inner: ApiService, token: &str, peer: Option<SocketAddr>) -> Option<Self> {
        let mut authorization =
            http::HeaderValue::from_str(&format!("Bearer {}", token.trim())).ok()?;
        authorization.set_sensitive(true);
        Some(Self {
            inner,
            authorization,
            peer,
        })
    }

    /// The accounts service.
    pub fn accounts(&self) -> pb::smtp_account_service_client::SmtpAccountServiceClient<Self> {
        pb::smtp_account_service_client::SmtpAccountServiceClient::new(self.clone())
    }

    /// The credentials service.
    pub fn credentials(&self) -> pb::credential_service_client::CredentialServiceClient<Self> {
        pb::credential_service_client::CredentialServiceClient::new(self.clone())
    }

    /// The connectors service.
    pub fn connectors(
        &self,
    ) -> pb::network_connector_service_client::NetworkConnectorServiceClient<Self> {
        pb::network_connector_service_client::NetworkConnectorServiceClient::new(self.clone())
    }

    /// The test e-mail service.
    pub fn tests(&self) -> pb::smtp_test_service_client::SmtpTestServiceClient<Self> {
        pb::smtp_test_service_client::SmtpTestServiceClient::new(self.clone())
    }

    /// The outbox.
    pub fn messages(&self) -> pb::message_service_client::MessageServiceClient<Self> {
        pb::message_service_client::MessageServiceClient::new(self.clone())
    }

    /// The audit log.
    pub fn audit(&self) -> pb::audit_service_client::AuditServiceClient<Self> {
        pb::audit_service_client::AuditServiceClient::new(self.clone())
    }
}

impl tower_service::Service<http::Request<Body>> for UserApi {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = <ApiService as tower_service::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, self.authorization.clone());
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: self.peer,
            });
        self.inner.call(request)
    }
}
