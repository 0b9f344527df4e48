//! Connector CRUD, one-time enrollment tokens, certificate authentication, renewal and
//! revocation.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_crud_and_deletion_rules() {
    connector_crud_and_deletion_rules_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_crud_and_deletion_rules_postgres() {
    connector_crud_and_deletion_rules_on(Backend::Postgres).await;
}

async fn connector_crud_and_deletion_rules_on(backend: Backend) {
    let server = server_on(backend).await;
    let mut c = server.connectors();
    let dc = server.create_connector("Datacenter B").await;
    assert_eq!(dc.name, format!("connectors/{}", dc.id));
    assert!(dc.agents.is_empty());
    let err = c
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector {
                display_name: "datacenter b".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = c
        .create_connector(pb::CreateConnectorRequest {
            connector: Some(pb::Connector::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let updated = c
        .update_connector(pb::UpdateConnectorRequest {
            connector: Some(pb::Connector {
                name: dc.name.clone(),
                description: "relays behind the DMZ".into(),
                etag: dc.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.description, "relays behind the DMZ");
    let list = c
        .list_connectors(pb::ListConnectorsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.connectors.len(), 1);

    let mut a = server.accounts();
    let user = create_account(
        &mut a,
        pb::SmtpAccount {
            use_network_connector: true,
            network_connector: dc.name.clone(),
            ..account("Behind DMZ")
        },
    )
    .await;
    let err = c
        .delete_connector(pb::DeleteConnectorRequest {
            name: dc.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&user.name) && err.message().contains("Behind DMZ"),
        "{}",
        err.message()
    );
    a.delete_account(pb::DeleteAccountRequest {
        name: user.name,
        etag: String::new(),
    })
    .await
    .unwrap();
    c.delete_connector(pb::DeleteConnectorRequest {
        name: dc.name.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.get_connector(pb::GetConnectorRequest { name: dc.name })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_are_hashed_single_use_and_expire() {
    let server = server().await;
    let dc = server.create_connector("Enroll").await;
    let t = token(&server, &dc.name).await;
    assert!(t.token.starts_with("mpe_") && t.token.len() > 40);
    assert!(t.server_ca_pem.contains("BEGIN CERTIFICATE"));

    // A malformed CSR is refused without using the token up.
    let mut client = AgentServiceClient::new(channel(&server, tls(&t.server_ca_pem)).await);
    let err = client
        .enroll(pb::EnrollRequest {
            token: t.token.clone(),
            csr_pem: "garbage".into(),
            hostname: "h".into(),
            version: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let agent = enroll(&server, &t).await.unwrap();
    assert!(agent.name.starts_with(&format!("{}/agents/", dc.name)));
    assert!(agent.cert_pem.contains("BEGIN CERTIFICATE"));
    let again = enroll(&server, &t).await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated);
    assert!(
        again.message().contains("already used"),
        "{}",
        again.message()
    );
    let bogus = pb::EnrollmentToken {
        token: "mpe_not-a-token".into(),
        ..t.clone()
    };
    assert_eq!(
        enroll(&server, &bogus).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Expire a fresh token in the database: refused.
    let expiring = token(&server, &dc.name).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.sqlite_path().display()))
        .await
        .unwrap();
    sqlx::query("UPDATE enrollment_tokens SET expire_time = 0 WHERE used_time IS NULL")
        .execute(&pool)
        .await
        .unwrap();
    let err = enroll(&server, &expiring).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
    pool.close().await;

    // Tokens are stored hashed: neither appears in the database.
    for file in std::fs::read_dir(server.data_dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains("mailplane.db") {
            let bytes = std::fs::read(&path).unwrap();
            for tok in [&t.token, &expiring.token] {
                assert!(
                    !bytes.windows(tok.len()).any(|w| w == tok.as_bytes()),
                    "a token is stored in clear"
                );
            }
        }
    }
    let got = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: dc.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.agents.len(), 1);
    assert_eq!(got.agents[0].status, i32::from(pb::AgentStatus::Offline));
    assert!(got.agents[0].certificate_expire_time.is_some());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_certificate_and_revocation_closes_them_within_3s() {
    streams_need_a_certificate_and_revocation_closes_them_within_3s_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_certificate_and_revocation_closes_them_within_3s_postgres() {
    streams_need_a_certificate_and_revocation_closes_them_within_3s_on(Backend::Postgres).await;
}

async fn streams_need_a_certificate_and_revocation_closes_them_within_3s_on(backend: Backend) {
    let server = server_on(backend).await;
    let dc = server.create_connector("Revocable").await;
    let t = token(&server, &dc.name).await;
    let who = enroll(&server, &t).await.unwrap();

    // Without a client certificate, only Enroll answers.
    let mut anonymous = AgentServiceClient::new(channel(&server, tls(&t.server_ca_pem)).await);
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::ConnectRequest>(1);
    let err = anonymous
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut agent = FakeAgent::connect(&server, &who).await.unwrap();
    let got = server
        .connectors()
        .get_connector(pb::GetConnectorRequest {
            name: dc.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.agents[0].status, i32::from(pb::AgentStatus::Online));
    assert_eq!(got.agents[0].hostname, "agent-host");
    assert!(got.agents[0].connected_since.is_some());

    let revoked_at = Instant::now();
    let revoked = server
        .connectors()
        .revoke_agent(pb::RevokeAgentRequest {
            name: who.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, i32::from(pb::AgentStatus::Revoked));
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match agent.down.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the live stream closes within 3 s of revocation"
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(3));
    let err = FakeAgent::connect(&server, &who)
        .await
        .err()
        .expect("a revoked certificate is refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_and_the_old_one_stops_working() {
    let server = server_on(Backend::Postgres).await;
    let dc = server.create_connector("Renewing").await;
    let who = enroll(&server, &token(&server, &dc.name).await)
        .await
        .unwrap();
    let original_cert = who.cert_pem.clone();
    let tls_id = tls(&who.ca_pem).identity(Identity::from_pem(&who.cert_pem, &who.key_pem));
    let mut client = AgentServiceClient::new(channel(&server, tls_id).await);
    let key = rcgen::KeyPair::from_pem(&who.key_pem).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let renewed = client
        .renew_certificate(pb::RenewCertificateRequest { csr_pem: csr })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(renewed.certificate_pem, who.cert_pem);
    assert!(renewed.expire_time.is_some());
    let new_id = Enrolled {
        cert_pem: renewed.certificate_pem,
        ..who
    };
    FakeAgent::connect(&server, &new_id)
        .await
        .expect("the renewed certificate works");
    let old = Enrolled {
        name: new_id.name.clone(),
        ca_pem: new_id.ca_pem.clone(),
        cert_pem: original_cert,
        key_pem: new_id.key_pem.clone(),
    };
    let err = FakeAgent::connect(&server, &old)
        .await
        .err()
        .expect("the replaced certificate is refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await.unwrap();
}
