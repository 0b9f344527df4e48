//! End-to-end tests: the real server, on SQLite and on PostgreSQL, driven over gRPC.
//! One test binary with modules, so that linking happens once.

// Test bodies here are async fns called from generated `#[tokio::test]`s, which clippy's test
// allowances do not reach; a panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod apply;
mod audit;
mod audit_chain;
mod auth;
mod browser;
mod caps;
mod cli;
mod cli_outbox;
mod cluster;
mod concurrency;
mod connectors;
mod console;
mod console_sessions;
mod credentials;
mod discovery;
mod hostile;
mod keys;
mod messages;
mod metrics;
mod netns;
mod oauth;
mod oauth_admin;
mod oauth_agents;
mod outbox;
mod paging;
mod presets;
mod replicas;
mod smtp;
mod storage;
