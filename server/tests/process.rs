//! The `mailplane` binary as an operator runs it: serve, CLI calls, SIGTERM, and start-up
//! failures that exit non-zero with a message.

// Helpers of integration tests are not `#[test]` functions, so clippy's test allowances do not
// reach them; a panic is how a test reports, and every spawned server is waited for or killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::zombie_processes)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

mod support;

use support::{BIN, admin_token, cli, fixtures, serve};

#[test]
fn serve_cli_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) = serve(dir.path(), &["--log-level", "debug"]);
    let token = admin_token(dir.path());
    let ca = dir.path().join("ca.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the first admin token is written 0600");
    let out = cli(&addr, "", &ca, &["accounts", "list"], None);
    assert!(!out.status.success(), "no token, no access");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
    // The API speaks TLS by default: a plaintext client gets nowhere.
    let out = cli(
        &addr,
        &token,
        &ca,
        &["--insecure-plaintext", "accounts", "list"],
        None,
    );
    assert!(!out.status.success(), "plaintext is refused when TLS is on");
    // The embedded database serves one process: a second server on it is refused, clearly.
    let second = Command::new(BIN)
        .args([
            "serve",
            "--ui",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second server on one SQLite file"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("in use by another mailplane server")
            && err.contains(&format!("pid {}", child.id()))
            && err.contains("PostgreSQL"),
        "{err}"
    );
    let info = Command::new(BIN)
        .args(["server", "info", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(
        info.contains("CA SHA-256") && info.contains("ca.pem"),
        "{info}"
    );
    // Pinning the CA's fingerprint works instead of the CA file; a wrong pin does not.
    let fingerprint = info
        .lines()
        .find_map(|l| l.strip_prefix("CA SHA-256"))
        .unwrap()
        .trim()
        .to_owned();
    let pinned = |pin: &str| {
        Command::new(BIN)
            .args([
                "--server",
                &addr,
                "--tls-fingerprint",
                pin,
                "accounts",
                "list",
            ])
            .env("MAILPLANE_TOKEN", &token)
            .env_remove("MAILPLANE_CACERT")
            .output()
            .unwrap()
    };
    let out = pinned(&fingerprint);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !pinned(&"ab".repeat(32)).status.success(),
        "a wrong pin is refused"
    );
    let secret = "piped-secret-0d5e9b";

    let out = cli(
        &addr,
        &token,
        &ca,
        &[
            "credentials",
            "create",
            "--display-name",
            "Relay",
            "--username",
            "u",
            "--allow-destination",
            "smtp.example.com",
        ],
        Some(&format!("{secret}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("has_secret") && !stdout.contains(secret),
        "{stdout}"
    );

    let out = cli(
        &addr,
        &token,
        &ca,
        &[
            "accounts",
            "create",
            "--name",
            "Alerts",
            "--sender",
            "alerts@example.com",
            "--host",
            "smtp.example.com",
            "--credential",
            "1",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&addr, &token, &ca, &["accounts", "list", "-o", "csv"], None);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().lines().count() == 2);

    let out = cli(&addr, &token, &ca, &["accounts", "get", "42"], None);
    assert!(!out.status.success(), "an error exits non-zero");
    assert!(String::from_utf8_lossy(&out.stderr).contains("accounts/42 not found"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean exit: {exit:?}");
    let rest: Vec<String> = logs.iter().collect();
    let all = rest.join("\n");
    assert!(
        all.contains("SIGTERM received") && all.contains("stopped"),
        "{all}"
    );
    assert!(
        !all.contains(secret),
        "the secret is in no log line, even at debug level"
    );
}

#[test]
fn startup_failures_exit_non_zero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--ui",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--database-url",
            "mysql://u:pw@h/db",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unsupported database URL") && !err.contains(":pw@"),
        "{err}"
    );

    let config = dir.path().join("mailplane.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_port = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listen_port"),
        "unknown keys are named"
    );

    let key = dir.path().join("mailplane.key");
    std::fs::write(&key, "not a key").unwrap();
    // Readable by others: refused first, with the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--ui",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--ui",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed"));
}

/// A whole run through the real binary, at debug level, against Postfix with AUTH: the secret
/// must appear nowhere — not in a log line, the CLI's output, the transcript or the database.
#[test]
fn accounts_test_through_postfix_leaks_no_secret() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) = serve(
        dir.path(),
        &["--log-level", "trace", "--smtp-extra-ca", &fx["SMTP_CA"]],
    );
    let secret = &fx["SMTP_PASSWORD"];
    let token = admin_token(dir.path());
    let ca = dir.path().join("ca.pem");
    let out = cli(
        &addr,
        &token,
        &ca,
        &[
            "credentials",
            "create",
            "--display-name",
            "Fixture",
            "--username",
            &fx["SMTP_USER"],
            "--allow-destination",
            "localhost",
        ],
        Some(secret),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = &fx["SMTP_PORT_SUBMISSION"];
    let out = cli(
        &addr,
        &token,
        &ca,
        &[
            "accounts",
            "create",
            "--name",
            "Relay",
            "--sender",
            "alerts@mailplane.test",
            "--host",
            "localhost",
            "--port",
            port,
            "--security",
            "starttls-required",
            "--credential",
            "1",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rcpt = format!("cli-{}@mailplane.test", std::process::id());
    let out = cli(
        &addr,
        &token,
        &ca,
        &["accounts", "test", "1", "--to", &rcpt],
        None,
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the test succeeds and exits 0: {shown} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("AUTH") && shown.contains("SUCCEEDED"),
        "{shown}"
    );
    let json = cli(
        &addr,
        &token,
        &ca,
        &["tests", "get", "accounts/1/tests/1", "-o", "json"],
        None,
    );
    let transcript = String::from_utf8_lossy(&json.stdout).into_owned();
    assert!(
        transcript.contains("<redacted>"),
        "AUTH is shown redacted: {transcript}"
    );

    // A failing test exits non-zero with the verdict.
    let out = cli(
        &addr,
        &token,
        &ca,
        &[
            "accounts",
            "update",
            "1",
            "--port",
            &fx["SMTP_PORT_EXPIRED"],
        ],
        None,
    );
    assert!(out.status.success());
    let out = cli(
        &addr,
        &token,
        &ca,
        &[
            "accounts",
            "test",
            "1",
            "--to",
            &rcpt,
            "--stop-after",
            "tls",
        ],
        None,
    );
    assert!(!out.status.success(), "a failed test exits non-zero");
    let verdict = String::from_utf8_lossy(&out.stdout);
    assert!(
        verdict.contains("CERTIFICATE_EXPIRED") && verdict.contains("hint:"),
        "{verdict}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let all_logs: Vec<String> = logs.iter().collect();
    assert!(all_logs.len() > 10, "debug logs were captured");
    let mut haystacks = vec![
        ("logs", all_logs.join("\n").into_bytes()),
        ("CLI output", shown.into_bytes()),
        ("transcript", transcript.into_bytes()),
    ];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("mailplane.db"))
        {
            haystacks.push(("database", std::fs::read(&path).unwrap()));
        }
    }
    for (what, bytes) in haystacks {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret appears in the {what}"
        );
    }
}
