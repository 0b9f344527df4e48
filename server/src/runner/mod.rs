//! Runs test e-mails: one SMTP session per test, in the background, through the same session
//! library that the network connector runs (`mailplane_smtp`).
//!
//! A test is stored `QUEUED` before `CreateTest` returns, turns `RUNNING` when its session
//! starts, and always ends `SUCCEEDED`, `FAILED` or `CANCELLED`: the session has an overall
//! deadline, a guard deadline sits above it, and tests left unfinished by a server that died are
//! closed at the next start.

mod live;

use crate::api::convert::timestamp;
use crate::crypto::Cipher;
use crate::domain::ConnectorId;
use crate::domain::{
    Account, AccountId, StoredTest, TestName, TestRequest, TestState, mechanism_for, now_micros,
};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tunnel::registry::Registry;
use live::LiveTest;
use mailplane_proto::v1 as pb;
use mailplane_smtp::proto as convert;
use mailplane_smtp::{self as smtp, DestinationCheck as _};
use prost::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How tests run.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Which destinations a test may connect to, checked after DNS on every address.
    pub policy: smtp::DestinationPolicy,
    /// Per-phase timeouts and the overall deadline.
    pub timeouts: smtp::Timeouts,
    /// An extra CA (PEM) trusted for relays with an internal PKI.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The most tests that may run at once on one account.
    pub max_tests_per_account: usize,
    /// How long a test waits for a live agent of its account's connector.
    pub connector_wait: Duration,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            policy: smtp::DestinationPolicy {
                deny: smtp::DestinationPolicy::default_deny(),
                allow: Vec::new(),
            },
            timeouts: smtp::Timeouts::default(),
            extra_ca_pem: None,
            max_tests_per_account: 4,
            connector_wait: Duration::from_secs(30),
        }
    }
}

/// Starts, tracks and reports tests.
pub struct TestRunner {
    store: Arc<Store>,
    cipher: Cipher,
    settings: SmtpSettings,
    registry: Arc<Registry>,
    live: Mutex<HashMap<TestName, Arc<LiveTest>>>,
    running: Mutex<HashMap<AccountId, usize>>,
}

/// Holds one of an account's concurrent-test slots until dropped.
struct Slot {
    runner: Arc<TestRunner>,
    account: AccountId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.runner.lock_running();
        if let Some(n) = running.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.account);
            }
        }
    }
}

/// Decodes a stored test.
pub fn decode(stored: &StoredTest) -> Result<pb::SmtpTest> {
    let mut test = pb::SmtpTest::decode(stored.payload.as_slice())
        .map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
    test.name = stored.name.to_string();
    Ok(test)
}

