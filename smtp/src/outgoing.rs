//! Building a message a caller composed (`MessageService.SendMessage`) under the rules of
//! the account that sends it.
//!
//! The account decides the `From` header and the envelope: [`OutgoingMessage::sender`]
//! is the `From` unless the caller overrides it, the envelope sender (`MAIL FROM`, which
//! becomes `Return-Path` on delivery) is [`OutgoingMessage::return_path`] or else the
//! `From` address, and `Reply-To`, `Disposition-Notification-To`, the footer, the
//! charset and plain-text-only come from the account. With
//! [`OutgoingMessage::force_settings`] the caller's `from` and `reply_to` overrides are
//! refused.
//!
//! Structure: the text part alone, the HTML part alone, or `multipart/alternative` with
//! both; with attachments, all of that inside `multipart/mixed`, followed by one base64
//! part per attachment with `Content-Disposition: attachment; filename=…` (RFC 2231 for
//! names that are not ASCII). `To` and `Cc` are headers, `Bcc` never is: its addresses are
//! only in the envelope. Every message has `Date`, `Message-ID`
//! (`<random.mailplane@domain-of-From>`) and `MIME-Version`; the bytes use CRLF only and
//! are not dot-stuffed (the wire layer does that).
//!
//! Errors are a closed [`OutgoingError`] whose messages name the field and the rule.

use std::collections::HashSet;

use lettre::Address;
use lettre::address::Envelope as LettreEnvelope;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as MimeAttachment, Body, Mailbox, MultiPart, SinglePart};

use crate::message::{BuiltMessage, encode_body, html_escape, new_message_id, valid_charset};
use crate::wire::normalize_crlf;

mod error;
#[cfg(test)]
mod tests;

pub use error::{OutgoingError, check_message_size};

/// The most recipients (`to`, `cc` and `bcc` together, as given) one message may have.
pub const MAX_RECIPIENTS: usize = 100;

/// The server's default maximum message size: 25 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 25 * 1024 * 1024;

/// The content type of an attachment given without one.
pub const DEFAULT_ATTACHMENT_TYPE: &str = "application/octet-stream";

/// One attached file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    /// The file name offered to the reader; not empty, no control characters.
    pub filename: String,
    /// The MIME type, e.g. `application/pdf`; empty means [`DEFAULT_ATTACHMENT_TYPE`].
    /// `multipart/*` is refused.
    pub content_type: String,
    /// The content, any bytes; sent base64-encoded.
    pub content: Vec<u8>,
}

/// A message to send from an account. Addresses are `user@example.org` or
/// `Name <user@example.org>`. An empty string counts as absent for the bodies and the
/// footer; an override that is `Some` is an override (the caller maps empty to `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// The account's `From`.
    pub sender: String,
    /// The caller's `From`, used instead of `sender` unless `force_settings`.
    pub from_override: Option<String>,
    /// The account's `Reply-To`.
    pub reply_to: Option<String>,
    /// The caller's `Reply-To`, used instead of `reply_to` unless `force_settings`.
    pub reply_to_override: Option<String>,
    /// The envelope sender (`MAIL FROM`, `Return-Path` on delivery); never a header here.
    /// `None` means the `From` address.
    pub return_path: Option<String>,
    /// `Disposition-Notification-To`: set it when the account asks for read confirmations.
    pub disposition_notification_to: Option<String>,
    /// `To` recipients (header and envelope).
    pub to: Vec<String>,
    /// `Cc` recipients (header and envelope).
    pub cc: Vec<String>,
    /// `Bcc` recipients (envelope only, never a header).
    pub bcc: Vec<String>,
    /// The subject (any Unicode; RFC 2047 encoded when not ASCII); no CR or LF.
    pub subject: String,
    /// The plain-text body; any line endings.
    pub text_body: Option<String>,
    /// The HTML body; any line endings.
    pub html_body: Option<String>,
    /// The account's footer: after a blank line in the text body, and as an escaped
    /// `<p>` before `</body>` (or at the end) in the HTML body.
    pub footer: Option<String>,
    /// The charset label of the text parts; `None` means `UTF-8`. The text is sent as
    /// UTF-8 whatever the label (as [`build_message`](crate::build_message) does).
    pub charset: Option<String>,
    /// Send only the text part; a message with only an HTML body is refused.
    pub plain_text_only: bool,
    /// Refuse the caller's `from_override` and `reply_to_override`.
    pub force_settings: bool,
    /// Attached files, in order.
    pub attachments: Vec<Attachment>,
    /// Extra headers, `X-*` names only, values without CR or LF.
    pub extra_headers: Vec<(String, String)>,
}

