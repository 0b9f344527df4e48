//! Tests of proxy URLs, `NO_PROXY`, and the `CONNECT` exchange (against a scripted proxy
//! on loopback).

use super::connect::{Answer, parse_answer, request, tunnel};
use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

#[test]
fn urls_parse_and_never_show_the_password() {
    let p = ProxyUrl::parse("http://alice:s%40cret-pw@proxy.corp.example:3128").unwrap();
    assert_eq!(p.host, "proxy.corp.example");
    assert_eq!(p.port, 3128);
    assert_eq!(p.to_string(), "http://<redacted>@proxy.corp.example:3128");
    assert_eq!(
        format!("{p:?}"),
        "ProxyUrl(http://<redacted>@proxy.corp.example:3128)"
    );
    let auth = p.auth.as_ref().unwrap();
    assert_eq!(format!("{auth:?}"), "<redacted>");
    // base64("alice:s@cret-pw"): the password is percent-decoded.
    assert_eq!(auth.header_value().as_str(), "Basic YWxpY2U6c0BjcmV0LXB3");
    assert!(!format!("{p} {p:?}").contains("cret"));

    let p = ProxyUrl::parse("http://10.0.0.1:8080/").unwrap();
    assert_eq!(
        (p.host.as_str(), p.port, p.auth.is_none()),
        ("10.0.0.1", 8080, true)
    );
    assert_eq!(p.to_string(), "http://10.0.0.1:8080");
    let p = ProxyUrl::parse("proxy.example:3128").unwrap();
    assert_eq!(p.authority(), "proxy.example:3128");
    let p = ProxyUrl::parse("http://[2001:db8::1]").unwrap();
    assert_eq!(p.authority(), "[2001:db8::1]:80");
}

#[test]
fn only_http_proxies_are_accepted() {
    for (url, want) in [
        (
            "https://u:pw@proxy.example:3128",
            ProxyUrlError::Scheme("https".into()),
        ),
        (
            "socks5://proxy.example:1080",
            ProxyUrlError::Scheme("socks5".into()),
        ),
        ("http://proxy.example:3128/path", ProxyUrlError::Path),
        ("http://:3128", ProxyUrlError::NotUrl),
        ("http://proxy.example:99999", ProxyUrlError::NotUrl),
    ] {
        assert_eq!(ProxyUrl::parse(url), Err(want.clone()), "{url}");
    }
    let e = ProxyUrl::parse("https://u:secret-pw@proxy.example:3128").unwrap_err();
    assert!(e.to_string().contains("only http:// proxies"), "{e}");
    assert!(!e.to_string().contains("secret-pw"), "{e}");
}

#[test]
fn no_proxy_matches_suffixes_addresses_and_networks() {
    let n = NoProxy::parse(
        " corp.example, .internal ,*.lab.test,10.0.0.0/8, 192.0.2.7,::1, cp.example:7751,,",
    );
    assert!(n.matches("corp.example", 443));
    assert!(n.matches("CP1.Corp.Example", 443));
    assert!(
        !n.matches("notcorp.example", 443),
        "a suffix matches at a dot"
    );
    assert!(n.matches("a.internal", 1));
    assert!(n.matches("internal", 1));
    assert!(n.matches("x.lab.test", 1));
    assert!(n.matches("10.1.2.3", 7751));
    assert!(!n.matches("11.1.2.3", 7751));
    assert!(n.matches("192.0.2.7", 1));
    assert!(!n.matches("192.0.2.8", 1));
    assert!(n.matches("::1", 1));
    assert!(n.matches("[::1]", 1));
    assert!(n.matches("cp.example", 7751));
    assert!(
        !n.matches("cp.example", 443),
        "the port must match when given"
    );
    assert!(!n.matches("example", 443));
    assert!(NoProxy::parse("*").matches("anything.example", 1));
    assert!(NoProxy::parse("").is_empty());
    assert!(!NoProxy::parse("").matches("a.example", 1));
}