impl TestRunner {
    /// A runner over `store`.
    pub fn new(
        store: Arc<Store>,
        cipher: Cipher,
        settings: SmtpSettings,
        registry: Arc<Registry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            cipher,
            settings,
            registry,
            live: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
        })
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, usize>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<TestName, Arc<LiveTest>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The longest a test can run: the session's deadline, the wait for an agent (through a
    /// connector, up to a few replicas), and a margin.
    pub fn guard_deadline(&self) -> Duration {
        self.settings.timeouts.overall * 2 + self.settings.connector_wait + Duration::from_secs(5)
    }

    /// Closes tests that a previous server left queued or running: their sessions are gone.
    pub async fn close_stale(&self) -> Result<usize> {
        let margin = i64::try_from(self.guard_deadline().as_micros()).unwrap_or(i64::MAX);
        let stale = self.store.stale_tests(now_micros() - margin).await?;
        for stored in &stale {
            let mut test = decode(stored)?;
            test.state = pb::TestState::Cancelled.into();
            test.end_time = Some(timestamp(now_micros()));
            test.result = Some(pb::TestResult {
                message: "the server stopped before this test finished".into(),
                hint: "run the test again".into(),
                ..Default::default()
            });
            self.store
                .update_test(stored.name, TestState::Cancelled, &test.encode_to_vec())
                .await?;
        }
        Ok(stale.len())
    }

    /// Cancels the tests still running in this process (shutdown): their sessions end with
    /// the process, and no test may be left RUNNING.
    pub async fn cancel_running(&self) {
        let live: Vec<(TestName, Arc<LiveTest>)> = self
            .lock_live()
            .iter()
            .map(|(name, live)| (*name, Arc::clone(live)))
            .collect();
        for (name, live) in live {
            let mut test = live.snapshot();
            test.state = pb::TestState::Cancelled.into();
            test.end_time = Some(timestamp(now_micros()));
            test.result = Some(pb::TestResult {
                message: "the server shut down before this test finished".into(),
                hint: "run the test again".into(),
                ..Default::default()
            });
            if let Err(e) = self
                .store
                .update_test(name, TestState::Cancelled, &test.encode_to_vec())
                .await
            {
                tracing::error!(test = %name, error = %e, "cannot cancel the test");
            }
        }
    }

    /// Checks the destination before anything is stored or sent: when every address the host
    /// resolves to is denied, the test is refused with the rule named.
    async fn check_destination(&self, account: &Account) -> Result<()> {
        let (host, port) = (account.spec.host.as_str(), account.spec.port);
        let lookup = tokio::time::timeout(
            self.settings.timeouts.dns,
            tokio::net::lookup_host((host, port)),
        )
        .await;
        // A name that does not resolve now is the session's to report (as DNS), not ours.
        let Ok(Ok(addrs)) = lookup else {
            return Ok(());
        };
        let mut denied = None;
        for addr in addrs {
            match self.settings.policy.check(addr) {
                Ok(()) => return Ok(()),
                Err(d) => denied = Some(d),
            }
        }
        match denied {
            Some(d) => Err(Error::PermissionDenied(format!(
                "{}: destination {} ({host}) is denied by the server's destination policy, rule \
                 {:?}; ask the operator to allow it (--smtp-allow) if it is a legitimate relay",
                account.id, d.addr, d.rule
            ))),
            None => Ok(()),
        }
    }

    /// Stores a test and starts its session in the background.
    pub async fn create(
        self: &Arc<Self>,
        ctx: &crate::audit::AuditContext,
        account: AccountId,
        request: TestRequest,
    ) -> Result<pb::SmtpTest> {
        let account = self.store.get_account(account).await?;
        // Through a connector, the agent's own allowlist decides; this server never connects.
        if !account.spec.use_network_connector {
            self.check_destination(&account).await?;
        }
        let slot = self.take_slot(account.id)?;

        let mut test = pb::SmtpTest {
            to: request.to.clone(),
            subject: request.subject.clone(),
            body: request.body.clone(),
            locale: request.locale.as_str().into(),
            stop_after: convert::stop_after_to_pb(request.stop_after).into(),
            state: pb::TestState::Queued.into(),
            executed_by: "direct".into(),
            create_time: Some(timestamp(now_micros())),
            ..Default::default()
        };
        let name = self
            .store
            .create_test(ctx, account.id, TestState::Queued, &test.encode_to_vec())
            .await?;
        test.name = name.to_string();
        let live = Arc::new(LiveTest::new(test.clone()));
        self.lock_live().insert(name, Arc::clone(&live));
        tracing::info!(test = %name, to = %request.to, "test queued");

        let runner = Arc::clone(self);
        tokio::spawn(async move {
            let _slot = slot;
            let deadline = runner.guard_deadline();
            let result =
                tokio::time::timeout(deadline, runner.execute(name, &account, &request, &live))
                    .await;
            let mut finished = live.snapshot();
            if result.is_err() {
                finished.state = pb::TestState::Failed.into();
                finished.end_time = Some(timestamp(now_micros()));
                finished.result = Some(pb::TestResult {
                    failure_class: pb::FailureClass::Timeout.into(),
                    message: format!("the test did not finish within {deadline:?}"),
                    hint: "the server stopped answering; check the relay and the network".into(),
                    ..Default::default()
                });
            }
            let state = match pb::TestState::try_from(finished.state) {
                Ok(pb::TestState::Succeeded) => TestState::Succeeded,
                Ok(pb::TestState::Cancelled) => TestState::Cancelled,
                _ => TestState::Failed,
            };
            if let Err(e) = runner
                .store
                .update_test(name, state, &finished.encode_to_vec())
                .await
            {
                tracing::error!(test = %name, error = %e, "cannot store the test's result");
            }
            tracing::info!(test = %name, state = state.as_str(), "test finished");
            live.publish(
                pb::WatchTestResponse {
                    event: Some(pb::watch_test_response::Event::Finished(finished.clone())),
                },
                |t| *t = finished,
            );
            runner.lock_live().remove(&name);
        });
        Ok(test)
    }

    fn take_slot(self: &Arc<Self>, account: AccountId) -> Result<Slot> {
        let mut running = self.lock_running();
        let n = running.entry(account).or_insert(0);
        if *n >= self.settings.max_tests_per_account {
            return Err(Error::ResourceExhausted(format!(
                "{account} already has {n} tests running (the limit is {}); wait for one to finish",
                self.settings.max_tests_per_account
            )));
        }
        *n += 1;
        Ok(Slot {
            runner: Arc::clone(self),
            account,
        })
    }

    /// Runs the session (here, or on an agent of the account's connector), publishing each
    /// phase, and records the outcome in the snapshot.
    async fn execute(
        &self,
        name: TestName,
        account: &Account,
        request: &TestRequest,
        live: &LiveTest,
    ) {
        let started = now_micros();
        live.publish(pb::WatchTestResponse { event: None }, |t| {
            t.state = pb::TestState::Running.into();
            t.start_time = Some(timestamp(started));
        });
        let config = match self.session_config(account, request).await {
            Ok(c) => c,
            Err(e) => {
                fail(
                    live,
                    pb::FailureClass::AuthRejected,
                    pb::Phase::Auth,
                    format!("cannot read the account's credential: {e}"),
                    "check the credential the account names",
                );
                return;
            }
        };
        if let Err(e) = self
            .store
            .update_test(name, TestState::Running, &live.snapshot().encode_to_vec())
            .await
        {
            tracing::warn!(test = %name, error = %e, "cannot store the running state");
        }
        match account
            .spec
            .network_connector
            .filter(|_| account.spec.use_network_connector)
        {
            Some(connector) => {
                self.execute_remote(name, ConnectorId(connector), &config, live)
                    .await
            }
            None => self.execute_local(&config, live).await,
        }
    }

    /// Runs the session in this process.
    async fn execute_local(&self, config: &smtp::SessionConfig, live: &LiveTest) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(32);
        let report = {
            let session = smtp::run_session(config, &self.settings.policy, Some(&tx));
            tokio::pin!(session);
            loop {
                tokio::select! {
                    Some(event) = rx.recv() => forward(live, event),
                    report = &mut session => break report,
                }
            }
        };
        // Events sent just before the session ended are still queued.
        while let Ok(event) = rx.try_recv() {
            forward(live, event);
        }
        match report {
            Ok(report) => finish(live, convert::outcome(&report), None),
            Err(e) => fail(
                live,
                pb::FailureClass::PermanentFailure,
                pb::Phase::Unspecified,
                format!("the session could not start: {e}"),
                "check the account's settings",
            ),
        }
    }

    /// Runs the session on the least-loaded live agent of `connector`. An agent that goes away
    /// before DATA started hands the job to another replica; after DATA the test fails with
    /// `CONNECTOR_LOST`, because the message may already be on its way and must not be sent
    /// twice.
    async fn execute_remote(
        &self,
        name: TestName,
        connector: ConnectorId,
        config: &smtp::SessionConfig,
        live: &LiveTest,
    ) {
        let job = convert::job_from_config(name.to_string(), config);
        let wait = self.settings.connector_wait;
        let mut lost: Vec<String> = Vec::new();
        loop {
            let Some(mut dispatched) = self.registry.dispatch(connector, job.clone(), wait).await
            else {
                fail(
                    live,
                    pb::FailureClass::ConnectorOffline,
                    pb::Phase::Unspecified,
                    format!(
                        "no live agent of {connector} within {wait:?}{}",
                        retried(&lost)
                    ),
                    &format!(
                        "start mailplane-agent for {connector} (see `mailplane connectors get {}`)",
                        connector.0
                    ),
                );
                return;
            };
            let agent = dispatched.agent.name.to_string();
            tracing::info!(test = %name, %agent, "test dispatched to agent");
            live.publish(pb::WatchTestResponse { event: None }, |t| {
                t.executed_by.clone_from(&agent)
            });
            let mut data_started = false;
            let mut outcome = None;
            while let Some(update) = dispatched.updates.recv().await {
                match update {
                    pb::job_update::Update::PhaseStarted(p) => {
                        data_started |= p == i32::from(pb::Phase::Data);
                        live.publish(
                            pb::WatchTestResponse {
                                event: Some(pb::watch_test_response::Event::PhaseStarted(p)),
                            },
                            |_| {},
                        );
                    }
                    pb::job_update::Update::PhaseFinished(r) => {
                        data_started |= r.phase == i32::from(pb::Phase::Data);
                        live.publish(
                            pb::WatchTestResponse {
                                event: Some(pb::watch_test_response::Event::PhaseFinished(
                                    r.clone(),
                                )),
                            },
                            |t| t.transcript.push(r),
                        );
                    }
                    pb::job_update::Update::Finished(o) => {
                        outcome = Some(o);
                        break;
                    }
                }
            }
            drop(dispatched);
            match outcome {
                Some(outcome) => {
                    let note = (!lost.is_empty()).then(|| retried(&lost));
                    finish(live, outcome, note);
                    return;
                }
                None if data_started => {
                    tracing::warn!(test = %name, %agent, "agent lost after DATA started; not re-sending");
                    fail(
                        live,
                        pb::FailureClass::ConnectorLost,
                        pb::Phase::Data,
                        format!(
                            "{agent} went away after the message was sent; it was not re-sent, because it may already have been delivered"
                        ),
                        "look for the message at the relay (or the recipient) before testing again",
                    );
                    return;
                }
                None => {
                    tracing::warn!(test = %name, %agent, "agent lost before DATA; retrying on another replica");
                    lost.push(agent);
                    if lost.len() >= 3 {
                        fail(
                            live,
                            pb::FailureClass::ConnectorLost,
                            pb::Phase::Unspecified,
                            format!(
                                "agents went away before the session finished{}",
                                retried(&lost)
                            ),
                            "check the agents' logs and their link to the server",
                        );
                        return;
                    }
                }
            }
        }
    }

    /// The session settings for an account: every field of the account, and its secret.
    async fn session_config(
        &self,
        account: &Account,
        request: &TestRequest,
    ) -> Result<smtp::SessionConfig> {
        let s = &account.spec;
        let mut config = smtp::SessionConfig::new(s.host.clone(), s.port, s.security);
        config.ignore_certificate_errors = s.ignore_certificate_errors;
        config.extra_ca_pem.clone_from(&self.settings.extra_ca_pem);
        config.helo_name.clone_from(&s.helo_name);
        config.timeouts = self.settings.timeouts;
        config.stop_after = request.stop_after;
        if s.use_authentication
            && let Some(id) = s.credential
        {
            let credential = self.store.get_credential(id).await?;
            let secret = self.store.credential_secret(id, &self.cipher).await?;
            let mechanism = s
                .auth_mechanism
                .unwrap_or(mechanism_for(credential.spec.kind));
            config.auth = Some(smtp::Credentials::new(
                mechanism,
                credential.spec.username,
                secret,
            ));
        }
        config.message = Some(smtp::MessageSpec {
            sender: s.sender_email.clone(),
            recipients: vec![request.to.clone()],
            reply_to: s.reply_to_email.clone(),
            return_path: s.return_path_email.clone(),
            disposition_notification_to: if s.send_read_confirmation {
                s.confirmation_email.clone()
            } else {
                None
            },
            subject: request.subject.clone(),
            body: request.body.clone(),
            footer: s.enable_footer.then(|| s.footer_text.clone()),
            charset: Some(s.charset.clone()),
            plain_text_only: s.plain_text_only,
        });
        Ok(config)
    }

    /// A test as it stands: live if it runs here, else as stored.
    pub async fn get(&self, name: TestName) -> Result<pb::SmtpTest> {
        let live = self.lock_live().get(&name).cloned();
        match live {
            Some(live) => Ok(live.snapshot()),
            None => decode(&self.store.get_test(name).await?),
        }
    }

    /// The events of a test: replayed, then live, ending with the finished test.
    pub async fn watch(
        &self,
        name: TestName,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<pb::WatchTestResponse, tonic::Status>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        let live = self.lock_live().get(&name).cloned();
        if let Some(live) = live {
            let (history, mut events) = live.subscribe();
            tokio::spawn(async move {
                for event in history.into_iter().filter(|e| e.event.is_some()) {
                    let done = matches!(
                        event.event,
                        Some(pb::watch_test_response::Event::Finished(_))
                    );
                    if tx.send(Ok(event)).await.is_err() || done {
                        return;
                    }
                }
                loop {
                    match events.recv().await {
                        Ok(event) if event.event.is_none() => {}
                        Ok(event) => {
                            let done = matches!(
                                event.event,
                                Some(pb::watch_test_response::Event::Finished(_))
                            );
                            if tx.send(Ok(event)).await.is_err() || done {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            return Ok(rx);
        }
        // Not running here: replay what is stored, following it until it ends (it may be
        // running on another replica).
        let store = Arc::clone(&self.store);
        let first = decode(&store.get_test(name).await?)?;
        tokio::spawn(async move {
            let mut sent = 0;
            let mut test = first;
            loop {
                for phase in test.transcript.iter().skip(sent) {
                    let event = pb::watch_test_response::Event::PhaseFinished(phase.clone());
                    if tx
                        .send(Ok(pb::WatchTestResponse { event: Some(event) }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                sent = test.transcript.len();
                let state =
                    pb::TestState::try_from(test.state).unwrap_or(pb::TestState::Unspecified);
                if matches!(
                    state,
                    pb::TestState::Succeeded | pb::TestState::Failed | pb::TestState::Cancelled
                ) {
                    let event = pb::watch_test_response::Event::Finished(test);
                    let _ = tx
                        .send(Ok(pb::WatchTestResponse { event: Some(event) }))
                        .await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                test = match store.get_test(name).await.and_then(|s| decode(&s)) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
            }
        });
        Ok(rx)
    }

    /// A page of an account's tests, newest first.
    pub async fn list(
        &self,
        account: AccountId,
        before: i64,
        limit: u32,
    ) -> Result<Vec<pb::SmtpTest>> {
        self.store.get_account(account).await?;
        let stored = self.store.list_tests(account, before, limit).await?;
        let mut out = Vec::with_capacity(stored.len());
        for s in &stored {
            let live = self.lock_live().get(&s.name).cloned();
            out.push(match live {
                Some(live) => live.snapshot(),
                None => decode(s)?,
            });
        }
        Ok(out)
    }
}

/// Records a finished session on the test: state, result, capabilities and end time.
fn finish(live: &LiveTest, outcome: pb::JobOutcome, note: Option<String>) {
    let now = now_micros();
    live.publish(pb::WatchTestResponse { event: None }, |t| {
        t.state = if outcome.succeeded {
            pb::TestState::Succeeded
        } else {
            pb::TestState::Failed
        }
        .into();
        t.capabilities = outcome.capabilities;
        t.end_time = Some(timestamp(now));
        let mut result = outcome.result.unwrap_or_default();
        if let Some(note) = note {
            result.message.push_str(&note);
        }
        t.result = Some(result);
    });
}

/// Records a failure that the session itself did not report.
fn fail(live: &LiveTest, class: pb::FailureClass, phase: pb::Phase, message: String, hint: &str) {
    let now = now_micros();
    live.publish(pb::WatchTestResponse { event: None }, |t| {
        t.state = pb::TestState::Failed.into();
        t.end_time = Some(timestamp(now));
        t.result = Some(pb::TestResult {
            failure_class: class.into(),
            failed_phase: phase.into(),
            message,
            hint: hint.to_owned(),
            ..Default::default()
        });
    });
}

/// A note naming the agents that went away before a job finished.
fn retried(lost: &[String]) -> String {
    if lost.is_empty() {
        String::new()
    } else {
        format!(" (retried after {} went away before DATA)", lost.join(", "))
    }
}

/// Publishes a session event to the test's watchers.
fn forward(live: &LiveTest, event: smtp::PhaseEvent) {
    match event {
        smtp::PhaseEvent::Started(phase) => live.publish(
            pb::WatchTestResponse {
                event: Some(pb::watch_test_response::Event::PhaseStarted(
                    convert::phase(phase).into(),
                )),
            },
            |_| {},
        ),
        smtp::PhaseEvent::Finished(record) => {
            let result = convert::phase_result(&record);
            live.publish(
                pb::WatchTestResponse {
                    event: Some(pb::watch_test_response::Event::PhaseFinished(
                        result.clone(),
                    )),
                },
                |t| t.transcript.push(result),
            );
        }
    }
}
