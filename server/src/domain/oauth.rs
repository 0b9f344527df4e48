//! OAuth2 credentials that get their own access tokens: where from (the token endpoint), as
//! whom (the client id) and for what (the scopes), checked at the edge; and what a token
//! response must grant.

use crate::error::{Error, Result};

/// The longest token URL, client id or scope accepted.
const MAX_LEN: usize = 2048;

/// The OAuth2 settings of a credential; all empty for kinds that get no tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthSettings {
    /// The token endpoint, canonical (`https://…`, or `http://` to a loopback address).
    pub token_url: String,
    /// The OAuth2 client id.
    pub client_id: String,
    /// The scopes asked for, separated by one space.
    pub scope: String,
    /// Who asks the token endpoint.
    pub token_source: TokenSource,
}

/// Who asks a credential's token endpoint for access tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenSource {
    /// The server: tokens are cached for every replica, and passed in connector jobs.
    #[default]
    Server,
    /// The agents of the accounts' network connector, for an endpoint only their network
    /// reaches: the client secret and refresh token travel in the job.
    Connector,
}

impl TokenSource {
    /// The API's short name (`SERVER`, `CONNECTOR`), as the audit log shows it.
    pub fn api_name(self) -> &'static str {
        match self {
            TokenSource::Server => "SERVER",
            TokenSource::Connector => "CONNECTOR",
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Server => "server",
            TokenSource::Connector => "connector",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "server" => Some(TokenSource::Server),
            "connector" => Some(TokenSource::Connector),
            _ => None,
        }
    }
}

impl OAuthSettings {
    /// Whether every setting is empty.
    pub fn is_empty(&self) -> bool {
        self.token_url.is_empty()
            && self.client_id.is_empty()
            && self.scope.is_empty()
            && self.token_source == TokenSource::Server
    }
}

/// Parses a token endpoint: an absolute `https` URL without user info or fragment (`http` only
/// to a loopback address, as RFC 8252 allows for native apps), returned in canonical form.
pub fn parse_token_url(field: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(
            field,
            "is required for an OAuth2 credential: the provider's token endpoint, e.g. \
             https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        ));
    }
    if value.len() > MAX_LEN || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("must be a URL of at most {MAX_LEN} bytes, without control characters"),
        ));
    }
    let url = url::Url::parse(value)
        .map_err(|e| Error::invalid(field, format!("is not a valid URL ({e})")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(Error::invalid(
                field,
                "must use https: the client secret is sent there (http is allowed only to a \
                 loopback address)",
            ));
        }
        other => {
            return Err(Error::invalid(
                field,
                format!("must be an https URL, not {other}:"),
            ));
        }
    }
    if url.host().is_none() {
        return Err(Error::invalid(field, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(
            field,
            "must not carry a user name or password: give the client id and client secret \
             in their own fields",
        ));
    }
    if url.fragment().is_some() {
        return Err(Error::invalid(field, "must not have a fragment (#…)"));
    }
    Ok(url.to_string())
}

/// Parses a client id: printable, without spaces at either end.
pub fn parse_client_id(field: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(
            field,
            "is required for an OAuth2 credential: the application (client) id the provider \
             issued",
        ));
    }
    if value.len() > MAX_LEN || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_LEN} bytes, without control characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Parses scopes (RFC 6749 section 3.3: tokens of visible ASCII but `"` and `\`, separated by
/// spaces), returned separated by one space, duplicates dropped.
pub fn parse_scope(field: &str, value: &str) -> Result<String> {
    let mut scopes: Vec<&str> = Vec::new();
    for scope in value.split(' ').filter(|s| !s.is_empty()) {
        if !scope
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
        {
            return Err(Error::invalid(
                field,
                format!(
                    "{:?} is not a valid scope: scopes are visible ASCII characters other than \
                     \" and \\, separated by spaces",
                    scope.chars().take(64).collect::<String>()
                ),
            ));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(Error::invalid(
            field,
            "is required for an OAuth2 credential, e.g. https://outlook.office365.com/.default \
             (Microsoft 365) or https://mail.google.com/ (Google)",
        ));
    }
    let joined = scopes.join(" ");
    if joined.len() > MAX_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_LEN} bytes"),
        ));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls_must_be_https_except_to_loopback() {
        let ok = |v| parse_token_url("f", v).unwrap();
        assert_eq!(
            ok("https://login.microsoftonline.com/contoso/oauth2/v2.0/token"),
            "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"
        );
        assert_eq!(
            ok(" HTTPS://Example.COM/token "),
            "https://example.com/token"
        );
        assert_eq!(
            ok("http://127.0.0.1:8080/token"),
            "http://127.0.0.1:8080/token"
        );
        assert_eq!(ok("http://localhost/t"), "http://localhost/t");
        for bad in [
            "",
            "http://idp.example.com/token",
            "ftp://idp.example.com/token",
            "https://user:pw@idp.example.com/token",
            "https://idp.example.com/token#x",
            "not a url",
            "https://idp.example.com/\ntoken",
        ] {
            let err = parse_token_url("credential.token_url", bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("credential.token_url"), "{err}");
        }
    }

    #[test]
    fn scopes_are_rfc_6749_tokens() {
        assert_eq!(
            parse_scope("s", "  https://mail.google.com/  openid openid ").unwrap(),
            "https://mail.google.com/ openid"
        );
        assert!(parse_scope("s", "").is_err());
        assert!(parse_scope("s", "a\"b").is_err());
        assert!(parse_scope("s", "a\\b").is_err());
        assert!(parse_scope("s", "a\tb").is_err());
        assert!(parse_scope("s", "é").is_err());
    }

    #[test]
    fn client_ids_are_required_and_printable() {
        assert_eq!(parse_client_id("c", " app-1 ").unwrap(), "app-1");
        assert!(parse_client_id("c", "").is_err());
        assert!(parse_client_id("c", "a\u{7}b").is_err());
    }
}
