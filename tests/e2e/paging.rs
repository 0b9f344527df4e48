//! Listing like the accounts report: 30 per page, every search field, stable keyset paging,
//! and the CSV / JSON-lines download.

use mailplane_proto::v1 as pb;
use mailplane_tests::{TestServer, account, both_backends, create_account};
use std::collections::BTreeSet;
use tonic::Code;

both_backends!(
    paging_is_stable_over_a_changing_table,
    filters_match_each_search_field,
    export_csv_and_json_lines
);

/// Seeds `n` accounts; every third is disabled, every fifth has a Reply-To, and so on, so each
/// filter has a known answer.
async fn seed(server: &TestServer, n: usize) -> Vec<pb::SmtpAccount> {
    let mut c = server.accounts();
    let mut out = Vec::new();
    for i in 0..n {
        let msg = pb::SmtpAccount {
            account_name: format!("Acct-{i:03}{}", if i % 10 == 0 { " Billing" } else { "" }),
            sender_email: format!(
                "sender{i}@{}.example.com",
                if i % 2 == 0 { "even" } else { "odd" }
            ),
            reply_to_email: if i % 5 == 0 {
                format!("reply{i}@example.com")
            } else {
                String::new()
            },
            return_path_email: if i % 7 == 0 {
                format!("bounce{i}@example.com")
            } else {
                String::new()
            },
            confirmation_email: if i % 11 == 0 {
                format!("read{i}@example.com")
            } else {
                String::new()
            },
            enabled: Some(i % 3 != 1),
            ..account("unused")
        };
        out.push(create_account(&mut c, msg).await);
    }
    out
}

async fn list_all(
    server: &TestServer,
    filter: pb::AccountFilter,
    page_size: i32,
) -> Vec<pb::SmtpAccount> {
    let mut c = server.accounts();
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let page = c
            .list_accounts(pb::ListAccountsRequest {
                page_size,
                page_token: token,
                filter: Some(filter.clone()),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.len() <= usize::try_from(page_size.max(30)).unwrap());
        all.extend(page.accounts);
        token = page.next_page_token;
        if token.is_empty() {
            return all;
        }
    }
}

