//! Field syntax checks shared by every resource. Each returns `InvalidArgument` naming the
//! field and saying what would be accepted.

use crate::error::{Error, Result};
use email_address::{EmailAddress, Options};
use std::net::IpAddr;

/// The longest address that fits SMTP's path limit (RFC 5321 §4.5.3.1.3).
const MAX_ADDRESS_LEN: usize = 254;

/// Refuses CR and LF, which would let a value inject headers or SMTP commands.
pub fn no_crlf(field: &str, value: &str) -> Result<()> {
    if value.contains(['\r', '\n']) {
        return Err(Error::invalid(
            field,
            "must not contain CR or LF (line breaks would inject mail headers or SMTP commands)",
        ));
    }
    Ok(())
}

/// A required single-line text of at most `max` characters, with no control characters.
pub fn line(field: &str, value: &str, max: usize) -> Result<String> {
    no_crlf(field, value)?;
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// An e-mail address, parsed with an RFC 5322 parser. `allow_display_name` admits
/// `Name <local@domain>`, which suits From but not an envelope address.
pub fn email(field: &str, value: &str, allow_display_name: bool) -> Result<String> {
    no_crlf(field, value)?;
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let options = Options {
        allow_display_text: allow_display_name,
        ..Options::default()
    };
    let parsed = EmailAddress::parse_with_options(value, options).map_err(|e| {
        Error::invalid(
            field,
            format!("{value:?} is not a valid e-mail address ({e}); expected local@domain"),
        )
    })?;
    if parsed.email().len() > MAX_ADDRESS_LEN {
        return Err(Error::invalid(
            field,
            format!("address must be at most {MAX_ADDRESS_LEN} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// An optional e-mail address: empty means none.
pub fn optional_email(field: &str, value: &str) -> Result<Option<String>> {
    if value.trim().is_empty() {
        no_crlf(field, value)?;
        return Ok(None);
    }
    email(field, value, false).map(Some)
}

/// A DNS host name (RFC 1123) or an IP address, optionally in brackets.
pub fn host(field: &str, value: &str) -> Result<String> {
    no_crlf(field, value)?;
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(Error::invalid(
            field,
            format!(
                "{value:?} is not a valid host name or IP address; expected e.g. smtp.example.com \
                 or 192.0.2.10"
            ),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A MIME character set name (RFC 2978 tokens), e.g. `UTF-8` or `ISO-8859-1`.
pub fn charset(field: &str, value: &str) -> Result<String> {
    no_crlf(field, value)?;
    let value = value.trim();
    if value.is_empty() {
        return Ok("UTF-8".to_owned());
    }
    let ok = value.len() <= 40
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:+".contains(c));
    if !ok {
        return Err(Error::invalid(
            field,
            format!("{value:?} is not a character set name; expected e.g. UTF-8 or ISO-8859-1"),
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(email("f", "a@example.com", false).is_ok());
        assert!(email("f", "Alerts <a@example.com>", true).is_ok());
        assert!(email("f", "Alerts <a@example.com>", false).is_err());
        assert!(email("f", "not-an-address", false).is_err());
        assert!(
            email("f", "a@example.com\r\nBcc: x@y.z", true)
                .unwrap_err()
                .to_string()
                .contains("CR or LF")
        );
        assert_eq!(optional_email("f", " ").unwrap(), None);
    }

    #[test]
    fn hosts() {
        assert_eq!(host("h", "SMTP.Example.com").unwrap(), "smtp.example.com");
        assert_eq!(host("h", "[::1]").unwrap(), "::1");
        assert_eq!(host("h", "127.0.0.1").unwrap(), "127.0.0.1");
        assert!(host("h", "bad host").is_err());
        assert!(host("h", "-x.example").is_err());
        assert!(host("h", "").is_err());
    }

    #[test]
    fn charsets() {
        assert_eq!(charset("c", "").unwrap(), "UTF-8");
        assert!(charset("c", "ISO-8859-1").is_ok());
        assert!(charset("c", "utf 8").is_err());
    }
}
