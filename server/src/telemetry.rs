//! Logging with `tracing`: human-readable text by default, JSON lines for log pipelines.

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr. `level` is a tracing filter
/// (`info`, `debug`, `mailplane_server=debug,sqlx=warn`). Quiet libraries stay at `warn`.
pub fn init(json: bool, level: &str) {
    let filter = EnvFilter::try_new(format!("warn,mailplane_server={level},mailplane={level}"))
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (e.g. in tests) is harmless, so its error is ignored on purpose.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
