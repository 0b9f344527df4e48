//! A small HTTP/1.1 client for the console's tests: a browser that keeps its cookies, signs in,
//! reads the CSRF token of a page, and posts forms. One connection per request
//! (`Connection: close`), the body read to its end (chunked bodies decoded), so a streamed
//! response such as server-sent events is read until the server ends it.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Response {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Location` of a redirect.
    pub fn location(&self) -> &str {
        self.header("location").unwrap_or_default()
    }
}

/// A browser: its cookies, and the console's address.
pub struct Browser {
    addr: SocketAddr,
    cookies: Vec<(String, String)>,
    /// Sent as `Accept-Language`.
    pub accept_language: String,
}

/// `pairs` as `application/x-www-form-urlencoded`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `s` percent-encoded for a query or a form.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HTML's escapes of attribute values undone (`&amp;` in links).
pub fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The value of attribute `attr` of the first tag that contains `marker` (e.g.
/// `data-testid="next"`), unescaped.
pub fn attr_of(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let key = format!("{attr}=\"");
    let v = tag.find(&key)? + key.len();
    let len = tag[v..].find('"')?;
    Some(unescape(&tag[v..v + len]))
}

/// The value of the input named `name` on the page.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    attr_of(html, &format!("name=\"{name}\""), "value")
}

/// How many times `needle` occurs in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

impl Browser {
    /// A browser for the console at `addr`, with no cookies.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            cookies: Vec::new(),
            accept_language: "en".into(),
        }
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, None).await
    }

    /// `POST path` with a form.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Response {
        self.request("POST", path, Some(form_encode(form))).await
    }

    /// Signs in with `token`, as a person would: the sign-in page, then its form.
    pub async fn sign_in(&mut self, token: &str) {
        let page = self.get("/sign-in?next=%2Faccounts").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = input_value(&page.body, "csrf").expect("the sign-in form's csrf");
        let done = self
            .post(
                "/sign-in",
                &[("token", token), ("csrf", &csrf), ("next", "/accounts")],
            )
            .await;
        assert_eq!(done.status, 303, "sign in: {}", done.body);
        assert_eq!(done.location(), "/accounts");
    }

    async fn request(&mut self, method: &str, path: &str, body: Option<String>) -> Response {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept-Language: {}\r\n",
            self.addr, self.accept_language
        );
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req.push_str(&format!("Cookie: {}\r\n", c.join("; ")));
        }
        if let Some(body) = &body {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        if let Some(body) = &body {
            req.push_str(body);
        }
        let mut stream = TcpStream::connect(self.addr)
            .await
            .expect("connect to the console");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(90), stream.read_to_end(&mut raw))
            .await
            .expect("the console answers within 90 s")
            .expect("read the response");
        let response = parse(&raw);
        for (k, v) in &response.headers {
            if k == "set-cookie"
                && let Some((name, value)) = v.split(';').next().and_then(|c| c.split_once('='))
            {
                self.cookies.retain(|(n, _)| n != name);
                if !value.is_empty() {
                    self.cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        response
    }
}

fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}
