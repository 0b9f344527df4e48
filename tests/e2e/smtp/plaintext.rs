//! No AUTH in clear: someone on the path between the server and the real Postfix removes
//! STARTTLS from the EHLO reply (and offers AUTH instead, to harvest the password). With
//! STARTTLS_OPPORTUNISTIC and a credential, the test stops before AUTH with
//! STARTTLS_UNAVAILABLE, and the listener in the middle, which records every line the server
//! sent, never sees an AUTH command, unless an admin set `allow_plaintext_auth`.

use super::*;
use mailplane_tests::create_account;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the client sent through the proxy, one line each.
pub(super) type Sent = Arc<Mutex<Vec<String>>>;

/// A listener on 127.0.0.1:0 in front of Postfix on `upstream` that replaces the STARTTLS
/// capability of EHLO replies with `AUTH PLAIN LOGIN`, and records every line the client sent.
pub(super) async fn stripping_proxy(upstream: u16) -> (u16, Sent) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent: Sent = Arc::default();
    let record = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let relay = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            tokio::spawn(pipe(client, relay, Arc::clone(&record)));
        }
    });
    (port, sent)
}

async fn pipe(client: TcpStream, relay: TcpStream, record: Sent) {
    let (from_client, mut to_client) = client.into_split();
    let (from_relay, mut to_relay) = relay.into_split();
    let up = async move {
        let mut reader = BufReader::new(from_client);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            record.lock().unwrap().push(text);
            if to_relay.write_all(&line).await.is_err() {
                break;
            }
            line.clear();
        }
        let _ = to_relay.shutdown().await;
    };
    let down = async move {
        let mut reader = BufReader::new(from_relay);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
            let text = String::from_utf8_lossy(&line).into_owned();
            let stripped = text.len() > 4
                && text.starts_with("250")
                && text[4..].trim_end().eq_ignore_ascii_case("STARTTLS");
            let out = if stripped {
                format!("{}AUTH PLAIN LOGIN\r\n", &text[..4]).into_bytes()
            } else {
                line.clone()
            };
            if to_client.write_all(&out).await.is_err() {
                break;
            }
            line.clear();
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_starttls_stops_before_auth() {
    let fx = SmtpFixtures::load();
    let server = server(&fx).await;
    let cred = credential(&server, &fx, true).await;
    let (port, sent) = stripping_proxy(fx.port("SMTP_PORT_SUBMISSION")).await;
    let mut a = server.accounts();
    let opportunistic = |name: &str| pb::SmtpAccount {
        host: "127.0.0.1".into(),
        use_authentication: true,
        credential: cred.clone(),
        ..relay(name, port, pb::SecurityMode::StarttlsOpportunistic)
    };
    let acct = create_account(&mut a, opportunistic("Stripped")).await;
    let (_, done) = run(
        &server,
        &acct.name,
        pb::SmtpTest {
            to: to("stripped"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(state(&done), pb::TestState::Failed, "{:?}", done.result);
    assert_eq!(
        class(&done),
        pb::FailureClass::StarttlsUnavailable,
        "{:?}",
        done.result
    );
    let result = done.result.clone().unwrap();
    assert_eq!(
        result.failed_phase,
        i32::from(pb::Phase::Auth),
        "{result:?}"
    );
    assert!(
        result.hint.contains("did not offer STARTTLS")
            && result.hint.contains("allow_plaintext_auth"),
        "{result:?}"
    );
    let lines = sent.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.starts_with("EHLO")), "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "AUTH went out in clear: {lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("QUIT"), "{lines:?}");

    // The listener does see AUTH when an admin allowed it (so the check above can fail).
    sent.lock().unwrap().clear();
    let allowed = create_account(
        &mut a,
        pb::SmtpAccount {
            allow_plaintext_auth: true,
            ..opportunistic("Allowed in clear")
        },
    )
    .await;
    let (_, done) = run(
        &server,
        &allowed.name,
        pb::SmtpTest {
            to: to("allowed"),
            ..Default::default()
        },
    )
    .await;
    let lines = sent.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.starts_with("AUTH PLAIN")),
        "{lines:?} {:?}",
        done.result
    );
    assert_ne!(class(&done), pb::FailureClass::StarttlsUnavailable);
    server.stop().await.unwrap();
}
