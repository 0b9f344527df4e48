//! The gRPC edge: the services of `mailplane.v1`, plus health and reflection.

pub mod accounts;
pub mod audit;
pub mod connectors;
pub mod convert;
pub mod credentials;
pub mod messages;
pub mod paging;
pub mod replicas;
pub mod smtp_tests;
pub mod tokens;
