//! Test harness: starts the real mailplane server on a listener bound to `127.0.0.1:0`, on
//! SQLite in a temporary directory or on a fresh PostgreSQL database, and hands out clients.

// A test harness: a panic is how it reports a failure, so unwrap and expect are fine here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use mailplane_proto::v1 as pb;
use pb::credential_service_client::CredentialServiceClient;
use pb::smtp_account_service_client::SmtpAccountServiceClient;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A connection that sends an API token.
pub type Conn = mailplane_server::cli::Conn;

/// `channel`, sending `token` with each call.
pub fn with_token(channel: &Channel, token: Option<&str>) -> Conn {
    InterceptedService::new(
        channel.clone(),
        mailplane_server::cli::Bearer::new(token).expect("a header-safe token"),
    )
}

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("MAILPLANE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the server's data dir.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A fresh, uniquely named PostgreSQL database. It is removed by [`PgDatabase::drop_db`], or
/// when it is dropped, even while a failed test unwinds, so a test run leaves no database behind.
#[derive(Debug)]
pub struct PgDatabase {
    /// Its name.
    pub name: String,
    /// Its connection URL.
    pub url: String,
    dropped: bool,
}

impl PgDatabase {
    /// Creates the database, or panics with instructions if PostgreSQL is not there.
    pub async fn create() -> Self {
        use sqlx::Connection as _;
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed at {admin} (set MAILPLANE_TEST_POSTGRES_URL), but: {e}. \
                 Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            )
        });
        let name = format!("mailplane_test_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Self {
            name,
            url,
            dropped: false,
        }
    }

    /// Drops the database (closing whatever still uses it).
    pub async fn drop_db(&mut self) {
        drop_database(&self.name).await;
        self.dropped = true;
    }

    /// Whether a database called `name` exists.
    pub async fn exists(name: &str) -> bool {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
            .await
            .expect("connect to PostgreSQL");
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("query pg_database")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop may run inside a runtime (a test that panicked, a task that was aborted), where
        // blocking on a future is not allowed: drop the database from a thread with a runtime
        // of its own, and wait for it.
        let name = std::mem::take(&mut self.name);
        let dropper =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(drop_database(&name)),
                    Err(e) => eprintln!("cannot drop test database {name}: {e}"),
                }
            });
        let _ = dropper.join();
    }
}

/// `DROP DATABASE … WITH (FORCE)`, best effort: a database left behind is only litter.
async fn drop_database(name: &str) {
    use sqlx::Connection as _;
    match sqlx::PgConnection::connect(&postgres_admin_url()).await {
        Ok(mut conn) => {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                eprintln!("cannot drop test database {name}: {e}");
            }
        }
        Err(e) => eprintln!("cannot drop test database {name}: {e}"),
    }
}

/// A running server and its storage.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its agent listener listens, if it has one.
    pub agent_addr: Option<SocketAddr>,
    /// Where its metrics listener listens, if it has one.
    pub metrics_addr: Option<SocketAddr>,
    /// The web console's address, if it is served.
    pub ui_addr: Option<SocketAddr>,
    /// A connected channel that sends the first admin token.
    pub channel: Conn,
    /// The same connection without credentials.
    pub raw: Channel,
    /// The first admin token, which the server wrote to its data dir.
    pub admin_token: String,
    /// Its data dir (SQLite file, key file).
    pub data_dir: tempfile::TempDir,
    /// Its PostgreSQL database, if any.
    pub pg: Option<PgDatabase>,
    /// The config it runs with.
    pub config: mailplane_server::ServerConfig,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), mailplane_server::StartupError>>>,
}

impl TestServer {
    /// Starts a server on `backend`.
    pub async fn start(backend: Backend) -> Self {
        Self::start_configured(backend, |_| {}).await
    }

