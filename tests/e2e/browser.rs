//! The web console in a real browser: Debian's chromium driven by Playwright
//! (`tests/browser/console.mjs`, playwright-core with `executablePath=/usr/bin/chromium`, and
//! axe-core), against a running server with the console on, and the real Postfix behind it.

use crate::console::token;
use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, SmtpFixtures, TestServer};
use std::path::PathBuf;
use std::process::Stdio;

/// The browser suite's folder; its npm packages must be installed (`.ci/services.sh` does).
fn suite() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser tests' packages are missing: run `npm ci --prefix {}` (and install \
         Debian's chromium: `apt-get install chromium`), as .ci/services.sh does",
        dir.display()
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: `apt-get install chromium` (.ci/services.sh installs it)"
    );
    dir
}

/// Runs the scenarios; returns their JSON lines. Panics with the failing scenario's detail.
async fn run_scenarios(envs: Vec<(&str, String)>) -> Vec<serde_json::Value> {
    let dir = suite();
    let envs: Vec<(String, String)> = envs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    // The browser talks to the server this runtime serves: wait for it off the runtime.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(dir.join("console.mjs"))
            .envs(envs)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .unwrap()
    .expect("node runs (Debian's nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        out.status.success(),
        "a browser scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let fx = SmtpFixtures::load();
    let ca = std::fs::read(fx.var("SMTP_CA")).expect("fixture CA");
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.ui_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.extra_ca_pem = Some(ca);
    })
    .await;
    let url = format!("http://{}", server.ui_addr.expect("the console listens"));
    let viewer = token(&server, "console viewer", pb::Role::Viewer).await;
    // The report's hundred accounts (the first one is the default).
    let mut accounts = server.accounts();
    for n in 1..=100 {
        mailplane_tests::create_account(
            &mut accounts,
            mailplane_tests::account(&format!("Bulk {n:03}")),
        )
        .await;
    }
    // Screenshots go to a temporary folder, or to MAILPLANE_SCREENSHOTS (docs/screenshots to
    // refresh the README's).
    let shots = tempfile::tempdir().unwrap();
    let shots_dir = std::env::var("MAILPLANE_SCREENSHOTS")
        .unwrap_or_else(|_| shots.path().display().to_string());
    // A relay that accepts connections and never greets: the test window mid-run.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mut held = tokio::task::JoinSet::new();
    held.spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    mailplane_tests::create_account(
        &mut accounts,
        pb::SmtpAccount {
            host: "127.0.0.1".into(),
            port: silent_port.into(),
            security: pb::SecurityMode::None.into(),
            ..mailplane_tests::account("Silent relay")
        },
    )
    .await;
    let rcpt = format!("console-{:08x}@mailplane.test", rand::random::<u32>());
    let sent_to = rcpt.clone();
    let rcpt_pt = format!("console-pt-{:08x}@mailplane.test", rand::random::<u32>());
    let sent_to_pt = rcpt_pt.clone();
    let results = run_scenarios(vec![
        ("CONSOLE_URL", url),
        ("ADMIN_TOKEN", server.admin_token.clone()),
        ("VIEWER_TOKEN", viewer),
        ("SMTP_HOST", fx.var("SMTP_HOST")),
        ("SMTP_PORT", fx.var("SMTP_PORT_PLAIN")),
        ("RCPT", rcpt),
        ("RCPT_PT", rcpt_pt),
        ("SCREENSHOTS", shots_dir),
    ])
    .await;
    for r in &results {
        eprintln!("{r}");
    }
    let ran: Vec<&str> = results
        .iter()
        .filter_map(|r| r["scenario"].as_str())
        .collect();
    for wanted in [
        "sign_in",
        "csrf",
        "pt_br",
        "create_account",
        "report_paging",
        "download_csv",
        "test_window",
        "test_window_mid_run",
        "pt_br_accounts",
        "viewer",
        "stale_edit",
        "csrf_forms",
        "keyboard",
        "axe_pages",
        "axe_sign_in",
    ] {
        assert!(ran.contains(&wanted), "{wanted} ran: {results:?}");
    }
    assert!(results.iter().all(|r| r["ok"] == true), "{results:?}");

    held.shutdown().await;
    // The Test Email window's message reached Postfix's Maildir.
    let delivered = fx.delivered(&sent_to).await;
    assert!(delivered.contains("TEST MESSAGE!"), "{delivered}");
    // And the one sent from the Portuguese window.
    fx.delivered(&sent_to_pt).await;

    // The sign-ins are in the audit log: the admin's, from the browser's address, and the
    // refused one with the wrong token.
    let events = pb::audit_service_client::AuditServiceClient::new(server.channel.clone())
        .list_events(pb::ListEventsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let sign_ins: Vec<_> = events
        .iter()
        .filter(|e| e.rpc == "console/SignIn")
        .collect();
    assert!(
        sign_ins.iter().any(|e| e.outcome == "ok"
            && e.actor.starts_with("tokens/1 ")
            && e.peer == "127.0.0.1"),
        "a successful sign-in event: {sign_ins:?}"
    );
    assert!(
        sign_ins.iter().any(|e| e.outcome == "denied"),
        "a refused sign-in event: {sign_ins:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.rpc == "console/SignOut" && e.outcome == "ok"),
        "the sign-out is recorded"
    );
}
