//! Credentials: write-only secrets, rotation, deletion rules, and where a secret may be sent
//! ([`destinations`]), and how existing credentials get theirs on upgrade ([`migration`]).

mod destinations;
mod migration;
mod oauth;

use mailplane_proto::v1 as pb;
use mailplane_tests::{TestServer, account, both_backends, create_account};
use tonic::Code;

both_backends!(secret_never_comes_back, rotation_and_deletion_rules);

const SECRET: &str = "s3cr3t-Tr0ub4dor&3-never-shown";

/// Whether `SECRET` appears anywhere in a response's wire bytes.
fn leaks(msg: &impl prost::Message) -> bool {
    let bytes = msg.encode_to_vec();
    bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
}

pub async fn create_credential(
    server: &TestServer,
    kind: pb::CredentialKind,
    secret: &str,
) -> pb::Credential {
    server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: "Relay login".into(),
                username: "relay-user".into(),
                secret: secret.into(),
                kind: kind.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn secret_never_comes_back(server: &TestServer) {
    let mut c = server.credentials();
    let created = create_credential(server, pb::CredentialKind::Password, SECRET).await;
    assert!(created.has_secret);
    assert!(created.secret.is_empty());
    assert!(created.secret_update_time.is_some());
    assert!(!leaks(&created));

    let got = c
        .get_credential(pb::GetCredentialRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!leaks(&got) && got.secret.is_empty());
    let list = c
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.credentials.len(), 1);
    assert!(!leaks(&list));
    let updated = c
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: created.name.clone(),
                display_name: "Renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!leaks(&updated) && updated.display_name == "Renamed");

    // Accounts that use it do not carry it either.
    let mut a = server.accounts();
    let acct = create_account(
        &mut a,
        pb::SmtpAccount {
            use_authentication: true,
            credential: created.name.clone(),
            ..account("Authed")
        },
    )
    .await;
    assert_eq!(
        acct.auth_mechanism,
        i32::from(pb::AuthMechanism::Plain),
        "PLAIN follows a password"
    );
    assert!(!leaks(&acct));

    // Bad secrets are refused with the field named, and never echoed.
    for bad in ["", "line\r\nbreak"] {
        let err = c
            .create_credential(pb::CreateCredentialRequest {
                credential: Some(pb::Credential {
                    display_name: "x".into(),
                    username: "u".into(),
                    secret: bad.into(),
                    allowed_destinations: mailplane_tests::test_destinations(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with("secret"), "{}", err.message());
    }
    let err = c
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(pb::Credential {
                display_name: String::new(),
                username: "u".into(),
                secret: SECRET.into(),
                allowed_destinations: mailplane_tests::test_destinations(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(!err.message().contains(SECRET));
}

async fn rotation_and_deletion_rules(server: &TestServer) {
    let mut c = server.credentials();
    let cred = create_credential(server, pb::CredentialKind::Password, "first-secret").await;
    let rotated = c
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: cred.name.clone(),
                secret: "second-secret".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["secret".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let micros = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
    };
    assert!(micros(&rotated.secret_update_time) >= micros(&cred.secret_update_time));
    assert_ne!(rotated.etag, cred.etag);
    assert_eq!(rotated.display_name, cred.display_name);

    let err = c
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: cred.name.clone(),
                secret: String::new(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["secret".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "rotating to an empty secret is refused"
    );

    let mut a = server.accounts();
    let user1 = create_account(
        &mut a,
        pb::SmtpAccount {
            use_authentication: true,
            credential: cred.name.clone(),
            ..account("User One")
        },
    )
    .await;
    let user2 = create_account(
        &mut a,
        pb::SmtpAccount {
            use_authentication: true,
            credential: cred.name.clone(),
            ..account("User Two")
        },
    )
    .await;

    // XOAUTH2 needs an OAuth2 token, not a password.
    let err = a
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::SmtpAccount {
                use_authentication: true,
                credential: cred.name.clone(),
                auth_mechanism: pb::AuthMechanism::Xoauth2.into(),
                ..account("Oauth")
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("XOAUTH2"), "{}", err.message());
    let token = create_credential(server, pb::CredentialKind::Oauth2Token, "ya29.token").await;
    let oauth = create_account(
        &mut a,
        pb::SmtpAccount {
            use_authentication: true,
            credential: token.name.clone(),
            ..account("Oauth")
        },
    )
    .await;
    assert_eq!(oauth.auth_mechanism, i32::from(pb::AuthMechanism::Xoauth2));

    let err = c
        .delete_credential(pb::DeleteCredentialRequest {
            name: cred.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&user1.name) && err.message().contains("User Two"),
        "{}",
        err.message()
    );

    for acct in [&user1, &user2] {
        a.update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: acct.name.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![
                    "use_authentication".into(),
                    "credential".into(),
                    "auth_mechanism".into(),
                ],
            }),
        })
        .await
        .unwrap();
    }
    let err = c
        .delete_credential(pb::DeleteCredentialRequest {
            name: cred.name.clone(),
            etag: cred.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Aborted,
        "the etag from before the rotation is stale"
    );
    c.delete_credential(pb::DeleteCredentialRequest {
        name: cred.name.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    let err = c
        .get_credential(pb::GetCredentialRequest {
            name: cred.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
