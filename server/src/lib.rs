//! mailplane: a control plane for the SMTP accounts that an organisation's systems send
//! notification e-mail through.
//!
//! The same binary is the server (`mailplane serve`) and its CLI (`mailplane accounts …`),
//! which talks to the server over gRPC. Tests drive [`serve`] directly on a listener bound to
//! port 0, so they exercise the real entry point.

pub mod api;
pub mod audit;
pub mod auth;
pub mod background;
pub mod cli;
pub mod config;
pub mod console;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod outbox;
pub mod render;
pub mod replica;
pub mod secret;
pub mod server;
pub mod smtp_tests;
pub mod store;
pub mod telemetry;
pub mod tunnel;

pub use server::{ServerConfig, StartupError, run, serve};
