//! Which migration the schema is at: the highest version recorded as applied in the
//! migrations table. Applying migrations is sqlx's migrator's (see `db`), and deciding whether
//! the version is recent enough is `db::check_schema`'s.

use super::Statement;
use sqlx::PgExecutor;

const APPLIED_VERSION: &str = "SELECT max(version) FROM followq._sqlx_migrations WHERE success";

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

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[Statement {
    name: "schema::applied_version",
    sql: APPLIED_VERSION,
}];
