//! The file format on its own: the example in deploy/ is valid, and a file's shape problems
//! are found with their lines.

use super::file::{self, Problem};
use super::lines::Lines;
use super::normalize;

const EXAMPLE: &str = include_str!("../../../../deploy/mailplane.apply.yaml");

#[test]
fn the_deploy_example_is_a_valid_file() {
    let desired = file::parse(EXAMPLE).expect("the example parses");
    let lines = Lines::new(EXAMPLE);
    assert_eq!(file::check_shape(&desired, &lines), Vec::<Problem>::new());
    assert_eq!(
        (
            desired.connectors.len(),
            desired.credentials.len(),
            desired.accounts.len()
        ),
        (1, 1, 2)
    );
    for c in &desired.connectors {
        normalize::connector(c).expect("a valid connector");
    }
    let (_, spec) = normalize::credential(&desired.credentials[0]).expect("a valid credential");
    for a in &desired.accounts {
        let credential = (!a.credential.is_empty()).then_some(&spec);
        normalize::account(a, credential).expect("a valid account");
    }
    // The secret is referenced, not given.
    let secrets = desired.credentials[0].secrets();
    assert_eq!(secrets.len(), 1);
    assert!(secrets[0].reference.env.is_some());
}

#[test]
fn a_default_given_twice_and_a_secret_given_both_ways_are_found_at_their_lines() {
    let text = "\
credentials:
  - display_name: relay
    username: a@example.com
    allowed_destinations: [smtp.example.com]
    secret_env: RELAY
    secret_file: /run/secrets/relay
accounts:
  - account_name: a
    is_default: true
    sender_email: a@example.com
    host: smtp.example.com
  - account_name: b
    is_default: true
    sender_email: b@example.com
    host: smtp.example.com
";
    let desired = file::parse(text).unwrap();
    let problems = file::check_shape(&desired, &Lines::new(text));
    let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(6), Some(13)], "{problems:?}");
    assert!(problems[0].message.contains("not both"), "{problems:?}");
    assert!(
        problems[1].message.contains("only one account"),
        "{problems:?}"
    );
}

#[test]
fn an_account_normalizes_to_what_the_server_stores() {
    let text = "accounts:\n  - account_name: a\n    sender_email: a@example.com\n    host: smtp.example.com\n    security: implicit_tls\n";
    let desired = file::parse(text).unwrap();
    let a = normalize::account(&desired.accounts[0], None).unwrap();
    // The defaults `accounts create` gives: the port from the security mode, UTF-8, enabled.
    assert_eq!(a.port, 465);
    assert_eq!(a.charset, "UTF-8");
    assert_eq!(a.enabled, Some(true));
}
