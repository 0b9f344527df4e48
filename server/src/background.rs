//! The server's background tasks, and the one owner that cancels and awaits them.

use crate::store::Store;
use crate::tunnel::registry::Registry;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Background tasks of the server, cancelled and awaited together.
#[derive(Default)]
pub struct Background {
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Background {
    /// Runs `task` until it ends or the tasks are stopped.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Runs the task `start` makes with the cancellation token; it must end soon after the
    /// token fires (it may finish its own work first).
    pub fn spawn_cancellable<F>(&self, start: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(start(self.cancel.clone()));
    }

    /// Cancels every task and waits for them to end.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Closes the streams of agents revoked through any replica, checking every two seconds.
pub async fn watch_revocations(store: Arc<Store>, registry: Arc<Registry>) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        every.tick().await;
        match store.revoked_agent_ids().await {
            Ok(ids) => ids.into_iter().for_each(|id| registry.close(id)),
            Err(e) => tracing::warn!(error = %e, "cannot check revoked agents"),
        }
    }
}

/// Seals the audit log's hash chain every `interval`, and once more when cancelled (events of
/// the last moments before a shutdown), until `cancel` fires. Another replica sealing at the
/// same moment makes a pass do nothing; see [`crate::store::audit_chain`].
pub async fn seal_audit_log(store: Arc<Store>, interval: Duration, cancel: CancellationToken) {
    let pass = || async {
        if let Err(e) = store.seal_audit_events().await {
            tracing::warn!(error = %e, "cannot seal the audit log");
        }
    };
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = every.tick() => pass().await,
        }
    }
    pass().await;
}

/// Copies audit events to a JSON-lines file or standard output, once sealed, in the order of
/// the hash chain (`seq`), each with its `seq`, `prev_hash` and `hash`, so that a SIEM can
/// check the chain itself. It starts after the newest event sealed at start-up. Sealed events
/// appear in `seq` order with no gaps (one sealer at a time, each pass committed at once),
/// so following `seq` misses none. With the sealer off everywhere, nothing is copied.
pub async fn export_audit_log(store: Arc<Store>, path: PathBuf) {
    use std::io::Write as _;
    let mut last = match store.audit_chain_head().await {
        Ok(seq) => seq,
        Err(e) => {
            tracing::error!(error = %e, "audit log export: cannot read the log");
            return;
        }
    };
    let mut out: Box<dyn std::io::Write + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(file) => Box::new(file),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "audit log export: cannot open");
                return;
            }
        }
    };
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        let events = match store.sealed_audit_events_after(last, 500).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "audit log export: cannot read the log");
                continue;
            }
        };
        for event in &events {
            if writeln!(out, "{}", event.json()).is_err() {
                tracing::error!("audit log export: cannot write");
            }
            if let Some(link) = &event.link {
                last = link.seq;
            }
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_cancels_and_awaits_every_task() {
        struct Dropped(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let background = Background::default();
        let guard = Dropped(Arc::clone(&dropped));
        background.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        background.stop().await;
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }
}
