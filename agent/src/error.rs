//! The agent's errors.

use std::path::PathBuf;

use crate::allowlist::AllowlistError;
use crate::config::ConfigError;
use crate::state::StateError;

/// Why the agent cannot enroll or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `allowed_destinations` is empty or invalid.
    #[error(transparent)]
    Allowlist(#[from] AllowlistError),
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// There is no enrollment and no token to make one.
    #[error(
        "this agent is not enrolled ({0} holds no key): run `mailplane-agent enroll` first, \
         or configure an enrollment token"
    )]
    NotEnrolled(PathBuf),
    /// `enroll` without a token.
    #[error("no enrollment token: pass --enrollment-token or set MAILPLANE_AGENT_ENROLLMENT_TOKEN")]
    NoToken,
    /// The server CA file cannot be read.
    #[error("cannot read the server CA {path}: {source}")]
    ServerCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server URL is unusable.
    #[error("invalid server URL {url:?}: {reason}")]
    ServerUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Connecting to the server failed.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server URL.
        server: String,
        /// Why, with the error's causes.
        reason: String,
    },
    /// A call to the server failed.
    #[error("{call} failed: {code:?}: {message}")]
    Rpc {
        /// The call.
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A call to the server did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// Making the key or the CSR failed.
    #[error("cannot make a key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    /// A certificate cannot be read.
    #[error("invalid certificate: {0}")]
    Certificate(String),
}

impl AgentError {
    pub(crate) fn rpc(call: &'static str, status: &tonic::Status) -> Self {
        AgentError::Rpc {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// An error and its causes, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
