//! The agent's top-level error. Each module has its own error type (`ConfigError`,
//! `StateError`, `ChannelError`, `EnrollError`, `TunnelError`); this one gathers them for
//! [`crate::run`] and [`crate::enroll()`], and only `lib.rs` uses it.
//!
//! The variants are the ones the agent has always had, so that callers that match on
//! them (`AgentError::Rpc { .. }`, `AgentError::State(_)`) keep working: a module error
//! that merely wraps another one (a channel error inside an enrollment error, say) is
//! lifted to the variant for its cause, and its message is unchanged.

use std::path::PathBuf;

use crate::allowlist::AllowlistError;
use crate::channel::ChannelError;
use crate::config::ConfigError;
use crate::enroll::EnrollError;
use crate::state::StateError;
use crate::tunnel::TunnelError;

/// Why the agent cannot enroll or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid (including the server URL).
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

impl From<ChannelError> for AgentError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Config(e) => AgentError::Config(e),
            ChannelError::ServerCa { path, source } => AgentError::ServerCa { path, source },
            ChannelError::Connect { server, reason } => AgentError::Connect { server, reason },
        }
    }
}

impl From<EnrollError> for AgentError {
    fn from(e: EnrollError) -> Self {
        match e {
            EnrollError::Channel(e) => e.into(),
            EnrollError::State(e) => AgentError::State(e),
            EnrollError::NotEnrolled(dir) => AgentError::NotEnrolled(dir),
            EnrollError::NoToken => AgentError::NoToken,
            EnrollError::Rpc {
                call,
                code,
                message,
            } => AgentError::Rpc {
                call,
                code,
                message,
            },
            EnrollError::Timeout(call) => AgentError::Timeout(call),
            EnrollError::Key(e) => AgentError::Key(e),
            EnrollError::Certificate(e) => AgentError::Certificate(e),
        }
    }
}

impl From<TunnelError> for AgentError {
    fn from(e: TunnelError) -> Self {
        match e {
            TunnelError::Channel(e) => e.into(),
            TunnelError::State(e) => AgentError::State(e),
            TunnelError::NotEnrolled(dir) => AgentError::NotEnrolled(dir),
            TunnelError::Rpc {
                call,
                code,
                message,
            } => AgentError::Rpc {
                call,
                code,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_errors_keep_their_message_and_land_on_their_cause() {
        let url = || ConfigError::ServerUrl {
            url: "http://x".into(),
            reason: "no".into(),
        };
        let shown = url().to_string();
        let e = AgentError::from(EnrollError::Channel(ChannelError::Config(url())));
        assert!(matches!(
            e,
            AgentError::Config(ConfigError::ServerUrl { .. })
        ));
        assert_eq!(e.to_string(), shown);

        let rpc = EnrollError::Rpc {
            call: "Enroll",
            code: tonic::Code::Unauthenticated,
            message: "bad token".into(),
        };
        let shown = rpc.to_string();
        let e = AgentError::from(rpc);
        assert!(matches!(
            e,
            AgentError::Rpc {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ));
        assert_eq!(e.to_string(), shown);

        let e = AgentError::from(TunnelError::NotEnrolled(PathBuf::from("/state")));
        assert_eq!(
            e.to_string(),
            TunnelError::NotEnrolled(PathBuf::from("/state")).to_string()
        );
        assert!(e.to_string().contains("mailplane-agent enroll"));
    }
}
