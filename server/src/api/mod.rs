//! The gRPC edge: the services of `mailplane.v1`, plus health and reflection.

pub mod accounts;
pub mod audit;
pub mod connectors;
pub mod convert;
pub mod credentials;
pub mod messages;
pub mod paging;
pub mod presets;
pub mod replicas;
pub mod smtp_tests;
pub mod tokens;

use crate::auth::Actor;
use crate::domain::Role;

/// The caller's role, as the auth layer found it (`None` for a call that did not pass it).
pub(crate) fn caller_role<T>(request: &tonic::Request<T>) -> Option<Role> {
    request.extensions().get::<Actor>().map(|a| a.role)
}
