//! Resolving the configuration: flags over environment over file over defaults.

use super::*;

#[test]
fn flags_beat_file_beat_defaults() {
    let file: FileConfig =
        toml::from_str("listen = \"127.0.0.1:9000\"\ndata_dir = \"/var/lib/x\"").unwrap();
    let flags = Overrides {
        listen: Some("127.0.0.1:9100".parse().unwrap()),
        ..Overrides::default()
    };
    let c = resolve(flags, &file).unwrap();
    assert_eq!(c.listen.port(), 9100);
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/x"));
    assert_eq!(c.drain_timeout, Duration::from_secs(15));
    let c = resolve(Overrides::default(), &FileConfig::default()).unwrap();
    assert!(
        !c.smtp.policy.deny.is_empty(),
        "link-local and metadata are denied by default"
    );
    assert_eq!(c.listen, default_listen());
}

#[test]
fn smtp_rules_parse_and_bad_ones_are_named() {
    let file: FileConfig = toml::from_str(
        "[smtp]\ndeny = [\"10.0.0.0/8\", \"127.0.0.1 25\"]\n[smtp.timeouts]\nbanner = 7",
    )
    .unwrap();
    let c = resolve(Overrides::default(), &file).unwrap();
    assert_eq!(
        c.smtp.policy.deny.len(),
        smtp::DestinationPolicy::DEFAULT_DENY.len() + 2,
        "deny extends the defaults"
    );
    assert_eq!(c.smtp.timeouts.banner, Duration::from_secs(7));
    let flags = Overrides {
        smtp_allow: vec!["not-a-cidr".into()],
        ..Overrides::default()
    };
    assert!(resolve(flags, &file).unwrap_err().contains("not-a-cidr"));
}

fn denies(c: &ServerConfig, addr: &str) -> bool {
    use smtp::DestinationCheck as _;
    c.smtp.policy.check(addr.parse().unwrap()).is_err()
}

#[test]
fn smtp_deny_extends_and_deny_replace_replaces() {
    let defaults = smtp::DestinationPolicy::DEFAULT_DENY.len();
    // --smtp-deny adds to the defaults.
    let flags = Overrides {
        smtp_deny: vec!["127.0.0.0/8".into(), "::1/128".into()],
        ..Overrides::default()
    };
    let c = resolve(flags, &FileConfig::default()).unwrap();
    assert_eq!(c.smtp.policy.deny.len(), defaults + 2);
    assert!(denies(&c, "127.0.0.1:25") && denies(&c, "[::1]:25"));
    assert!(denies(&c, "169.254.169.254:80") && denies(&c, "168.63.129.16:80"));
    // --smtp-deny-replace replaces them; --smtp-deny still adds.
    let flags = Overrides {
        smtp_deny: vec!["10.0.0.0/8".into()],
        smtp_deny_replace: Some(vec!["127.0.0.0/8".into()]),
        ..Overrides::default()
    };
    let c = resolve(flags, &FileConfig::default()).unwrap();
    assert_eq!(c.smtp.policy.deny.len(), 2);
    assert!(denies(&c, "127.0.0.1:25") && denies(&c, "10.1.1.1:25"));
    assert!(!denies(&c, "169.254.169.254:80"));
    // An empty replacement denies nothing.
    let flags = Overrides {
        smtp_deny_replace: Some(vec![String::new()]),
        ..Overrides::default()
    };
    let c = resolve(flags, &FileConfig::default()).unwrap();
    assert!(c.smtp.policy.deny.is_empty());
    // The file's keys do the same, and flags win over them key by key.
    let file: FileConfig =
        toml::from_str("[smtp]\ndeny = [\"192.168.0.0/16\"]\ndeny_replace = [\"172.16.0.0/12\"]")
            .unwrap();
    let c = resolve(Overrides::default(), &file).unwrap();
    assert_eq!(c.smtp.policy.deny.len(), 2);
    assert!(denies(&c, "192.168.1.1:25") && denies(&c, "172.16.0.1:25"));
    assert!(!denies(&c, "169.254.169.254:80"));
    let flags = Overrides {
        smtp_deny_replace: Some(vec!["127.0.0.0/8".into()]),
        ..Overrides::default()
    };
    let c = resolve(flags, &file).unwrap();
    assert!(denies(&c, "127.0.0.1:25") && denies(&c, "192.168.1.1:25"));
    assert!(!denies(&c, "172.16.0.1:25"));
    let flags = Overrides {
        smtp_deny_replace: Some(vec!["nonsense".into()]),
        ..Overrides::default()
    };
    assert!(resolve(flags, &file).unwrap_err().contains("nonsense"));
}

