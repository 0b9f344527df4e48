//! Typed SMTP commands: [`Command`]'s `Display` is the exact line sent (without the CRLF),
//! and [`Command::redacted`] is what the transcript and the logs show.

use std::fmt;

use zeroize::Zeroizing;

use crate::{AuthMechanism, Secret};

/// One command line a session sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `EHLO <name>`.
    Ehlo(String),
    /// `STARTTLS`.
    StartTls,
    /// `AUTH <mechanism>[ <initial response>]`; the initial response carries the secret.
    Auth {
        /// The SASL mechanism.
        mechanism: AuthMechanism,
        /// The base64 initial response, when the mechanism sends one (wiped when dropped).
        initial: Option<Secret>,
    },
    /// A line answering a `334` challenge.
    AuthResponse {
        /// The base64 line (may be empty, which ends an XOAUTH2 error exchange; wiped when
        /// dropped).
        data: Secret,
        /// Whether the line carries the secret (then it is shown as `<redacted>`).
        secret: bool,
    },
    /// `MAIL FROM:<address>`.
    MailFrom(String),
    /// `RCPT TO:<address>`.
    RcptTo(String),
    /// `DATA`.
    Data,
    /// `RSET` (between two messages on one connection).
    Rset,
    /// `QUIT`.
    Quit,
}

impl Command {
    /// The line as the transcript and the logs show it: secrets become `<redacted>`.
    pub(crate) fn redacted(&self) -> Redacted<'_> {
        Redacted(self)
    }

    /// The bytes on the wire: the line and CRLF. They may carry a secret (AUTH), so they
    /// are wiped when dropped.
    pub(crate) fn to_wire(&self) -> Zeroizing<Vec<u8>> {
        let line = Zeroizing::new(self.to_string());
        let mut bytes = Zeroizing::new(Vec::with_capacity(line.len() + 2));
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        bytes
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(name) => write!(f, "EHLO {name}"),
            Command::StartTls => f.write_str("STARTTLS"),
            Command::Auth {
                mechanism,
                initial: Some(initial),
            } => write!(f, "AUTH {} {}", mechanism.as_str(), initial.expose()),
            Command::Auth {
                mechanism,
                initial: None,
            } => write!(f, "AUTH {}", mechanism.as_str()),
            Command::AuthResponse { data, .. } => f.write_str(data.expose()),
            Command::MailFrom(addr) => write!(f, "MAIL FROM:<{addr}>"),
            Command::RcptTo(addr) => write!(f, "RCPT TO:<{addr}>"),
            Command::Data => f.write_str("DATA"),
            Command::Rset => f.write_str("RSET"),
            Command::Quit => f.write_str("QUIT"),
        }
    }
}

/// A [`Command`] displayed with its secrets replaced by `<redacted>`.
pub(crate) struct Redacted<'a>(&'a Command);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Command::Auth {
                mechanism,
                initial: Some(_),
            } => write!(f, "AUTH {} <redacted>", mechanism.as_str()),
            Command::AuthResponse { secret: true, .. } => f.write_str("<redacted>"),
            other => other.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_and_redacted_forms() {
        let cases = [
            (
                Command::Ehlo("client.example".into()),
                "EHLO client.example",
                None,
            ),
            (Command::StartTls, "STARTTLS", None),
            (
                Command::Auth {
                    mechanism: AuthMechanism::Plain,
                    initial: Some(Secret::new("AGFsaWNlAHMzY3JldA==")),
                },
                "AUTH PLAIN AGFsaWNlAHMzY3JldA==",
                Some("AUTH PLAIN <redacted>"),
            ),
            (
                Command::Auth {
                    mechanism: AuthMechanism::XOAuth2,
                    initial: Some(Secret::new("dXNlcj1h")),
                },
                "AUTH XOAUTH2 dXNlcj1h",
                Some("AUTH XOAUTH2 <redacted>"),
            ),
            (
                Command::Auth {
                    mechanism: AuthMechanism::Login,
                    initial: None,
                },
                "AUTH LOGIN",
                None,
            ),
            (
                Command::AuthResponse {
                    data: Secret::new("YWxpY2U="),
                    secret: false,
                },
                "YWxpY2U=",
                None,
            ),
            (
                Command::AuthResponse {
                    data: Secret::new("czNjcmV0"),
                    secret: true,
                },
                "czNjcmV0",
                Some("<redacted>"),
            ),
            (
                Command::MailFrom("a@b.example".into()),
                "MAIL FROM:<a@b.example>",
                None,
            ),
            (
                Command::RcptTo("c@d.example".into()),
                "RCPT TO:<c@d.example>",
                None,
            ),
            (Command::Data, "DATA", None),
            (Command::Rset, "RSET", None),
            (Command::Quit, "QUIT", None),
        ];
        for (cmd, wire, shown) in cases {
            assert_eq!(cmd.to_string(), wire);
            assert_eq!(cmd.redacted().to_string(), shown.unwrap_or(wire));
            assert_eq!(*cmd.to_wire(), format!("{wire}\r\n").into_bytes());
        }
    }

    #[test]
    fn auth_payloads_are_wiped_and_never_printed() {
        fn wiped<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let cmd = Command::Auth {
            mechanism: AuthMechanism::Plain,
            initial: Some(Secret::new("AGFsaWNlAHMzY3JldA==")),
        };
        wiped(&cmd.to_wire());
        if let Command::Auth {
            initial: Some(payload),
            ..
        } = &cmd
        {
            wiped(payload);
        }
        assert!(!format!("{cmd:?}").contains("AGFsaWNl"), "{cmd:?}");
    }
}
