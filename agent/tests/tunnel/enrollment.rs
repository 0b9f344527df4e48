//! Enrollment: the state written with a private key, and the refusals.

use super::*;

#[tokio::test]
async fn enroll_writes_the_state_with_a_private_key() {
    let h = Harness::start(vec!["smtp.example.org".into()]).await;

    let mut wrong = h.config.clone();
    wrong.enrollment_token = Some(Token::new("not-the-token"));
    let err = mailplane_agent::enroll(&wrong).await.unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Enroll(EnrollError::Rpc(RpcError {
                code: tonic::Code::Unauthenticated,
                ..
            }))
        ),
        "{err}"
    );
    assert!(!h.state_dir().join("key.pem").exists());

    let enrolled = mailplane_agent::enroll(&h.config).await.unwrap();
    assert_eq!(enrolled.agent, AGENT);
    let mode = |name: &str| {
        std::fs::metadata(h.state_dir().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("key.pem"), 0o600);
    let st = mailplane_agent::state::load(h.state_dir())
        .unwrap()
        .unwrap();
    assert_eq!(st.agent, AGENT);
    assert!(st.cert_pem.contains("BEGIN CERTIFICATE"));
    assert!(st.ca_pem.contains("BEGIN CERTIFICATE"));
    assert!(st.key_pem.expose().contains("PRIVATE KEY"));

    // Enrolling twice would replace the identity: refused before calling the server.
    let again = mailplane_agent::enroll(&h.config).await.unwrap_err();
    assert!(
        matches!(again, AgentError::Enroll(EnrollError::State(_))),
        "{again}"
    );
    assert_eq!(h.enrolls.load(Ordering::SeqCst), 1);

    // Renewal over mTLS replaces cert.pem and keeps the key.
    mailplane_agent::enroll::renew(&h.config).await.unwrap();
    let renewed = mailplane_agent::state::load(h.state_dir())
        .unwrap()
        .unwrap();
    assert_ne!(renewed.cert_pem, st.cert_pem);
    assert_eq!(renewed.key_pem, st.key_pem);
    assert_eq!(mode("key.pem"), 0o600);

    // No token, no state: a clear error.
    let mut fresh = h.config.clone();
    fresh.state_dir = PathBuf::from(h.state_dir()).with_file_name("other");
    fresh.enrollment_token = None;
    let err = mailplane_agent::run(fresh, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mailplane-agent enroll"), "{err}");

    assert!(!log_text().contains(TOKEN));
}

#[tokio::test]
async fn refuses_to_run_without_allowed_destinations() {
    let h = Harness::start(Vec::new()).await;
    let err = mailplane_agent::run(h.config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Allowlist(_)), "{err}");
    assert!(!h.state_dir().exists(), "nothing happens before the check");
}