async fn paging_is_stable_over_a_changing_table(server: &TestServer) {
    let seeded = seed(server, 105).await;
    let mut c = server.accounts();
    let first = c
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.accounts.len(),
        30,
        "the report shows 30 per page by default"
    );
    assert!(!first.next_page_token.is_empty());

    // Page through while the table changes: rows deleted ahead of the cursor vanish, rows added
    // appear at the end, and no row is seen twice or skipped.
    let mut token = first.next_page_token.clone();
    let mut seen: Vec<i64> = first.accounts.iter().map(|a| a.id).collect();
    let deleted = seeded[50].name.clone();
    c.delete_account(pb::DeleteAccountRequest {
        name: deleted.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    let added = create_account(&mut c, account("Added-Late")).await;
    loop {
        let page = c
            .list_accounts(pb::ListAccountsRequest {
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.accounts.iter().map(|a| a.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no row is repeated");
    let expected: BTreeSet<i64> = seeded
        .iter()
        .filter(|a| a.name != deleted)
        .map(|a| a.id)
        .chain([added.id])
        .collect();
    assert_eq!(unique, expected, "no row is skipped");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "stable order by code");

    let big = c
        .list_accounts(pb::ListAccountsRequest {
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        big.accounts.len(),
        105,
        "page_size is capped at 500, which holds all 105"
    );

    let err = c
        .list_accounts(pb::ListAccountsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .list_accounts(pb::ListAccountsRequest {
            page_token: first.next_page_token.clone(),
            filter: Some(pb::AccountFilter {
                account_name: "billing".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a token is tied to its filter"
    );
    let err = c
        .list_accounts(pb::ListAccountsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn filters_match_each_search_field(server: &TestServer) {
    let seeded = seed(server, 100).await;
    let ids = |v: &[pb::SmtpAccount]| v.iter().map(|a| a.id).collect::<Vec<_>>();
    let expect = |pred: &dyn Fn(usize, &pb::SmtpAccount) -> bool| {
        seeded
            .iter()
            .enumerate()
            .filter(|(i, a)| pred(*i, a))
            .map(|(_, a)| a.id)
            .collect::<Vec<_>>()
    };
    let f = pb::AccountFilter::default;
    let cases: Vec<(&str, pb::AccountFilter, Vec<i64>)> = vec![
        (
            "code",
            pb::AccountFilter {
                id: seeded[42].id,
                ..f()
            },
            vec![seeded[42].id],
        ),
        (
            "name, any case",
            pb::AccountFilter {
                account_name: "bILLing".into(),
                ..f()
            },
            expect(&|i, _| i % 10 == 0),
        ),
        (
            "sender",
            pb::AccountFilter {
                sender_email: "@ODD.".into(),
                ..f()
            },
            expect(&|i, _| i % 2 == 1),
        ),
        (
            "reply-to",
            pb::AccountFilter {
                reply_to_email: "reply".into(),
                ..f()
            },
            expect(&|i, _| i % 5 == 0),
        ),
        (
            "return-path",
            pb::AccountFilter {
                return_path_email: "bounce".into(),
                ..f()
            },
            expect(&|i, _| i % 7 == 0),
        ),
        (
            "confirmation",
            pb::AccountFilter {
                confirmation_email: "read".into(),
                ..f()
            },
            expect(&|i, _| i % 11 == 0),
        ),
        (
            "enabled",
            pb::AccountFilter {
                status: pb::AccountStatusFilter::Enabled.into(),
                ..f()
            },
            expect(&|i, _| i % 3 != 1),
        ),
        (
            "disabled",
            pb::AccountFilter {
                status: pb::AccountStatusFilter::Disabled.into(),
                ..f()
            },
            expect(&|i, _| i % 3 == 1),
        ),
        (
            "any",
            pb::AccountFilter {
                status: pb::AccountStatusFilter::Any.into(),
                ..f()
            },
            expect(&|_, _| true),
        ),
        (
            "combined",
            pb::AccountFilter {
                sender_email: "even".into(),
                status: pb::AccountStatusFilter::Disabled.into(),
                ..f()
            },
            expect(&|i, _| i % 2 == 0 && i % 3 == 1),
        ),
        (
            "LIKE characters are literal",
            pb::AccountFilter {
                account_name: "%".into(),
                ..f()
            },
            vec![],
        ),
        (
            "underscore is literal",
            pb::AccountFilter {
                account_name: "_".into(),
                ..f()
            },
            vec![],
        ),
    ];
    for (what, filter, want) in cases {
        let got = list_all(server, filter, 30).await;
        assert_eq!(ids(&got), want, "filter {what}");
    }
    let err = server
        .accounts()
        .list_accounts(pb::ListAccountsRequest {
            filter: Some(pb::AccountFilter {
                sender_email: "a\r\nb".into(),
                ..f()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn export(
    server: &TestServer,
    filter: pb::AccountFilter,
    format: pb::ExportFormat,
) -> String {
    let mut stream = server
        .accounts()
        .export_accounts(pb::ExportAccountsRequest {
            filter: Some(filter),
            format: format.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend(chunk.data);
    }
    String::from_utf8(bytes).unwrap()
}

async fn export_csv_and_json_lines(server: &TestServer) {
    let seeded = seed(server, 30).await;
    let mut c = server.accounts();
    // More than one export batch, and a name that a spreadsheet would run as a formula.
    for i in 0..520 {
        create_account(&mut c, account(&format!("Bulk {i}"))).await;
    }
    create_account(&mut c, account("=HYPERLINK(1)")).await;

    let csv_text = export(server, pb::AccountFilter::default(), pb::ExportFormat::Csv).await;
    let lines: Vec<&str> = csv_text.lines().collect();
    assert_eq!(
        lines[0],
        "Code,Account name,Status,Sender e-mail,Reply-To,Return-Path,Confirmation e-mail,Default,Secure connection,Force settings,Read confirmation,Footer,Host,Port,Security"
    );
    assert_eq!(lines.len(), 1 + 30 + 520 + 1, "a header and every account");
    assert!(lines[1].starts_with(&format!("{},Acct-000 Billing,Enabled,sender0@even.example.com,reply0@example.com,bounce0@example.com,read0@example.com,Yes,Yes,No,No,No,smtp.example.com,587,STARTTLS_REQUIRED", seeded[0].id)), "{}", lines[1]);
    assert!(
        csv_text.contains(",'=HYPERLINK(1),"),
        "formula cells are neutralised"
    );

    let disabled = export(
        server,
        pb::AccountFilter {
            status: pb::AccountStatusFilter::Disabled.into(),
            ..Default::default()
        },
        pb::ExportFormat::Csv,
    )
    .await;
    assert_eq!(disabled.lines().count(), 1 + 10);
    assert!(disabled.lines().skip(1).all(|l| l.contains(",Disabled,")));

    let jsonl = export(
        server,
        pb::AccountFilter {
            account_name: "billing".into(),
            ..Default::default()
        },
        pb::ExportFormat::JsonLines,
    )
    .await;
    let objects: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[0]["account_name"], "Acct-000 Billing");
    assert_eq!(objects[0]["security"], "STARTTLS_REQUIRED");

    let empty = export(
        server,
        pb::AccountFilter {
            account_name: "no such account".into(),
            ..Default::default()
        },
        pb::ExportFormat::Csv,
    )
    .await;
    assert_eq!(
        empty.lines().count(),
        1,
        "an empty export still has its header"
    );
}
