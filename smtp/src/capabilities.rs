//! The server's capabilities, parsed once from each `EHLO` reply.

use crate::wire::Reply;

/// What the last successful `EHLO` advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// The raw capability lines (the reply lines after the greeting line), as reported.
    pub(crate) lines: Vec<String>,
    /// `STARTTLS` is offered.
    pub(crate) starttls: bool,
    /// The AUTH mechanisms offered (upper case, deduplicated, in order), from `AUTH ...`
    /// and old `AUTH=...` lines.
    pub(crate) auth: Vec<String>,
    /// The `SIZE` limit, when advertised with a number.
    pub(crate) size: Option<u64>,
    /// `8BITMIME` is offered.
    pub(crate) eight_bit_mime: bool,
    /// `PIPELINING` is offered.
    pub(crate) pipelining: bool,
    /// `SMTPUTF8` is offered.
    pub(crate) smtputf8: bool,
}

impl Capabilities {
    /// Parses the reply to `EHLO` (its first line is the greeting, not a capability).
    pub(crate) fn from_ehlo(reply: &Reply) -> Self {
        let lines: Vec<String> = reply.lines.iter().skip(1).cloned().collect();
        let mut caps = Capabilities {
            starttls: offers(&lines, "STARTTLS"),
            eight_bit_mime: offers(&lines, "8BITMIME"),
            pipelining: offers(&lines, "PIPELINING"),
            smtputf8: offers(&lines, "SMTPUTF8"),
            ..Capabilities::default()
        };
        for line in &lines {
            let upper = line.to_ascii_uppercase();
            let mut words = upper.split_whitespace();
            if words.next() == Some("SIZE") {
                caps.size = words.next().and_then(|n| n.parse().ok());
            }
            let rest = upper
                .strip_prefix("AUTH ")
                .or_else(|| upper.strip_prefix("AUTH="));
            for m in rest.unwrap_or_default().split_whitespace() {
                if !caps.auth.iter().any(|x| x == m) {
                    caps.auth.push(m.to_owned());
                }
            }
        }
        caps.lines = lines;
        caps
    }

    /// Whether `mechanism` (upper case) is among the AUTH mechanisms offered.
    pub(crate) fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
}

/// Whether some line's first word is `keyword`, ignoring case.
fn offers(lines: &[String], keyword: &str) -> bool {
    lines.iter().any(|c| {
        c.split_whitespace()
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Reply {
        Reply {
            code: 250,
            enhanced: None,
            lines: lines.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn parses_the_usual_keywords() {
        let caps = Capabilities::from_ehlo(&ehlo(&[
            "mx.example Hello",
            "PIPELINING",
            "SIZE 10240000",
            "starttls",
            "AUTH PLAIN LOGIN",
            "AUTH=LOGIN XOAUTH2",
            "8BITMIME",
        ]));
        assert!(caps.starttls && caps.pipelining && caps.eight_bit_mime && !caps.smtputf8);
        assert_eq!(caps.size, Some(10_240_000));
        assert_eq!(caps.auth, ["PLAIN", "LOGIN", "XOAUTH2"]);
        assert!(caps.offers_auth("XOAUTH2") && !caps.offers_auth("CRAM-MD5"));
        assert_eq!(caps.lines.len(), 6);
        assert_eq!(caps.lines[0], "PIPELINING");
    }

    #[test]
    fn greeting_line_is_not_a_capability() {
        let caps = Capabilities::from_ehlo(&ehlo(&["STARTTLS is the name of this host"]));
        assert!(!caps.starttls);
        assert!(caps.lines.is_empty() && caps.auth.is_empty());
        assert_eq!(caps.size, None);
    }
}
