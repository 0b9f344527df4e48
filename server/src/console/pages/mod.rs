//! The pages around the accounts: credentials, connectors, messages and the queue, and the
//! audit log.

use super::Shared;
use axum::Router;

/// The routes of these pages.
pub fn routes() -> Router<Shared> {
    Router::new()
}
