//! `mailplane-agent`: the network connector, and the SMTP session library that both the
//! agent and the server's direct path run, so that every send takes one code path.

pub mod smtp;
