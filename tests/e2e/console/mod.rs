//! The web console, driven over real HTTP as a browser without script would.

mod accounts;
pub mod http;
mod pages;
mod queue;
mod test_window;

use mailplane_proto::v1 as pb;
use mailplane_tests::TestServer;
use std::future::Future;

/// A new API token of `role`, named `name`.
pub(crate) async fn token(server: &TestServer, name: &str, role: pb::Role) -> String {
    pb::token_service_client::TokenServiceClient::new(server.channel.clone())
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::ApiToken {
                display_name: name.into(),
                role: role.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// The items a list call answered: `listed(client.list_x(request), |r| r.xs)`.
pub(crate) async fn listed<R, T>(
    call: impl Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    items: impl FnOnce(R) -> Vec<T>,
) -> Vec<T> {
    items(call.await.unwrap().into_inner())
}
