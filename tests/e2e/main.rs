//! End-to-end tests: the real server, on SQLite and on PostgreSQL, driven over gRPC.
//! One test binary with modules, so that linking happens once.

mod accounts;
mod cli;
mod concurrency;
mod credentials;
mod discovery;
mod paging;
mod smtp;
mod storage;
