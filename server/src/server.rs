//! `mailplane serve`: opens the database and the key, then serves the API until shutdown.

use crate::api::accounts::Accounts;
use crate::api::audit::Audit;
use crate::api::connectors::Connectors;
use crate::api::credentials::Credentials;
use crate::api::messages::Messages;
use crate::api::replicas::Replicas;
use crate::api::smtp_tests::Tests;
use crate::api::tokens::Tokens;
use crate::auth::Authenticator;
use crate::auth::layer::AuthLayer;
use crate::background::{Background, export_audit_log, seal_audit_log, watch_revocations};
use crate::crypto::KeyError;
use crate::domain::replica::ReplicaId;
use crate::keys::Keys;
use crate::oauth::AccessTokens;
use crate::outbox::Outbox;
use crate::replica;
use crate::smtp_tests::TestRunner;
use crate::store::notify::Notifier;
use crate::store::{self, DatabaseUrl, Store};
use crate::tunnel::ca::AgentCa;
use crate::tunnel::pump::Pump;
use crate::tunnel::registry::Registry;
use crate::tunnel::service::{AgentApi, AgentSettings};
use mailplane_proto::v1::audit_service_server::AuditServiceServer;
use mailplane_proto::v1::credential_service_server::CredentialServiceServer;
use mailplane_proto::v1::message_service_server::MessageServiceServer;
use mailplane_proto::v1::network_connector_service_server::NetworkConnectorServiceServer;
use mailplane_proto::v1::replica_service_server::ReplicaServiceServer;
use mailplane_proto::v1::smtp_account_service_server::SmtpAccountServiceServer;
use mailplane_proto::v1::smtp_test_service_server::SmtpTestServiceServer;
use mailplane_proto::v1::token_service_server::TokenServiceServer;
use mailplane_smtp::oauth::HttpSettings;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

mod config;
mod tls;

use tls::{agent_server, api_identity};

pub use config::{
    ApiTls, DEFAULT_AGENT_PORT, DEFAULT_PORT, DEFAULT_UI_PORT, Listeners, ServerConfig,
    StartupError,
};

/// The opened database and keys.
pub struct State {
    /// The store.
    pub store: Arc<Store>,
    /// The key-encryption keys.
    pub keys: Arc<Keys>,
}

/// Opens the database and the key file, checking that they belong together (each key against
/// its key check, and that the file holds the primary key).
pub async fn open_state(config: &ServerConfig) -> Result<State, StartupError> {
    let url = config.database()?;
    let shown = match &url {
        DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
        DatabaseUrl::Postgres(u) => store::redact_url(u),
    };
    let store = store::open(&url)
        .await
        .map_err(|source| StartupError::Database {
            url: shown.clone(),
            source,
        })?;
    let key_path = config.key_path();
    let (keys, created) = match Keys::load(&key_path, Arc::clone(&store)).await {
        Ok(opened) => opened,
        Err(KeyError::Database(e)) => {
            return Err(StartupError::Config(format!("database {shown}: {e}")));
        }
        Err(e) => return Err(e.into()),
    };
    if created {
        tracing::warn!(
            key_file = %key_path.display(),
            "generated a new key-encryption key; BACK IT UP: without it the stored credential \
             secrets cannot be decrypted"
        );
    }
    tracing::info!(
        database = %shown,
        key_file = %key_path.display(),
        keys = ?keys.ids(),
        "storage ready"
    );
    Ok(State {
        store,
        keys: Arc::new(keys),
    })
}

/// Binds `config.listen` and serves until `shutdown` completes.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })
    };
    let api = bind(config.listen).await?;
    let agent = match config.agent_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let metrics = match config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let ui = match config.ui_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    serve(
        Listeners {
            api,
            agent,
            metrics,
            ui,
        },
        config,
        shutdown,
    )
    .await
}

