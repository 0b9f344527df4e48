//! Building the message that a session sends, with lettre's builder.
//!
//! Headers: `From` (the sender), `To` (the recipients), `Reply-To` when set,
//! `Disposition-Notification-To` when a confirmation address is set, `Subject` (RFC 2047
//! encoded by lettre when not ASCII), `Date`, `Message-ID` (`<random@helo-name>`) and
//! `MIME-Version`. Body: `text/plain` when `plain_text_only`, otherwise
//! `multipart/alternative` with a `text/plain` part and a simple `text/html` part; both
//! carry the `charset` parameter (default `UTF-8`). The footer, when set, is appended to
//! the body after a blank line. Bodies go out `7bit` when ASCII with short lines,
//! otherwise `quoted-printable`, so the message never needs 8BITMIME.
//!
//! lettre writes the charset in lower case (`charset=utf-8`). The charset is a label only: the text is sent as UTF-8 bytes (encoded), so labels
//! other than `UTF-8` are for testing how a relay treats them.

use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};

use crate::wire::normalize_crlf;

/// What to send. Addresses are `user@example.org` or `Name <user@example.org>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageSpec {
    /// The `From` header, and the envelope sender unless `return_path` is set.
    pub sender: String,
    /// Envelope recipients, also listed in the `To` header.
    pub recipients: Vec<String>,
    /// The `Reply-To` header.
    pub reply_to: Option<String>,
    /// The envelope sender (`MAIL FROM`), which becomes `Return-Path` on delivery.
    pub return_path: Option<String>,
    /// Request a read confirmation to this address (`Disposition-Notification-To`).
    pub disposition_notification_to: Option<String>,
    /// The subject (any Unicode; encoded per RFC 2047 when not ASCII).
    pub subject: String,
    /// The plain-text body. Any line endings; they are normalised to CRLF.
    pub body: String,
    /// Appended to the body after a blank line.
    pub footer: Option<String>,
    /// The charset parameter of the `Content-Type`; `None` means `UTF-8`.
    pub charset: Option<String>,
    /// Send only `text/plain` instead of `multipart/alternative`.
    pub plain_text_only: bool,
}

/// A message ready for the envelope and `DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltMessage {
    /// The envelope sender (bare address).
    pub envelope_from: String,
    /// The envelope recipients (bare addresses).
    pub envelope_to: Vec<String>,
    /// The `Message-ID` header value, with angle brackets.
    pub message_id: String,
    /// The formatted message with CRLF line endings, not yet dot-stuffed.
    pub bytes: Vec<u8>,
}

impl BuiltMessage {
    /// The size of the message in bytes as it is handed to `DATA` (before dot-stuffing):
    /// the number to compare with an account's or the server's size limit.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// Errors building a message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// An address does not parse.
    #[error("invalid {field} address {value:?}: {reason}")]
    Address {
        /// Which field.
        field: &'static str,
        /// The text given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// There is no recipient.
    #[error("at least one recipient is required")]
    NoRecipient,
    /// The charset is not a MIME token.
    #[error("invalid charset {0:?}")]
    Charset(String),
    /// lettre refused to build the message.
    #[error("building the message: {0}")]
    Build(String),
}

fn mailbox(field: &'static str, value: &str) -> Result<Mailbox, MessageError> {
    value
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| MessageError::Address {
            field,
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

/// Whether `charset` is a safe MIME token.
pub(crate) fn valid_charset(charset: &str) -> bool {
    !charset.is_empty()
        && charset.len() <= 40
        && charset
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+'))
}

/// Encodes text as 7bit when possible, else quoted-printable.
pub(crate) fn encode_body(text: String) -> Body {
    match Body::new_with_encoding(text, ContentTransferEncoding::SevenBit) {
        Ok(body) => body,
        Err(bytes) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match Body::new_with_encoding(text, ContentTransferEncoding::QuotedPrintable) {
                Ok(body) => body,
                Err(bytes) => Body::new(bytes),
            }
        }
    }
}

/// Escapes text for HTML and turns line breaks into `<br>`.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>\n"),
            _ => out.push(c),
        }
    }
    out
}