fn has_line_break(value: &str) -> bool {
    value.contains(['\r', '\n', '\0'])
}

fn mailbox(field: &'static str, value: &str) -> Result<Mailbox, OutgoingError> {
    let err = |reason: String| OutgoingError::Address {
        field,
        value: value.to_owned(),
        reason,
    };
    if has_line_break(value) {
        return Err(err("contains CR, LF or NUL".to_owned()));
    }
    value
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| err(e.to_string()))
}

/// The bare address (`user@example.org`) of a mailbox as a caller gives it
/// (`Name <user@example.org>` or `user@example.org`), or `None` if it does not parse.
pub fn bare_address(given: &str) -> Option<String> {
    given
        .trim()
        .parse::<Mailbox>()
        .ok()
        .map(|m| m.email.to_string())
}

fn mailboxes(field: &'static str, values: &[String]) -> Result<Vec<Mailbox>, OutgoingError> {
    values.iter().map(|v| mailbox(field, v)).collect()
}

/// `X-` followed by at least one ASCII letter, digit, `-` or `_`; at most 76 characters.
fn allowed_header_name(name: &str) -> bool {
    let Some(prefix) = name.get(..2) else {
        return false;
    };
    prefix.eq_ignore_ascii_case("x-")
        && name.len() > 2
        && name.len() <= 76
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn crlf(text: &str) -> String {
    String::from_utf8_lossy(&normalize_crlf(text.as_bytes())).into_owned()
}

fn end_with_crlf(text: &mut String) {
    if !text.ends_with("\r\n") {
        text.push_str("\r\n");
    }
}

/// The text body with the footer after a blank line, CRLF only, ending in CRLF.
fn text_with_footer(body: &str, footer: Option<&str>) -> String {
    let mut text = crlf(body);
    if let Some(footer) = footer {
        if !text.is_empty() {
            end_with_crlf(&mut text);
        }
        text.push_str("\r\n");
        text.push_str(&crlf(footer));
    }
    end_with_crlf(&mut text);
    text
}

/// The HTML body with the footer as an escaped `<p>` before the last `</body>` (any case),
/// or at the end when there is none; CRLF only, ending in CRLF.
fn html_with_footer(body: &str, footer: Option<&str>) -> String {
    let mut html = crlf(body);
    if let Some(footer) = footer {
        let escaped = html_escape(footer.replace("\r\n", "\n").trim_end());
        let paragraph = format!("<p>{}</p>\r\n", crlf(&escaped));
        // ASCII lower-casing keeps byte offsets, so the index is valid in `html`.
        match html.to_ascii_lowercase().rfind("</body>") {
            Some(at) => html.insert_str(at, &paragraph),
            None => {
                if !html.is_empty() {
                    end_with_crlf(&mut html);
                }
                html.push_str(&paragraph);
            }
        }
    }
    end_with_crlf(&mut html);
    html
}

/// An upper-bound-ish size of `text` once CRLF-normalised and quoted-printable encoded.
fn encoded_text_size(text: &str) -> usize {
    let expanding = text
        .bytes()
        .filter(|&b| !b.is_ascii() || b == b'=' || b == b'\n')
        .count();
    let raw = text.len() + 2 * expanding;
    // Soft line breaks ("=\r\n") every 73 characters at worst, and a final CRLF.
    raw + raw / 73 * 3 + 2
}

/// The size of `len` bytes as base64 in lines of 76 characters.
fn base64_size(len: usize) -> usize {
    let encoded = len.div_ceil(3) * 4;
    encoded + encoded.div_ceil(76) * 2
}

/// The envelope address used to compare recipients: the domain is case-insensitive.
fn dedup_key(address: &Address) -> String {
    format!(
        "{}@{}",
        address.user(),
        address.domain().to_ascii_lowercase()
    )
}

impl OutgoingMessage {
    /// A cheap estimate of the built message's size, for refusing an oversized message
    /// before building or storing it. It is meant as an upper bound: bodies are counted
    /// as if quoted-printable with every non-ASCII byte, `=` and line break expanded,
    /// attachments as base64 with line breaks, headers with room for RFC 2047 encoding,
    /// plus a fixed allowance per part for MIME headers and boundaries. It is not exact:
    /// compare [`BuiltMessage::size`] with the limit once built.
    pub fn estimated_size(&self) -> usize {
        const HEADERS: usize = 1024;
        const PER_PART: usize = 256;
        let footer = self.footer.as_deref().map_or(0, encoded_text_size);
        let mut size = HEADERS + 2 * PER_PART;
        size += 3 * self.subject.len();
        let addresses = [&self.sender]
            .into_iter()
            .chain(&self.from_override)
            .chain(&self.reply_to)
            .chain(&self.reply_to_override)
            .chain(&self.disposition_notification_to)
            .chain(&self.to)
            .chain(&self.cc);
        size += addresses.map(|a| 2 * a.len() + 8).sum::<usize>();
        size += self
            .extra_headers
            .iter()
            .map(|(name, value)| name.len() + 3 * value.len() + 8)
            .sum::<usize>();
        if let Some(text) = &self.text_body {
            size += PER_PART + encoded_text_size(text) + footer + 4;
        }
        if let Some(html) = &self.html_body {
            // Escaping the footer can make it six times as long ("&quot;").
            size += PER_PART + encoded_text_size(html) + 6 * footer + 16;
        }
        size += self
            .attachments
            .iter()
            .map(|a| {
                PER_PART
                    + 3 * a.filename.len()
                    + a.content_type.len()
                    + base64_size(a.content.len())
            })
            .sum::<usize>();
        size
    }

    /// Validates the message against the rules and the account's settings and builds it.
    pub fn build(&self) -> Result<BuiltMessage, OutgoingError> {
        let given = self.to.len() + self.cc.len() + self.bcc.len();
        if given == 0 {
            return Err(OutgoingError::NoRecipient);
        }
        if given > MAX_RECIPIENTS {
            return Err(OutgoingError::TooManyRecipients {
                max: MAX_RECIPIENTS,
                got: given,
            });
        }
        if self.force_settings {
            if self.from_override.is_some() {
                return Err(OutgoingError::OverrideRefused { field: "from" });
            }
            if self.reply_to_override.is_some() {
                return Err(OutgoingError::OverrideRefused { field: "reply_to" });
            }
        }
        let to = mailboxes("to", &self.to)?;
        let cc = mailboxes("cc", &self.cc)?;
        let bcc = mailboxes("bcc", &self.bcc)?;
        let from = match &self.from_override {
            Some(over) => mailbox("from", over)?,
            None => mailbox("sender", &self.sender)?,
        };
        let reply_to = match (&self.reply_to_override, &self.reply_to) {
            (Some(over), _) => Some(mailbox("reply_to", over)?),
            (None, Some(account)) => Some(mailbox("reply_to", account)?),
            (None, None) => None,
        };
        let envelope_from = match &self.return_path {
            Some(rp) => mailbox("return_path", rp)?.email,
            None => from.email.clone(),
        };
        let dnt = self
            .disposition_notification_to
            .as_deref()
            .map(|d| mailbox("disposition_notification_to", d))
            .transpose()?;

        let text = self.text_body.as_deref().filter(|t| !t.is_empty());
        let mut html = self.html_body.as_deref().filter(|h| !h.is_empty());
        if text.is_none() && html.is_none() {
            return Err(OutgoingError::NoBody);
        }
        if self.plain_text_only {
            if text.is_none() {
                return Err(OutgoingError::HtmlOnlyOnPlainTextAccount);
            }
            html = None;
        }
        let charset = self.charset.clone().unwrap_or_else(|| "UTF-8".to_owned());
        if !valid_charset(&charset) {
            return Err(OutgoingError::Charset(charset));
        }
        if has_line_break(&self.subject) {
            return Err(OutgoingError::HeaderValue {
                field: "subject".to_owned(),
            });
        }
        let mut extra = Vec::with_capacity(self.extra_headers.len());
        let mut names = HashSet::new();
        for (name, value) in &self.extra_headers {
            if !allowed_header_name(name) {
                return Err(OutgoingError::HeaderNotAllowed { name: name.clone() });
            }
            // lettre keeps only the last of two headers with the same name.
            if !names.insert(name.to_ascii_lowercase()) {
                return Err(OutgoingError::DuplicateHeader { name: name.clone() });
            }
            if has_line_break(value) {
                return Err(OutgoingError::HeaderValue {
                    field: format!("headers[{name}]"),
                });
            }
            let header_name = HeaderName::new_from_ascii(name.clone())
                .map_err(|_| OutgoingError::HeaderNotAllowed { name: name.clone() })?;
            extra.push(HeaderValue::new(header_name, value.clone()));
        }
        let attachments = self
            .attachments
            .iter()
            .enumerate()
            .map(|(index, a)| attachment_part(index, a))
            .collect::<Result<Vec<_>, _>>()?;

        // The envelope: `to`, `cc`, then `bcc`, each address once, in the order given.
        let mut seen = HashSet::new();
        let envelope_to: Vec<Address> = to
            .iter()
            .chain(&cc)
            .chain(&bcc)
            .map(|m| m.email.clone())
            .filter(|a| seen.insert(dedup_key(a)))
            .collect();
        let envelope = LettreEnvelope::new(Some(envelope_from.clone()), envelope_to.clone())
            .map_err(|e| OutgoingError::Build(e.to_string()))?;

        let message_id = new_message_id(from.email.domain());
        let mut builder = lettre::Message::builder()
            .from(from)
            .subject(self.subject.clone())
            .message_id(Some(message_id.clone()))
            .user_agent(format!("mailplane/{}", env!("CARGO_PKG_VERSION")))
            .envelope(envelope);
        for mb in to {
            builder = builder.to(mb);
        }
        for mb in cc {
            builder = builder.cc(mb);
        }
        if let Some(mb) = reply_to {
            builder = builder.reply_to(mb);
        }
        if let Some(mb) = dnt {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Disposition-Notification-To"),
                mb.to_string(),
            ));
        }
        for header in extra {
            builder = builder.raw_header(header);
        }

        let footer = self.footer.as_deref().filter(|f| !f.is_empty());
        let content_type = |sub: &str| {
            ContentType::parse(&format!("text/{sub}; charset={charset}"))
                .map_err(|e| OutgoingError::Build(e.to_string()))
        };
        let text_part = match text {
            Some(t) => Some(
                SinglePart::builder()
                    .header(content_type("plain")?)
                    .body(encode_body(text_with_footer(t, footer))),
            ),
            None => None,
        };
        let html_part = match html {
            Some(h) => Some(
                SinglePart::builder()
                    .header(content_type("html")?)
                    .body(encode_body(html_with_footer(h, footer))),
            ),
            None => None,
        };
        let content = match (text_part, html_part) {
            (Some(t), Some(h)) => {
                Content::Multi(MultiPart::alternative().singlepart(t).singlepart(h))
            }
            (Some(part), None) | (None, Some(part)) => Content::Single(part),
            (None, None) => return Err(OutgoingError::NoBody),
        };
        let message = if attachments.is_empty() {
            match content {
                Content::Single(part) => builder.singlepart(part),
                Content::Multi(multi) => builder.multipart(multi),
            }
        } else {
            let mut mixed = match content {
                Content::Single(part) => MultiPart::mixed().singlepart(part),
                Content::Multi(multi) => MultiPart::mixed().multipart(multi),
            };
            for part in attachments {
                mixed = mixed.singlepart(part);
            }
            builder.multipart(mixed)
        }
        .map_err(|e| OutgoingError::Build(e.to_string()))?;

        Ok(BuiltMessage {
            envelope_from: envelope_from.to_string(),
            envelope_to: envelope_to.iter().map(ToString::to_string).collect(),
            message_id,
            bytes: normalize_crlf(&message.formatted()),
        })
    }
}