#[test]
fn connect_answers_parse() {
    assert_eq!(parse_answer(b"HTTP/1.1 200 Conn"), Ok(Answer::Partial));
    assert_eq!(
        parse_answer(b"HTTP/1.1 200 Connection established\r\n"),
        Ok(Answer::Partial)
    );
    assert_eq!(
        parse_answer(b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy\r\n\r\n"),
        Ok(Answer::Complete {
            code: 200,
            status: "HTTP/1.0 200 Connection established".into()
        })
    );
    assert_eq!(
        parse_answer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
        Ok(Answer::Complete {
            code: 403,
            status: "HTTP/1.1 403 Forbidden".into()
        })
    );
    assert!(parse_answer(b"SSH-2.0-OpenSSH_9.2\r\n").is_err());
}

#[test]
fn the_request_carries_basic_credentials_only_when_given() {
    let with = ProxyUrl::parse("http://user:pw@p.example:3128").unwrap();
    let req = request(&with, "cp.example:7751");
    assert!(req.starts_with("CONNECT cp.example:7751 HTTP/1.1\r\nHost: cp.example:7751\r\n"));
    assert!(req.contains("\r\nProxy-Authorization: Basic dXNlcjpwdw==\r\n"));
    assert!(req.ends_with("\r\n\r\n"));
    let without = ProxyUrl::parse("http://p.example:3128").unwrap();
    assert!(!request(&without, "cp.example:7751").contains("Proxy-Authorization"));
}

/// A one-shot proxy on loopback: reads the request head, answers `answer`, then echoes
/// what follows (the "server" side of the tunnel). Returns its URL and the request.
async fn scripted(answer: &'static str, auth: &str) -> (ProxyUrl, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(s.read_u8().await.unwrap());
        }
        s.write_all(answer.as_bytes()).await.unwrap();
        let mut buf = [0u8; 5];
        if s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&buf).await.unwrap();
        }
        String::from_utf8(head).unwrap()
    });
    (
        ProxyUrl::parse(&format!("http://{auth}127.0.0.1:{port}")).unwrap(),
        task,
    )
}

#[tokio::test]
async fn a_tunnel_opens_on_2xx_and_carries_the_bytes_after_it() {
    let (proxy, task) = scripted(
        "HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\n",
        "u:p@",
    )
    .await;
    let mut s = tunnel(&proxy, "cp.example", 7751).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
    let head = task.await.unwrap();
    assert!(
        head.starts_with("CONNECT cp.example:7751 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("Proxy-Authorization: Basic dTpw\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn refusals_say_why() {
    let (proxy, task) = scripted(
        "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n",
        "u:wrong-pw@",
    )
    .await;
    let e = tunnel(&proxy, "cp.example", 7751).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(
            "the proxy refused the credentials (HTTP 407 Proxy Authentication Required): check the user and password in --proxy"
        ),
        "{text}"
    );
    assert!(!text.contains("wrong-pw"), "{text}");
    assert!(task.await.unwrap().contains("Proxy-Authorization: Basic "));

    let (proxy, task) = scripted("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "").await;
    let e = tunnel(&proxy, "cp.example", 7751).await.unwrap_err();
    assert!(matches!(e, ProxyError::CredentialsRequired { .. }), "{e}");
    assert!(!task.await.unwrap().contains("Proxy-Authorization"));

    // tinyproxy answers a CONNECT with wrong credentials with 401.
    let (proxy, task) = scripted("HTTP/1.0 401 Unauthorized\r\n\r\n", "u:wrong-pw@").await;
    let e = tunnel(&proxy, "cp.example", 7751).await.unwrap_err();
    assert!(
        e.to_string().starts_with(
            "the proxy refused the credentials (HTTP 401 Unauthorized): check the user and password in --proxy"
        ),
        "{e}"
    );
    task.await.unwrap();

    let (proxy, task) = scripted("HTTP/1.1 403 Access violation\r\n\r\n", "").await;
    let e = tunnel(&proxy, "cp.example", 7751).await.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("refused the tunnel to cp.example:7751: HTTP/1.1 403 Access violation"),
        "{e}"
    );
    task.await.unwrap();

    let (proxy, task) = scripted("garbage\r\n\r\n", "").await;
    let e = tunnel(&proxy, "cp.example", 7751).await.unwrap_err();
    assert!(matches!(e, ProxyError::Invalid { .. }), "{e}");
    task.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_proxy_is_named() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = ProxyUrl::parse(&format!("http://u:pw@127.0.0.1:{port}")).unwrap();
    let e = tunnel(&proxy, "cp.example", 7751).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach the proxy 127.0.0.1:{port}: ")),
        "{e}"
    );
}
