//! The tower layer that authenticates every API call and enforces [`super::TABLE`].

use super::Authenticator;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::http;

/// Wraps the API's routes so that every call is checked before any handler runs.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer checking calls with `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready clone serves this call; a fresh clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let authorization = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let peer = request
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
                .map(|a| a.ip());
            let peer_text = peer.map(|p| p.to_string()).unwrap_or_default();
            match auth.check(&path, authorization.as_deref(), peer).await {
                Ok(actor) => {
                    let context = crate::audit::AuditContext {
                        actor: actor.as_ref().map_or_else(
                            || "anonymous".to_owned(),
                            |a| format!("tokens/{} ({})", a.token_id, a.name),
                        ),
                        peer: peer_text,
                        rpc: path,
                    };
                    if let Some(actor) = actor {
                        request.extensions_mut().insert(actor);
                    }
                    // Handlers pass this context to the store changes they make
                    // (`crate::audit::context`), which record it.
                    request.extensions_mut().insert(context);
                    inner.call(request).await
                }
                Err(status) => {
                    tracing::info!(%path, peer = ?peer, code = ?status.code(), "call refused");
                    // Refusals by role were recorded with their actor already.
                    if status.code() == tonic::Code::Unauthenticated {
                        auth.record_denied(&path, &peer_text, &status, None).await;
                    }
                    Ok(status.into_http())
                }
            }
        })
    }
}
