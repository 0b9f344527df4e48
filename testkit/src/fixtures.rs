//! The SMTP fixtures started by `deploy/smtp-fixtures/setup.sh`: a private Postfix with Dovecot
//! SASL on 127.0.0.1. The script writes `KEY=value` lines to `$DIR/env`, where `$DIR` is
//! `$MAILPLANE_SMTP_FIXTURES` (default `/tmp/mailplane-smtp`). Tests that need them fail, on
//! purpose, with a message that says how to start them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fixture directory's default.
pub const DEFAULT_DIR: &str = "/tmp/mailplane-smtp";

/// Every `KEY=value` of the fixtures' env file.
#[derive(Debug, Clone)]
pub struct SmtpFixtures {
    /// The variables, with surrounding quotes removed.
    pub vars: HashMap<String, String>,
}

impl SmtpFixtures {
    /// Reads the fixtures, or panics saying how to start them.
    pub fn load() -> Self {
        let dir = std::env::var("MAILPLANE_SMTP_FIXTURES").unwrap_or_else(|_| DEFAULT_DIR.into());
        let path = Path::new(&dir).join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the SMTP fixtures are not running ({}: {e}); start them with \
                 `bash deploy/smtp-fixtures/setup.sh {dir}` (root; installs Postfix and Dovecot \
                 from Debian), or set MAILPLANE_SMTP_FIXTURES to the directory it used",
                path.display()
            )
        });
        Self::parse(&text)
    }

    /// Parses the text of an env file.
    pub fn parse(text: &str) -> Self {
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect();
        Self { vars }
    }

    /// A variable of the env file.
    pub fn var(&self, key: &str) -> String {
        self.get(key).to_owned()
    }

    /// A variable of the env file, borrowed.
    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!("the SMTP fixtures' env file has no {key}; re-run deploy/smtp-fixtures/setup.sh")
        })
    }

    /// A port of the env file.
    pub fn port(&self, key: &str) -> u16 {
        self.get(key)
            .parse()
            .unwrap_or_else(|e| panic!("{key} in the SMTP fixtures' env file is not a port: {e}"))
    }

    /// The Maildir where mail to the test domain lands.
    pub fn maildir(&self) -> PathBuf {
        PathBuf::from(self.get("SMTP_MAILDIR"))
    }

    /// Waits (up to 30 s) for a delivered message containing `needle` and returns it.
    pub async fn delivered(&self, needle: &str) -> String {
        let dir = self.maildir();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(text) = find_in_maildir(&dir, needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no message containing {needle:?} was delivered to {} within 30 s",
                dir.display()
            );
            // Postfix delivers asynchronously after it queued the message: poll the Maildir.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The first message in `dir/{new,cur}` that contains `needle`.
pub fn find_in_maildir(dir: &Path, needle: &str) -> Option<String> {
    ["new", "cur"].iter().find_map(|sub| {
        std::fs::read_dir(dir.join(sub))
            .ok()?
            .flatten()
            .find_map(|entry| {
                std::fs::read_to_string(entry.path())
                    .ok()
                    .filter(|text| text.contains(needle))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_and_spaced_values() {
        let fx = SmtpFixtures::parse(
            "SMTP_HOST=127.0.0.1\nSMTP_CA=\"/tmp/ca.pem\"\n PORT = 25 \n# note\n",
        );
        assert_eq!(fx.get("SMTP_HOST"), "127.0.0.1");
        assert_eq!(fx.get("SMTP_CA"), "/tmp/ca.pem");
        assert_eq!(fx.port("PORT"), 25);
        assert!(!fx.vars.contains_key("# note"));
    }
}
