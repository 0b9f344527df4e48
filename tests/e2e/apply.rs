//! `mailplane apply -f FILE` and `mailplane export`, on both databases: a plan, an apply and a
//! second apply that changes nothing; pruning; a file with errors, reported by line, that
//! changes nothing; a concurrent edit that stops the run with ABORTED; and an export that
//! applies back with no change. The credential's secret never appears in any output.

use super::cli::mailplane;
use mailplane_proto::v1 as pb;
use mailplane_server::cli::CliError;
use mailplane_server::cli::apply::{self, plan::Options};
use mailplane_tests::TestServer;

/// The secret the file's credential reads from its secret_file.
const SECRET: &str = "apply-s3cret-never-shown";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("relay.secret"), format!("{SECRET}\n")).unwrap();
        Self { dir }
    }

    fn secret_path(&self) -> String {
        self.dir.path().join("relay.secret").display().to_string()
    }

    /// Writes `text` as `name` and returns its path.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// A connector, a credential, and two accounts using them.
    fn desired(&self, port: u32, with_default: bool) -> String {
        let default = if with_default {
            "    is_default: true\n"
        } else {
            ""
        };
        format!(
            "version: 1
connectors:
  - display_name: dmz
    description: relays in the DMZ
credentials:
  - display_name: relay-login
    username: alerts@example.com
    allowed_destinations: [smtp.example.com]
    secret_file: {}
accounts:
  - account_name: alerts
{default}    sender_email: alerts@example.com
    host: smtp.example.com
    port: {port}
    use_authentication: true
    credential: relay-login
  - account_name: billing
    sender_email: billing@example.com
    host: smtp.example.com
    use_network_connector: true
    network_connector: dmz
",
            self.secret_path()
        )
    }
}

async fn accounts(server: &TestServer) -> Vec<pb::SmtpAccount> {
    server
        .accounts()
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accounts
}

async fn account(server: &TestServer, name: &str) -> pb::SmtpAccount {
    accounts(server)
        .await
        .into_iter()
        .find(|a| a.account_name == name)
        .unwrap_or_else(|| panic!("account {name} exists"))
}

