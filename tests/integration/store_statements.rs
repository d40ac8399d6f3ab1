//! Every static statement of the SQL layer (`followq::store`) prepares against the migrated
//! schema: a column renamed, a function dropped or a parameter whose type Postgres cannot
//! infer fails here, even for a statement no other test happens to run. On Citus
//! (`TEST_CITUS_URL`, as `.ci/run` runs the integration tests there) the statements that need
//! Citus's catalog and functions are prepared too.

use sqlx::{Executor, SqlSafeStr};

use crate::helpers::TestDb;

#[tokio::test]
async fn every_statement_of_the_store_prepares_against_the_migrated_schema() {
    let db = TestDb::new().await;
    let mut conn = db.connection().await;
    let mut statements = followq::store::all_statements();
    if db.on_citus().await {
        statements.extend(followq::store::citus_statements());
    }

    let mut failures = Vec::new();
    for statement in &statements {
        if let Err(error) = (&mut conn).prepare(statement.sql.into_sql_str()).await {
            failures.push(format!("{}: {error}", statement.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} statements do not prepare:\n{}",
        failures.len(),
        statements.len(),
        failures.join("\n")
    );
}