/// A random Message-ID under `domain`.
pub(crate) fn new_message_id(domain: &str) -> String {
    let domain = domain.trim_start_matches('[').trim_end_matches(']');
    format!("<{:032x}.mailplane@{domain}>", rand::random::<u128>())
}

/// Builds the message for `spec`; `helo_name` is the domain of the `Message-ID`.
pub fn build_message(spec: &MessageSpec, helo_name: &str) -> Result<BuiltMessage, MessageError> {
    let from = mailbox("sender", &spec.sender)?;
    if spec.recipients.is_empty() {
        return Err(MessageError::NoRecipient);
    }
    let to = spec
        .recipients
        .iter()
        .map(|r| mailbox("recipient", r))
        .collect::<Result<Vec<_>, _>>()?;
    let envelope_from = match &spec.return_path {
        Some(rp) => mailbox("return path", rp)?.email.to_string(),
        None => from.email.to_string(),
    };
    let charset = spec.charset.clone().unwrap_or_else(|| "UTF-8".to_owned());
    if !valid_charset(&charset) {
        return Err(MessageError::Charset(charset));
    }
    let message_id = new_message_id(helo_name);

    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(spec.subject.replace(['\r', '\n'], " "))
        .message_id(Some(message_id.clone()))
        .user_agent(format!("mailplane/{}", env!("CARGO_PKG_VERSION")));
    for mb in &to {
        builder = builder.to(mb.clone());
    }
    if let Some(reply_to) = &spec.reply_to {
        builder = builder.reply_to(mailbox("reply-to", reply_to)?);
    }
    if let Some(dnt) = &spec.disposition_notification_to {
        let mb = mailbox("disposition-notification-to", dnt)?;
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Disposition-Notification-To"),
            mb.to_string(),
        ));
    }

    let mut text = String::from_utf8_lossy(&normalize_crlf(spec.body.as_bytes())).into_owned();
    if let Some(footer) = spec.footer.as_deref().filter(|f| !f.is_empty()) {
        if !text.is_empty() && !text.ends_with("\r\n") {
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.push_str(&String::from_utf8_lossy(&normalize_crlf(footer.as_bytes())));
    }
    if !text.ends_with("\r\n") {
        text.push_str("\r\n");
    }
    let content_type = |sub: &str| {
        ContentType::parse(&format!("text/{sub}; charset={charset}"))
            .map_err(|e| MessageError::Build(e.to_string()))
    };
    let plain_ct = content_type("plain")?;
    let message = if spec.plain_text_only {
        builder.header(plain_ct).body(encode_body(text))
    } else {
        let html_text = text.replace("\r\n", "\n");
        let html = format!(
            "<!DOCTYPE html>\r\n<html><head><meta charset=\"{charset}\"></head><body>\r\n<p>{}</p>\r\n</body></html>\r\n",
            html_escape(html_text.trim_end()).replace('\n', "\r\n")
        );
        let alternative = MultiPart::alternative()
            .singlepart(SinglePart::builder().header(plain_ct).body(encode_body(text)))
            .singlepart(SinglePart::builder().header(content_type("html")?).body(encode_body(html)));
        builder.multipart(alternative)
    }
    .map_err(|e| MessageError::Build(e.to_string()))?;

    Ok(BuiltMessage {
        envelope_from,
        envelope_to: to.iter().map(|m| m.email.to_string()).collect(),
        message_id,
        bytes: normalize_crlf(&message.formatted()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MessageSpec {
        MessageSpec {
            sender: "Alice <alice@example.org>".into(),
            recipients: vec!["bob@example.net".into()],
            subject: "Hello".into(),
            body: "line one\nline two\r.\n".into(),
            ..MessageSpec::default()
        }
    }

    fn text(m: &BuiltMessage) -> String {
        String::from_utf8(m.bytes.clone()).unwrap()
    }

    #[test]
    fn plain_message_headers() {
        let mut s = spec();
        s.plain_text_only = true;
        s.reply_to = Some("replies@example.org".into());
        s.return_path = Some("bounces@example.org".into());
        s.disposition_notification_to = Some("alice@example.org".into());
        s.footer = Some("-- \nsent by mailplane".into());
        s.charset = Some("ISO-8859-1".into());
        let m = build_message(&s, "client.example.org").unwrap();
        let t = text(&m);
        assert_eq!(m.envelope_from, "bounces@example.org");
        assert_eq!(m.envelope_to, ["bob@example.net"]);
        assert!(t.contains("From: Alice <alice@example.org>\r\n"), "{t}");
        assert!(t.contains("To: bob@example.net\r\n"), "{t}");
        assert!(t.contains("Reply-To: replies@example.org\r\n"), "{t}");
        assert!(
            t.contains("Disposition-Notification-To: alice@example.org\r\n"),
            "{t}"
        );
        assert!(t.contains("Subject: Hello\r\n"), "{t}");
        assert!(t.contains("Date: "), "{t}");
        assert!(
            t.contains(&format!("Message-ID: {}\r\n", m.message_id)),
            "{t}"
        );
        assert!(m.message_id.ends_with("@client.example.org>"));
        assert!(
            t.to_ascii_lowercase()
                .contains("content-type: text/plain; charset=iso-8859-1\r\n"),
            "{t}"
        );
        assert!(
            t.ends_with("line one\r\nline two\r\n.\r\n\r\n-- \r\nsent by mailplane\r\n"),
            "{t:?}"
        );
        assert!(!t.contains("multipart"));
    }

    #[test]
    fn multipart_and_only_crlf() {
        let m = build_message(&spec(), "localhost").unwrap();
        let t = text(&m);
        assert!(t.contains("Content-Type: multipart/alternative;"), "{t}");
        let lower = t.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: text/plain; charset=utf-8"),
            "{t}"
        );
        assert!(
            lower.contains("content-type: text/html; charset=utf-8"),
            "{t}"
        );
        assert_eq!(m.envelope_from, "alice@example.org");
        for (i, b) in m.bytes.iter().enumerate() {
            if *b == b'\n' {
                assert_eq!(m.bytes[i - 1], b'\r', "bare LF at {i}");
            }
            if *b == b'\r' {
                assert_eq!(m.bytes[i + 1], b'\n', "bare CR at {i}");
            }
        }
    }

    #[test]
    fn non_ascii_subject_is_encoded() {
        let mut s = spec();
        s.subject = "Grüße aus Köln".into();
        s.body = "Grüße\n".into();
        let t = text(&build_message(&s, "localhost").unwrap());
        assert!(
            t.contains("Subject: =?utf-8?b?") || t.contains("Subject: =?UTF-8?"),
            "{t}"
        );
        assert!(t.is_ascii());
        assert!(
            t.contains("Content-Transfer-Encoding: quoted-printable"),
            "{t}"
        );
    }

    #[test]
    fn header_injection_is_refused_or_neutralised() {
        let mut s = spec();
        s.subject = "hi\r\nBcc: evil@example.com".into();
        let t = text(&build_message(&s, "localhost").unwrap());
        assert!(!t.contains("\r\nBcc:"), "{t}");
        let mut s = spec();
        s.sender = "a@example.org\r\nBcc: evil@example.com".into();
        assert!(build_message(&s, "localhost").is_err());
        let mut s = spec();
        s.charset = Some("utf-8\r\nX: y".into());
        assert!(matches!(
            build_message(&s, "localhost"),
            Err(MessageError::Charset(_))
        ));
        let mut s = spec();
        s.recipients.clear();
        assert!(matches!(
            build_message(&s, "localhost"),
            Err(MessageError::NoRecipient)
        ));
    }
}