    /// Starts a server on `backend`, letting `configure` adjust its config first.
    pub async fn start_configured(
        backend: Backend,
        configure: impl FnOnce(&mut mailplane_server::ServerConfig),
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await),
        };
        let config = mailplane_server::ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database_url: pg.as_ref().map(|p| p.url.clone()),
            drain_timeout: Duration::from_secs(5),
            agent_listen: None,
            ui_listen: None,
            ..mailplane_server::ServerConfig::new(data_dir.path().to_path_buf())
        };
        let mut config = config;
        configure(&mut config);
        Self::start_with(config, data_dir, pg).await
    }

    /// Starts a server with an explicit config.
    pub async fn start_with(
        config: mailplane_server::ServerConfig,
        data_dir: tempfile::TempDir,
        pg: Option<PgDatabase>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        // An agent listener is served when the config asks for one (at its address, port 0
        // picks a free port).
        let agent = match config.agent_listen {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .expect("bind the agent listener"),
            ),
            None => None,
        };
        let agent_addr = agent.as_ref().map(|l| l.local_addr().expect("local addr"));
        let metrics = match config.metrics_listen {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .expect("bind the metrics listener"),
            ),
            None => None,
        };
        let metrics_addr = metrics
            .as_ref()
            .map(|l| l.local_addr().expect("local addr"));
        let ui = match config.ui_listen {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .expect("bind the console listener"),
            ),
            None => None,
        };
        let ui_addr = ui.as_ref().map(|l| l.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = mailplane_server::server::Listeners {
            api: listener,
            agent,
            metrics,
            ui,
        };
        let task = tokio::spawn(mailplane_server::serve(listeners, config.clone(), async {
            let _ = rx.await;
        }));
        let raw = connect(addr, &task).await;
        let admin_token =
            std::fs::read_to_string(mailplane_server::auth::bootstrap_file(&config.data_dir))
                .map(|t| t.trim().to_owned())
                .unwrap_or_default();
        let channel = with_token(&raw, Some(&admin_token));
        Self {
            addr,
            agent_addr,
            metrics_addr,
            ui_addr,
            channel,
            raw,
            admin_token,
            data_dir,
            pg,
            config,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Another replica on this server's database (PostgreSQL): the same key file and config,
    /// its own data dir and ports. It finds the database set up, so it answers to this
    /// server's first admin token.
    pub async fn start_replica(&self) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(self.config.key_path(), dir.path().join("mailplane.key"))
            .expect("copy the key file");
        let config = mailplane_server::ServerConfig {
            data_dir: dir.path().to_path_buf(),
            ..self.config.clone()
        };
        let mut replica = Self::start_with(config, dir, None).await;
        replica.admin_token.clone_from(&self.admin_token);
        replica.channel = with_token(&replica.raw, Some(&self.admin_token));
        replica
    }

    /// An account client.
    pub fn accounts(&self) -> SmtpAccountServiceClient<Conn> {
        SmtpAccountServiceClient::new(self.channel.clone())
    }

    /// A test e-mail client.
    pub fn tests(&self) -> pb::smtp_test_service_client::SmtpTestServiceClient<Conn> {
        pb::smtp_test_service_client::SmtpTestServiceClient::new(self.channel.clone())
    }

    /// A network connector client.
    pub fn connectors(
        &self,
    ) -> pb::network_connector_service_client::NetworkConnectorServiceClient<Conn> {
        pb::network_connector_service_client::NetworkConnectorServiceClient::new(
            self.channel.clone(),
        )
    }

    /// Creates a connector and returns it.
    pub async fn create_connector(&self, display_name: &str) -> pb::Connector {
        self.connectors()
            .create_connector(pb::CreateConnectorRequest {
                connector: Some(pb::Connector {
                    display_name: display_name.into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("create connector")
            .into_inner()
    }

    /// A credential client.
    pub fn credentials(&self) -> CredentialServiceClient<Conn> {
        CredentialServiceClient::new(self.channel.clone())
    }

    /// The SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.path().join("mailplane.db")
    }

    /// Stops the server and starts it again on the same data dir and database (with the
    /// config it ran with, and its first admin token).
    pub async fn restart(mut self) -> Self {
        self.stop_serving().await.expect("clean stop");
        let Self {
            config,
            data_dir,
            pg,
            admin_token,
            ..
        } = self;
        let mut restarted = Self::start_with(config, data_dir, pg).await;
        restarted.channel = with_token(&restarted.raw, Some(&admin_token));
        restarted.admin_token = admin_token;
        restarted
    }

    /// Stops serving (SIGTERM's path), keeping the data and the database.
    async fn stop_serving(&mut self) -> Result<(), mailplane_server::StartupError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }

    /// Stops the server (SIGTERM's path) and returns how `serve` ended.
    pub async fn stop(self) -> Result<(), mailplane_server::StartupError> {
        self.stop_keeping_data().await.0
    }

    /// Stops the server and hands back its data dir, for tests that inspect it afterwards.
    pub async fn stop_keeping_data(
        mut self,
    ) -> (
        Result<(), mailplane_server::StartupError>,
        tempfile::TempDir,
    ) {
        let result = self.stop_serving().await;
        if let Some(pg) = self.pg.as_mut() {
            pg.drop_db().await;
        }
        (result, self.data_dir)
    }
}

/// Connects to the server, waiting for it to accept connections: the listener is already
/// bound, so connecting succeeds as soon as `serve` has opened the storage and begun to accept.
async fn connect(
    addr: SocketAddr,
    task: &JoinHandle<Result<(), mailplane_server::StartupError>>,
) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let channel = endpoint.connect_lazy();
    // The first call waits in the listen backlog until the server accepts; a health check
    // makes sure startup (migrations, key check) finished before the test begins.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = health.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(30), check).await {
        Ok(Ok(_)) => channel,
        Ok(Err(status)) if task.is_finished() => {
            panic!("server exited during startup: {status}")
        }
        Ok(Err(status)) => panic!("health check failed: {status}"),
        Err(_) => panic!("server did not answer within 30 s"),
    }
}

