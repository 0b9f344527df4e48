//! The accounts area: the accounts report, the SMTP server settings window, and the test
//! e-mail window.

use super::Shared;
use axum::Router;
use axum::routing::get;

/// The routes of the accounts area.
pub fn routes() -> Router<Shared> {
    Router::new().route("/accounts", get(super::layout::placeholder))
}
