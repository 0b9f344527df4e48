//! Runs test e-mails: one SMTP session per test, in the background, through the same session
//! library that the network connector runs (`mailplane_smtp`).
//!
//! A test is stored `QUEUED` before `CreateTest` returns, turns `RUNNING` when its session
//! starts, and always ends `SUCCEEDED`, `FAILED` or `CANCELLED`: the session has an overall
//! deadline, a guard deadline sits above it, tests still running at shutdown are cancelled, and
//! tests left unfinished by a server that died are closed by the sweep.
//!
//! One concern per module: [`admission`] (limits and the destination pre-check), [`SmtpSettings`],
//! [`session_config`] (what the session is told), [`local`] and [`remote`] (where it runs),
//! [`watch`] (events for `WatchTest`), and [`record`] (the test as the domain knows it). The
//! runner owns every task it starts: they are tracked, cancelled and awaited by
//! [`TestRunner::shutdown`].

pub mod admission;
pub mod handoff;
pub mod local;
pub mod record;
pub mod remote;
pub mod session_config;
mod settings;
pub mod watch;
pub mod wire;

pub use settings::SmtpSettings;

use crate::audit::AuditContext;
use crate::domain::{
    Account, AccountId, ConnectorId, TestName, TestRequest, TestState, micros, now_micros,
};
use crate::error::Result;
use crate::keys::Keys;
use crate::oauth::AccessTokens;
use crate::store::Store;
use crate::store::notify::Notifier;
use crate::store::tests::TestCap;
use crate::tunnel::registry::Registry;
use admission::{Running, RunningTest};
use handoff::Handoff;
use mailplane_proto::v1 as pb;
use mailplane_smtp as smtp;
use record::{FailureClass, Phase, TestEvent, TestRecord, TestResult};
use remote::Remote;
use session_config::AuthUnavailable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use watch::LiveTest;

