//! Tests of the configuration.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ConfigArgs,
}

#[test]
fn the_example_config_parses() {
    let file: FileConfig =
        toml::from_str(include_str!("../../../deploy/mailplane-agent.toml")).unwrap();
    assert_eq!(file.allowed_destinations.map(|a| a.len()), Some(2));
    assert!(
        file.enrollment_token.is_none(),
        "the example keeps no token"
    );
}

fn parse(argv: &[&str]) -> ConfigArgs {
    let mut full = vec!["agent"];
    full.extend_from_slice(argv);
    Cli::try_parse_from(full).unwrap().args
}

#[test]
fn durations() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("ten").is_err());
    assert!(parse_duration("10d").is_err());
}

#[test]
fn flags_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        r#"
server = "https://file.example:7751"
server_ca = "/file/ca.pem"
server_name = "file-name"
allowed_destinations = ["file.example:25"]
max_concurrent_jobs = 3
heartbeat_interval = "5s"
drain_timeout = 7
enrollment_token = "file-token-value"
log_format = "json"
"#,
    )
    .unwrap();
    let config = path.to_str().unwrap();

    let c = parse(&["--config", config]).resolve().unwrap();
    assert_eq!(c.servers, vec!["https://file.example:7751"]);
    assert_eq!(c.server_ca, PathBuf::from("/file/ca.pem"));
    assert_eq!(c.server_name.as_deref(), Some("file-name"));
    assert_eq!(c.allowed_destinations, vec!["file.example:25".to_owned()]);
    assert_eq!(c.max_concurrent_jobs, 3);
    assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(c.drain_timeout, Duration::from_secs(7));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.log_level, "info");
    assert_eq!(c.state_dir, default_state_dir());
    let token = c.enrollment_token.clone().unwrap();
    assert_eq!(token.expose(), "file-token-value");
    let shown = format!("{c:?}");
    assert!(!shown.contains("file-token-value"), "{shown}");
    assert!(shown.contains("<redacted>"));

    let c = parse(&[
        "--config",
        config,
        "--server",
        "https://flag.example:1",
        "--allow",
        "a.example:25,b.example",
        "--allow",
        "10.0.0.0/8",
        "--max-concurrent-jobs",
        "9",
        "--heartbeat-interval",
        "250ms",
        "--log-format",
        "text",
        "--state-dir",
        "/flag/state",
    ])
    .resolve()
    .unwrap();
    assert_eq!(c.servers, vec!["https://flag.example:1"]);
    assert_eq!(c.server_ca, PathBuf::from("/file/ca.pem"));
    assert_eq!(
        c.allowed_destinations,
        vec!["a.example:25", "b.example", "10.0.0.0/8"]
    );
    assert_eq!(c.max_concurrent_jobs, 9);
    assert_eq!(c.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(c.drain_timeout, Duration::from_secs(7));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.state_dir, PathBuf::from("/flag/state"));

    // Defaults, and the required settings.
    let c = parse(&["--server", "https://s:1", "--server-ca", "/ca.pem"])
        .resolve()
        .unwrap();
    assert_eq!(c.max_concurrent_jobs, 8);
    assert_eq!(c.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(c.drain_timeout, Duration::from_secs(30));
    assert!(c.allowed_destinations.is_empty());
    assert!(c.enrollment_token.is_none());
    assert!(matches!(
        parse(&["--server-ca", "/ca.pem"]).resolve(),
        Err(ConfigError::Missing("server", ..))
    ));
}

#[test]
fn unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "server = \"https://s:1\"\nsevrer_ca = \"x\"\n").unwrap();
    let err = parse(&["--config", path.to_str().unwrap()])
        .resolve()
        .unwrap_err();
    assert!(err.to_string().contains("sevrer_ca"), "{err}");
}

#[test]
fn server_name_comes_from_the_setting_or_the_url() {
    let mut c = AgentConfig::new("https://[::1]:7751", "/ca.pem", "/state", Vec::new());
    let urls = c.server_urls().unwrap();
    assert_eq!((urls[0].host.as_str(), urls[0].port), ("::1", 7751));
    assert_eq!(c.tls_name(&urls[0]), "::1");
    c.validate().unwrap();
    c.servers = vec!["http://mailplane.example.org:7751".into()];
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "invalid server URL \"http://mailplane.example.org:7751\": \
         the agent talks to the server only over TLS: give an https:// URL in --server \
         (MAILPLANE_AGENT_SERVER, or `server` in the configuration file)"
    );
    c.servers = vec!["not a url".into()];
    assert!(matches!(
        c.validate(),
        Err(ConfigError::ServerUrl { reason, .. }) if reason == "not a URL"
    ));
    c.servers = vec!["https://cp.example.org".into()];
    c.server_name = Some("mailplane.example.org".into());
    let urls = c.server_urls().unwrap();
    assert_eq!(urls[0].port, 443);
    assert!(!urls[0].is_ip());
    assert_eq!(c.tls_name(&urls[0]), "mailplane.example.org");
}

