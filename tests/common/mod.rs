//! Test harness: every test gets its own freshly migrated database, so tests run in parallel
//! and never see each other's rows; and the one tracing set-up of the test binaries
//! ([`init_test_logging`]: silent unless `TEST_LOG` is set).
//!
//! The Postgres server is `DATABASE_URL` when set (CI and this machine), otherwise one started
//! by testcontainers (a laptop with Docker). With neither, the first test fails with a message
//! saying what to set.
//!
//! With `TEST_CITUS_URL` set (the `postgres` database of a Citus coordinator whose
//! workers are registered there, as `../shared/citus/setup.sh` makes it), every test database
//! is made on the Citus cluster instead: created on the coordinator and on each worker (Citus
//! does not propagate CREATE DATABASE), with the citus extension in each and the workers added
//! from the coordinator, by the code that makes the demo's and the bench's Citus databases
//! (`followq::scratch_db::citus`); migrating it distributes the tables.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

pub mod tcp_proxy;

use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::OnceLock;

use followq::accounts::KeyRing;
use followq::accounts::sealed::TokenColumn;
use followq::config::CredentialsSettings;
use followq::scratch_db::citus::{Cluster, ShardCount};
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

/// Tracing for the whole test binary, installed by the first call: nothing is logged unless
/// `TEST_LOG` is set (to anything but the empty string), and then every event `RUST_LOG`
/// lets through (`info` when it is unset) goes to the test writer, which libtest shows for
/// a failing test only, or for all with `--nocapture`. Tests that assert on what is logged
/// install a subscriber of their own instead.
pub fn init_test_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_none_or(|value| value.is_empty()) {
            return;
        }
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another global subscriber already installed keeps its place.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The server all test databases are created on: an admin URL (database `postgres`).
static SERVER_URL: OnceCell<String> = OnceCell::const_new();

/// The id of the key tests seal tokens with.
pub const TEST_KEY_ID: &str = "test";

/// `[credentials]` with one key of this test process's own (made once, at first use), active.
pub fn test_credentials() -> CredentialsSettings {
    static CREDENTIALS: OnceLock<CredentialsSettings> = OnceLock::new();
    CREDENTIALS
        .get_or_init(|| {
            followq::accounts::keyring::fresh_settings(TEST_KEY_ID).expect("a fresh test key")
        })
        .clone()
}

/// The key ring of [`test_credentials`].
pub fn test_keys() -> KeyRing {
    KeyRing::from_settings(&test_credentials()).expect("the test key ring")
}

/// The environment that gives a `followq` process the test key.
pub fn test_key_env() -> Vec<(String, String)> {
    let credentials = test_credentials();
    let key = credentials.keys[TEST_KEY_ID].expose_secret().to_owned();
    vec![
        (
            format!("FOLLOWQ_CREDENTIALS__KEYS__{}", TEST_KEY_ID.to_uppercase()),
            key,
        ),
        (
            "FOLLOWQ_CREDENTIALS__ACTIVE_KEY".to_owned(),
            TEST_KEY_ID.to_owned(),
        ),
    ]
}