async fn get_credential(server: &TestServer, name: &str) -> pb::Credential {
    server
        .credentials()
        .get_credential(pb::GetCredentialRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn apply_ok(server: &TestServer, args: &[&str]) -> String {
    let out = mailplane(server, args)
        .await
        .unwrap_or_else(|e| panic!("mailplane {args:?}: {e}"));
    assert!(!out.contains(SECRET), "the secret leaked: {out}");
    out
}

async fn plan_apply_reapply_and_export(server: &TestServer) {
    let files = Files::new();
    let path = files.write("mailplane.yaml", &files.desired(2525, true));

    // The dry run shows four creates and writes nothing.
    let out = apply_ok(server, &["apply", "-f", &path, "--dry-run"]).await;
    for line in [
        "+ connector \"dmz\": create",
        "+ credential \"relay-login\": create",
        "+ account \"alerts\": create",
        "+ account \"billing\": create",
        "Plan: 4 to create, 0 to update, 0 to delete, 0 unchanged, 0 not in the file.",
        "Dry run: nothing was changed.",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    assert!(
        out.contains(&format!("secret from {}", files.secret_path())),
        "{out}"
    );
    assert!(accounts(server).await.is_empty(), "a dry run wrote");

    // Applying creates them, in order, the references resolved.
    let out = apply_ok(server, &["apply", "-f", &path]).await;
    assert!(out.contains("Applied 4 changes."), "{out}");
    let alerts = account(server, "alerts").await;
    let billing = account(server, "billing").await;
    assert_eq!(alerts.port, 2525);
    assert!(alerts.is_default);
    let credential = get_credential(server, &alerts.credential).await;
    assert_eq!(credential.display_name, "relay-login");
    assert!(credential.has_secret, "the secret was sent from its file");
    let connector = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: billing.network_connector.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(connector.display_name, "dmz");
    assert_eq!(connector.description, "relays in the DMZ");

    // A second run changes nothing.
    let out = apply_ok(server, &["apply", "-f", &path]).await;
    assert!(out.contains("No changes"), "{out}");
    assert!(out.contains("= account \"alerts\": unchanged"), "{out}");
    assert_eq!(account(server, "alerts").await.etag, alerts.etag);

    // A changed field is an update with its diff; the secret is not sent again.
    let path = files.write("mailplane.yaml", &files.desired(2526, true));
    let out = apply_ok(server, &["apply", "-f", &path, "--dry-run"]).await;
    assert!(out.contains("~ account \"alerts\": update"), "{out}");
    assert!(out.contains("port: \"2525\" -> \"2526\""), "{out}");
    assert!(out.contains("Plan: 0 to create, 1 to update"), "{out}");
    apply_ok(server, &["apply", "-f", &path]).await;
    assert_eq!(account(server, "alerts").await.port, 2526);

    // A new destination needs the secret again: it is sent from its file, and shown so.
    let widened = files.desired(2526, true).replace(
        "[smtp.example.com]",
        "[smtp.example.com, smtp2.example.com]",
    );
    let path = files.write("mailplane.yaml", &widened);
    let before = get_credential(server, &alerts.credential).await;
    let out = apply_ok(server, &["apply", "-f", &path]).await;
    assert!(
        out.contains("~ credential \"relay-login\": update"),
        "{out}"
    );
    assert!(out.contains("allowed_destinations:"), "{out}");
    assert!(
        out.contains(&format!(
            "secret from {} (sent, never shown)",
            files.secret_path()
        )),
        "{out}"
    );
    let after = get_credential(server, &alerts.credential).await;
    assert_eq!(
        after.allowed_destinations,
        ["smtp.example.com", "smtp2.example.com"]
    );
    assert_ne!(after.secret_update_time, before.secret_update_time);

    // The export keeps the secret's reference, not the secret, and applies back unchanged.
    let exported = apply_ok(server, &["export", "-o", "yaml"]).await;
    assert!(
        exported.contains("secret_env: MAILPLANE_SECRET_RELAY_LOGIN"),
        "{exported}"
    );
    let path = files.write("exported.yaml", &exported);
    let out = apply_ok(server, &["apply", "-f", &path, "--dry-run", "--prune"]).await;
    assert!(out.contains("No changes"), "{out}");
    assert!(
        out.contains("Plan: 0 to create, 0 to update, 0 to delete, 4 unchanged"),
        "{out}"
    );

    // The plan for programs.
    let json = apply_ok(server, &["apply", "-f", &path, "-o", "json"]).await;
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(plan["unchanged"], 4, "{json}");
}

async fn pruning(server: &TestServer) {
    // What was there before the file: the default account and a connector.
    let mut client = server.accounts();
    mailplane_tests::create_account(&mut client, mailplane_tests::account("legacy")).await;
    server.create_connector("old-dmz").await;
    let files = Files::new();

    // --prune would delete the default while the file's accounts remain, and the file names no
    // default: refused before anything is written.
    let path = files.write("no-default.yaml", &files.desired(587, false));
    let err = mailplane(server, &["apply", "-f", &path, "--prune"])
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::File(_)), "{err}");
    assert!(
        err.to_string().contains("default account \"legacy\""),
        "{err}"
    );
    assert_eq!(accounts(server).await.len(), 1, "nothing was written");

    // Without --prune, what the file lacks is kept and reported.
    let path = files.write("mailplane.yaml", &files.desired(587, true));
    let out = apply_ok(server, &["apply", "-f", &path]).await;
    assert!(
        out.contains("? account \"legacy\": not in the file (kept; --prune deletes it)"),
        "{out}"
    );
    assert!(
        out.contains("? connector \"old-dmz\": not in the file"),
        "{out}"
    );
    assert_eq!(accounts(server).await.len(), 3);
    assert!(account(server, "alerts").await.is_default, "the flag moved");

    // With --prune they go, accounts before the connectors.
    let out = apply_ok(server, &["apply", "-f", &path, "--prune", "--dry-run"]).await;
    assert!(out.contains("- account \"legacy\": delete"), "{out}");
    assert!(out.contains("- connector \"old-dmz\": delete"), "{out}");
    let out = apply_ok(server, &["apply", "-f", &path, "--prune"]).await;
    assert!(out.contains("Applied 2 changes."), "{out}");
    let names: Vec<String> = accounts(server)
        .await
        .into_iter()
        .map(|a| a.account_name)
        .collect();
    assert_eq!(names, ["alerts", "billing"]);
    let connectors = server
        .connectors()
        .list_connectors(pb::ListConnectorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connectors;
    assert_eq!(connectors.len(), 1);
    assert_eq!(connectors[0].display_name, "dmz");
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in the file"))
        + 1
}

async fn errors_are_reported_by_line_and_change_nothing(server: &TestServer) {
    let files = Files::new();
    let text = "version: 1
credentials:
  - display_name: inline
    username: a@example.com
    allowed_destinations: [smtp.example.com]
    secret: hunter2
  - display_name: unreadable
    username: b@example.com
    allowed_destinations: [smtp.example.com]
    secret_file: /nonexistent/mailplane/secret
accounts:
  - account_name: alerts
    sender_email: not-an-address
    host: smtp.example.com
  - account_name: billing
    sender_email: billing@example.com
    host: smtp.example.com
    use_authentication: true
    credential: nowhere
  - account_name: ALERTS
    sender_email: alerts@example.com
    host: smtp.example.com
";
    let path = files.write("broken.yaml", text);
    let err = mailplane(server, &["apply", "-f", &path, "--dry-run"])
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, CliError::File(_)), "{message}");
    assert!(
        message.contains("5 problems; nothing was changed"),
        "{message}"
    );
    for (needle, says) in [
        ("secret: hunter2", "secret is never read from the file"),
        (
            "secret_file: /nonexistent",
            "cannot read /nonexistent/mailplane/secret",
        ),
        ("sender_email: not-an-address", "sender_email"),
        (
            "credential: nowhere",
            "credential \"nowhere\" is neither in the file",
        ),
        ("account_name: ALERTS", "\"ALERTS\" is given twice"),
    ] {
        let expected = format!("{path}:{}: ", line_of(text, needle));
        let line = message
            .lines()
            .find(|l| l.contains(says))
            .unwrap_or_else(|| panic!("{says:?} in:\n{message}"));
        assert!(line.contains(&expected), "{expected:?} in {line:?}");
    }
    assert!(!message.contains("hunter2"), "{message}");

    // A type error is reported at its line by the YAML parser.
    let text = "accounts:\n  - account_name: a\n    sender_email: a@example.com\n    host: h.example.com\n    port: many\n";
    let path = files.write("typed.yaml", text);
    let err = mailplane(server, &["apply", "-f", &path])
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("{path}:5: ")), "{err}");
    // So is a key the format does not have.
    let text = "accounts:\n  - account_name: a\n    sender_email: a@example.com\n    hots: h.example.com\n";
    let path = files.write("unknown.yaml", text);
    let err = mailplane(server, &["apply", "-f", &path])
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&format!("{path}:4: ")), "{message}");
    assert!(message.contains("unknown field `hots`"), "{message}");

    // An empty file (an empty pipe, the wrong file) is refused, even without --prune.
    let path = files.write("empty.yaml", "# nothing here\n\n");
    let err = mailplane(server, &["apply", "-f", &path, "--prune"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the file is empty"), "{err}");

    assert!(accounts(server).await.is_empty(), "nothing was written");
    let credentials = server
        .credentials()
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .credentials;
    assert!(credentials.is_empty(), "nothing was written");
}

async fn a_concurrent_edit_stops_the_run(server: &TestServer) {
    let files = Files::new();
    let path = files.write("mailplane.yaml", &files.desired(2525, true));
    apply_ok(server, &["apply", "-f", &path]).await;

    // The plan reads the account's etag; someone edits it before the plan runs.
    let text = files.desired(2600, true);
    let plan = apply::prepare(&server.channel, "mailplane.yaml", &text, Options::default())
        .await
        .unwrap();
    let alerts = account(server, "alerts").await;
    server
        .accounts()
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                footer_text: "edited meanwhile".into(),
                ..alerts.clone()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["footer_text".into()],
            }),
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let err = apply::execute::execute(&server.channel, &plan, &mut out)
        .await
        .unwrap_err();
    let message = err.to_string();
    match &err {
        CliError::Apply {
            what,
            applied,
            status,
        } => {
            assert_eq!(status.code(), tonic::Code::Aborted, "{message}");
            assert!(what.contains("account \"alerts\""), "{message}");
            assert!(what.contains(&alerts.name), "{message}");
            assert_eq!(*applied, 0);
        }
        other => panic!("not an apply error: {other}"),
    }
    let now = account(server, "alerts").await;
    assert_eq!(now.port, 2525, "the stale update was not written");
    assert_eq!(now.footer_text, "edited meanwhile");
}

