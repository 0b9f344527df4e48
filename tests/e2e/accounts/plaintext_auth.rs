//! `allow_plaintext_auth`: only an admin may turn it on (an operator gets PERMISSION_DENIED
//! naming the rule, and nothing changes), security NONE with authentication needs it, and the
//! audit log shows it.

use mailplane_proto::v1 as pb;
use mailplane_tests::{TestServer, account, both_backends, create_account, with_token};
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use tonic::Code;

both_backends!(only_an_admin_allows_plaintext_auth);

async fn operator(server: &TestServer) -> SmtpAccountServiceClient<mailplane_tests::Conn> {
    let token = pb::token_service_client::TokenServiceClient::new(server.channel.clone())
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::ApiToken {
                display_name: "ops".into(),
                role: pb::Role::Operator.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    SmtpAccountServiceClient::new(with_token(&server.raw, Some(&token.token)))
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

async fn get(server: &TestServer, name: &str) -> pb::SmtpAccount {
    server
        .accounts()
        .get_account(pb::GetAccountRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn only_an_admin_allows_plaintext_auth(server: &TestServer) {
    let cred = server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "Relay".into(),
                username: "u".into(),
                secret: "plaintext-secret-1".into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let in_clear = |name: &str| pb::SmtpAccount {
        security: pb::SecurityMode::None.into(),
        use_authentication: true,
        credential: cred.name.clone(),
        allow_plaintext_auth: true,
        ..account(name)
    };
    let mut ops = operator(server).await;

    // An operator cannot create an account that allows AUTH in clear.
    let err = ops
        .create_account(pb::CreateAccountRequest {
            account: Some(in_clear("Clear by operator")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(
        err.message().contains("allow_plaintext_auth") && err.message().contains("admin"),
        "{}",
        err.message()
    );
    assert_eq!(super::count(server).await, 0, "nothing was created");

    // Nor turn it on for an existing account.
    let mut admin = server.accounts();
    let base = create_account(&mut admin, account("Opportunistic")).await;
    assert!(!base.allow_plaintext_auth, "off by default");
    let err = ops
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: base.name.clone(),
                allow_plaintext_auth: true,
                ..Default::default()
            }),
            update_mask: mask(&["allow_plaintext_auth"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("allow_plaintext_auth"));
    assert_eq!(
        get(server, &base.name).await,
        base,
        "a refused update changes nothing"
    );

    // An admin can, on create and on update, and the audit log shows it.
    let clear = create_account(&mut admin, in_clear("Clear by admin")).await;
    assert!(clear.allow_plaintext_auth);
    let updated = admin
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: base.name.clone(),
                allow_plaintext_auth: true,
                ..Default::default()
            }),
            update_mask: mask(&["allow_plaintext_auth"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.allow_plaintext_auth);
    let events = pb::audit_service_client::AuditServiceClient::new(server.channel.clone())
        .list_events(pb::ListEventsRequest {
            resource: base.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let diff: serde_json::Value = serde_json::from_str(&events[0].diff).unwrap();
    assert_eq!(
        diff["allow_plaintext_auth"],
        serde_json::json!({"before": false, "after": true}),
        "{diff}"
    );
    assert!(
        events[0].actor.contains("bootstrap admin"),
        "{:?}",
        events[0]
    );

    // An operator may change other fields of such an account, and turn the flag off.
    let renamed = ops
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: clear.name.clone(),
                port: 2525,
                ..Default::default()
            }),
            update_mask: mask(&["port"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(renamed.allow_plaintext_auth);
    // Turning it off while security is NONE with authentication is refused by validation...
    let err = ops
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: clear.name.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["allow_plaintext_auth"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().starts_with("allow_plaintext_auth"),
        "{}",
        err.message()
    );
    // ...and allowed together with a TLS security mode.
    let off = ops
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: clear.name.clone(),
                security: pb::SecurityMode::StarttlsRequired.into(),
                ..Default::default()
            }),
            update_mask: mask(&["allow_plaintext_auth", "security"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!off.allow_plaintext_auth);
}