/// The Citus coordinator the tests run on, when `TEST_CITUS_URL` is set.
pub fn citus_url() -> Option<String> {
    std::env::var("TEST_CITUS_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

async fn server_url() -> String {
    SERVER_URL
        .get_or_init(|| async {
            if let Some(url) = citus_url() {
                return url;
            }
            match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => url,
                _ => start_container().await,
            }
        })
        .await
        .clone()
}

/// `url` with its database path replaced by `database`.
fn url_for(url: &str, database: &str) -> String {
    let mut url = reqwest::Url::parse(url).expect("the test server URL is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// The Citus cluster coordinated at `server_url` (its admin database), as followq's own
/// scratch databases find it.
pub async fn citus_cluster(server_url: &str) -> Cluster {
    let options = followq::db::connect_options(&server_url.into()).expect("the Citus URL");
    let mut admin = PgConnection::connect_with(&options)
        .await
        .expect("connect to the Citus coordinator");
    let cluster = Cluster::of_server(&mut admin, &options)
        .await
        .expect("the coordinator's nodes");
    admin.close().await.ok();
    cluster.expect("TEST_CITUS_URL names a Citus coordinator with workers")
}

/// Makes database `name` a Citus database, the way the demo and the bench make theirs
/// (`followq::scratch_db::citus`), and returns its cluster.
async fn make_citus_database(server_url: &str, name: &str) -> Cluster {
    let cluster = citus_cluster(server_url).await;
    // Four shards per distributed table rather than Citus's 32: still two on each worker, and
    // a statement spanning shards opens a few connections to the workers, not dozens (tests
    // run in parallel, and every node allows 200).
    cluster
        .make_database(&server_url.into(), name, ShardCount::Total(4))
        .await
        .unwrap_or_else(|e| panic!("make {name} a Citus database: {e:#}"));
    cluster
}

/// Drops database `name` on the server at `admin_url`, if it can.
async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(admin_url).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
}

/// Starts Postgres in Docker through testcontainers and keeps it for the whole test process.
async fn start_container() -> String {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::ImageExt;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;

    let container = match Postgres::default().with_tag("16-alpine").start().await {
        Ok(container) => container,
        Err(error) => panic!(
            "no Postgres for the tests: set DATABASE_URL to a Postgres server you may create \
             databases on (for example postgres://postgres@127.0.0.1:5432/postgres), or start \
             Docker so that testcontainers can run one. testcontainers said: {error}"
        ),
    };
    let port = container
        .get_host_port_ipv4(5432)
        .await
        .expect("the Postgres container exposes port 5432");
    // Kept alive until the process exits; testcontainers' reaper removes it afterwards.
    Box::leak(Box::new(container));
    format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres")
}

/// A fresh, migrated database, dropped when the value is dropped.
pub struct TestDb {
    pub pool: PgPool,
    /// A URL to this database, for spawning the `followq` binary against it.
    pub url: String,
    options: PgConnectOptions,
    name: String,
    server_url: String,
    /// On Citus, the cluster, on whose workers the database is dropped too.
    citus: Option<Cluster>,
}

impl TestDb {
    /// A fresh database with the followq schema applied.
    pub async fn new() -> TestDb {
        let db = TestDb::empty().await;
        followq::db::migrate(&db.pool)
            .await
            .expect("migrations apply to an empty database");
        db
    }

    /// A fresh database without the schema.
    pub async fn empty() -> TestDb {
        let server_url = server_url().await;
        // The creation time in the name lets .ci/run drop databases a killed run left behind
        // without touching those of a run still going.
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("followq_test_{created}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server_url)
            .await
            .expect("connect to the test Postgres server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let citus = match citus_url() {
            Some(_) => Some(make_citus_database(&server_url, &name).await),
            None => None,
        };

        let url = url_for(&server_url, &name);
        let options = PgConnectOptions::from_str(&url).expect("test database URL");
        let pool = Self::pool_for(&options, 8).await;
        TestDb {
            pool,
            url,
            options,
            name,
            server_url,
            citus,
        }
    }

    /// Whether this database is on Citus (the citus extension is installed).
    pub async fn on_citus(&self) -> bool {
        followq::store::schema::citus_installed(&self.pool)
            .await
            .expect("look for the citus extension")
    }

    async fn pool_for(options: &PgConnectOptions, size: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(size)
            .connect_with(options.clone())
            .await
            .expect("connect to the test database")
    }

    /// Another pool on the same database: what a second daemon process would have.
    pub async fn another_pool(&self) -> PgPool {
        Self::pool_for(&self.options, 8).await
    }

    /// A fresh connection outside every pool.
    pub async fn connection(&self) -> PgConnection {
        PgConnection::connect_with(&self.options)
            .await
            .expect("connect to the test database")
    }

    /// Registers an account with the given credentials.
    pub async fn add_account_with(
        &self,
        user_id: &str,
        credentials: followq::accounts::Credentials,
    ) -> followq::ids::UserId {
        let user_id = followq::ids::UserId::parse(user_id).expect("valid test user id");
        followq::accounts::register(
            &self.pool,
            &test_keys(),
            &followq::accounts::NewAccount {
                user_id: user_id.clone(),
                credentials,
                quota: None,
            },
        )
        .await
        .expect("register test account");
        user_id
    }

    /// Registers an OAuth 2.0 account with placeholder tokens.
    pub async fn add_account(&self, user_id: &str) {
        let credentials = followq::accounts::Credentials::OAuth2 {
            access_token: format!("test-access-{user_id}").into(),
            refresh_token: Some(format!("test-refresh-{user_id}").into()),
            expires_at: None,
        };
        self.add_account_with(user_id, credentials).await;
    }

    /// The token stored in `user`'s `column` as it is in the database (sealed, or clear if
    /// written so by hand), or `None`.
    pub async fn raw_token(&self, user: &str, column: TokenColumn) -> Option<String> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM followq.account_credentials WHERE user_id = $1",
            column.name()
        )))
        .bind(user)
        .fetch_optional(&self.pool)
        .await
        .expect("read the credentials row")
        .flatten()
    }

    /// The token stored in `user`'s `column`, opened with the test key.
    pub async fn stored_token(&self, user: &str, column: TokenColumn) -> Option<String> {
        let raw = self.raw_token(user, column).await?;
        let user = followq::ids::UserId::parse(user).expect("valid test user id");
        let token = followq::accounts::sealed::open(&test_keys(), &user, column, &raw)
            .expect("the stored token opens with the test key");
        Some(token.expose_secret().to_owned())
    }

    /// The `followq` binary against this database, with the test key in its environment.
    pub fn followq(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
        let keys = test_key_env();
        let mut all: Vec<(&str, &str)> = keys
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        all.extend_from_slice(env);
        self.followq_without_key(args, stdin, &all)
    }

    /// Runs the `followq` binary against this database, feeding `stdin`, with no credentials
    /// key unless `env` gives one.
    pub fn followq_without_key(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut command = Command::new(env!("CARGO_BIN_EXE_followq"));
        command
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env_remove("FOLLOWQ_ENV")
            .env_remove("RUST_LOG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars() {
            if name.starts_with("FOLLOWQ_CREDENTIALS__") {
                command.env_remove(name);
            }
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn followq");
        if let Some(mut pipe) = child.stdin.take() {
            // A command that refuses its input early may close stdin first.
            let _ = pipe.write_all(stdin.as_bytes());
        }
        child.wait_with_output().expect("wait for followq")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let citus = self.citus.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own to await the DROP.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping the test database");
            runtime.block_on(async {
                drop_database(&server_url, &name).await;
                if let Some(cluster) = citus {
                    let _ = cluster.drop_on_workers(&server_url.into(), &name).await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