#[test]
fn server_is_repeatable_and_a_list_in_the_environment() {
    let c = parse(&[
        "--server",
        "https://a.example:1",
        "--server",
        "https://b.example:1,https://c.example:1",
        "--server-ca",
        "/ca.pem",
    ])
    .resolve()
    .unwrap();
    assert_eq!(
        c.servers,
        vec![
            "https://a.example:1",
            "https://b.example:1",
            "https://c.example:1"
        ]
    );
    assert_eq!(c.connections, 1);

    // The environment takes the same comma-separated list (clap reads it for the flag).
    let cmd = <Cli as clap::CommandFactory>::command();
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == "server")
        .unwrap();
    assert_eq!(
        arg.get_env().and_then(|e| e.to_str()),
        Some("MAILPLANE_AGENT_SERVER")
    );
    assert_eq!(arg.get_value_delimiter(), Some(','));
}

fn from_file(text: &str) -> Result<AgentConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, format!("server_ca = \"/ca.pem\"\n{text}")).unwrap();
    parse(&["--config", path.to_str().unwrap()]).resolve()
}

#[test]
fn the_file_takes_one_server_or_a_list() {
    let c = from_file("server = \"https://one.example:7751\"\n").unwrap();
    assert_eq!(c.servers, vec!["https://one.example:7751"]);
    let c = from_file(
        "server = [\"https://cp1.example:7751\", \"https://cp2.example:7751\"]\nconnections = 2\n",
    )
    .unwrap();
    assert_eq!(
        c.servers,
        vec!["https://cp1.example:7751", "https://cp2.example:7751"]
    );
    assert_eq!(c.connections, 2);
    assert!(matches!(
        from_file("server = []\n"),
        Err(ConfigError::Missing("server", ..))
    ));
    // Only `server`: a `servers` key is refused like any unknown key.
    let err = from_file("servers = [\"https://a.example:1\"]\n").unwrap_err();
    assert!(err.to_string().contains("servers"), "{err}");
}

#[test]
fn duplicates_and_bad_urls_in_the_list_are_refused() {
    let err = parse(&[
        "--server",
        "https://CP.example:7751,https://b.example:7751,https://cp.example:7751",
        "--server-ca",
        "/ca.pem",
    ])
    .resolve()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid server URL \"https://cp.example:7751\": \
         the same server as \"https://CP.example:7751\" (listed twice)"
    );
    // The default port counts as the same server.
    assert!(
        parse(&[
            "--server",
            "https://a.example,https://a.example:443",
            "--server-ca",
            "/ca.pem"
        ])
        .resolve()
        .is_err()
    );
    // Another port is another server.
    parse(&[
        "--server",
        "https://a.example:1,https://a.example:2",
        "--server-ca",
        "/ca.pem",
    ])
    .resolve()
    .unwrap();
    let err = parse(&[
        "--server",
        "https://a.example:1,http://b.example:1",
        "--server-ca",
        "/ca.pem",
    ])
    .resolve()
    .unwrap_err();
    assert!(
        err.to_string().contains("https:// URL in --server"),
        "{err}"
    );
}

#[test]
fn connections_are_bounded() {
    let with = |n: &str| {
        parse(&[
            "--server",
            "https://a.example:1",
            "--server-ca",
            "/ca.pem",
            "--connections",
            n,
        ])
        .resolve()
    };
    assert_eq!(with("2").unwrap().connections, 2);
    assert_eq!(with("8").unwrap().connections, 8);
    for bad in ["0", "9"] {
        let err = with(bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid connections: {bad}: must be from 1 to 8")
        );
    }
    assert!(matches!(
        from_file("server = \"https://a.example:1\"\nconnections = 0\n"),
        Err(ConfigError::Invalid("connections", _))
    ));
}

#[test]
fn trust_store_flag_over_file_over_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let write = |trust: &str| {
        std::fs::write(
            &path,
            format!(
                "server = \"https://s.example:7751\"\nserver_ca = \"/ca.pem\"\n\
                 allowed_destinations = [\"smtp.example:25\"]\n{trust}"
            ),
        )
        .unwrap();
    };
    let config = path.to_str().unwrap();
    write("");
    let c = parse(&["--config", config]).resolve().unwrap();
    assert_eq!(c.trust, mailplane_smtp::TrustStore::SystemAndWebpki);
    write("trust = \"system\"\n");
    let c = parse(&["--config", config]).resolve().unwrap();
    assert_eq!(c.trust, mailplane_smtp::TrustStore::System);
    let c = parse(&["--config", config, "--trust", "webpki"])
        .resolve()
        .unwrap();
    assert_eq!(c.trust, mailplane_smtp::TrustStore::Webpki);
    write("trust = \"openssl\"\n");
    let e = parse(&["--config", config]).resolve().unwrap_err();
    assert!(e.to_string().contains("system+webpki"), "{e}");
}