/// The body of a message before attachments.
enum Content {
    Single(SinglePart),
    Multi(MultiPart),
}

/// Validates one attachment and makes its base64 part.
fn attachment_part(index: usize, a: &Attachment) -> Result<SinglePart, OutgoingError> {
    if a.filename.trim().is_empty() {
        return Err(OutgoingError::Filename {
            index,
            reason: "must not be empty",
        });
    }
    if a.filename.chars().any(char::is_control) {
        return Err(OutgoingError::Filename {
            index,
            reason: "must not contain control characters",
        });
    }
    let value = a.content_type.trim();
    let value = if value.is_empty() {
        DEFAULT_ATTACHMENT_TYPE
    } else {
        value
    };
    let invalid = |reason: String| OutgoingError::ContentType {
        index,
        value: a.content_type.clone(),
        reason,
    };
    if has_line_break(value) {
        return Err(invalid("contains CR, LF or NUL".to_owned()));
    }
    let content_type = ContentType::parse(value).map_err(|e| invalid(e.to_string()))?;
    if value.to_ascii_lowercase().starts_with("multipart/") {
        return Err(invalid("multipart types are not allowed".to_owned()));
    }
    let body = Body::new_with_encoding(a.content.clone(), ContentTransferEncoding::Base64)
        .map_err(|_| OutgoingError::Build("base64 encoding refused".to_owned()))?;
    Ok(MimeAttachment::new(a.filename.clone()).body(body, content_type))
}