/// How often tests left unfinished (by a server that died) are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Starts, tracks and reports tests.
pub struct TestRunner {
    store: Arc<Store>,
    keys: Arc<Keys>,
    tokens: Arc<AccessTokens>,
    settings: SmtpSettings,
    registry: Arc<Registry>,
    /// Announcements of other replicas' progress (PostgreSQL); `None` on SQLite, whose one
    /// replica runs every test it can be asked about.
    notifier: Option<Arc<Notifier>>,
    live: Mutex<HashMap<TestName, Arc<LiveTest>>>,
    /// The tests running here, against `max_tests_running`.
    running: Running,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl TestRunner {
    /// A runner over `store`.
    pub fn new(
        store: Arc<Store>,
        keys: Arc<Keys>,
        tokens: Arc<AccessTokens>,
        settings: SmtpSettings,
        registry: Arc<Registry>,
        notifier: Option<Arc<Notifier>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            keys,
            tokens,
            settings,
            registry,
            notifier,
            live: Mutex::new(HashMap::new()),
            running: Running::default(),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        })
    }

    fn lock_live(&self) -> MutexGuard<'_, HashMap<TestName, Arc<LiveTest>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live_test(&self, name: TestName) -> Option<Arc<LiveTest>> {
        self.lock_live().get(&name).cloned()
    }

    /// The longest a test can run: the session's deadline, the wait for an agent (through a
    /// connector, up to a few replicas), and a margin.
    pub fn guard_deadline(&self) -> Duration {
        self.settings.timeouts.overall * 2 + self.settings.connector_wait + Duration::from_secs(5)
    }

    /// Starts the sweep: at once, then every minute, tests that a server (this one before a
    /// crash, or another replica) left unfinished past any possible deadline are closed, and
    /// finished tests past their retention are purged.
    pub fn start_sweeper(self: &Arc<Self>) {
        let runner = Arc::clone(self);
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let mut every = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = every.tick() => {}
                }
                match runner.close_stale().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(tests = n, "closed tests left unfinished"),
                    Err(e) => tracing::error!(error = %e, "cannot close unfinished tests"),
                }
                let before = now_micros() - micros(runner.settings.test_retention);
                match runner.store.purge_tests(before).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(tests = n, "purged finished tests past their retention")
                    }
                    Err(e) => tracing::error!(error = %e, "cannot purge finished tests"),
                }
            }
        });
    }

    /// Closes tests that a previous server left queued or running: their sessions are gone.
    pub async fn close_stale(&self) -> Result<usize> {
        let stale = self
            .store
            .stale_tests(now_micros() - micros(self.guard_deadline()))
            .await?;
        for stored in &stale {
            let mut test = record::decode(stored)?;
            test.cancel("the server stopped before this test finished", now_micros());
            self.store
                .update_test(stored.name, TestState::Cancelled, &record::encode(&test))
                .await?;
        }
        Ok(stale.len())
    }

    /// Stops everything the runner started: running tests end `CANCELLED` (and are stored so),
    /// watches and the sweep stop, and every task is awaited.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Admits a test, stores it, and starts its session in the background.
    pub async fn create(
        self: &Arc<Self>,
        ctx: &AuditContext,
        account: AccountId,
        request: TestRequest,
    ) -> Result<TestRecord> {
        let account = self.store.get_account(account).await?;
        // Through a connector, the agent's own allowlist decides; this server never connects.
        if !account.spec.use_network_connector {
            admission::check_destination(
                &self.settings.policy,
                self.settings.timeouts.dns,
                &account,
            )
            .await?;
        }
        let admitted = self.running.admit(self.settings.max_tests_running)?;
        let mut test = TestRecord::queued(account.id, request, now_micros());
        test.name = self
            .store
            .create_test(
                ctx,
                account.id,
                &test.request,
                TestCap {
                    limit: self.settings.max_tests_per_account,
                    since: now_micros() - micros(self.guard_deadline()),
                },
                &record::encode(&test),
            )
            .await?;
        let name = test.name;
        let live = Arc::new(LiveTest::new(test.clone()));
        self.lock_live().insert(name, Arc::clone(&live));
        tracing::info!(test = %name, to = %test.request.to, "test queued");
        self.tasks
            .spawn(Arc::clone(self).run(account, test.request.clone(), live, admitted));
        Ok(test)
    }

    /// Runs one test to its end (or until shutdown), then stores and publishes the result.
    async fn run(
        self: Arc<Self>,
        account: Account,
        request: TestRequest,
        live: Arc<LiveTest>,
        admitted: RunningTest,
    ) {
        let _admitted = admitted;
        let name = live.snapshot().name;
        let deadline = self.guard_deadline();
        let running = async {
            // With replicas, each phase is stored as it ends, for watchers elsewhere. The
            // writer stops between writes, never in one (a database call cancelled midway can
            // leave its connection inside a transaction).
            let done = CancellationToken::new();
            let persist = async {
                if self.notifier.is_some() {
                    watch::persist_progress(&self.store, &live, &done).await;
                }
            };
            let session = async {
                self.execute(&account, &request, &live).await;
                done.cancel();
            };
            tokio::join!(session, persist);
        };
        let execute = tokio::time::timeout(deadline, running);
        tokio::select! {
            () = self.cancel.cancelled() => {
                live.update(|t| t.cancel("the server shut down before this test finished", now_micros()));
            }
            result = execute => if result.is_err() {
                fail(
                    &live,
                    FailureClass::Session(smtp::FailureClass::Timeout),
                    None,
                    format!("the test did not finish within {deadline:?}"),
                    "the server stopped answering; check the relay and the network",
                );
            }
        }
        let finished = live.snapshot();
        // A session ends in a final state; anything else is a failure.
        let state = match finished.state {
            TestState::Succeeded => TestState::Succeeded,
            TestState::Cancelled => TestState::Cancelled,
            _ => TestState::Failed,
        };
        if let Err(e) = self
            .store
            .update_test(name, state, &record::encode(&finished))
            .await
        {
            tracing::error!(test = %name, error = %e, "cannot store the test's result");
        }
        tracing::info!(test = %name, state = state.as_str(), "test finished");
        crate::metrics::test_finished(
            match state {
                TestState::Succeeded => "SUCCEEDED",
                TestState::Cancelled => "CANCELLED",
                _ => "FAILED",
            },
            finished
                .result
                .as_ref()
                .and_then(|r| r.failure_class)
                .map_or("", |c| pb::FailureClass::from(c).as_str_name()),
            finished.transcript.iter().filter_map(|p| {
                Some((
                    smtp::proto::phase(p.phase?).as_str_name(),
                    p.duration?.as_secs_f64(),
                ))
            }),
        );
        live.publish(TestEvent::Finished(Box::new(finished.clone())), |t| {
            *t = finished
        });
        self.lock_live().remove(&name);
    }

    /// Runs the session (here, or on an agent of the account's connector), publishing each
    /// phase, and records the outcome on `live`.
    async fn execute(&self, account: &Account, request: &TestRequest, live: &LiveTest) {
        live.update(|t| t.start(now_micros()));
        let name = live.snapshot().name;
        let auth = match session_config::credentials(&self.store, &self.keys, &self.tokens, account)
            .await
        {
            Ok(Some(auth)) => {
                if let Some(record) = auth.token {
                    local::forward(live, smtp::PhaseEvent::Finished(Box::new(record)));
                }
                Some(auth.credentials)
            }
            Ok(None) => None,
            Err(AuthUnavailable::Credential(e)) => {
                tracing::warn!(test = %name, error = %e, "cannot read the account's credential");
                fail(
                    live,
                    FailureClass::CredentialUnavailable,
                    None,
                    e.to_string(),
                    session_config::CREDENTIAL_UNAVAILABLE_HINT,
                );
                return;
            }
            Err(AuthUnavailable::Token(f)) => {
                let f = *f;
                local::forward(live, smtp::PhaseEvent::Finished(Box::new(f.record)));
                fail(
                    live,
                    FailureClass::Session(f.class),
                    Some(Phase::Token),
                    f.message,
                    &f.hint,
                );
                return;
            }
        };
        let config = session_config::session_config(&self.settings, account, auth, request);
        if let Err(e) = self
            .store
            .update_test(name, TestState::Running, &record::encode(&live.snapshot()))
            .await
        {
            tracing::warn!(test = %name, error = %e, "cannot store the running state");
        }
        let connector = account
            .spec
            .network_connector
            .filter(|_| account.spec.use_network_connector);
        match connector {
            Some(connector) => {
                let remote = Remote {
                    registry: &self.registry,
                    wait: self.settings.connector_wait,
                    failover: self.settings.failover,
                    handoff: self.notifier.as_ref().map(|notifier| Handoff {
                        store: &self.store,
                        keys: &self.keys,
                        notifier,
                        tasks: &self.tasks,
                    }),
                };
                remote
                    .run(name, ConnectorId(connector), &config, live)
                    .await;
            }
            None => local::run(&config, &self.settings.policy, live).await,
        }
    }

    /// A test as it stands: live if it runs here, else as stored.
    pub async fn get(&self, name: TestName) -> Result<TestRecord> {
        match self.live_test(name) {
            Some(live) => Ok(live.snapshot()),
            None => watch::read(&self.store, name).await,
        }
    }

    /// The events of a test: replayed, then live (or polled, when it runs elsewhere), ending
    /// with the finished test.
    pub async fn watch(&self, name: TestName) -> Result<mpsc::Receiver<Result<TestEvent>>> {
        let (tx, rx) = mpsc::channel(32);
        match self.live_test(name) {
            Some(live) => {
                self.tasks
                    .spawn(watch::follow_live(live, tx, self.cancel.clone()));
            }
            None => {
                // Subscribed before the read, so that no change in between is missed.
                let notices = self.notifier.as_ref().map(|n| n.subscribe());
                let first = watch::read(&self.store, name).await?;
                let store = Arc::clone(&self.store);
                self.tasks.spawn(watch::follow_stored(
                    store,
                    first,
                    notices,
                    tx,
                    self.cancel.clone(),
                ));
            }
        }
        Ok(rx)
    }

    /// A page of an account's tests, newest first.
    pub async fn list(
        &self,
        account: AccountId,
        before: i64,
        limit: u32,
    ) -> Result<Vec<TestRecord>> {
        self.store.get_account(account).await?;
        let stored = self.store.list_tests(account, before, limit).await?;
        let mut out = Vec::with_capacity(stored.len());
        for s in &stored {
            out.push(match self.live_test(s.name) {
                Some(live) => live.snapshot(),
                None => record::decode(s)?,
            });
        }
        Ok(out)
    }
}

/// Records a finished session (here or on an agent) on the test: state, result,
/// capabilities and end time; `note` is appended to the result's message.
fn finish(live: &LiveTest, outcome: pb::JobOutcome, note: Option<String>) {
    let now = now_micros();
    let mut result = TestResult::from(outcome.result.unwrap_or_default());
    if let Some(note) = note {
        result.message.push_str(&note);
    }
    let state = if outcome.succeeded {
        TestState::Succeeded
    } else {
        TestState::Failed
    };
    live.update(|t| {
        t.capabilities = outcome.capabilities;
        t.finish(state, result, now);
    });
}

/// Records a failure that the session itself did not report.
fn fail(live: &LiveTest, class: FailureClass, phase: Option<Phase>, message: String, hint: &str) {
    live.update(|t| t.fail(class, phase, message, hint, now_micros()));
}
