//! The delivery worker: claims due messages from the database and sends them through a pool of
//! SMTP sessions per account (`mailplane_smtp::Pool`), then records each attempt and settles the
//! message (`crate::domain::message::settle`).
//!
//! One concern per module: [`settings`], [`claim`] (the loop that claims due messages, woken by
//! new messages and by the next due time, never polling), and [`deliver`] (one attempt). The
//! outbox owns every task it starts: [`Outbox::shutdown`] stops claiming, lets the deliveries in
//! flight finish within the drain time, and returns the rest to the queue. New messages come
//! in through [`intake`], which stores those of concurrent `SendMessage` calls together;
//! attempts are recorded through [`recorder`], likewise (both are [`batcher`]s).
//!
//! Messages of accounts with a network connector go to a live agent of the connector, which
//! sends them over its own pooled sessions ([`remote`]); the same slots bound them.
//!
//! Crashes: a message claimed (SENDING) by a server that died is queued again at the next start
//! (SQLite, one server) or once it has been SENDING longer than the claim timeout (PostgreSQL,
//! where other replicas may be delivering). A duplicate is possible only for a message whose
//! DATA the relay accepted in the instant before the crash, before the attempt was recorded: a
//! session takes its next message only once the last attempt is recorded, so at most one per
//! session.

mod batcher;
mod claim;
mod deliver;
mod intake;
mod recorder;
mod remote;
pub mod settings;

pub use settings::OutboxSettings;

use crate::audit::AuditContext;
use crate::domain::message::{Attempt, Message, MessageId, NewMessage};
use crate::domain::replica::ReplicaId;
use crate::domain::retry::Settled;
use crate::domain::{AccountId, micros, now_micros};
use crate::error::Result;
use crate::smtp_tests::SmtpSettings;
use crate::store::Store;
use crate::store::notify::Notifier;
use crate::tunnel::registry::Registry;
use mailplane_smtp as smtp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The outbox's delivery worker.
pub struct Outbox {
    store: Arc<Store>,
    /// Credentials' secrets and the access tokens of those that get them.
    tokens: Arc<crate::oauth::AccessTokens>,
    smtp: SmtpSettings,
    settings: OutboxSettings,
    pool: smtp::Pool<AccountId>,
    /// The live agents, for accounts that deliver through a network connector.
    registry: Arc<Registry>,
    /// This replica: it claims connector messages only when it holds one of their
    /// connector's agents (or no replica does).
    me: ReplicaId,
    /// Other replicas' announcements of new work (PostgreSQL).
    notifier: Option<Arc<Notifier>>,
    /// Per account, one slot per SMTP session, held from the send until the attempt is
    /// recorded: a session takes its next message only once the last one is durable, so at
    /// most `sessions_per_account` messages per account are accepted by a relay and not yet
    /// recorded (the only ones a crash can send twice).
    slots: std::sync::Mutex<HashMap<AccountId, Arc<Semaphore>>>,
    /// New work: a message was queued or made due.
    wake: Notify,
    /// Stops claiming.
    stop: CancellationToken,
    /// Stops the deliveries in flight (after the drain time); they return to the queue.
    abort: CancellationToken,
    tasks: TaskTracker,
    /// Stores new messages in batches (group commit).
    intake: intake::Intake,
    /// Records delivery attempts in batches.
    recorder: recorder::Recorder,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox over `store`; call within a Tokio runtime (the pool starts its reaper). It
    /// delivers nothing until [`Outbox::start`].
    pub fn new(
        store: Arc<Store>,
        tokens: Arc<crate::oauth::AccessTokens>,
        smtp: SmtpSettings,
        settings: OutboxSettings,
        registry: Arc<Registry>,
        me: ReplicaId,
        notifier: Option<Arc<Notifier>>,
    ) -> Arc<Self> {
        let pool = smtp::Pool::new(settings.pool, Arc::new(smtp.policy.clone()));
        let intake = intake::Intake::start(Arc::clone(&store));
        let recorder = recorder::Recorder::start(Arc::clone(&store));
        Arc::new(Self {
            store,
            tokens,
            smtp,
            settings,
            pool,
            registry,
            me,
            notifier,
            slots: std::sync::Mutex::new(HashMap::new()),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            tasks: TaskTracker::new(),
            intake,
            recorder,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &OutboxSettings {
        &self.settings
    }

    /// The delivery slots of `account` (see [`Outbox::slots`]).
    fn slots(&self, account: AccountId) -> Arc<Semaphore> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(slots.entry(account).or_insert_with(|| {
            Arc::new(Semaphore::new(
                self.settings.pool.max_sessions_per_key.max(1),
            ))
        }))
    }

    /// Stores a new message, durably, together with those of concurrent calls (see
    /// [`Store::create_message`] for what it returns), and wakes the claim loop if it is new.
    pub async fn create_message(
        &self,
        ctx: AuditContext,
        new: NewMessage,
    ) -> Result<(Message, bool)> {
        let (message, created) = self.intake.submit((ctx, new)).await??;
        if created {
            self.wake();
        }
        Ok((message, created))
    }

    /// Records a delivery attempt on a SENDING message and settles it (see
    /// [`Store::record_attempt`]), together with those of concurrent deliveries.
    async fn record_attempt(
        &self,
        id: MessageId,
        attempt: &Attempt,
        settled: &Settled,
    ) -> Result<()> {
        self.recorder
            .submit((id, attempt.clone(), settled.clone()))
            .await?
    }

    /// Wakes the claim loop: a message was queued or made due.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the claim loops of every replica: messages were made due (retried, or their
    /// account resumed).
    pub async fn wake_everywhere(&self) {
        self.wake();
        if let Err(e) = self.store.announce_outbox().await {
            tracing::warn!(error = %e, "cannot announce work to the other replicas");
        }
    }

    /// Queues again the messages a previous server left SENDING, then starts claiming.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let claimed_before = if self.store.is_sqlite() {
            // One server: whatever is SENDING now was left by a previous run.
            now_micros() + 1
        } else {
            now_micros() - micros(self.settings.claim_timeout)
        };
        let n = self.store.requeue_sending(claimed_before).await?;
        if n > 0 {
            tracing::warn!(
                messages = n,
                "queued again messages left in delivery by a previous run"
            );
        }
        let outbox = Arc::clone(self);
        self.tasks.spawn(async move { claim::run(&outbox).await });
        Ok(())
    }

    /// Stops claiming, gives the deliveries in flight `drain` to finish, returns the rest to
    /// the queue, awaits every task, and closes the pool's connections.
    pub async fn shutdown(&self, drain: Duration) {
        self.intake.shutdown().await;
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(drain, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("deliveries still running after the drain time: queued again");
            self.abort.cancel();
            self.tasks.wait().await;
        }
        // After the deliveries: they record their attempts through it.
        self.recorder.shutdown().await;
        self.pool.close().await;
    }
}
