//! The Postgres connection pool and the embedded migrations.
//!
//! The database URL is a secret (it may carry a password): errors and logs name only the
//! host, port and database.

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;

/// Where sqlx records applied migrations: inside our own schema, so that another service
/// using sqlx on the same database keeps its own `public._sqlx_migrations` apart from ours.
pub const MIGRATIONS_TABLE: &str = "followq._sqlx_migrations";

/// The migrations in `migrations/`, compiled into the binary, tracked in [`MIGRATIONS_TABLE`].
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.create_schema("followq");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url is not a valid Postgres URL: {0}")]
    BadUrl(String),
    #[error("could not connect to Postgres at {location}")]
    Connect {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the followq schema failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the followq schema is at migration {found:?} but this binary needs {needed}: run `followq migrate` first"
    )]
    SchemaBehind { found: Option<i64>, needed: i64 },
    #[error("could not read the applied migrations")]
    Query(#[source] sqlx::Error),
}

/// Parses the URL into options, with an application name that shows in `pg_stat_activity`.
pub fn connect_options(url: &SecretString) -> Result<PgConnectOptions, DbError> {
    PgConnectOptions::from_str(url.expose_secret())
        // sqlx's message quotes only the part it could not read, never the whole URL.
        .map_err(|e| DbError::BadUrl(e.to_string()))
        .map(|options| {
            options
                .application_name("followq")
                // A plan for each execution, never a cached generic one: a generic plan made
                // while a table was small (a fresh ledger) keeps its sequential scans until
                // the next ANALYZE, and the batched statements' UNNEST inputs look like 10
                // rows to it whatever their size. Planning costs ~0.3 ms per statement,
                // shared by every job of a batch.
                .options([("plan_cache_mode", "force_custom_plan")])
        })
}

/// Host, port and database of the options: safe to log.
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

/// Opens a pool and checks that the server answers.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let options = connect_options(&settings.url)?;
    let location = describe(&options);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|source| DbError::Connect { location, source })
}

/// Applies any migration not yet applied. Running it again is a no-op.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    migrator().run(pool).await?;
    Ok(())
}

/// Checks that every migration this binary carries has been applied (the daemon does not
/// migrate by itself: in a rolling upgrade, migrations run first, once).
pub async fn check_schema(pool: &PgPool) -> Result<(), DbError> {
    let needed = migrator().iter().map(|m| m.version).max().unwrap_or(0);
    let found: Option<i64> =
        match sqlx::query_scalar("SELECT max(version) FROM followq._sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
        {
            Ok(found) => found,
            // No bookkeeping table: nothing was ever migrated.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P01" | "3F000")) =>
            {
                None
            }
            Err(e) => return Err(DbError::Query(e)),
        };
    if found.is_some_and(|found| found >= needed) {
        Ok(())
    } else {
        Err(DbError::SchemaBehind { found, needed })
    }
}
