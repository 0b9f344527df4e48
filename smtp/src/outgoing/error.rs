//! The errors of building an [`OutgoingMessage`](super::OutgoingMessage), and the size check.

/// Why an [`OutgoingMessage`](super::OutgoingMessage) cannot be built. Each message names
/// the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutgoingError {
    /// `to`, `cc` and `bcc` are all empty.
    #[error("to, cc, bcc: at least one recipient is required")]
    NoRecipient,
    /// More than [`MAX_RECIPIENTS`](super::MAX_RECIPIENTS) addresses in `to`, `cc` and
    /// `bcc` together.
    #[error("to, cc, bcc: at most {max} recipients are allowed, got {got}")]
    TooManyRecipients {
        /// The limit.
        max: usize,
        /// How many were given.
        got: usize,
    },
    /// Neither a text nor an HTML body.
    #[error("text_body, html_body: at least one of them is required")]
    NoBody,
    /// Only an HTML body, but the account sends plain text only.
    #[error("html_body: the account sends plain text only, and there is no text_body")]
    HtmlOnlyOnPlainTextAccount,
    /// An override of an account setting the account forces.
    #[error("{field}: the account forces its settings; overriding {field} is not allowed")]
    OverrideRefused {
        /// `"from"` or `"reply_to"`.
        field: &'static str,
    },
    /// An extra header whose name is not `X-` followed by letters, digits, `-` or `_`.
    #[error(
        "headers: {name:?} is not allowed; only X-* names of ASCII letters, digits, '-' and '_'"
    )]
    HeaderNotAllowed {
        /// The name given.
        name: String,
    },
    /// The same extra header name (compared without case) given twice.
    #[error("headers: {name:?} is given more than once")]
    DuplicateHeader {
        /// The second name given.
        name: String,
    },
    /// CR, LF or NUL in a header value (the subject or an extra header).
    #[error("{field}: a header value must not contain CR, LF or NUL")]
    HeaderValue {
        /// `subject` or `headers[<name>]`.
        field: String,
    },
    /// An address that does not parse.
    #[error("{field}: invalid address {value:?}: {reason}")]
    Address {
        /// `sender`, `from`, `reply_to`, `return_path`, `disposition_notification_to`,
        /// `to`, `cc` or `bcc`.
        field: &'static str,
        /// The text given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An attachment's content type that is not a valid, allowed MIME type.
    #[error("attachments[{index}].content_type: invalid content type {value:?}: {reason}")]
    ContentType {
        /// The attachment's index.
        index: usize,
        /// The text given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An attachment's file name that is empty or has control characters.
    #[error("attachments[{index}].filename: {reason}")]
    Filename {
        /// The attachment's index.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The charset is not a MIME token.
    #[error("charset: invalid charset {0:?}")]
    Charset(String),
    /// The message is larger than the limit (see [`check_message_size`]).
    #[error("message: {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The message's (estimated or actual) size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// lettre refused to build the message (not expected after validation).
    #[error("message: building it failed: {0}")]
    Build(String),
}

impl OutgoingError {
    /// Whether the request is well-formed but the account's settings refuse it
    /// (`FailedPrecondition`): [`HtmlOnlyOnPlainTextAccount`](Self::HtmlOnlyOnPlainTextAccount)
    /// and [`OverrideRefused`](Self::OverrideRefused). Everything else is a bad argument
    /// (`InvalidArgument`), except [`Build`](Self::Build), which is internal, and
    /// [`TooLarge`](Self::TooLarge), which the server maps as it maps its size limits.
    pub fn is_account_setting(&self) -> bool {
        matches!(
            self,
            OutgoingError::HtmlOnlyOnPlainTextAccount | OutgoingError::OverrideRefused { .. }
        )
    }
}

/// Refuses `size` over `limit` (the smaller of the account's limit and the server's
/// maximum, [`DEFAULT_MAX_MESSAGE_SIZE`](super::DEFAULT_MAX_MESSAGE_SIZE) by default). Use
/// it with [`OutgoingMessage::estimated_size`](super::OutgoingMessage::estimated_size)
/// before anything is stored, and with [`BuiltMessage::size`](crate::BuiltMessage::size)
/// once built.
pub fn check_message_size(size: usize, limit: usize) -> Result<(), OutgoingError> {
    if size > limit {
        return Err(OutgoingError::TooLarge { size, limit });
    }
    Ok(())
}