/// Follows a test's `WatchTest` stream to its end and returns every event and the finished
/// test. A test never hangs, so a silent stream for 90 s fails the caller.
pub async fn watch_to_end(
    client: &mut pb::smtp_test_service_client::SmtpTestServiceClient<Conn>,
    name: &str,
) -> (Vec<pb::watch_test_response::Event>, pb::SmtpTest) {
    use pb::watch_test_response::Event;
    let mut stream = client
        .watch_test(pb::WatchTestRequest { name: name.into() })
        .await
        .expect("watch test")
        .into_inner();
    let mut events = Vec::new();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(90), stream.message())
        .await
        .expect("a test never hangs")
        .expect("the watch stream is healthy")
    {
        if let Some(event) = msg.event {
            if let Event::Finished(done) = &event {
                let done = done.clone();
                events.push(event);
                return (events, done);
            }
            events.push(event);
        }
    }
    panic!("the watch of {name} ended without the finished test: {events:?}");
}

/// A valid account request with a unique name.
pub fn account(name: &str) -> pb::SmtpAccount {
    pb::SmtpAccount {
        account_name: name.into(),
        sender_email: format!(
            "x{}@example.com",
            name.to_lowercase()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        ),
        host: "smtp.example.com".into(),
        ..Default::default()
    }
}

/// The relays test credentials may be sent to: every host the tests' accounts use (`account`'s
/// `smtp.example.com`, the fixtures' `localhost`, scripted peers on `127.0.0.1`), on any port.
pub fn test_destinations() -> Vec<String> {
    [
        "smtp.example.com",
        "*.example.com",
        "*.example.net",
        "localhost",
        "127.0.0.1",
    ]
    .map(String::from)
    .to_vec()
}

/// Creates an account and returns it.
pub async fn create_account(
    client: &mut SmtpAccountServiceClient<Conn>,
    msg: pb::SmtpAccount,
) -> pb::SmtpAccount {
    client
        .create_account(pb::CreateAccountRequest { account: Some(msg) })
        .await
        .expect("create account")
        .into_inner()
}

/// Runs a test body against both backends. With `owned configure =>`, each server is
/// started with `configure` (a `FnOnce(&mut ServerConfig)`) and handed over by value: the
/// body may restart it, and stops it.
#[macro_export]
macro_rules! both_backends {
    (owned $configure:expr => $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server =
                        $crate::TestServer::start_configured($crate::Backend::Sqlite, $configure)
                            .await;
                    super::$name(server).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server =
                        $crate::TestServer::start_configured($crate::Backend::Postgres, $configure)
                            .await;
                    super::$name(server).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $crate::TestServer::start($crate::Backend::Sqlite).await;
                    super::$name(&server).await;
                    server.stop().await.expect("clean stop");
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $crate::TestServer::start($crate::Backend::Postgres).await;
                    super::$name(&server).await;
                    server.stop().await.expect("clean stop");
                }
            )*
        }
    };
}

/// The Postfix fixtures started by `deploy/smtp-fixtures/setup.sh` (one parser, in the testkit).
pub use mailplane_testkit::SmtpFixtures;

/// A process's resident memory in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
