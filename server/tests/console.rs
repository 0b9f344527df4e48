//! The web console as `mailplane serve` runs it: over TLS with the API's identity (its own CA
//! by default), with `Secure` cookies and the security headers; and not at all with `--ui off`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

/// The console's URL from the server's log lines.
fn console_url(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["fields"]["message"] == "web console listening")
            .then(|| v["fields"]["url"].as_str().map(str::to_owned))?
    })
}

/// `GET path` over TLS to `addr`, verifying the server with the CA in `ca_pem`; the raw
/// response.
fn https_get(addr: &str, path: &str, ca_pem: &[u8]) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = addr.rsplit_once(':').unwrap().0.to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    // A peer that closes without close_notify still gave the whole response.
    let _ = tls.read_to_string(&mut response);
    response
}

#[test]
fn the_console_is_served_over_tls_with_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _addr, early, _rx) = support::serve_logged(dir.path(), &[]);
    let url = console_url(&early).expect("the console's URL is logged");
    let addr = url
        .strip_prefix("https://")
        .expect("TLS, as the API")
        .trim_end_matches('/')
        .to_owned();
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let response = https_get(&addr, "/sign-in", &ca);
    let _ = child.kill();
    let _ = child.wait();
    let head = response.split("\r\n\r\n").next().unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.starts_with("set-cookie: mailplane_signin="))
        .expect("the sign-in form's cookie");
    for attribute in ["httponly", "samesite=strict", "secure", "path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(response.contains("<form method=\"post\" action=\"/sign-in\">"));
}

#[test]
fn ui_off_serves_no_console() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _addr, early, _rx) = support::serve_logged(dir.path(), &["--ui", "off"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(console_url(&early), None, "{early:?}");
    // The same server without the flag does serve it (the helper asks for one on port 0).
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _addr, early, _rx) = support::serve_logged(dir.path(), &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(console_url(&early).is_some(), "{early:?}");
}
