//! Account CRUD, the default account and etags; validation is in [`validation`], and who may
//! allow AUTH in clear in [`plaintext_auth`].

mod plaintext_auth;
mod validation;

use mailplane_proto::v1 as pb;
use mailplane_tests::{TestServer, account, both_backends, create_account};
use tonic::Code;

both_backends!(
    create_get_and_defaults,
    default_account_rules,
    etag_conflicts_abort,
    update_with_mask_changes_only_named_fields,
    not_found_and_bad_names,
);

/// How many accounts exist.
pub(super) async fn count(server: &TestServer) -> usize {
    server
        .accounts()
        .list_accounts(pb::ListAccountsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .accounts
        .len()
}

async fn create_get_and_defaults(server: &TestServer) {
    let mut c = server.accounts();
    let created = create_account(&mut c, account("Alerts")).await;
    assert!(created.id > 0);
    assert_eq!(created.name, format!("accounts/{}", created.id));
    assert_eq!(created.enabled, Some(true), "enabled defaults to true");
    assert!(created.is_default, "the first account becomes the default");
    assert_eq!(
        created.security,
        i32::from(pb::SecurityMode::StarttlsRequired)
    );
    assert_eq!(created.port, 587, "port follows the security mode");
    assert_eq!(created.charset, "UTF-8");
    assert!(!created.etag.is_empty());
    assert!(created.create_time.is_some() && created.update_time.is_some());

    let implicit = create_account(
        &mut c,
        pb::SmtpAccount {
            security: pb::SecurityMode::ImplicitTls.into(),
            ..account("Ssl")
        },
    )
    .await;
    assert_eq!(implicit.port, 465);
    assert!(
        !implicit.is_default,
        "only the first account becomes default by itself"
    );

    let got = c
        .get_account(pb::GetAccountRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    let connector = server.create_connector("Datacenter B").await;
    let full = create_account(
        &mut c,
        pb::SmtpAccount {
            reply_to_email: "replies@example.com".into(),
            return_path_email: "bounces@example.com".into(),
            confirmation_email: "reads@example.com".into(),
            send_read_confirmation: true,
            force_settings: true,
            enable_footer: true,
            footer_text: "-- \nSent by mailplane".into(),
            helo_name: "relay.example.com".into(),
            charset: "ISO-8859-1".into(),
            plain_text_only: true,
            attachment_size_limit_bytes: 10 << 20,
            network_connector: connector.name.clone(),
            use_network_connector: true,
            sender_email: "Ops Team <ops@example.com>".into(),
            ..account("Full")
        },
    )
    .await;
    assert_eq!(full.reply_to_email, "replies@example.com");
    assert_eq!(full.return_path_email, "bounces@example.com");
    assert_eq!(full.confirmation_email, "reads@example.com");
    assert_eq!(full.footer_text, "-- \nSent by mailplane");
    assert_eq!(full.network_connector, connector.name);
    assert_eq!(full.sender_email, "Ops Team <ops@example.com>");
    assert_eq!(full.attachment_size_limit_bytes, 10 << 20);
}

/// Each case: the request, the expected code, and the field its message must name.
async fn default_account_rules(server: &TestServer) {
    let mut c = server.accounts();
    let a = create_account(&mut c, account("A")).await;
    let b = create_account(
        &mut c,
        pb::SmtpAccount {
            is_default: true,
            ..account("B")
        },
    )
    .await;
    assert!(b.is_default, "creating with is_default moves the flag");
    let a = c
        .get_account(pb::GetAccountRequest { name: a.name })
        .await
        .unwrap()
        .into_inner();
    assert!(!a.is_default);

    let d = create_account(
        &mut c,
        pb::SmtpAccount {
            enabled: Some(false),
            ..account("Disabled")
        },
    )
    .await;
    let err = c
        .set_default_account(pb::SetDefaultAccountRequest {
            name: d.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("enable"), "{}", err.message());

    let err = c
        .delete_account(pb::DeleteAccountRequest {
            name: b.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "deleting the default is refused"
    );
    assert!(err.message().contains("default"), "{}", err.message());

    let err = c
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: b.name.clone(),
                is_default: false,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["is_default".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "clearing the default is refused"
    );

    // Updating another account with is_default moves the flag.
    let a = c
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: a.name.clone(),
                is_default: true,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["is_default".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(a.is_default);
    let list = c
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.accounts.iter().filter(|x| x.is_default).count(), 1);

    // Now B is not the default and can go; then D; then A, the last, may go too.
    for name in [b.name, d.name, a.name] {
        c.delete_account(pb::DeleteAccountRequest {
            name,
            etag: String::new(),
        })
        .await
        .unwrap();
    }
    assert_eq!(count(server).await, 0);

    // With no accounts left, a disabled first account is refused: it would be the default.
    let err = c
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::SmtpAccount {
                enabled: Some(false),
                ..account("First")
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

async fn etag_conflicts_abort(server: &TestServer) {
    let mut c = server.accounts();
    let a = create_account(&mut c, account("Etag")).await;
    let stale = a.etag.clone();
    let req = |host: &str, etag: &str| pb::UpdateAccountRequest {
        account: Some(pb::SmtpAccount {
            name: a.name.clone(),
            host: host.into(),
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["host".into()],
        }),
    };
    let first = c
        .update_account(req("one.example.com", &stale))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(first.etag, stale, "the etag changes with the account");
    let err = c
        .update_account(req("two.example.com", &stale))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.message().contains("stale"), "{}", err.message());
    let now = c
        .get_account(pb::GetAccountRequest {
            name: a.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.host, "one.example.com", "the stale write did not land");
    let err = c
        .update_account(req("x.example.com", "garbage"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let err = c
        .delete_account(pb::DeleteAccountRequest {
            name: a.name.clone(),
            etag: stale,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    c.update_account(req("three.example.com", &now.etag))
        .await
        .unwrap();
}

async fn update_with_mask_changes_only_named_fields(server: &TestServer) {
    let mut c = server.accounts();
    let a = create_account(
        &mut c,
        pb::SmtpAccount {
            reply_to_email: "r@example.com".into(),
            ..account("Masked")
        },
    )
    .await;
    let updated = c
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: a.name.clone(),
                host: "relay.internal".into(),
                port: 2525,
                security: pb::SecurityMode::StarttlsOpportunistic.into(),
                reply_to_email: "ignored@example.com".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["host".into(), "port".into(), "security".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.host, "relay.internal");
    assert_eq!(updated.port, 2525);
    assert_eq!(
        updated.reply_to_email, "r@example.com",
        "unmasked fields stay"
    );
    assert_eq!(updated.account_name, a.account_name);
    assert_eq!(updated.create_time, a.create_time);
}

async fn not_found_and_bad_names(server: &TestServer) {
    let mut c = server.accounts();
    let err = c
        .get_account(pb::GetAccountRequest {
            name: "accounts/424242".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("accounts/424242"));
    let err = c
        .get_account(pb::GetAccountRequest {
            name: "accounts/abc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .set_default_account(pb::SetDefaultAccountRequest {
            name: "accounts/424242".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .delete_account(pb::DeleteAccountRequest {
            name: "accounts/424242".into(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .create_account(pb::CreateAccountRequest { account: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
