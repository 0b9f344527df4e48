//! Test support shared by mailplane's crates (a dev-dependency only):
//!
//! - [`fixtures`]: the one parser of the env file that `deploy/smtp-fixtures/setup.sh` writes
//!   for the real Postfix and Dovecot;
//! - [`peer`]: a scripted SMTP peer that plays faults a real relay will not;
//! - [`logs`]: capturing `tracing` output, to look for secrets in it.

// Test support: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fixtures;
pub mod idp;
pub mod logs;
pub mod peer;

pub use fixtures::SmtpFixtures;
