//! `--watch`: keep a `list` or `get` on screen, printing it again whenever it changes, until
//! interrupted (kubectl's `-w`, polling, as the API has no change feed for these).

use super::CliError;
use super::output::Format;
use clap::Args;
use std::io::Write;
use std::time::Duration;

/// The `--watch` flags of a command.
#[derive(Debug, Clone, Copy, Args)]
pub struct WatchArgs {
    /// Keep running, and print the result again whenever it changes (until Ctrl-C).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// How often --watch asks the server, in seconds.
    #[arg(
        long,
        default_value_t = 2,
        requires = "watch",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub watch_interval: u64,
}

/// Prints what `render` writes, once, or with `--watch` again whenever it differs from the
/// last print, until Ctrl-C (or `stop`, for tests). Tables get a line with the time between
/// prints; JSON and YAML documents follow each other as they are (a stream of documents).
pub async fn run(
    watch: WatchArgs,
    format: Format,
    out: &mut impl Write,
    stop: impl std::future::Future<Output = ()>,
    mut render: impl AsyncFnMut(&mut Vec<u8>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut last = Vec::new();
    render(&mut last).await?;
    out.write_all(&last)?;
    out.flush()?;
    if !watch.watch {
        return Ok(());
    }
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(watch.watch_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        let mut next = Vec::new();
        render(&mut next).await?;
        if next == last {
            continue;
        }
        if format == Format::Table {
            let now = mailplane_proto::timestamp(crate::domain::now_micros());
            writeln!(out, "\n-- {now} --")?;
        }
        out.write_all(&next)?;
        out.flush()?;
        last = next;
    }
}

/// Completes on Ctrl-C (never, if the signal cannot be watched).
pub async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn prints_again_only_what_changed() {
        let calls = AtomicU32::new(0);
        let watch = WatchArgs {
            watch: true,
            watch_interval: 1,
        };
        let mut out = Vec::new();
        // Three polls: "a", "a" (unchanged, not printed), "b"; then stop.
        let stop = tokio::time::sleep(Duration::from_millis(2500));
        run(
            watch,
            Format::Json,
            &mut out,
            stop,
            async |buf: &mut Vec<u8>| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                buf.extend_from_slice(if n < 2 { b"a\n" } else { b"b\n" });
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\nb\n");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn without_watch_prints_once() {
        let watch = WatchArgs {
            watch: false,
            watch_interval: 2,
        };
        let mut out = Vec::new();
        run(
            watch,
            Format::Table,
            &mut out,
            std::future::pending(),
            async |buf: &mut Vec<u8>| {
                buf.extend_from_slice(b"x\n");
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(out, b"x\n");
    }
}
