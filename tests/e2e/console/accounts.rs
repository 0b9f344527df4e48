//! The accounts screens over real HTTP: the settings form's field errors, the report's search,
//! paging and CSV download, what a viewer sees and may do, CSRF, etag conflicts, and the test
//! window's run page and event stream.

use super::http::{Browser, Response, attr_of, count, encode, input_value};
use super::listed;
use mailplane_proto::v1 as pb;
use mailplane_tests::{Backend, TestServer, account, create_account};

pub(super) async fn console() -> (TestServer, Browser) {
    let server = TestServer::start_configured(Backend::Sqlite, |c| {
        c.ui_listen = Some("127.0.0.1:0".parse().unwrap());
        // A relay that never greets gives up soon (the running-test page's test).
        c.smtp.timeouts.banner = std::time::Duration::from_secs(3);
    })
    .await;
    let mut browser = Browser::new(server.ui_addr.expect("the console is served"));
    browser.sign_in(&server.admin_token.clone()).await;
    (server, browser)
}

async fn accounts(server: &TestServer) -> Vec<pb::SmtpAccount> {
    let mut api = server.accounts();
    let request = pb::ListAccountsRequest {
        page_size: 500,
        ..Default::default()
    };
    listed(api.list_accounts(request), |r| r.accounts).await
}

async fn viewer_token(server: &TestServer) -> String {
    super::token(server, "auditor", pb::Role::Viewer).await
}