/// Serves on an already bound listener until `shutdown` completes: health turns NOT_SERVING,
/// the listener closes, and in-flight calls get `drain_timeout` to finish.
pub async fn serve(
    listeners: impl Into<Listeners>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let Listeners {
        api: listener,
        agent: agent_listener,
        metrics: metrics_listener,
        ui: ui_listener,
    } = listeners.into();
    let state = open_state(&config).await?;
    let me = replica::describe(
        listener.local_addr().ok(),
        agent_listener.as_ref().and_then(|l| l.local_addr().ok()),
    );
    replica::join(&state.store, &me)
        .await
        .map_err(|e| StartupError::Config(format!("registering this replica: {e}")))?;
    let token_key = crate::auth::token_key::load_or_create(&state.store, &state.keys)
        .await
        .map_err(|e| StartupError::Config(format!("API token key: {e}")))?;
    let auth = Arc::new(Authenticator::new(Arc::clone(&state.store), token_key));
    match crate::auth::bootstrap(&state.store, &auth, &config.data_dir).await {
        Ok(Some(token)) if config.print_bootstrap_token => {
            eprintln!(
                "\nDevelopment mode: plaintext API. In another shell:\n\n    export \
                 MAILPLANE_INSECURE_PLAINTEXT=true MAILPLANE_TOKEN={token}\n"
            );
            if let Some(ui) = ui_listener.as_ref().and_then(|l| l.local_addr().ok()) {
                eprintln!("Or open the web console at http://{ui}/ and sign in with that token.\n");
            }
        }
        Ok(_) => {}
        Err(e) => return Err(StartupError::Config(format!("first admin token: {e}"))),
    }
    let registry = Arc::new(Registry::default());
    let ca = Arc::new(
        AgentCa::load_or_create(&state.store, &state.keys)
            .await
            .map_err(|e| StartupError::Config(format!("agent CA: {e}")))?,
    );
    let notifier = Notifier::start(&state.store);
    let access_tokens = Arc::new(AccessTokens::new(
        Arc::clone(&state.store),
        Arc::clone(&state.keys),
        HttpSettings {
            policy: Arc::new(config.smtp.policy.clone()),
            extra_ca_pem: config.smtp.extra_ca_pem.clone(),
        },
    ));
    let runner = TestRunner::new(
        Arc::clone(&state.store),
        Arc::clone(&state.keys),
        Arc::clone(&access_tokens),
        config.smtp.clone(),
        Arc::clone(&registry),
        notifier.as_ref().map(|(n, _)| Arc::clone(n)),
    );
    let outbox = Outbox::new(
        Arc::clone(&state.store),
        Arc::clone(&access_tokens),
        config.smtp.clone(),
        config.outbox.clone(),
        Arc::clone(&registry),
        me.id.clone(),
        notifier.as_ref().map(|(n, _)| Arc::clone(n)),
    );
    // Everything started from here on is owned: a start-up step that fails below, like a
    // normal shutdown, cancels and awaits it before `serve` returns.
    let background = Background::default();
    background.spawn(replica::beat(Arc::clone(&state.store), me.clone()));
    if let Some((notifier, feed)) = notifier {
        background.spawn(feed);
        // Connector jobs that other replicas queue for the agents streaming to this one.
        let pump = Arc::new(Pump {
            store: Arc::clone(&state.store),
            keys: Arc::clone(&state.keys),
            registry: Arc::clone(&registry),
            me: me.id.clone(),
            notifier,
            wait: config.smtp.connector_wait,
        });
        background.spawn_cancellable(|cancel| pump.run(cancel));
    }
    if !config.audit_seal_interval.is_zero() {
        let (store, every) = (Arc::clone(&state.store), config.audit_seal_interval);
        background.spawn_cancellable(|cancel| seal_audit_log(store, every, cancel));
    }
    if let Some(path) = config.audit_log.clone() {
        background.spawn(export_audit_log(Arc::clone(&state.store), path));
    }
    // Revocation through another replica reaches the streams held here within two seconds.
    background.spawn(watch_revocations(
        Arc::clone(&state.store),
        Arc::clone(&registry),
    ));
    // Tests that a server (this one before a crash, or another replica) left unfinished past
    // any possible deadline are closed now and then, so that none stays RUNNING.
    runner.start_sweeper();
    if let Err(e) = outbox.start().await {
        background.stop().await;
        replica::leave(&state.store, &me.id).await;
        runner.shutdown().await;
        outbox.shutdown(Duration::ZERO).await;
        return Err(StartupError::Config(format!("outbox: {e}")));
    }
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr().ok();
        let state = crate::metrics::http::MetricsState {
            store: Arc::clone(&state.store),
            agent_load: {
                let registry = Arc::clone(&registry);
                Arc::new(move || registry.load())
            },
            ready: Arc::clone(&ready),
        };
        background.spawn_cancellable(|cancel| async move {
            if let Err(e) =
                crate::metrics::http::serve(listener, state, cancel.cancelled_owned()).await
            {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
        if let Some(addr) = addr {
            tracing::info!(%addr, "metrics listening (/metrics, /healthz, /readyz)");
        }
    }
    let shared = Shared {
        ready: &ready,
        config: &config,
        state: &state,
        auth: &auth,
        registry: &registry,
        ca: &ca,
        tokens: &access_tokens,
        runner: &runner,
        outbox: &outbox,
        me: &me.id,
    };
    let served = serve_api(listener, agent_listener, ui_listener, shared, shutdown).await;
    background.stop().await;
    replica::leave(&state.store, &me.id).await;
    // Tests still running here end CANCELLED: their sessions end with the process.
    runner.shutdown().await;
    // Deliveries in flight finish within the drain time, or return to the queue.
    outbox.shutdown(config.drain_timeout).await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// What the services of the API share, opened and started by [`serve`].
struct Shared<'a> {
    /// Cleared when shutdown starts (`/readyz`).
    ready: &'a Arc<std::sync::atomic::AtomicBool>,
    config: &'a ServerConfig,
    state: &'a State,
    auth: &'a Arc<Authenticator>,
    registry: &'a Arc<Registry>,
    ca: &'a Arc<AgentCa>,
    tokens: &'a Arc<AccessTokens>,
    runner: &'a Arc<TestRunner>,
    outbox: &'a Arc<Outbox>,
    me: &'a ReplicaId,
}

/// Serves the API (and the agents' listener) until `shutdown` completes and the calls in
/// flight are drained.
async fn serve_api(
    listener: TcpListener,
    agent_listener: Option<TcpListener>,
    ui_listener: Option<TcpListener>,
    shared: Shared<'_>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let Shared {
        ready,
        config,
        state,
        auth,
        registry,
        ca,
        tokens,
        runner,
        outbox,
        me,
    } = shared;
    let local = listener.local_addr().ok();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SmtpAccountServiceServer<Accounts>>()
        .await;
    health
        .set_serving::<CredentialServiceServer<Credentials>>()
        .await;
    health.set_serving::<SmtpTestServiceServer<Tests>>().await;
    health.set_serving::<MessageServiceServer<Messages>>().await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mailplane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartupError::Serve(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mailplane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| StartupError::Serve(e.to_string()))?;

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = {
        let health = health.clone();
        let registry = Arc::clone(registry);
        let ready = Arc::clone(ready);
        async move {
            shutdown.await;
            ready.store(false, std::sync::atomic::Ordering::SeqCst);
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_not_serving::<SmtpAccountServiceServer<Accounts>>()
                .await;
            health
                .set_not_serving::<CredentialServiceServer<Credentials>>()
                .await;
            health
                .set_not_serving::<SmtpTestServiceServer<Tests>>()
                .await;
            health
                .set_not_serving::<MessageServiceServer<Messages>>()
                .await;
            // Agents reconnect elsewhere (another replica, or this one after a restart).
            registry.close_all();
            let _ = stop_tx.send(true);
            let _ = drain_tx.send(());
        }
    };

    // The CA certificate is public: agents and CLI users verify the server with it.
    let ca_file = config.data_dir.join("ca.pem");
    if let Err(e) = std::fs::write(&ca_file, ca.cert_pem()) {
        tracing::warn!(file = %ca_file.display(), error = %e, "cannot write the CA certificate");
    }
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(SmtpAccountServiceServer::new(Accounts::new(Arc::clone(
            &state.store,
        ))))
        .add_service(CredentialServiceServer::new(Credentials::new(
            Arc::clone(&state.store),
            Arc::clone(&state.keys),
        )))
        .add_service(SmtpTestServiceServer::new(Tests::new(Arc::clone(runner))))
        .add_service(AuditServiceServer::new(Audit::new(Arc::clone(
            &state.store,
        ))))
        .add_service(TokenServiceServer::new(Tokens::new(
            Arc::clone(&state.store),
            Arc::clone(auth),
        )))
        .add_service(
            MessageServiceServer::new(Messages::new(Arc::clone(&state.store), Arc::clone(outbox)))
                // A message up to the size limit, its attachments base64-free in protobuf, plus room.
                .max_decoding_message_size(config.outbox.max_message_size.saturating_add(1 << 20)),
        )
        .add_service(ReplicaServiceServer::new(Replicas::new(
            Arc::clone(&state.store),
            me.clone(),
        )))
        .add_service(NetworkConnectorServiceServer::new(Connectors::new(
            Arc::clone(&state.store),
            Arc::clone(registry),
            Arc::clone(ca),
        )));
    let routes = routes.routes();
    let identity = api_identity(config, ca, local)?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(pem) = &identity {
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(&pem.cert, &pem.key)),
            )
            .map_err(|e| StartupError::Config(format!("API TLS: {e}")))?;
    } else {
        tracing::warn!("the API is served WITHOUT TLS (development mode or --insecure-plaintext)");
    }
    let router = builder
        .layer(crate::metrics::layer::MetricsLayer)
        .layer(AuthLayer::new(Arc::clone(auth)))
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_routes(routes.clone());
    // The console calls the same routes behind the same layers, in-process.
    let console = match ui_listener {
        Some(ui) => {
            let api = {
                use tower_layer::Layer as _;
                let stack = crate::metrics::layer::MetricsLayer
                    .layer(AuthLayer::new(Arc::clone(auth)).layer(routes));
                tower::util::BoxCloneSyncService::new(stack)
            };
            let tls = match &identity {
                Some(pem) => Some(
                    crate::console::serve::tls_config(&pem.cert, &pem.key)
                        .map_err(StartupError::Config)?,
                ),
                None => None,
            };
            let app = crate::console::router(Arc::new(crate::console::Console {
                api,
                auth: Arc::clone(auth),
                store: Arc::clone(&state.store),
                sessions: crate::console::session::Sessions::new(
                    Arc::clone(&state.store),
                    Arc::clone(&state.keys),
                    config.ui_idle_timeout,
                ),
                tls: tls.is_some(),
                agent_listen: agent_listener
                    .as_ref()
                    .and_then(|l| l.local_addr().ok())
                    .unwrap_or_else(|| {
                        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, DEFAULT_AGENT_PORT))
                    }),
            }));
            if let Ok(addr) = ui.local_addr() {
                let scheme = if tls.is_some() { "https" } else { "http" };
                tracing::info!(url = %format!("{scheme}://{addr}/"), "web console listening");
            }
            Some(crate::console::serve::serve(ui, app, tls, stop_rx.clone()))
        }
        None => None,
    };

    if let Some(addr) = local {
        tracing::info!(%addr, "mailplane listening");
    }
    let agents = match agent_listener {
        Some(listener) => {
            let api = AgentApi::new(
                Arc::clone(&state.store),
                Arc::clone(ca),
                Arc::clone(registry),
                Arc::clone(tokens),
                AgentSettings {
                    heartbeat: config.agent_heartbeat,
                    cert_lifetime: config.agent_cert_lifetime,
                },
                me.clone(),
            );
            Some(agent_server(listener, config, ca, api, stop_rx)?)
        }
        None => None,
    };
    // Without TCP_NODELAY, a response larger than one segment waits for the client's delayed
    // ACK (about 40 ms) before its tail is sent.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = router.serve_with_incoming_shutdown(incoming, signal);
    let serving = async move {
        let console = async move {
            match console {
                Some(console) => console
                    .await
                    .map_err(|e| StartupError::Serve(format!("web console: {e}"))),
                None => Ok(()),
            }
        };
        let serving = async move {
            serving
                .await
                .map_err(|e| StartupError::Serve(e.to_string()))
        };
        match agents {
            Some(agents) => {
                let agents =
                    async move { agents.await.map_err(|e| StartupError::Serve(e.to_string())) };
                tokio::try_join!(serving, agents, console).map(|_| ())
            }
            None => tokio::try_join!(serving, console).map(|_| ()),
        }
    };
    tokio::pin!(serving);
    let drain_deadline = async {
        if drain_rx.await.is_ok() {
            tokio::time::sleep(config.drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut serving => result?,
        () = drain_deadline => {
            tracing::warn!(timeout = ?config.drain_timeout, "drain timeout reached; closing remaining calls");
        }
    }
    Ok(())
}
