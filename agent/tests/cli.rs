//! The `mailplane-agent` binary: `check-config` and where settings come from (flags over
//! `MAILPLANE_AGENT_*` variables over the file over defaults).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const TOKEN: &str = "cli-TOKEN-5e2d0c";

fn agent(args: &[&str], envs: &[(&str, &str)]) -> (Output, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailplane-agent"));
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MAILPLANE_AGENT_")) {
        cmd.env_remove(k);
    }
    for k in ["https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"] {
        cmd.env_remove(k);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn check_config_precedence_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked here").unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        format!(
            "server = \"https://file.example:7751\"\nserver_ca = {ca:?}\n\
             allowed_destinations = [\"file.example:25\"]\nmax_concurrent_jobs = 2\n\
             drain_timeout = \"45s\"\nstate_dir = {:?}\n",
            dir.path().join("state")
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();

    // The file alone: not enrolled and no token, so a problem.
    let (out, text) = agent(&["check-config", "--config", config], &[]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("https://file.example:7751"), "{text}");
    assert!(text.contains("file.example:25"), "{text}");
    assert!(text.contains("max_concurrent_jobs:  2"), "{text}");
    assert!(text.contains("45s"), "{text}");
    assert!(text.contains("mailplane-agent enroll"), "{text}");

    // The environment beats the file; a flag beats the environment. With a token the
    // missing state is fine (run enrolls), and the token is never printed.
    let envs = [
        (
            "MAILPLANE_AGENT_SERVER",
            "https://env.example:1,https://env2.example:1",
        ),
        ("MAILPLANE_AGENT_CONNECTIONS", "2"),
        ("MAILPLANE_AGENT_MAX_CONCURRENT_JOBS", "5"),
        (
            "MAILPLANE_AGENT_ALLOWED_DESTINATIONS",
            "env.example:587,10.0.0.0/8",
        ),
        ("MAILPLANE_AGENT_ENROLLMENT_TOKEN", TOKEN),
    ];
    let (out, text) = agent(
        &[
            "check-config",
            "--config",
            config,
            "--max-concurrent-jobs",
            "7",
        ],
        &envs,
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("server:               https://env.example:1, https://env2.example:1"),
        "{text}"
    );
    assert!(text.contains("connections:          2"), "{text}");
    assert!(text.contains("env.example:587, 10.0.0.0/8"), "{text}");
    assert!(text.contains("max_concurrent_jobs:  7"), "{text}");
    assert!(text.contains("enrollment_token:     set"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");

    // Invalid patterns and unknown keys are problems.
    let (out, text) = agent(
        &["check-config", "--config", config, "--allow", "bad pattern"],
        &envs,
    );
    assert!(!out.status.success());
    assert!(text.contains("invalid destination pattern"), "{text}");
    let (out, text) = agent(
        &["check-config", "--config", config, "--connections", "9"],
        &envs,
    );
    assert!(!out.status.success());
    assert!(text.contains("invalid connections: 9"), "{text}");
    std::fs::write(&file, "sever = \"x\"\n").unwrap();
    let (out, text) = agent(&["check-config", "--config", config], &[]);
    assert!(!out.status.success());
    assert!(text.contains("sever"), "{text}");

    // --help documents every flag, without the token's value.
    let (out, text) = agent(&["run", "--help"], &envs);
    assert!(out.status.success());
    assert!(text.contains("MAILPLANE_AGENT_ENROLLMENT_TOKEN"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[test]
fn check_config_shows_the_proxy_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked here").unwrap();
    let ca = ca.to_str().unwrap();
    let base = [
        "check-config",
        "--server",
        "https://cp.example:7751",
        "--server-ca",
        ca,
    ];

    let (_, text) = agent(
        &base,
        &[
            ("HTTPS_PROXY", "http://agent:env-pw-19af@proxy.example:3128"),
            ("NO_PROXY", "corp.example"),
        ],
    );
    assert!(
        text.contains("proxy:                http://<redacted>@proxy.example:3128 (from HTTPS_PROXY; no_proxy set)"),
        "{text}"
    );
    assert!(!text.contains("env-pw-19af"), "{text}");

    let mut with_flag = base.to_vec();
    with_flag.extend(["--proxy", "http://agent:flag-pw-77b2@flag.example:8080"]);
    let (_, text) = agent(&with_flag, &[("HTTPS_PROXY", "http://other.example:1")]);
    assert!(
        text.contains("proxy:                http://<redacted>@flag.example:8080 (from --proxy)"),
        "{text}"
    );
    assert!(!text.contains("flag-pw-77b2"), "{text}");

    let (out, text) = agent(
        &base,
        &[(
            "MAILPLANE_AGENT_PROXY",
            "https://agent:tls-pw-0c1d@p.example:3128",
        )],
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("ERROR invalid proxy URL in --proxy: unsupported proxy scheme \"https\""),
        "{text}"
    );
    assert!(!text.contains("tls-pw-0c1d"), "{text}");

    let (_, text) = agent(&base, &[]);
    assert!(text.contains("proxy:                none"), "{text}");
}

#[test]
fn a_metrics_address_in_use_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not read before the listener is bound").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let state = dir.path().join("state");
    let args = [
        "--server",
        "https://server.example:7751",
        "--server-ca",
        ca.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--allow",
        "relay.example:25",
        "--metrics-listen",
        &addr,
    ];
    let (out, text) = agent(&[&["check-config"][..], &args].concat(), &[]);
    assert!(
        text.contains(&format!("metrics_listen:       {addr}")),
        "{text}"
    );
    // Not enrolled: check-config fails for that, but shows the listener first.
    assert!(!out.status.success(), "{text}");
    let (out, text) = agent(&[&["run"][..], &args].concat(), &[]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("cannot listen for metrics on {addr}")),
        "{text}"
    );
    drop(taken);
}
