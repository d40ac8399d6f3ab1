//! The database itself: which migration the schema is at (the highest version recorded as
//! applied in the migrations table), and creating and dropping the scratch databases the demo
//! and the bench run in. Applying migrations is sqlx's migrator's (see `db`), and deciding
//! whether the version is recent enough is `db::check_schema`'s.

use super::Statement;
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor};

const APPLIED_VERSION: &str = "SELECT max(version) FROM followq._sqlx_migrations WHERE success";

const CITUS_INSTALLED: &str = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')";

const DISTRIBUTE: &str = "SELECT followq.distribute()";

/// The highest migration version applied successfully; `None` when none was, including when
/// the migrations table (or the `followq` schema) does not exist yet.
pub async fn applied_version(executor: impl PgExecutor<'_>) -> Result<Option<i64>, sqlx::Error> {
    match sqlx::query_scalar(APPLIED_VERSION)
        .fetch_one(executor)
        .await
    {
        Ok(found) => Ok(found),
        // No bookkeeping table: nothing was ever migrated.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P01" | "3F000")) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether the citus extension is installed in this database (then it is a Citus coordinator,
/// or a worker, which `followq` is not pointed at).
pub async fn citus_installed(executor: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(CITUS_INSTALLED)
        .fetch_one(executor)
        .await
}

/// Distributes the followq tables on a Citus coordinator (`followq.distribute()`, see its
/// migration); tables already distributed are left as they are.
pub async fn distribute(executor: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(DISTRIBUTE).execute(executor).await?;
    Ok(())
}

/// Creates an empty database named `name`, which must be a plain lower-case identifier
/// (letters, digits, `_`): the name is part of the statement's text, as Postgres takes no
/// parameter there. Its text is built at run time, so it is not in [`STATEMENTS`]; the demo's
/// and the bench's scratch databases run it.
pub async fn create_database(admin: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let name = plain_identifier(name)?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin)
        .await?;
    Ok(())
}

/// Drops the database `name` (a plain identifier, as for [`create_database`]) if it exists,
/// ending its sessions.
pub async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let name = plain_identifier(name)?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(admin)
    .await?;
    Ok(())
}

/// `name` when it needs no quoting: 1 to 63 characters of `a-z`, `0-9` and `_`, not starting
/// with a digit.
pub(super) fn plain_identifier(name: &str) -> Result<&str, sqlx::Error> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(name)
    } else {
        Err(sqlx::Error::Protocol(format!(
            "{name:?} is not a plain database name (a-z, 0-9 and _ only)"
        )))
    }
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "schema::applied_version",
        sql: APPLIED_VERSION,
    },
    Statement {
        name: "schema::citus_installed",
        sql: CITUS_INSTALLED,
    },
    Statement {
        name: "schema::distribute",
        sql: DISTRIBUTE,
    },
];

#[cfg(test)]
mod tests {
    use super::plain_identifier;

    #[test]
    fn only_plain_names_reach_the_statement_text() {
        assert!(plain_identifier("followq_demo_4242_0a1b2c").is_ok());
        for bad in [
            "",
            "Demo",
            "1db",
            "db; DROP DATABASE postgres",
            "db\"x",
            &"a".repeat(64),
        ] {
            assert!(plain_identifier(bad).is_err(), "{bad:?}");
        }
    }
}
