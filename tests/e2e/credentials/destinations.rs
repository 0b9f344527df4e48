//! `allowed_destinations`: where a credential's secret may be sent. Required when the
//! credential is created; widening the list needs the admin role or the secret given again;
//! an account may use the credential only with a host and port in the list; narrowing the list
//! may not leave such an account outside it. Every refusal changes nothing.

use mailplane_proto::v1 as pb;
use mailplane_tests::{Conn, TestServer, account, both_backends, create_account, with_token};
use pb::credential_service_client::CredentialServiceClient;
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use tonic::Code;

both_backends!(
    destinations_are_required_and_checked,
    only_an_admin_or_the_secret_widens,
    accounts_stay_inside_their_credentials_destinations
);

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
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

fn credential(destinations: &[&str]) -> pb::Credential {
    pb::Credential {
        display_name: "Relay login".into(),
        username: "relay-user".into(),
        secret: "destination-secret-77a1".into(),
        allowed_destinations: list(destinations),
        ..Default::default()
    }
}

async fn create(server: &TestServer, destinations: &[&str]) -> pb::Credential {
    server
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            credential: Some(credential(destinations)),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn get(server: &TestServer, name: &str) -> pb::Credential {
    server
        .credentials()
        .get_credential(pb::GetCredentialRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn set_destinations(
    client: &mut CredentialServiceClient<Conn>,
    name: &str,
    destinations: &[&str],
    secret: Option<&str>,
) -> Result<pb::Credential, tonic::Status> {
    let mut paths = vec!["allowed_destinations"];
    if secret.is_some() {
        paths.push("secret");
    }
    client
        .update_credential(pb::UpdateCredentialRequest {
            credential: Some(pb::Credential {
                name: name.into(),
                allowed_destinations: list(destinations),
                secret: secret.unwrap_or_default().into(),
                ..Default::default()
            }),
            update_mask: mask(&paths),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn credential_count(server: &TestServer) -> usize {
    server
        .credentials()
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .credentials
        .len()
}

async fn destinations_are_required_and_checked(server: &TestServer) {
    let mut c = server.credentials();
    for (destinations, field) in [
        (&[][..], "allowed_destinations"),
        (
            &["relay.example.com", "bad host:25"],
            "allowed_destinations[1]",
        ),
        (&["relay.example.com:0"], "allowed_destinations[0]"),
        (&["10.0.0.0/8"], "allowed_destinations[0]"),
    ] {
        let err = c
            .create_credential(pb::CreateCredentialRequest {
                credential: Some(credential(destinations)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
        assert!(!err.message().contains("destination-secret"));
    }
    assert_eq!(credential_count(server).await, 0, "nothing was created");

    // The canonical form comes back, duplicates dropped.
    let created = create(
        server,
        &[
            "Relay.Example.com:587",
            "relay.example.com:587",
            "*.Example.org",
            "[2001:DB8::1]:465",
        ],
    )
    .await;
    assert_eq!(
        created.allowed_destinations,
        [
            "relay.example.com:587",
            "*.example.org",
            "[2001:db8::1]:465"
        ]
    );
    assert_eq!(get(server, &created.name).await, created);
    let err = set_destinations(&mut c, &created.name, &[], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(get(server, &created.name).await, created, "nothing changed");
}

async fn only_an_admin_or_the_secret_widens(server: &TestServer) {
    let cred = create(server, &["relay.example.com:587", "backup.example.com"]).await;
    let mut ops = CredentialServiceClient::new(operator(server).await);

    // An operator cannot widen the list: not to another host, not to another port, not to a
    // wildcard over the current host.
    for wider in [
        &[
            "relay.example.com:587",
            "backup.example.com",
            "attacker.test",
        ][..],
        &["relay.example.com"],
        &["*.example.com"],
    ] {
        let err = set_destinations(&mut ops, &cred.name, wider, None)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{wider:?}: {}",
            err.message()
        );
        assert!(
            err.message().contains("allowed_destinations")
                && err.message().contains("admin role")
                && err.message().contains("secret given again"),
            "{}",
            err.message()
        );
        assert_eq!(
            get(server, &cred.name).await,
            cred,
            "a refused update changes nothing"
        );
    }

    // Narrowing is fine for an operator.
    let narrowed = set_destinations(&mut ops, &cred.name, &["relay.example.com:587"], None)
        .await
        .unwrap();
    assert_eq!(narrowed.allowed_destinations, ["relay.example.com:587"]);

    // With the secret given again in the same call, an operator may widen.
    let widened = set_destinations(
        &mut ops,
        &cred.name,
        &["relay.example.com:587", "relay2.example.com:587"],
        Some("the-secret-again-31f"),
    )
    .await
    .unwrap();
    assert_eq!(
        widened.allowed_destinations,
        ["relay.example.com:587", "relay2.example.com:587"]
    );
    assert!(widened.has_secret && widened.etag != narrowed.etag);

    // An admin may widen without the secret, and the audit log shows the change.
    let mut admin = server.credentials();
    let by_admin = set_destinations(&mut admin, &cred.name, &["*.example.com"], None)
        .await
        .unwrap();
    assert_eq!(by_admin.allowed_destinations, ["*.example.com"]);
    let events = pb::audit_service_client::AuditServiceClient::new(server.channel.clone())
        .list_events(pb::ListEventsRequest {
            resource: cred.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let diff: serde_json::Value = serde_json::from_str(&events[0].diff).unwrap();
    assert_eq!(
        diff["allowed_destinations"],
        serde_json::json!({
            "before": ["relay.example.com:587", "relay2.example.com:587"],
            "after": ["*.example.com"],
        }),
        "{diff}"
    );
}

async fn accounts_stay_inside_their_credentials_destinations(server: &TestServer) {
    let cred = create(server, &["relay.example.com:587", "backup.example.com"]).await;
    let conn = operator(server).await;
    let mut ops_accounts = SmtpAccountServiceClient::new(conn.clone());
    let mut ops_credentials = CredentialServiceClient::new(conn);
    let authed = |name: &str, host: &str, port: u32| pb::SmtpAccount {
        host: host.into(),
        port,
        security: pb::SecurityMode::StarttlsRequired.into(),
        use_authentication: true,
        credential: cred.name.clone(),
        ..account(name)
    };
    let acct = create_account(
        &mut ops_accounts,
        authed("Inside", "relay.example.com", 587),
    )
    .await;
    let backup = create_account(
        &mut ops_accounts,
        authed("Backup", "BACKUP.example.com", 25),
    )
    .await;

    // Creating an account outside the list is refused, and creates nothing.
    for (host, port) in [("attacker.test", 587), ("relay.example.com", 2525)] {
        let err = ops_accounts
            .create_account(pb::CreateAccountRequest {
                account: Some(authed("Outside", host, port)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        let target = format!("{host}:{port}");
        assert!(
            err.message().contains(&target)
                && err.message().contains("allowed destinations")
                && err.message().contains(&cred.name),
            "{}",
            err.message()
        );
    }
    assert_eq!(
        ops_accounts
            .list_accounts(pb::ListAccountsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .accounts
            .len(),
        2,
        "nothing was created"
    );

    // Pointing an account at another host or port is refused, and changes nothing: this is
    // how an operator would have had the server send the secret to a host of their choosing.
    for (paths, host, port) in [
        (&["host"][..], "attacker.test", 587),
        (&["port"], "relay.example.com", 2525),
        (&["host", "port"], "127.0.0.1", 2525),
    ] {
        let err = ops_accounts
            .update_account(pb::UpdateAccountRequest {
                account: Some(pb::SmtpAccount {
                    name: acct.name.clone(),
                    host: host.into(),
                    port,
                    ..Default::default()
                }),
                update_mask: mask(paths),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert!(
            err.message().contains(&format!("{host}:{port}")),
            "{}",
            err.message()
        );
        let now = server
            .accounts()
            .get_account(pb::GetAccountRequest {
                name: acct.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(now, acct, "a refused update changes nothing");
    }
    // Nor can an account outside the list take the credential.
    let plain = create_account(&mut ops_accounts, account("No auth yet")).await;
    let err = ops_accounts
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: plain.name.clone(),
                use_authentication: true,
                credential: cred.name.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["use_authentication", "credential"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("smtp.example.com:"),
        "{}",
        err.message()
    );

    // Narrowing the list may not leave an account that uses it outside: the refusal lists it.
    let err = set_destinations(
        &mut ops_credentials,
        &cred.name,
        &["relay.example.com:587"],
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains(&backup.name) && err.message().contains("backup.example.com:25"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(&acct.name), "{}", err.message());
    assert_eq!(get(server, &cred.name).await, cred, "nothing changed");

    // Once the account has moved within the list, the narrowing goes through.
    ops_accounts
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::SmtpAccount {
                name: backup.name.clone(),
                host: "relay.example.com".into(),
                port: 587,
                ..Default::default()
            }),
            update_mask: mask(&["host", "port"]),
        })
        .await
        .unwrap();
    let narrowed = set_destinations(
        &mut ops_credentials,
        &cred.name,
        &["relay.example.com:587"],
        None,
    )
    .await
    .unwrap();
    assert_eq!(narrowed.allowed_destinations, ["relay.example.com:587"]);
}