async fn secrets_rotate_on_request_and_the_file_may_come_from_stdin(server: &TestServer) {
    let files = Files::new();
    let text = files.desired(2525, true);
    // `-f -` reads the file from standard input.
    let out = super::cli::mailplane_with_stdin(server, &["apply", "-f", "-"], text.as_bytes())
        .await
        .unwrap();
    assert!(out.contains("Applied 4 changes."), "{out}");
    let alerts = account(server, "alerts").await;
    let before = get_credential(server, &alerts.credential).await;
    // Nothing changed, so nothing is sent, unless a rotation is asked for.
    let path = files.write("mailplane.yaml", &text);
    let out = apply_ok(server, &["apply", "-f", &path]).await;
    assert!(out.contains("No changes"), "{out}");
    std::fs::write(files.dir.path().join("relay.secret"), "a-new-secret\n").unwrap();
    let out = apply_ok(server, &["apply", "-f", &path, "--rotate-secrets"]).await;
    assert!(
        out.contains("~ credential \"relay-login\": update"),
        "{out}"
    );
    assert!(out.contains("(sent, never shown)"), "{out}");
    assert!(!out.contains("a-new-secret"), "{out}");
    let after = get_credential(server, &alerts.credential).await;
    assert_ne!(after.secret_update_time, before.secret_update_time);
    assert_ne!(after.etag, before.etag, "the credential changed");
    // A rotation whose secret cannot be read changes nothing.
    std::fs::remove_file(files.dir.path().join("relay.secret")).unwrap();
    let err = mailplane(server, &["apply", "-f", &path, "--rotate-secrets"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    assert_eq!(
        get_credential(server, &alerts.credential).await.etag,
        after.etag
    );
}

mailplane_tests::both_backends!(
    secrets_rotate_on_request_and_the_file_may_come_from_stdin,
    plan_apply_reapply_and_export,
    pruning,
    errors_are_reported_by_line_and_change_nothing,
    a_concurrent_edit_stops_the_run,
);
