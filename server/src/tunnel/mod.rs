//! The server side of network connectors: the agents' CA, their TLS listener, and dispatch of
//! SMTP sessions to them over their outbound streams.

pub mod admission;
pub mod ca;
pub mod pump;
pub mod registry;
pub mod service;
