//! Provider presets: ListPresets and ResolvePreset over gRPC, and `accounts create --preset`
//! and `accounts presets` through the CLI, against a real server.

use crate::cli::{json, mailplane};
use mailplane_proto::v1 as pb;
use mailplane_server::cli::CliError;
use mailplane_tests::{Backend, TestServer, both_backends};
use std::collections::HashMap;
use tonic::Code;

both_backends!(each_preset_gives_an_account_that_validates);

/// Every preset id, with the placeholder flags `accounts create` needs and the host it fills.
const CASES: [(&str, &[&str], &str); 5] = [
    (
        "microsoft365",
        &["--tenant", "contoso.onmicrosoft.com"],
        "smtp.office365.com",
    ),
    ("google", &[], "smtp.gmail.com"),
    (
        "amazon-ses",
        &["--region", "eu-west-1"],
        "email-smtp.eu-west-1.amazonaws.com",
    ),
    ("sendgrid", &[], "smtp.sendgrid.net"),
    ("mailgun", &[], "smtp.mailgun.org"),
];

async fn list(server: &TestServer) -> Vec<pb::Preset> {
    server
        .accounts()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .expect("list presets")
        .into_inner()
        .presets
}

async fn resolve(server: &TestServer, name: &str, values: &[(&str, &str)]) -> tonic::Status {
    server
        .accounts()
        .resolve_preset(pb::ResolvePresetRequest {
            name: name.to_owned(),
            placeholder_values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        })
        .await
        .expect_err("the preset should be refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_presets_returns_every_preset_with_its_fields() {
    let server = TestServer::start(Backend::Sqlite).await;
    let presets = list(&server).await;
    let ids: Vec<&str> = presets.iter().map(|p| p.preset_id.as_str()).collect();
    assert_eq!(ids, CASES.map(|c| c.0));
    let by_id: HashMap<&str, &pb::Preset> =
        presets.iter().map(|p| (p.preset_id.as_str(), p)).collect();
    for p in &presets {
        assert_eq!(p.name, format!("presets/{}", p.preset_id));
        assert_eq!(p.port, 587, "{}", p.preset_id);
        assert_eq!(
            p.security,
            i32::from(pb::SecurityMode::StarttlsRequired),
            "{}",
            p.preset_id
        );
        assert!(
            !p.display_name.is_empty() && !p.sender_rules.is_empty(),
            "{p:?}"
        );
    }
    let m365 = by_id["microsoft365"];
    assert_eq!(m365.host, "smtp.office365.com");
    assert_eq!(m365.auth_mechanism, i32::from(pb::AuthMechanism::Xoauth2));
    assert_eq!(
        m365.credential_kind,
        i32::from(pb::CredentialKind::Oauth2ClientCredentials)
    );
    assert_eq!(
        m365.token_url,
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
    );
    assert_eq!(m365.scope, "https://outlook.office365.com/.default");
    assert_eq!(m365.placeholders.len(), 1);
    assert_eq!(m365.placeholders[0].key, "tenant");
    assert!(
        m365.sender_rules.contains("SendAs"),
        "{}",
        m365.sender_rules
    );
    let google = by_id["google"];
    assert_eq!(google.auth_mechanism, i32::from(pb::AuthMechanism::Xoauth2));
    assert_eq!(
        google.credential_kind,
        i32::from(pb::CredentialKind::Oauth2RefreshToken)
    );
    assert_eq!(google.token_url, "https://oauth2.googleapis.com/token");
    assert_eq!(google.scope, "https://mail.google.com/");
    assert!(google.placeholders.is_empty());
    let ses = by_id["amazon-ses"];
    assert_eq!(ses.host, "email-smtp.{region}.amazonaws.com");
    assert_eq!(ses.placeholders[0].key, "region");
    assert!(ses.sender_rules.contains("sandbox"), "{}", ses.sender_rules);
    assert_eq!(by_id["sendgrid"].username, "apikey");
    for id in ["amazon-ses", "sendgrid", "mailgun"] {
        let p = by_id[id];
        assert_eq!(
            p.auth_mechanism,
            i32::from(pb::AuthMechanism::Plain),
            "{id}"
        );
        assert_eq!(
            p.credential_kind,
            i32::from(pb::CredentialKind::Password),
            "{id}"
        );
        assert!(p.token_url.is_empty() && p.scope.is_empty(), "{id}");
    }

    let out = json(
        &mailplane(&server, &["accounts", "presets", "-o", "json"])
            .await
            .unwrap(),
    );
    let printed = out["presets"].as_array().expect("a presets list");
    assert_eq!(printed.len(), 5);
    assert_eq!(printed[0]["preset_id"], "microsoft365");
    assert_eq!(printed[0]["auth_mechanism"], "XOAUTH2");
    assert_eq!(printed[0]["placeholders"][0], "tenant");
    let table = mailplane(&server, &["accounts", "presets"]).await.unwrap();
    assert!(table.starts_with("PRESET"), "{table}");
    assert!(
        table.contains("email-smtp.{region}.amazonaws.com"),
        "{table}"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_placeholders_are_refused_by_name() {
    let server = TestServer::start(Backend::Sqlite).await;
    let s = resolve(&server, "presets/microsoft365", &[]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("placeholder_values[tenant]"),
        "{}",
        s.message()
    );
    let s = resolve(&server, "presets/amazon-ses", &[("region", "eu-west")]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("placeholder_values[region]"),
        "{}",
        s.message()
    );
    let s = resolve(&server, "presets/sendgrid", &[("tenant", "a.example.com")]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = resolve(&server, "presets/yahoo", &[]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("mailgun"), "{}", s.message());

    let base = [
        "accounts",
        "create",
        "--name",
        "M365",
        "--sender",
        "a@example.com",
    ];
    let run = |extra: &'static [&'static str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let server = &server;
        async move { mailplane(server, &args).await }
    };
    let err = run(&["--preset", "microsoft365"]).await.unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert!(err.to_string().contains("--tenant"), "{err}");
    let err = run(&["--preset", "amazon-ses", "--region", "eu"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("region"), "{err}");
    let err = run(&["--preset", "microsoft365", "--tenant", "common"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tenant"), "{err}");
    let err = run(&["--preset", "yahoo"]).await.unwrap_err();
    for id in CASES.map(|c| c.0) {
        assert!(err.to_string().contains(id), "{err}");
    }
    let err = run(&["--tenant", "a.example.com"]).await.unwrap_err();
    assert!(err.to_string().contains("--preset"), "{err}");
    assert_eq!(
        crate::accounts::count(&server).await,
        0,
        "nothing was created"
    );
    server.stop().await.expect("clean stop");
}

/// For each preset: a credential for its relay, then `accounts create --preset` with it.
async fn each_preset_gives_an_account_that_validates(server: &TestServer) {
    for (id, placeholders, host) in CASES {
        let xoauth2 = matches!(id, "microsoft365" | "google");
        let credential = server
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                credential: Some(pb::Credential {
                    display_name: format!("{id} credential"),
                    username: if id == "sendgrid" {
                        "apikey"
                    } else {
                        "sender@example.com"
                    }
                    .to_owned(),
                    secret: "not-a-real-secret".into(),
                    kind: if xoauth2 {
                        pb::CredentialKind::Oauth2Token
                    } else {
                        pb::CredentialKind::Password
                    }
                    .into(),
                    allowed_destinations: vec![format!("{host}:587")],
                    ..Default::default()
                }),
            })
            .await
            .expect("create credential")
            .into_inner();
        let name = format!("{id} account");
        let mut args = vec![
            "accounts",
            "create",
            "--preset",
            id,
            "--name",
            &name,
            "--sender",
            "sender@example.com",
            "--credential",
            &credential.name,
            "-o",
            "json",
        ];
        args.extend_from_slice(placeholders);
        let out = mailplane(server, &args)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let printed = json(&out);
        assert_eq!(printed["host"], host, "{id}");
        let stored = server
            .accounts()
            .get_account(pb::GetAccountRequest {
                name: printed["name"].as_str().unwrap().to_owned(),
            })
            .await
            .expect("get account")
            .into_inner();
        assert_eq!(stored.host, host, "{id}");
        assert_eq!(stored.port, 587, "{id}");
        assert_eq!(
            stored.security,
            i32::from(pb::SecurityMode::StarttlsRequired),
            "{id}"
        );
        let mechanism = if xoauth2 {
            pb::AuthMechanism::Xoauth2
        } else {
            pb::AuthMechanism::Plain
        };
        assert_eq!(stored.auth_mechanism, i32::from(mechanism), "{id}");
        assert!(stored.use_authentication, "{id}");
        assert_eq!(stored.credential, credential.name, "{id}");
    }

    // Flags override the preset.
    let out = mailplane(
        server,
        &[
            "accounts",
            "create",
            "--preset",
            "mailgun",
            "--name",
            "Mailgun EU",
            "--sender",
            "sender@example.com",
            "--host",
            "smtp.eu.mailgun.org",
            "--port",
            "465",
            "--security",
            "ssl",
            "--auth-mechanism",
            "login",
            "-o",
            "json",
        ],
    )
    .await
    .unwrap();
    let printed = json(&out);
    assert_eq!(printed["host"], "smtp.eu.mailgun.org");
    assert_eq!(printed["port"], 465);
    assert_eq!(printed["security"], "IMPLICIT_TLS");
    assert_eq!(printed["auth_mechanism"], "LOGIN");
}
