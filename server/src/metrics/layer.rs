//! The tower layer that counts every API call by method and gRPC code, and times it until
//! the response headers (the whole call, for unary RPCs; the start, for streams).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http;

use super::{CallLabels, MethodLabels, global};

/// Counts and times the API's calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
}

/// The method label of a request path: an RPC the API has, else `unknown` (labels stay
/// bounded whatever callers send).
fn method(path: &str) -> String {
    if crate::auth::TABLE.iter().any(|(p, _)| *p == path) {
        path.to_owned()
    } else {
        "unknown".to_owned()
    }
}

/// The gRPC code of a response: its `grpc-status` header (errors are trailers-only
/// responses), else `OK` (a success sends its status in the trailers).
fn code<B>(response: &http::Response<B>) -> String {
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    format!("{:?}", tonic::Code::from_i32(status))
}

impl<S, B, R> tower_service::Service<http::Request<B>> for MetricsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = method(request.uri().path());
        let started = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await;
            let m = global();
            let code = match &response {
                Ok(r) => code(r),
                Err(_) => "Unavailable".to_owned(),
            };
            m.api_latency
                .get_or_create(&MethodLabels {
                    method: method.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            m.api_calls
                .get_or_create(&CallLabels { method, code })
                .inc();
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(method("/evil/\u{1}x"), "unknown");
        assert_eq!(
            method("/mailplane.v1.SmtpAccountService/ListAccounts"),
            "/mailplane.v1.SmtpAccountService/ListAccounts"
        );
    }

    #[test]
    fn codes_come_from_the_header_or_are_ok() {
        let ok = http::Response::new(());
        assert_eq!(code(&ok), "Ok");
        let mut err = http::Response::new(());
        err.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
        assert_eq!(code(&err), "InvalidArgument");
    }
}
