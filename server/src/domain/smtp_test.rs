//! Test e-mails: what a user asks for. The session itself lives in `mailplane_smtp`,
//! shared with the network connector.

use super::AccountId;

/// A test's resource name, `accounts/{account}/tests/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TestName {
    /// The account tested.
    pub account: AccountId,
    /// The test's own id.
    pub id: i64,
}

impl std::fmt::Display for TestName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/tests/{}", self.account, self.id)
    }
}

/// The language of the default subject and body (the seeds' English and Portuguese screens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    /// English.
    En,
    /// Brazilian Portuguese.
    PtBr,
}

impl Locale {
    /// Parses a locale tag; empty means English.
    pub fn parse(tag: &str) -> Option<Self> {
        match tag.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "" | "en" | "en-us" | "en-gb" => Some(Self::En),
            "pt-br" | "pt" => Some(Self::PtBr),
            _ => None,
        }
    }

    /// The canonical tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::PtBr => "pt-BR",
        }
    }

    /// The seeds' default subject.
    pub fn default_subject(self) -> &'static str {
        match self {
            Self::En => "TEST MESSAGE!",
            Self::PtBr => "MENSAGEM DE TESTE!",
        }
    }

    /// The seeds' default body.
    pub fn default_body(self) -> &'static str {
        match self {
            Self::En => "ATTENTION: THIS IS A TEST MESSAGE!",
            Self::PtBr => "ATENÇÃO: ESTA É UMA MENSAGEM DE TESTE!",
        }
    }
}

/// Where a test stops (like `swaks --quit-after`): the session library's own type.
pub use mailplane_smtp::StopAfter;

/// A validated test request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRequest {
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The body.
    pub body: String,
    /// The locale of the defaults.
    pub locale: Locale,
    /// Where to stop.
    pub stop_after: StopAfter,
}

/// A test's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestState {
    /// Accepted, not started.
    Queued,
    /// Running.
    Running,
    /// Finished well.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Stopped before it finished.
    Cancelled,
}

impl TestState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether the test has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A stored test: its state and its published form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTest {
    /// The test's name.
    pub name: TestName,
    /// Its state.
    pub state: TestState,
    /// The `mailplane.v1.SmtpTest` message, encoded.
    pub payload: Vec<u8>,
    /// When it was created.
    pub create_time: super::Micros,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_and_defaults() {
        assert_eq!(Locale::parse("pt_BR"), Some(Locale::PtBr));
        assert_eq!(Locale::parse(""), Some(Locale::En));
        assert_eq!(Locale::parse("fr"), None);
        assert_eq!(Locale::PtBr.default_subject(), "MENSAGEM DE TESTE!");
        assert_eq!(
            Locale::En.default_body(),
            "ATTENTION: THIS IS A TEST MESSAGE!"
        );
    }
}
