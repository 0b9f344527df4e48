//! Key rotation without downtime (`mailplane keys`), on SQLite and on PostgreSQL: 10,000
//! credentials are re-encrypted under a new key while test e-mails authenticate to the local
//! Postfix with some of them, API calls keep using an existing token, and users store new
//! secrets; none fails, the users' secrets win, and after the old key is removed from the key
//! file and the server restarts, every secret still decrypts to what was stored and the token
//! still works. [`replicas`]: a replica whose key file lacks the new key (PostgreSQL), and a
//! key file without the primary key at start-up; [`upgrade`]: a database and key file from
//! before key rotation.

mod replicas;
mod upgrade;

use crate::smtp::{relay, state, to};
use futures::StreamExt as _;
use mailplane_proto::v1 as pb;
use mailplane_server::ServerConfig;
use mailplane_server::domain::CredentialId;
use mailplane_server::keys::Keys;
use mailplane_server::keys::rotate::{Maintenance, RotateOptions};
use mailplane_tests::{SmtpFixtures, TestServer, both_backends, create_account, test_destinations};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Credentials re-encrypted.
const CREDENTIALS: usize = 10_000;
/// Accounts that run test e-mails during the rotation, each with its own credential.
const ACCOUNTS: usize = 4;
/// Credentials whose secret a user changes during the rotation.
const UPDATED: usize = 20;
/// Calls at once while the credentials are created.
const CONCURRENCY: usize = 16;

/// The servers here trust the fixtures' CA (Postfix's certificates).
pub(crate) fn configure(c: &mut ServerConfig) {
    let ca = std::fs::read(SmtpFixtures::load().var("SMTP_CA")).expect("fixture CA");
    c.smtp.extra_ca_pem = Some(ca);
}

both_backends!(owned crate::keys::configure => rotation_under_load_loses_nothing);

/// Creates a password credential with `secret`; returns its id.
pub(crate) async fn create_credential(server: &TestServer, username: &str, secret: &str) -> i64 {
    server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "rotated".into(),
                username: username.into(),
                secret: secret.into(),
                allowed_destinations: test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .expect("create credential")
        .into_inner()
        .id
}

/// Sets a credential's secret, as a user would.
async fn update_secret(server: &TestServer, id: i64, secret: &str) {
    server
        .credentials()
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: format!("credentials/{id}"),
                secret: secret.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["secret".into()],
            }),
        })
        .await
        .expect("update credential");
}

/// Runs one test e-mail on `account` to its end; whether it succeeded.
async fn test_succeeds(server: &TestServer, account: &str) -> bool {
    let mut c = server.tests();
    let created = c
        .create_test(pb::CreateTestRequest {
            parent: account.into(),
            test: Some(pb::SmtpTest {
                to: to("keys"),
                ..Default::default()
            }),
        })
        .await
        .expect("create test")
        .into_inner();
    let (_, done) = mailplane_tests::watch_to_end(&mut c, &created.name).await;
    let ok = state(&done) == pb::TestState::Succeeded;
    if !ok {
        eprintln!("test failed: {:?}", done.result);
    }
    ok
}

/// Decrypts every credential through the store and compares it with what was stored.
async fn assert_secrets(server: &TestServer, expected: &[(i64, String)]) {
    let maintenance = open(server).await;
    let report = maintenance.verify().await.expect("verify");
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    let (keys, _) = Keys::load(&server.config.key_path(), Arc::clone(maintenance.store()))
        .await
        .expect("keys");
    for (id, secret) in expected {
        let stored = keys
            .credential_secret(CredentialId(*id))
            .await
            .unwrap_or_else(|e| panic!("credentials/{id}: {e}"));
        assert_eq!(stored.expose(), secret, "credentials/{id}");
    }
}

/// The server's database and key file, opened beside it.
pub(crate) async fn open(server: &TestServer) -> Maintenance {
    Maintenance::open(
        &server.config.database().expect("database url"),
        server.config.key_path(),
    )
    .await
    .expect("open the database beside the server")
}

