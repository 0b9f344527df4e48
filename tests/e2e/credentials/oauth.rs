//! The fields of OAuth2 credentials that get their own tokens: what each kind requires and
//! refuses, write-only secrets, and moving the token endpoint (where the client secret goes),
//! which needs the admin role or the client secret again. Every refusal changes nothing.

use mailplane_proto::v1 as pb;
use mailplane_tests::{Conn, TestServer, both_backends, with_token};
use pb::credential_service_client::CredentialServiceClient;
use tonic::Code;

both_backends!(
    oauth_fields_are_checked_per_kind,
    moving_the_token_url_needs_admin_or_the_secret,
    letting_agents_get_the_tokens_needs_admin_or_the_secret
);

const URL: &str = "https://login.example.com/contoso/oauth2/v2.0/token";
const SCOPE: &str = "https://outlook.office365.com/.default";

fn client_credentials() -> pb::Credential {
    pb::Credential {
        display_name: "m365".into(),
        username: "alerts@example.com".into(),
        kind: pb::CredentialKind::Oauth2ClientCredentials.into(),
        token_url: URL.into(),
        client_id: "app-1".into(),
        client_secret: "client-secret-5c1".into(),
        scope: SCOPE.into(),
        allowed_destinations: vec!["smtp.example.com:587".into()],
        ..Default::default()
    }
}

async fn create(server: &TestServer, c: pb::Credential) -> Result<pb::Credential, tonic::Status> {
    server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(c),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn count(server: &TestServer) -> usize {
    server
        .credentials()
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .credentials
        .len()
}

async fn oauth_fields_are_checked_per_kind(server: &TestServer) {
    let made = create(server, client_credentials()).await.unwrap();
    assert_eq!(made.token_url, URL);
    assert_eq!(made.client_id, "app-1");
    assert_eq!(made.scope, SCOPE);
    assert!(made.has_client_secret && !made.has_refresh_token);
    assert!(made.client_secret.is_empty() && made.secret.is_empty());

    let refused: Vec<(&str, pb::Credential)> = vec![
        (
            "credential.token_url",
            pb::Credential {
                token_url: "http://login.example.com/token".into(),
                ..client_credentials()
            },
        ),
        (
            "credential.token_url",
            pb::Credential {
                token_url: String::new(),
                ..client_credentials()
            },
        ),
        (
            "credential.client_id",
            pb::Credential {
                client_id: String::new(),
                ..client_credentials()
            },
        ),
        (
            "credential.scope",
            pb::Credential {
                scope: "bad\"scope".into(),
                ..client_credentials()
            },
        ),
        (
            "client_secret",
            pb::Credential {
                client_secret: String::new(),
                ..client_credentials()
            },
        ),
        (
            "secret",
            pb::Credential {
                secret: "a password".into(),
                ..client_credentials()
            },
        ),
        (
            "refresh_token",
            pb::Credential {
                refresh_token: "rt".into(),
                ..client_credentials()
            },
        ),
        (
            "refresh_token",
            pb::Credential {
                kind: pb::CredentialKind::Oauth2RefreshToken.into(),
                ..client_credentials()
            },
        ),
        (
            "credential.token_url",
            pb::Credential {
                kind: pb::CredentialKind::Password.into(),
                secret: "pw".into(),
                client_secret: String::new(),
                ..client_credentials()
            },
        ),
    ];
    let before = count(server).await;
    for (field, c) in refused {
        let e = create(server, c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    assert_eq!(count(server).await, before, "nothing was created");

    // A refresh token can be stored (and is never shown), then replaced.
    let rt = create(
        server,
        pb::Credential {
            kind: pb::CredentialKind::Oauth2RefreshToken.into(),
            refresh_token: "refresh-token-9e0".into(),
            scope: "https://mail.google.com/".into(),
            ..client_credentials()
        },
    )
    .await
    .unwrap();
    assert!(rt.has_refresh_token && rt.refresh_token.is_empty());
    let updated = server
        .credentials()
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: rt.name.clone(),
                refresh_token: "refresh-token-a71".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["refresh_token".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.has_refresh_token);
    assert_ne!(updated.etag, rt.etag);
    // Naming `secret` on an OAuth2 kind says which field to use.
    let e = server
        .credentials()
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: rt.name.clone(),
                secret: "x".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["secret".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("client_secret"), "{}", e.message());
}

/// An operator's token on the server's raw channel.
async fn operator(server: &TestServer) -> Conn {
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
    with_token(&server.raw, Some(&token.token))
}

async fn moving_the_token_url_needs_admin_or_the_secret(server: &TestServer) {
    let made = create(server, client_credentials()).await.unwrap();
    let mut ops = CredentialServiceClient::new(operator(server).await);
    let update = |url: &str, secret: &str, paths: &[&str]| pb::UpdateCredentialRequest {
        credential: Some(pb::Credential {
            name: made.name.clone(),
            token_url: url.into(),
            client_secret: secret.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    };
    // Another host would receive the client secret: refused for an operator.
    let e = ops
        .update_credential(update("https://evil.example.net/token", "", &["token_url"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("client secret"), "{}", e.message());
    let got = server
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            name: made.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.token_url, URL, "unchanged");
    assert_eq!(got.etag, made.etag);
    // Another path on the same host is fine; so is a new host with the secret given again.
    ops.update_credential(update(
        "https://login.example.com/other/oauth2/v2.0/token",
        "",
        &["token_url"],
    ))
    .await
    .unwrap();
    let moved = ops
        .update_credential(update(
            "https://idp.example.org/token",
            "client-secret-new",
            &["token_url", "client_secret"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.token_url, "https://idp.example.org/token");
}

async fn letting_agents_get_the_tokens_needs_admin_or_the_secret(server: &TestServer) {
    let made = create(server, client_credentials()).await.unwrap();
    assert_eq!(
        made.token_source,
        i32::from(pb::TokenSource::Server),
        "the default"
    );
    let mut ops = CredentialServiceClient::new(operator(server).await);
    let update =
        |source: pb::TokenSource, secret: &str, paths: &[&str]| pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: made.name.clone(),
                token_source: source.into(),
                client_secret: secret.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        };
    // The agents would receive the client secret in every job: refused for an operator.
    let e = ops
        .update_credential(update(pb::TokenSource::Connector, "", &["token_source"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("client secret"), "{}", e.message());
    let got = server
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            name: made.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.etag, made.etag, "unchanged");
    // An unknown value is refused for anyone.
    let mut bad = update(pb::TokenSource::Server, "", &["token_source"]);
    bad.credential.as_mut().unwrap().token_source = 7;
    let e = server
        .credentials()
        .update_credential(bad)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // With the secret given again, the operator may; so may an admin, and back.
    let moved = ops
        .update_credential(update(
            pb::TokenSource::Connector,
            "client-secret-new",
            &["token_source", "client_secret"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.token_source, i32::from(pb::TokenSource::Connector));
    let back = server
        .credentials()
        .update_credential(update(pb::TokenSource::Server, "", &["token_source"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.token_source, i32::from(pb::TokenSource::Server));
    // A password has no token source to set.
    let e = create(
        server,
        pb::Credential {
            display_name: "pw".into(),
            username: "u".into(),
            kind: pb::CredentialKind::Password.into(),
            secret: "pw-1".into(),
            token_source: pb::TokenSource::Connector.into(),
            allowed_destinations: vec!["smtp.example.com:587".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}
