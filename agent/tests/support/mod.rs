//! Shared test support.

pub mod peer;
