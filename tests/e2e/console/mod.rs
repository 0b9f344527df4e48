//! The web console, driven over real HTTP.

mod pages;
