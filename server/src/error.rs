//! Domain errors, and their one mapping to gRPC status codes.
//!
//! Every error a person can act on carries a message that names the field or the resource.
//! Anything else (a database fault, a broken invariant) is logged in full and answered with a
//! generic `INTERNAL` that leaks no detail.

use tonic::Status;

/// The result type of the domain and store layers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in the domain's terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is malformed; `field` names it.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The request field, as named in the API.
        field: String,
        /// What is wrong with it and what would be right.
        message: String,
    },
    /// The request is well-formed but the system's state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A named resource does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A resource with the same unique key already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller's credentials (e.g. an enrollment token or a certificate) are not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// The server's policy forbids it (e.g. a denied SMTP destination).
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit is reached; trying again later may succeed.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A concurrent change won: the caller's etag is stale.
    #[error("{0}")]
    Aborted(String),
    /// The database failed; the detail is logged, never returned.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A secret could not be encrypted or decrypted.
    #[error("encryption error: {0}")]
    Crypto(String),
    /// Something that should not fail did; the detail is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An `InvalidArgument` for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<mailplane_smtp::OutgoingError> for Error {
    /// A message that cannot be built: its account's settings refuse it (`FailedPrecondition`),
    /// a field is wrong (`InvalidArgument`, the error's text starts with the field), or the
    /// builder failed (internal).
    fn from(e: mailplane_smtp::OutgoingError) -> Self {
        match e {
            mailplane_smtp::OutgoingError::Build(_) => Self::Internal(e.to_string()),
            e if e.is_account_setting() => Self::FailedPrecondition(e.to_string()),
            e => {
                let text = e.to_string();
                match text.split_once(": ") {
                    Some((field, message)) => Self::invalid(field, message),
                    None => Self::invalid("message", text),
                }
            }
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { .. } => Status::invalid_argument(err.to_string()),
            Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
            Error::NotFound(_) => Status::not_found(err.to_string()),
            Error::AlreadyExists(msg) => Status::already_exists(msg),
            Error::Aborted(msg) => Status::aborted(msg),
            Error::PermissionDenied(msg) => Status::permission_denied(msg),
            Error::Unauthenticated(msg) => Status::unauthenticated(msg),
            Error::ResourceExhausted(msg) => Status::resource_exhausted(msg),
            Error::Database(ref e) => {
                tracing::error!(error = %e, "database error");
                Status::internal("internal error; the server log has the details")
            }
            Error::Crypto(ref e) => {
                tracing::error!(error = %e, "encryption error");
                Status::internal("internal error; the server log has the details")
            }
            Error::Internal(ref e) => {
                tracing::error!(error = %e, "internal error");
                Status::internal("internal error; the server log has the details")
            }
        }
    }
}