fn new_account_form<'a>(csrf: &'a str, sender: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("etag", ""),
        ("account_name", "Alerts"),
        ("enabled", "on"),
        ("sender_email", sender),
        ("host", "smtp.example.com"),
        ("port", "587"),
        ("security", "starttls_required"),
        ("auth_mechanism", "0"),
        ("credential", ""),
        ("network_connector", ""),
        ("footer_text", ""),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_error_shows_next_to_its_field_and_creates_nothing() {
    let (server, mut b) = console().await;
    let page = b.get("/accounts/new").await;
    assert_eq!(page.status, 200);
    for id in [
        "section-account",
        "section-server",
        "advanced",
        "preset-picker",
    ] {
        assert!(page.body.contains(&format!("data-testid=\"{id}\"")), "{id}");
    }
    let csrf = input_value(&page.body, "csrf").unwrap();

    // Without the CSRF token: refused, nothing created.
    let mut forged = new_account_form("", "alerts@example.com");
    forged.retain(|(k, _)| *k != "csrf");
    let refused = b.post("/accounts/new", &forged).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(accounts(&server).await.is_empty());

    // A bad sender: the API's message under the sender field, the values kept.
    let bad = b
        .post("/accounts/new", &new_account_form(&csrf, "not-an-address"))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("data-testid=\"error-sender_email\""),
        "{}",
        bad.body
    );
    assert_eq!(
        attr_of(&bad.body, "id=\"sender_email\"", "aria-invalid").as_deref(),
        Some("true")
    );
    assert_eq!(
        attr_of(&bad.body, "id=\"sender_email\"", "aria-describedby").as_deref(),
        Some("sender_email-error")
    );
    assert_eq!(
        input_value(&bad.body, "account_name").as_deref(),
        Some("Alerts")
    );
    assert_eq!(
        input_value(&bad.body, "sender_email").as_deref(),
        Some("not-an-address")
    );
    assert!(
        bad.body
            .contains("<a href=\"#sender_email\">Sender e-mail</a>"),
        "the summary links to the field by its label: {}",
        bad.body
    );
    assert!(accounts(&server).await.is_empty(), "nothing was created");

    // Fixed: created, back to the report.
    let good = b
        .post(
            "/accounts/new",
            &new_account_form(&csrf, "alerts@example.com"),
        )
        .await;
    assert_eq!(good.status, 303, "{}", good.body);
    let all = accounts(&server).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].sender_email, "alerts@example.com");
    let report = b.get("/accounts").await;
    assert!(report.body.contains("alerts@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_searches_pages_and_downloads_with_the_filter_in_the_url() {
    let (server, mut b) = console().await;
    let mut api = server.accounts();
    for i in 0..100 {
        create_account(&mut api, account(&format!("Page {i:03}"))).await;
    }
    create_account(&mut api, account("Other")).await;

    // Page through "Page": 30, 30, 30, 10, the filter in every next link.
    let mut url = format!("/accounts?name={}", encode("Page"));
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let page = b.get(&url).await;
        assert_eq!(page.status, 200, "{url}: {}", page.body);
        pages += 1;
        let n = count(&page.body, "data-testid=\"account-row\"");
        rows.push(n);
        assert!(
            !page.body.contains(">Other<"),
            "the filter holds on page {pages}"
        );
        if pages > 1 {
            let prev = attr_of(&page.body, "data-testid=\"prev\"", "href").unwrap();
            assert!(prev.contains("name=Page"), "{prev}");
        }
        match attr_of(&page.body, "data-testid=\"next\"", "href") {
            Some(next) => {
                assert!(next.contains("name=Page"), "{next}");
                assert!(next.contains("page="), "{next}");
                url = next;
            }
            None => break,
        }
    }
    assert_eq!(rows, [30, 30, 30, 10]);

    // Back from page 2 is page 1.
    let first = b.get(&format!("/accounts?name={}", encode("Page"))).await;
    let second_url = attr_of(&first.body, "data-testid=\"next\"", "href").unwrap();
    let second = b.get(&second_url).await;
    let prev = attr_of(&second.body, "data-testid=\"prev\"", "href").unwrap();
    let back = b.get(&prev).await;
    assert!(back.body.contains(">Page 000<"), "{prev}");

    // A narrower search, and its download.
    let narrow = b
        .get(&format!("/accounts?name={}", encode("Page 05")))
        .await;
    assert_eq!(count(&narrow.body, "data-testid=\"account-row\""), 10);
    let csv_link = attr_of(&narrow.body, "data-testid=\"download-csv\"", "href").unwrap();
    assert!(csv_link.starts_with("/accounts/export.csv?"), "{csv_link}");
    let csv = b.get(&csv_link).await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.header("content-disposition")
            .unwrap()
            .starts_with("attachment"),
        "{:?}",
        csv.headers
    );
    let lines: Vec<&str> = csv.body.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 11, "a header and ten rows: {}", csv.body);
    assert!(
        lines[1..].iter().all(|l| l.contains("Page 05")),
        "{}",
        csv.body
    );

    // The code: one account; a code that is not a number says so, next to the field.
    let one = b.get("/accounts?code=7").await;
    assert_eq!(count(&one.body, "data-testid=\"account-row\""), 1);
    assert!(one.body.contains(">Page 006<"));
    let bad = b.get("/accounts?code=seven").await;
    assert_eq!(bad.status, 200);
    assert!(bad.body.contains("data-testid=\"error-code\""));
    assert_eq!(count(&bad.body, "data-testid=\"account-row\""), 0);

    // The print view: every row of the filter, no forms.
    let print = b
        .get(&format!("/accounts?name={}&print=1", encode("Page")))
        .await;
    assert_eq!(count(&print.body, "data-testid=\"account-row\""), 100);
    assert!(!print.body.contains("data-testid=\"search\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_edit_and_a_forged_post_changes_nothing() {
    let (server, mut admin) = console().await;
    let mut api = server.accounts();
    let first = create_account(&mut api, account("First")).await;
    let second = create_account(&mut api, account("Second")).await;
    assert!(
        admin
            .get("/accounts")
            .await
            .body
            .contains("data-testid=\"edit\"")
    );

    let mut viewer = Browser::new(server.ui_addr.unwrap());
    viewer.sign_in(&viewer_token(&server).await).await;
    let report = viewer.get("/accounts").await;
    assert_eq!(report.status, 200);
    assert_eq!(count(&report.body, "data-testid=\"account-row\""), 2);
    for hidden in ["edit", "set-default", "delete", "new-account"] {
        assert!(
            !report.body.contains(&format!("data-testid=\"{hidden}\"")),
            "a viewer sees no {hidden}"
        );
    }
    let csrf = input_value(&report.body, "csrf").expect("the sign-out form's csrf");

    let id = second.id.to_string();
    let forged = viewer
        .post(
            &format!("/accounts/{id}/edit"),
            &[
                ("csrf", &csrf),
                ("etag", &second.etag),
                ("account_name", "Hijacked"),
                ("sender_email", "evil@example.com"),
                ("host", "evil.example.com"),
                ("port", "25"),
                ("security", "none"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let default = viewer
        .post(&format!("/accounts/{id}/default"), &[("csrf", &csrf)])
        .await;
    assert_eq!(default.status, 403);
    let delete = viewer
        .post(
            &format!("/accounts/{}/delete", first.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(delete.status, 403);
    assert_eq!(
        viewer.get(&format!("/accounts/{id}/edit")).await.status,
        403
    );

    let after = accounts(&server).await;
    assert_eq!(after.len(), 2, "nothing deleted");
    assert_eq!(after[1].account_name, "Second");
    assert_eq!(after[1].etag, second.etag, "nothing changed");
    assert!(after[0].is_default && !after[1].is_default);

    // The admin's POST without the token is refused too.
    let no_csrf = admin.post(&format!("/accounts/{id}/default"), &[]).await;
    assert_eq!(no_csrf.status, 403);
    assert!(!accounts(&server).await[1].is_default);
}

/// Posts the edit of account "Shared" at `url` with the host `mine.example.com`: `[csrf, etag,
/// sender, charset]`, and the footer if given.
async fn post_edit(
    b: &mut Browser,
    url: &str,
    [csrf, etag, sender, charset]: [&str; 4],
    footer: Option<&str>,
) -> Response {
    let mut form = vec![
        ("csrf", csrf),
        ("etag", etag),
        ("account_name", "Shared"),
        ("enabled", "on"),
        ("sender_email", sender),
        ("host", "mine.example.com"),
        ("port", "587"),
        ("security", "starttls_required"),
        ("auth_mechanism", "0"),
        ("charset", charset),
    ];
    if let Some(footer) = footer {
        form.push(("footer_text", footer));
    }
    b.post(url, &form).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_edit_conflicts_and_keeps_the_input() {
    let (server, mut b) = console().await;
    let mut api = server.accounts();
    let acct = create_account(&mut api, account("Shared")).await;
    let url = format!("/accounts/{}/edit", acct.id);
    let page = b.get(&url).await;
    assert_eq!(page.status, 200);
    let csrf = input_value(&page.body, "csrf").unwrap();
    let etag = input_value(&page.body, "etag").unwrap();
    assert_eq!(etag, acct.etag);

    // Someone else changes it through the API.
    api.update_account(pb::UpdateAccountRequest {
        account: Some(pb::SmtpAccount {
            name: acct.name.clone(),
            footer_text: "theirs".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["footer_text".into()],
        }),
    })
    .await
    .unwrap();

    let stale = post_edit(
        &mut b,
        &url,
        [&csrf, &etag, &acct.sender_email, &acct.charset],
        None,
    )
    .await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert!(stale.body.contains("data-testid=\"conflict\""));
    assert_eq!(
        attr_of(&stale.body, "data-testid=\"reload\"", "href").as_deref(),
        Some(url.as_str())
    );
    assert_eq!(
        input_value(&stale.body, "host").as_deref(),
        Some("mine.example.com"),
        "the user's input is kept"
    );
    let now = &accounts(&server).await[0];
    assert_eq!(now.host, acct.host, "the stale edit changed nothing");
    assert_eq!(now.footer_text, "theirs");

    // With the fresh etag, the edit goes through.
    let fresh = b.get(&url).await;
    let etag = input_value(&fresh.body, "etag").unwrap();
    let charset = input_value(&fresh.body, "charset").unwrap_or_default();
    let footer = "theirs";
    let ok = post_edit(
        &mut b,
        &url,
        [&csrf, &etag, &acct.sender_email, &charset],
        Some(footer),
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(accounts(&server).await[0].host, "mine.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preset_fills_the_server_section_without_script() {
    let (_server, mut b) = console().await;
    let page = b.get("/accounts/new?preset=sendgrid").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        input_value(&page.body, "host").as_deref(),
        Some("smtp.sendgrid.net")
    );
    assert_eq!(input_value(&page.body, "port").as_deref(), Some("587"));
    assert!(page.body.contains("data-testid=\"preset-applied\""));
    assert!(page.body.contains("apikey"), "the fixed user name is told");

    // A preset with a placeholder needs its value.
    let missing = b.get("/accounts/new?preset=amazon-ses").await;
    assert!(
        missing.body.contains("data-testid=\"preset-error\""),
        "{}",
        missing.body
    );
    let filled = b
        .get("/accounts/new?preset=amazon-ses&ph_region=eu-west-1")
        .await;
    assert_eq!(
        input_value(&filled.body, "host").as_deref(),
        Some("email-smtp.eu-west-1.amazonaws.com"),
        "{}",
        filled.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_default_and_delete_through_the_confirmation_page() {
    let (server, mut b) = console().await;
    let mut api = server.accounts();
    let first = create_account(&mut api, account("First")).await;
    let second = create_account(&mut api, account("Second")).await;
    let report = b.get("/accounts").await;
    let csrf = input_value(&report.body, "csrf").unwrap();
    assert_eq!(
        count(&report.body, "data-testid=\"set-default\""),
        1,
        "only the account that is not the default offers it"
    );
    let set = b
        .post(
            &format!("/accounts/{}/default", second.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(set.status, 303);
    assert!(accounts(&server).await[1].is_default);

    let confirm = b.get(&format!("/accounts/{}/delete", first.id)).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("First"));
    let etag = input_value(&confirm.body, "etag").unwrap();
    // Deleting through the page: a POST with the token and the etag shown.
    let deleted = b
        .post(
            &format!("/accounts/{}/delete", first.id),
            &[("csrf", &csrf), ("etag", &etag)],
        )
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    let left = accounts(&server).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, second.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screens_speak_brazilian_portuguese() {
    let (server, mut b) = console().await;
    b.accept_language = "pt-BR,pt;q=0.9".into();
    let acct = create_account(&mut server.accounts(), account("Alertas")).await;
    let report = b.get("/accounts").await;
    assert!(
        report.body.contains("Testar configuração"),
        "{}",
        report.body
    );
    assert!(report.body.contains("Conta padrão"));
    let form = b.get(&format!("/accounts/{}/edit", acct.id)).await;
    assert!(form.body.contains("Configuração do servidor SMTP"));
    let window = b.get(&format!("/accounts/{}/test", acct.id)).await;
    assert_eq!(
        input_value(&window.body, "subject").as_deref(),
        Some("MENSAGEM DE TESTE!")
    );
    assert!(window.body.contains("Enviar para"));
}