async fn rotation_under_load_loses_nothing(server: TestServer) {
    let fx = SmtpFixtures::load();
    let user = fx.var("SMTP_USER");
    let password = fx.var("SMTP_PASSWORD");
    let started = Instant::now();
    // The accounts' credentials are spread over the range: they are re-encrypted mid-rotation.
    let for_accounts: Vec<usize> = (0..ACCOUNTS)
        .map(|i| i * (CREDENTIALS - 1) / (ACCOUNTS - 1))
        .collect();
    let run = rand::random::<u32>();
    let secrets: Vec<String> = (0..CREDENTIALS)
        .map(|i| {
            if for_accounts.contains(&i) {
                password.clone()
            } else {
                format!("secret-{run:08x}-{i}")
            }
        })
        .collect();
    let mut expected: Vec<(i64, String)> = futures::stream::iter(secrets.iter())
        .map(|secret| {
            let server = &server;
            let user = &user;
            async move {
                (
                    create_credential(server, user, secret).await,
                    secret.clone(),
                )
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    expected.sort();
    let created_in = started.elapsed();
    let with_password: Vec<i64> = expected
        .iter()
        .filter(|(_, secret)| *secret == password)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(with_password.len(), ACCOUNTS);
    let mut accounts = Vec::new();
    for (n, id) in with_password.iter().enumerate() {
        let account = create_account(
            &mut server.accounts(),
            pb::SmtpAccount {
                use_authentication: true,
                credential: format!("credentials/{id}"),
                ..relay(
                    &format!("Rotated {n}"),
                    fx.port("SMTP_PORT_SUBMISSION"),
                    pb::SecurityMode::StarttlsRequired,
                )
            },
        )
        .await;
        accounts.push(account.name);
    }
    // Every test works before the rotation.
    for account in &accounts {
        assert!(test_succeeds(&server, account).await);
    }

    let maintenance = open(&server).await;
    let done = AtomicBool::new(false);
    let rotation = async {
        let mut maintenance = maintenance;
        let mut out = Vec::new();
        let options = RotateOptions {
            batch_size: 500,
            pause: Duration::from_millis(20),
        };
        let began = Instant::now();
        let report = maintenance.rotate(&options, &mut out).await;
        done.store(true, Ordering::SeqCst);
        (
            maintenance,
            report,
            String::from_utf8(out).unwrap(),
            began.elapsed(),
        )
    };
    let (tests_run, tests_failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let tests = async {
        while !done.load(Ordering::SeqCst) {
            let round = futures::future::join_all(
                accounts
                    .iter()
                    .map(|account| test_succeeds(&server, account)),
            )
            .await;
            for ok in round {
                tests_run.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    tests_failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    };
    let (calls, call_failures) = (AtomicU64::new(0), AtomicU64::new(0));
    let api = async {
        let mut client = server.credentials();
        while !done.load(Ordering::SeqCst) {
            let listed = client
                .list_credentials(pb::ListCredentialsRequest {
                    page_size: 100,
                    page_token: String::new(),
                })
                .await;
            calls.fetch_add(1, Ordering::SeqCst);
            if let Err(status) = listed {
                eprintln!("API call failed: {status}");
                call_failures.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    // Users store new secrets while the rotation runs: theirs win.
    let updates = async {
        let mut changed = Vec::new();
        for n in 0..UPDATED {
            let i = n * (CREDENTIALS / UPDATED) + 1;
            if expected[i].1 == password {
                continue;
            }
            let new = format!("updated-{run:08x}-{n}");
            update_secret(&server, expected[i].0, &new).await;
            changed.push((i, new));
        }
        changed
    };
    let ((maintenance, report, out, rotated_in), (), (), changed) =
        tokio::join!(rotation, tests, api, updates);
    for (i, new) in changed {
        expected[i].1 = new;
    }
    let report = report.unwrap_or_else(|e| panic!("rotation failed: {e}\n{out}"));
    let (tests_run, tests_failed) = (tests_run.into_inner(), tests_failed.into_inner());
    let (calls, call_failures) = (calls.into_inner(), call_failures.into_inner());
    println!(
        "key rotation ({:?}): {CREDENTIALS} credentials created in {created_in:?}; {} \
         ciphertexts re-encrypted in {rotated_in:?} (batches of 500, 20 ms pauses) while {tests_run} \
         test e-mails ran ({tests_failed} failed) and {calls} API calls were made ({call_failures} \
         failed)",
        server.pg.as_ref().map_or("SQLite", |_| "PostgreSQL"),
        report.reencrypted,
    );
    assert_eq!(report.primary, 2);
    assert!(
        report.reencrypted >= (CREDENTIALS - UPDATED) as u64 + 2,
        "{report:?}\n{out}"
    );
    assert!(
        tests_run >= ACCOUNTS as u64,
        "test e-mails ran during the rotation"
    );
    assert_eq!(tests_failed, 0, "no test e-mail failed during the rotation");
    assert!(calls > 0, "API calls were made during the rotation");
    assert_eq!(call_failures, 0, "no API call failed during the rotation");

    // Everything is under key 2; key 1 may go.
    let status = maintenance.status().await.unwrap();
    assert_eq!((status.primary, status.pending), (2, 0), "{status:?}");
    let two = status.keys.iter().find(|k| k.id == 2).unwrap();
    assert_eq!(two.usage.credentials, CREDENTIALS as u64);
    assert_eq!(two.usage.values, ["agent_ca", "api_token_key"]);
    assert!(
        status.keys.iter().any(|k| k.id == 1 && k.prunable),
        "{status:?}"
    );
    let mut maintenance = maintenance;
    let removed = maintenance.prune(&[], &mut Vec::new()).await.unwrap();
    assert_eq!(removed, [1]);
    drop(maintenance);
    let key_file = std::fs::read_to_string(server.config.key_path()).unwrap();
    assert!(
        !key_file.lines().any(|l| l.starts_with("1 ")),
        "key 1 is gone"
    );

    // Restarted with only key 2: every secret decrypts, the tests and the token still work.
    let server = server.restart().await;
    assert_secrets(&server, &expected).await;
    for account in &accounts {
        assert!(
            test_succeeds(&server, account).await,
            "{account} after the restart"
        );
    }
    server
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            name: format!("credentials/{}", expected[0].0),
        })
        .await
        .expect("the existing token works after the restart");
    server.stop().await.expect("clean stop");
}
