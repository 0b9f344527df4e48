//! Tests of the proto conversions.

use super::*;

fn full_config() -> smtp::SessionConfig {
    let mut c = smtp::SessionConfig::new("smtp.example.org", 587, smtp::Security::ImplicitTls);
    c.ignore_certificate_errors = true;
    c.extra_ca_pem = Some(b"-----BEGIN CERTIFICATE-----\nabc\n".to_vec());
    c.helo_name = Some("client.example.org".into());
    c.auth = Some(
        smtp::Credentials::new(
            smtp::AuthMechanism::XOAuth2,
            "alice",
            smtp::Secret::new("tok"),
        )
        .allowed_to(
            ["smtp.example.org:587", "*.example.net", "[2001:db8::1]:25"]
                .map(|d| d.parse().unwrap()),
        ),
    );
    c.allow_plaintext_auth = true;
    c.stop_after = smtp::StopAfter::Auth;
    let ms = |n: u64| Duration::from_millis(n);
    c.timeouts = smtp::Timeouts {
        dns: ms(1),
        connect: ms(2),
        banner: ms(3),
        ehlo: ms(4),
        starttls: ms(5),
        tls_handshake: ms(6),
        auth: ms(7),
        mail_from: ms(8),
        rcpt_to: ms(9),
        data_init: ms(10),
        data_block: ms(11),
        data_end: ms(12),
        quit: ms(13),
        overall: ms(14_001),
    };
    c.message = Some(smtp::MessageSpec {
        sender: "Alice <alice@example.org>".into(),
        recipients: vec!["bob@example.net".into(), "carol@example.net".into()],
        reply_to: Some("r@example.org".into()),
        return_path: Some("b@example.org".into()),
        disposition_notification_to: Some("d@example.org".into()),
        subject: "sübject".into(),
        body: "body\n".into(),
        footer: Some("foot".into()),
        charset: Some("ISO-8859-1".into()),
        plain_text_only: true,
    });
    c
}

#[test]
fn round_trip_every_field() {
    let c = full_config();
    let job = job_from_config("job-1", &c);
    assert_eq!(job.job_id, "job-1");
    assert_eq!(config_from_job(&job).unwrap(), c);

    for security in [
        smtp::Security::None,
        smtp::Security::StartTlsOpportunistic,
        smtp::Security::StartTlsRequired,
        smtp::Security::ImplicitTls,
    ] {
        for stop in [
            smtp::StopAfter::Connect,
            smtp::StopAfter::Tls,
            smtp::StopAfter::Auth,
            smtp::StopAfter::Delivery,
        ] {
            for mech in [
                smtp::AuthMechanism::Plain,
                smtp::AuthMechanism::Login,
                smtp::AuthMechanism::XOAuth2,
            ] {
                let mut c = full_config();
                c.security = security;
                c.stop_after = stop;
                if let Some(a) = c.auth.as_mut() {
                    a.mechanism = mech;
                }
                assert_eq!(config_from_job(&job_from_config("j", &c)).unwrap(), c);
            }
        }
    }

    let minimal = smtp::SessionConfig::new("[2001:db8::1]", 25, smtp::Security::None);
    assert_eq!(
        config_from_job(&job_from_config("j", &minimal)).unwrap(),
        minimal
    );
}

