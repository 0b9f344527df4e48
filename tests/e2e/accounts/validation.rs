//! Every validation rule of an account refuses the request with the field named, and
//! changes nothing.

use super::count;
use mailplane_proto::v1 as pb;
use mailplane_tests::{TestServer, account, both_backends, create_account};
use tonic::Code;

both_backends!(every_validation_rule_refuses_and_changes_nothing);

async fn every_validation_rule_refuses_and_changes_nothing(server: &TestServer) {
    let mut c = server.accounts();
    let base = create_account(&mut c, account("Base")).await;
    let before = count(server).await;
    let cases: Vec<(&str, pb::SmtpAccount, Code, &str)> = vec![
        (
            "missing name",
            pb::SmtpAccount {
                account_name: String::new(),
                ..account("x1")
            },
            Code::InvalidArgument,
            "account_name",
        ),
        (
            "bad sender",
            pb::SmtpAccount {
                sender_email: "not an address".into(),
                ..account("x2")
            },
            Code::InvalidArgument,
            "sender_email",
        ),
        (
            "missing sender",
            pb::SmtpAccount {
                sender_email: String::new(),
                ..account("x3")
            },
            Code::InvalidArgument,
            "sender_email",
        ),
        (
            "bad reply-to",
            pb::SmtpAccount {
                reply_to_email: "a@@b".into(),
                ..account("x4")
            },
            Code::InvalidArgument,
            "reply_to_email",
        ),
        (
            "bad return-path",
            pb::SmtpAccount {
                return_path_email: "Name <a@b.c>".into(),
                ..account("x5")
            },
            Code::InvalidArgument,
            "return_path_email",
        ),
        (
            "bad confirmation",
            pb::SmtpAccount {
                confirmation_email: "@example.com".into(),
                ..account("x6")
            },
            Code::InvalidArgument,
            "confirmation_email",
        ),
        (
            "CRLF in sender",
            pb::SmtpAccount {
                sender_email: "a@example.com\r\nBcc: victim@example.com".into(),
                ..account("x7")
            },
            Code::InvalidArgument,
            "sender_email",
        ),
        (
            "LF in reply-to",
            pb::SmtpAccount {
                reply_to_email: "a@example.com\nX: y".into(),
                ..account("x8")
            },
            Code::InvalidArgument,
            "reply_to_email",
        ),
        (
            "CR in helo",
            pb::SmtpAccount {
                helo_name: "relay\r".into(),
                ..account("x9")
            },
            Code::InvalidArgument,
            "helo_name",
        ),
        (
            "CRLF in name",
            pb::SmtpAccount {
                account_name: "a\r\nb".into(),
                ..account("x10")
            },
            Code::InvalidArgument,
            "account_name",
        ),
        (
            "CRLF in charset",
            pb::SmtpAccount {
                charset: "UTF-8\r\n".into(),
                ..account("x11")
            },
            Code::InvalidArgument,
            "charset",
        ),
        (
            "port too large",
            pb::SmtpAccount {
                port: 65_536,
                ..account("x12")
            },
            Code::InvalidArgument,
            "port",
        ),
        (
            "missing host",
            pb::SmtpAccount {
                host: String::new(),
                ..account("x13")
            },
            Code::InvalidArgument,
            "host",
        ),
        (
            "bad host",
            pb::SmtpAccount {
                host: "smtp example com".into(),
                ..account("x14")
            },
            Code::InvalidArgument,
            "host",
        ),
        (
            "auth without credential",
            pb::SmtpAccount {
                use_authentication: true,
                ..account("x15")
            },
            Code::InvalidArgument,
            "credential",
        ),
        (
            "auth with a missing credential",
            pb::SmtpAccount {
                use_authentication: true,
                credential: "credentials/999".into(),
                ..account("x16")
            },
            Code::FailedPrecondition,
            "credentials/999",
        ),
        (
            "malformed credential name",
            pb::SmtpAccount {
                use_authentication: true,
                credential: "cred-1".into(),
                ..account("x17")
            },
            Code::InvalidArgument,
            "credential",
        ),
        (
            "connector without reference",
            pb::SmtpAccount {
                use_network_connector: true,
                ..account("x18")
            },
            Code::InvalidArgument,
            "network_connector",
        ),
        (
            "connector that does not exist",
            pb::SmtpAccount {
                use_network_connector: true,
                network_connector: "connectors/999".into(),
                ..account("x25")
            },
            Code::FailedPrecondition,
            "connectors/999",
        ),
        (
            "malformed connector",
            pb::SmtpAccount {
                use_network_connector: true,
                network_connector: "accounts/1".into(),
                ..account("x19")
            },
            Code::InvalidArgument,
            "network_connector",
        ),
        (
            "NONE with ignore_certificate_errors",
            pb::SmtpAccount {
                security: pb::SecurityMode::None.into(),
                ignore_certificate_errors: true,
                ..account("x20")
            },
            Code::InvalidArgument,
            "ignore_certificate_errors",
        ),
        (
            "NONE with authentication, without allow_plaintext_auth",
            pb::SmtpAccount {
                security: pb::SecurityMode::None.into(),
                use_authentication: true,
                credential: "credentials/999".into(),
                ..account("x26")
            },
            Code::InvalidArgument,
            "allow_plaintext_auth",
        ),
        (
            "disabled default",
            pb::SmtpAccount {
                is_default: true,
                enabled: Some(false),
                ..account("x21")
            },
            Code::InvalidArgument,
            "is_default",
        ),
        (
            "duplicate name, other case",
            account("BASE"),
            Code::AlreadyExists,
            "BASE",
        ),
        (
            "unknown security value",
            pb::SmtpAccount {
                security: 99,
                ..account("x22")
            },
            Code::InvalidArgument,
            "security",
        ),
        (
            "read confirmation without address",
            pb::SmtpAccount {
                send_read_confirmation: true,
                ..account("x23")
            },
            Code::InvalidArgument,
            "confirmation_email",
        ),
        (
            "footer without text",
            pb::SmtpAccount {
                enable_footer: true,
                ..account("x24")
            },
            Code::InvalidArgument,
            "footer_text",
        ),
    ];
    for (what, msg, code, field) in cases {
        let err = c
            .create_account(pb::CreateAccountRequest { account: Some(msg) })
            .await
            .expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(
            err.message().contains(field),
            "{what}: message {:?} must name {field}",
            err.message()
        );
    }
    assert_eq!(
        count(server).await,
        before,
        "a refused create changes nothing"
    );

    // The same rules hold on update, and a refused update changes nothing.
    let update = |msg: pb::SmtpAccount, paths: &[&str]| pb::UpdateAccountRequest {
        account: Some(pb::SmtpAccount {
            name: base.name.clone(),
            ..msg
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    };
    let refused = [
        (
            update(
                pb::SmtpAccount {
                    port: 0,
                    ..Default::default()
                },
                &["port"],
            ),
            Code::InvalidArgument,
        ),
        (
            update(
                pb::SmtpAccount {
                    sender_email: "x\r\n".into(),
                    ..Default::default()
                },
                &["sender_email"],
            ),
            Code::InvalidArgument,
        ),
        (
            update(
                pb::SmtpAccount {
                    security: pb::SecurityMode::None.into(),
                    ..Default::default()
                },
                &["security"],
            ),
            Code::Ok,
        ),
        (
            update(
                pb::SmtpAccount {
                    ignore_certificate_errors: true,
                    ..Default::default()
                },
                &["ignore_certificate_errors"],
            ),
            Code::InvalidArgument,
        ),
        (
            update(pb::SmtpAccount::default(), &["etag"]),
            Code::InvalidArgument,
        ),
        (
            update(pb::SmtpAccount::default(), &["no_such_field"]),
            Code::InvalidArgument,
        ),
        (
            update(pb::SmtpAccount::default(), &[]),
            Code::InvalidArgument,
        ),
        (
            update(
                pb::SmtpAccount {
                    enabled: Some(false),
                    ..Default::default()
                },
                &["enabled"],
            ),
            Code::FailedPrecondition,
        ),
    ];
    for (req, code) in refused {
        let before = c
            .get_account(pb::GetAccountRequest {
                name: base.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let result = c.update_account(req.clone()).await;
        match result {
            Ok(_) => assert_eq!(code, Code::Ok, "{req:?} should have failed"),
            Err(e) => {
                assert_eq!(e.code(), code, "{}", e.message());
                let after = c
                    .get_account(pb::GetAccountRequest {
                        name: base.name.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(before, after, "a refused update changes nothing");
            }
        }
    }
}