fn env(https_proxy: Option<&str>, no_proxy: Option<&str>) -> ProxyEnv {
    ProxyEnv {
        https_proxy: https_proxy.map(|v| ("HTTPS_PROXY", v.parse().unwrap())),
        no_proxy: no_proxy.map(str::to_owned),
    }
}

const BASE: [&str; 4] = [
    "--server",
    "https://cp.example:7751",
    "--server-ca",
    "/ca.pem",
];

#[test]
fn the_proxy_flag_wins_over_the_environment() {
    let mut argv = BASE.to_vec();
    argv.extend(["--proxy", "http://u:flag-pw@flag.example:3128"]);
    let c = parse(&argv)
        .resolve_with(&env(Some("http://env.example:8080"), Some("*")))
        .unwrap();
    let p = c.proxy.as_ref().unwrap();
    assert_eq!(
        (p.url.host.as_str(), p.url.port, p.from),
        ("flag.example", 3128, "--proxy")
    );
    // NO_PROXY goes with HTTPS_PROXY only.
    assert!(c.proxy_for(&c.server_urls().unwrap()[0]).is_some());
    assert!(!format!("{c:?}").contains("flag-pw"), "{c:?}");
    assert!(!format!("{:?}", parse(&argv)).contains("flag-pw"));

    let c = parse(&BASE)
        .resolve_with(&env(Some("http://env.example:8080"), None))
        .unwrap();
    let p = c.proxy.as_ref().unwrap();
    assert_eq!(
        (p.url.host.as_str(), p.from),
        ("env.example", "HTTPS_PROXY")
    );
    let c = parse(&BASE)
        .resolve_with(&env(
            Some("http://env.example:8080"),
            Some("other.example,.cp.example"),
        ))
        .unwrap();
    assert!(c.proxy.is_some());
    assert!(
        c.proxy_for(&c.server_urls().unwrap()[0]).is_none(),
        "NO_PROXY lists it"
    );

    let c = parse(&BASE).resolve_with(&ProxyEnv::default()).unwrap();
    assert!(c.proxy.is_none());
    // An empty --proxy turns the environment's off.
    let mut off = BASE.to_vec();
    off.extend(["--proxy", ""]);
    let c = parse(&off)
        .resolve_with(&env(Some("http://env.example:8080"), None))
        .unwrap();
    assert!(c.proxy.is_none());
}

#[test]
fn the_proxy_comes_from_the_file_and_only_http_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "proxy = \"http://file.example:3128\"\n").unwrap();
    let mut argv = BASE.to_vec();
    argv.extend(["--config", path.to_str().unwrap()]);
    let c = parse(&argv).resolve_with(&ProxyEnv::default()).unwrap();
    assert_eq!(c.proxy.unwrap().url.host, "file.example");

    let mut bad = BASE.to_vec();
    bad.extend(["--proxy", "https://u:tls-pw@p.example:3128"]);
    let e = parse(&bad).resolve_with(&ProxyEnv::default()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("invalid proxy URL in --proxy: unsupported proxy scheme \"https\""),
        "{text}"
    );
    assert!(!text.contains("tls-pw"), "{text}");
    let e = parse(&BASE)
        .resolve_with(&env(Some("socks5://p.example:1080"), None))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid proxy URL in HTTPS_PROXY"),
        "{e}"
    );
}

#[test]
fn the_metrics_listener_is_off_unless_set_and_the_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let base = "server = \"https://file.example:7751\"\nserver_ca = \"/ca.pem\"\n";
    std::fs::write(&path, base).unwrap();
    let config = path.to_str().unwrap();
    assert_eq!(
        parse(&["--config", config])
            .resolve()
            .unwrap()
            .metrics_listen,
        None
    );
    std::fs::write(
        &path,
        format!("{base}metrics_listen = \"127.0.0.1:9752\"\n"),
    )
    .unwrap();
    let c = parse(&["--config", config]).resolve().unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9752".parse().unwrap()));
    let c = parse(&["--config", config, "--metrics-listen", "[::1]:9753"])
        .resolve()
        .unwrap();
    assert_eq!(c.metrics_listen, Some("[::1]:9753".parse().unwrap()));
    std::fs::write(&path, format!("{base}metrics_listen = \"localhost\"\n")).unwrap();
    assert!(matches!(
        parse(&["--config", config]).resolve(),
        Err(ConfigError::Parse { .. })
    ));
}
