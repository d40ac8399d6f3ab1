//! The Postgres connection pool and the embedded migrations.
//!
//! The database URL is a secret (it may carry a password): errors and logs name only the
//! host, port and database, and a URL that is not `postgres://…` or `postgresql://…` is refused
//! before anything reads it (`postgres:/user:pw@host/db`, one slash short, would otherwise
//! connect to a database named after the user, password and host, and every error would
//! print it). A URL without a user name connects as `PGUSER`, else as the operating system
//! user, as libpq does. For a database on another host, add `sslmode=verify-full` (and
//! `sslrootcert=…` for a private CA): the default, `prefer`, neither requires TLS nor checks
//! the server's certificate.

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;
use crate::store::schema::{applied_version, citus_installed, distribute};

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
    #[error("could not tell whether this database has the citus extension")]
    CitusCheck(#[source] sqlx::Error),
    #[error("distributing the followq tables on Citus (followq.distribute()) failed")]
    Distribute(#[source] sqlx::Error),
    #[error("could not read the applied migrations")]
    Query(#[source] sqlx::Error),
}

/// Parses the URL into options, with an application name that shows in `pg_stat_activity`.
pub fn connect_options(url: &SecretString) -> Result<PgConnectOptions, DbError> {
    let url = url.expose_secret();
    let has_authority = ["postgres://", "postgresql://"].iter().any(|prefix| {
        url.get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    });
    if !has_authority {
        return Err(DbError::BadUrl(String::from(
            "it must start with postgres:// or postgresql:// (e.g. postgres://user:password@host:5432/database)",
        )));
    }
    // The user name, when the URL has none: sqlx asks the `whoami` crate, which answers
    // "anonymous" unless its `std` feature is on (see Cargo.toml).
    PgConnectOptions::from_str(url)
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
                // No JIT: a batch of a few thousand rows is estimated costly enough to be
                // compiled, which took ~0.8 s per statement, several times the work itself.
                .options([("plan_cache_mode", "force_custom_plan"), ("jit", "off")])
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

/// Applies any migration not yet applied, then, on a Citus coordinator (the citus extension
/// is installed), distributes the tables (README, "Scaling past one Postgres"). Running it
/// again is a no-op.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    migrator().run(pool).await?;
    if citus_installed(pool).await.map_err(DbError::CitusCheck)? {
        distribute(pool).await.map_err(DbError::Distribute)?;
    }
    Ok(())
}

/// Checks that every migration this binary carries has been applied (the daemon does not
/// migrate by itself: in a rolling upgrade, migrations run first, once).
pub async fn check_schema(pool: &PgPool) -> Result<(), DbError> {
    let needed = migrator().iter().map(|m| m.version).max().unwrap_or(0);
    let found = applied_version(pool).await.map_err(DbError::Query)?;
    if found.is_some_and(|found| found >= needed) {
        Ok(())
    } else {
        Err(DbError::SchemaBehind { found, needed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(url: &str) -> String {
        match connect_options(&SecretString::from(url)) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_url_that_is_not_postgres_colon_slash_slash_is_refused_without_echo() {
        for url in [
            "postgres:/user:PASSW0RD@db.example/followq",
            "postgres:user:PASSW0RD@db.example/followq",
            "postgress://user:PASSW0RD@db.example/followq",
            "http://user:PASSW0RD@db.example/followq",
            "user:PASSW0RD@db.example/followq",
            "",
        ] {
            let text = message(url);
            assert!(text.contains("postgres://"), "{text}");
            assert!(!text.contains("PASSW0RD"), "{url}: {text}");
        }
        connect_options(&SecretString::from("POSTGRESQL://u:p@h/d")).expect("any case");
    }

    #[test]
    fn without_a_user_name_the_os_user_is_used_as_libpq_does() {
        let options = connect_options(&SecretString::from(
            "postgres:///followq?host=/var/run/postgresql",
        ))
        .unwrap();
        let expected = match std::env::var("PGUSER") {
            Ok(user) => user,
            Err(_) => {
                let id = std::process::Command::new("id")
                    .arg("-un")
                    .output()
                    .unwrap();
                String::from_utf8(id.stdout).unwrap().trim().to_owned()
            }
        };
        assert_eq!(options.get_username(), expected);
        assert_ne!(options.get_username(), "anonymous");
    }

    #[test]
    fn statements_are_planned_each_time_and_never_jit_compiled() {
        let options = connect_options(&SecretString::from("postgres://u@h/d")).unwrap();
        let set = options.get_options().unwrap_or_default();
        assert!(set.contains("plan_cache_mode=force_custom_plan"), "{set}");
        assert!(set.contains("jit=off"), "{set}");
    }
}