#[test]
fn the_example_config_parses() {
    let file: FileConfig = toml::from_str(include_str!("../../../deploy/mailplane.toml")).unwrap();
    let c = resolve(Overrides::default(), &file).unwrap();
    assert_eq!(c.listen.port(), 7750);
    assert_eq!(c.smtp.max_tests_per_account, 4);
    assert_eq!(c.smtp.max_tests_running, 64);
    assert_eq!(c.smtp.test_retention, Duration::from_secs(30 * 86_400));
    let defaults = OutboxSettings::default();
    assert_eq!(c.outbox.max_message_size, defaults.max_message_size);
    assert_eq!(c.outbox.retry, defaults.retry);
    assert_eq!(c.outbox.log_retention, defaults.log_retention);
    assert_eq!(c.outbox.pool.max_sessions_per_key, 4);
    assert_eq!(c.outbox.claim_timeout, defaults.claim_timeout);
    assert_eq!(c.outbox.sweep_interval, defaults.sweep_interval);
}

#[test]
fn the_seal_interval_comes_from_flags_file_or_default() {
    let c = resolve(Overrides::default(), &FileConfig::default()).unwrap();
    assert_eq!(c.audit_seal_interval, Duration::from_secs(1));
    let file: FileConfig = toml::from_str("audit_seal_interval = \"250ms\"").unwrap();
    let c = resolve(Overrides::default(), &file).unwrap();
    assert_eq!(c.audit_seal_interval, Duration::from_millis(250));
    let flags = Overrides {
        audit_seal_interval: Some(Duration::ZERO),
        ..Overrides::default()
    };
    assert_eq!(
        resolve(flags, &file).unwrap().audit_seal_interval,
        Duration::ZERO
    );
    assert_eq!(parse_interval("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_interval("3"), Ok(Duration::from_secs(3)));
    assert!(parse_interval("1h").unwrap_err().contains("unit"));
    assert!(parse_interval("soon").is_err());
    let file: FileConfig = toml::from_str("audit_seal_interval = \"x\"").unwrap();
    assert!(
        resolve(Overrides::default(), &file)
            .unwrap_err()
            .contains("audit_seal_interval")
    );
}

#[test]
fn unknown_keys_are_refused() {
    let err = toml::from_str::<FileConfig>("lisen = \"x\"").unwrap_err();
    assert!(err.to_string().contains("lisen"));
}

#[test]
fn the_console_is_on_by_default_and_off_by_flag_or_file() {
    let c = resolve(Overrides::default(), &FileConfig::default()).unwrap();
    assert_eq!(
        c.ui_listen.map(|a| a.port()),
        Some(crate::server::DEFAULT_UI_PORT)
    );
    assert_eq!(c.ui_idle_timeout, crate::console::DEFAULT_IDLE_TIMEOUT);
    let file: FileConfig =
        toml::from_str("ui_listen = \"127.0.0.1:9752\"\nui_idle_timeout = \"5m\"").unwrap();
    let c = resolve(Overrides::default(), &file).unwrap();
    assert_eq!(c.ui_listen.map(|a| a.port()), Some(9752));
    assert_eq!(c.ui_idle_timeout, Duration::from_secs(300));
    // --ui off wins over any address.
    let off = Overrides {
        ui: Some(false),
        ui_listen: Some("127.0.0.1:9753".into()),
        ..Overrides::default()
    };
    assert_eq!(resolve(off, &file).unwrap().ui_listen, None);
    let file: FileConfig = toml::from_str("ui_listen = \"off\"").unwrap();
    assert_eq!(
        resolve(Overrides::default(), &file).unwrap().ui_listen,
        None
    );
    let bad: FileConfig = toml::from_str("ui_listen = \"nowhere\"").unwrap();
    let err = resolve(Overrides::default(), &bad).unwrap_err();
    assert!(err.contains("HOST:PORT or off"), "{err}");
    let zero: FileConfig = toml::from_str("ui_idle_timeout = \"0\"").unwrap();
    assert!(resolve(Overrides::default(), &zero).is_err());
}