#[test]
fn defaults_and_errors() {
    let job = pb::SmtpJob {
        host: "h".into(),
        port: 25,
        ..Default::default()
    };
    let c = config_from_job(&job).unwrap();
    assert_eq!(c.security, smtp::Security::StartTlsRequired);
    assert_eq!(c.stop_after, smtp::StopAfter::Delivery);
    assert_eq!(c.timeouts, smtp::Timeouts::default());
    assert!(c.auth.is_none() && c.message.is_none());

    let bad_port = pb::SmtpJob {
        port: 70000,
        ..job.clone()
    };
    assert_eq!(
        config_from_job(&bad_port),
        Err(ConvertError::InvalidPort(70000))
    );
    let bad_enum = pb::SmtpJob {
        security: 99,
        ..job.clone()
    };
    assert!(matches!(
        config_from_job(&bad_enum),
        Err(ConvertError::UnknownEnum { .. })
    ));
    let no_mech = pb::SmtpJob {
        auth: Some(pb::JobAuth::default()),
        ..job.clone()
    };
    assert_eq!(
        config_from_job(&no_mech),
        Err(ConvertError::MissingAuthMechanism)
    );
    let bad_destination = pb::SmtpJob {
        auth: Some(pb::JobAuth {
            mechanism: pb::AuthMechanism::Plain.into(),
            allowed_destinations: vec!["smtp.example.org:0".into()],
            ..Default::default()
        }),
        ..job.clone()
    };
    assert!(matches!(
        config_from_job(&bad_destination),
        Err(ConvertError::InvalidDestination(_))
    ));
    let negative = pb::SmtpJob {
        timeouts: Some(pb::JobTimeouts {
            quit: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..job
    };
    assert_eq!(
        config_from_job(&negative),
        Err(ConvertError::InvalidTimeout("quit"))
    );
}

#[test]
fn every_failure_class_maps() {
    for c in smtp::FailureClass::ALL {
        assert_ne!(failure_class(c), pb::FailureClass::Unspecified);
    }
}

#[test]
fn outcome_and_phase_result() {
    let mut rec = smtp::PhaseRecord::new(smtp::Phase::TlsHandshake, smtp::PhaseStatus::Ok);
    rec.duration = Duration::from_millis(1500);
    rec.reply = Some(smtp::Reply {
        code: 250,
        enhanced: None,
        lines: vec!["a".into(), "b".into()],
    });
    rec.tls = Some(smtp::TlsInfo {
        protocol_version: "TLSv1.3".into(),
        cipher_suite: "X".into(),
        peer_certificate: Some(smtp::CertificateInfo {
            subject: "CN=x".into(),
            ..Default::default()
        }),
        verification: smtp::Verification::IgnoredByConfig {
            reason: "expired".into(),
        },
    });
    let r = phase_result(&rec);
    assert_eq!(r.phase(), pb::Phase::TlsHandshake);
    assert_eq!(r.status(), pb::PhaseStatus::Ok);
    assert_eq!(r.reply_code, 250);
    assert_eq!(r.reply_text, "a\nb");
    assert_eq!(
        r.duration,
        Some(prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000
        })
    );
    let tls = r.tls.unwrap();
    assert_eq!(tls.verification(), pb::Verification::Ignored);
    assert_eq!(tls.verification_detail, "expired");
    assert_eq!(tls.peer_certificate.unwrap().subject, "CN=x");

    let report = smtp::SessionReport {
        transcript: vec![rec],
        capabilities: vec!["STARTTLS".into()],
        message_id: Some("<m@x>".into()),
        outcome: smtp::Outcome::Success(smtp::Success {
            stopped_after: smtp::StopAfter::Delivery,
            queue_id: Some("Q1".into()),
            final_reply: Some(smtp::Reply {
                code: 250,
                enhanced: Some("2.0.0".into()),
                lines: vec!["2.0.0 Ok: queued as Q1".into()],
            }),
        }),
    };
    let o = outcome(&report);
    assert!(o.succeeded);
    let res = o.result.unwrap();
    assert_eq!(res.message, "accepted: 250 2.0.0 Ok: queued as Q1");
    assert_eq!(res.queue_id, "Q1");
    assert_eq!(res.message_id, "<m@x>");
    assert_eq!(o.capabilities, vec!["STARTTLS".to_owned()]);

    let failed = smtp::SessionReport {
        outcome: smtp::Outcome::Failure(smtp::Failure {
            class: smtp::FailureClass::AuthRejected,
            phase: smtp::Phase::Auth,
            message: "535".into(),
            hint: "check".into(),
            reply: None,
        }),
        ..report
    };
    let o = outcome(&failed);
    assert!(!o.succeeded);
    let res = o.result.unwrap();
    assert_eq!(res.failure_class(), pb::FailureClass::AuthRejected);
    assert_eq!(res.failed_phase(), pb::Phase::Auth);
    assert_eq!((res.message.as_str(), res.hint.as_str()), ("535", "check"));
}
