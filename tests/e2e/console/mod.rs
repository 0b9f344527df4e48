//! The web console, driven over real HTTP as a browser without script would.

mod accounts;
pub mod http;
mod pages;
mod queue;
mod test_window;
