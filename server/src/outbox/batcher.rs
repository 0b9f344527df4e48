//! Group commit: callers hand their write to one task, which writes whatever has gathered
//! while it was writing the last batch in one transaction, so one fsync (SQLite) or one commit
//! (PostgreSQL) serves many callers. Each caller is answered only once its write is committed,
//! with its own answer. No caller waits for company: a write that arrives while the task is
//! idle is written at once, alone. What a batch is and how it is written is a [`Batch`]:
//! [`super::intake`] (new messages) and [`super::recorder`] (delivery attempts).

use crate::error::{Error, Result};
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Writes waiting for the task before callers wait to hand theirs over.
const QUEUE: usize = 1024;

/// A kind of write that is committed in batches.
pub(super) trait Batch: Send + Sync + 'static {
    /// One caller's write.
    type Job: Send + 'static;
    /// What the caller gets back once it is committed.
    type Answer: Send + 'static;
    /// The most jobs in one transaction.
    const MAX_JOBS: usize;
    /// The most bytes (as [`Batch::bytes`] counts them) in one transaction; a batch holds at
    /// least one job.
    const MAX_BYTES: usize;
    /// What `job` counts towards [`Batch::MAX_BYTES`].
    fn bytes(job: &Self::Job) -> usize;
    /// Writes `jobs` and answers each, in order.
    fn write(store: &Store, jobs: Vec<Self::Job>)
    -> impl Future<Output = Vec<Self::Answer>> + Send;
}

/// One caller's job and where its answer goes.
type Handed<B> = (<B as Batch>::Job, oneshot::Sender<<B as Batch>::Answer>);

/// A handle on the task that writes batches of `B`.
#[derive(Debug)]
pub(super) struct Batcher<B: Batch> {
    jobs: mpsc::Sender<Handed<B>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// Why a job was not taken: the server is stopping.
fn stopping() -> Error {
    Error::Internal("the outbox is stopping; nothing was written".into())
}

impl<B: Batch> Batcher<B> {
    /// Starts the task, within a Tokio runtime.
    pub(super) fn start(store: Arc<Store>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(run::<B>(store, queue, stop.clone()));
        tasks.close();
        Self { jobs, stop, tasks }
    }

    /// Writes `job` with the jobs handed over meanwhile; returns once it is committed.
    pub(super) async fn submit(&self, job: B::Job) -> Result<B::Answer> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send((job, answer))
            .await
            .map_err(|_| stopping())?;
        answered.await.map_err(|_| stopping())
    }

    /// Takes no more jobs, writes those already handed over, and awaits the task.
    pub(super) async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// The task: one batch at a time, of whatever waits, until stopped and drained.
async fn run<B: Batch>(
    store: Arc<Store>,
    mut queue: mpsc::Receiver<Handed<B>>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            job = queue.recv() => job,
            () = stop.cancelled() => {
                // Refuse new jobs; those already queued are still received, then `None`.
                queue.close();
                queue.recv().await
            }
        };
        let Some(first) = first else { return };
        let mut bytes = B::bytes(&first.0);
        let mut batch = vec![first];
        while batch.len() < B::MAX_JOBS && bytes < B::MAX_BYTES {
            let Ok(job) = queue.try_recv() else { break };
            bytes += B::bytes(&job.0);
            batch.push(job);
        }
        let (jobs, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        for (answer, result) in answers.into_iter().zip(B::write(&store, jobs).await) {
            // A caller that went away: its write stands all the same.
            let _ = answer.send(result);
        }
    }
}
