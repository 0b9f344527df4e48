//! `mailplane serve`: opens the database and the key, then serves the API until shutdown.

use crate::api::accounts::Accounts;
use crate::api::credentials::Credentials;
use crate::api::smtp_tests::Tests;
use crate::crypto::{self, Cipher, KeyError};
use crate::runner::{SmtpSettings, TestRunner};
use crate::store::{self, DatabaseUrl, Store};
use mailplane_proto::v1::credential_service_server::CredentialServiceServer;
use mailplane_proto::v1::smtp_account_service_server::SmtpAccountServiceServer;
use mailplane_proto::v1::smtp_test_service_server::SmtpTestServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

/// The port `mailplane serve` listens on by default, on 127.0.0.1.
pub const DEFAULT_PORT: u16 = 7750;

/// Everything `serve` needs, resolved from flags, environment and config file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the SQLite file and the key file live.
    pub data_dir: PathBuf,
    /// The database; `None` means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// The key-encryption key file; `None` means `data_dir/mailplane.key`.
    pub key_file: Option<PathBuf>,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// How test e-mails run: destination policy, timeouts, limits.
    pub smtp: SmtpSettings,
}

impl ServerConfig {
    /// The key file in use.
    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("mailplane.key"))
    }

    /// The database in use.
    pub fn database(&self) -> Result<DatabaseUrl, StartupError> {
        match &self.database_url {
            Some(url) => DatabaseUrl::parse(url).map_err(StartupError::Config),
            None => Ok(store::default_sqlite(&self.data_dir)),
        }
    }
}

/// Why the server could not start. Each exits the process non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The database could not be opened or migrated.
    #[error("database {url}: {source}")]
    Database {
        /// The database URL, with any password redacted.
        url: String,
        /// The cause.
        source: sqlx::Error,
    },
    /// The key file is missing, malformed or wrong.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("server: {0}")]
    Serve(String),
}

/// The opened database and key.
pub struct State {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The key-encryption key.
    pub cipher: Cipher,
}

/// Opens the database and the key file, checking that they belong together.
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
    let db_err = |e: crate::error::Error| StartupError::Config(format!("database {shown}: {e}"));
    let check = store.key_check().await.map_err(db_err)?;
    let key_path = config.key_path();
    let (cipher, created) = crypto::load_or_create(&key_path, check.is_some())?;
    match &check {
        Some(check) if !cipher.verify_key_check(check) => {
            return Err(KeyError::Mismatch(key_path).into());
        }
        Some(_) => {}
        None => {
            let sealed = cipher
                .key_check()
                .map_err(|e| StartupError::Config(e.to_string()))?;
            store.set_key_check(&sealed).await.map_err(db_err)?;
        }
    }
    if created {
        tracing::warn!(
            key_file = %key_path.display(),
            "generated a new key-encryption key; BACK IT UP: without it the stored credential \
             secrets cannot be decrypted"
        );
    }
    tracing::info!(database = %shown, key_file = %key_path.display(), "storage ready");
    Ok(State { store, cipher })
}

/// Binds `config.listen` and serves until `shutdown` completes.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartupError::Bind {
            addr: config.listen,
            source,
        })?;
    serve(listener, config, shutdown).await
}

/// Serves on an already bound listener until `shutdown` completes: health turns NOT_SERVING,
/// the listener closes, and in-flight calls get `drain_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let state = open_state(&config).await?;
    let local = listener.local_addr().ok();
    let runner = TestRunner::new(
        Arc::clone(&state.store),
        state.cipher.clone(),
        config.smtp.clone(),
    );
    match runner.close_stale().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(tests = n, "closed tests left unfinished by a previous run"),
        Err(e) => tracing::error!(error = %e, "cannot close unfinished tests"),
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SmtpAccountServiceServer<Accounts>>()
        .await;
    health
        .set_serving::<CredentialServiceServer<Credentials>>()
        .await;
    health.set_serving::<SmtpTestServiceServer<Tests>>().await;
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
    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
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
            let _ = drain_tx.send(());
        }
    };

    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(SmtpAccountServiceServer::new(Accounts::new(Arc::clone(
            &state.store,
        ))))
        .add_service(CredentialServiceServer::new(Credentials::new(
            Arc::clone(&state.store),
            state.cipher.clone(),
        )))
        .add_service(SmtpTestServiceServer::new(Tests::new(runner)));

    if let Some(addr) = local {
        tracing::info!(%addr, "mailplane listening");
    }
    // Without TCP_NODELAY, a response larger than one segment waits for the client's delayed
    // ACK (about 40 ms) before its tail is sent.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = router.serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(serving);
    let drain_deadline = async {
        if drain_rx.await.is_ok() {
            tokio::time::sleep(config.drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut serving => result.map_err(|e| StartupError::Serve(e.to_string()))?,
        () = drain_deadline => {
            tracing::warn!(timeout = ?config.drain_timeout, "drain timeout reached; closing remaining calls");
        }
    }
    tracing::info!("stopped");
    Ok(())
}
