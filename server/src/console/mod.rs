//! The web console: the seeds' screens (the accounts report, the SMTP server settings window,
//! the test e-mail window, and the pages around them), rendered on the server with maud and
//! made live with htmx, served by `mailplane serve` on `--ui-listen`.
//!
//! It is one more client of the API: every page calls the gRPC services in-process with the
//! signed-in user's token ([`api::UserApi`]), so validation, roles and the audit log are the
//! API's own. What a role may not call, the console does not offer, and the API refuses anyway.

pub mod accounts;
pub mod api;
pub mod assets;
pub mod ctx;
pub mod error;
pub mod fields;
pub mod i18n;
pub mod layout;
pub mod list;
pub mod pages;
pub mod serve;
pub mod session;
pub mod signin;

use crate::auth::Authenticator;
use crate::store::Store;
use axum::Router;
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use ctx::Ctx;
pub use error::PageError;

/// What every handler shares.
pub struct Console {
    /// The API, in-process.
    pub api: api::ApiService,
    /// Verifies the tokens people sign in with.
    pub auth: Arc<Authenticator>,
    /// For the audit events of signing in and out.
    pub store: Arc<Store>,
    /// The live sessions.
    pub sessions: session::Sessions,
    /// Whether the console is served over TLS (cookies are `Secure` then).
    pub tls: bool,
    /// Where agents connect, for the enrollment command: the agent listener's address (or,
    /// when it is off, the default one).
    pub agent_listen: SocketAddr,
}

/// The console's shared state.
pub type Shared = Arc<Console>;

/// The default idle timeout of a session.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The console's routes.
pub fn router(console: Shared) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/accounts") }),
        )
        .route("/sign-in", get(signin::form).post(signin::submit))
        .route("/sign-out", post(signin::sign_out))
        .route("/lang/{tag}", get(signin::switch_language))
        .route("/assets/{file}", get(assets::serve))
        .merge(accounts::routes())
        .merge(pages::routes())
        .layer(axum::middleware::from_fn(layout::security_headers))
        .with_state(console)
}
