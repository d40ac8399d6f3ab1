//! deploy/roles.sql: the enqueuing role can enqueue (INSERT and followq.enqueue) and read
//! outcomes but never the tokens nor the daemon's columns; the daemon role is enough to run
//! the daemon, retention and the HTTP listener included.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgConnection, PgPool};

use crate::common::TestDb;
use crate::ops_support::{OpsDaemon, with_http};
use crate::support::{Harness, serial, sim_config};

const ROLES_SQL: &str = include_str!("../../deploy/roles.sql");

async fn apply_roles(pool: &PgPool) {
    // Twice: it must be safe to run again after every upgrade.
    for _ in 0..2 {
        sqlx::raw_sql(ROLES_SQL)
            .execute(pool)
            .await
            .expect("deploy/roles.sql applies");
    }
}

/// The SQLSTATE of a failed statement (panics if it succeeded).
fn sqlstate<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> String {
    match result {
        Ok(value) => panic!("expected a permission error, got {value:?}"),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
            .unwrap_or_else(|| panic!("not a database error: {e}")),
    }
}

const INSUFFICIENT_PRIVILEGE: &str = "42501";

async fn as_role(db: &TestDb, role: &str) -> PgConnection {
    let mut connection = db.connection().await;
    connection
        .execute(sqlx::AssertSqlSafe(format!("SET ROLE {role}")))
        .await
        .expect("SET ROLE");
    connection
}

#[tokio::test]
async fn the_enqueuer_can_enqueue_but_not_read_tokens() {
    let db = TestDb::new().await;
    db.add_account("100").await;
    apply_roles(&db.pool).await;
    let mut enqueuer = as_role(&db, "followq_enqueuer").await;

    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id, priority) VALUES ('100', '200', 5) \
         ON CONFLICT (source_user_id, target_user_id) WHERE state IN ('queued', 'running') DO NOTHING RETURNING id",
    )
    .fetch_optional(&mut enqueuer)
    .await
    .expect("the enqueuer inserts a job");
    let id = inserted.expect("a new job id");
    let again: i64 = sqlx::query_scalar("SELECT followq.enqueue('100', '200')")
        .fetch_one(&mut enqueuer)
        .await
        .expect("the enqueuer calls followq.enqueue");
    assert_eq!(again, id, "the same active job");
    let other: i64 = sqlx::query_scalar(
        "SELECT followq.enqueue(source_user_id => '100', target_user_id => '201', run_at => now())",
    )
    .fetch_one(&mut enqueuer)
    .await
    .expect("enqueue a second pair");
    assert_ne!(other, id);
    let state: String = sqlx::query_scalar("SELECT state FROM followq.follow_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&mut enqueuer)
        .await
        .expect("the enqueuer reads outcomes");
    assert_eq!(state, "queued");
    let status: String =
        sqlx::query_scalar("SELECT status FROM followq.accounts WHERE user_id = '100'")
            .fetch_one(&mut enqueuer)
            .await
            .expect("the enqueuer reads accounts");
    assert_eq!(status, "active");

    let tokens = sqlx::query_scalar::<_, String>(
        "SELECT oauth2_access_token FROM followq.account_credentials",
    )
    .fetch_all(&mut enqueuer)
    .await;
    assert_eq!(sqlstate(tokens), INSUFFICIENT_PRIVILEGE, "no tokens");
    let finish =
        sqlx::query("UPDATE followq.follow_jobs SET state = 'cancelled', finished_at = now()")
            .execute(&mut enqueuer)
            .await;
    assert_eq!(
        sqlstate(finish),
        INSUFFICIENT_PRIVILEGE,
        "no daemon columns"
    );
    let forged = sqlx::query(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id, state, following, pending_follow, finished_at) \
         VALUES ('100', '202', 'succeeded', true, false, now())",
    )
    .execute(&mut enqueuer)
    .await;
    assert_eq!(
        sqlstate(forged),
        INSUFFICIENT_PRIVILEGE,
        "no forged outcomes"
    );
    let ledger = sqlx::query("SELECT 1 FROM followq.attempts")
        .execute(&mut enqueuer)
        .await;
    assert_eq!(sqlstate(ledger), INSUFFICIENT_PRIVILEGE);

    // The daemon role does read tokens: the denial above is the role's, not the table's.
    let mut daemon = as_role(&db, "followq_daemon").await;
    let tokens: Vec<String> =
        sqlx::query_scalar("SELECT oauth2_access_token FROM followq.account_credentials")
            .fetch_all(&mut daemon)
            .await
            .expect("the daemon reads tokens");
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn the_daemon_role_is_enough_to_run_the_daemon() {
    let _serial = serial().await;
    let harness = Harness::new(sim_config(10, Duration::from_secs(10))).await;
    apply_roles(&harness.db.pool).await;
    harness.account("100").await;
    harness.enqueue("100", 1000, 3).await;
    sqlx::query(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id, state, following, pending_follow, finished_at) \
         VALUES ('100', '9999', 'succeeded', true, false, now() - interval '40 days')",
    )
    .execute(&harness.db.pool)
    .await
    .expect("an old finished job");

    let mut settings = with_http(&harness.settings);
    settings.retention.interval = Duration::from_millis(100);
    // The per-app cap's slots: taken under the table's lock, given back, pruned.
    settings.rate_limit.daily_follows_per_app = Some(100);
    // Every connection of the daemon's pool acts as followq_daemon, as a login role in it would.
    let pool = PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .after_connect(|connection, _| {
            Box::pin(async move {
                connection.execute("SET ROLE followq_daemon").await?;
                Ok(())
            })
        })
        .connect(&harness.db.url)
        .await
        .expect("the daemon's pool");
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&pool)
        .await
        .expect("current_user");
    assert_eq!(role, "followq_daemon");
    followq::db::check_schema(&pool)
        .await
        .expect("the daemon role reads the migrations table");

    let daemon = OpsDaemon::start_on(&settings, pool);
    harness.wait_all_finished(Duration::from_secs(10)).await;
    harness
        .wait_until(
            Duration::from_secs(5),
            "the old job pruned",
            "SELECT NOT EXISTS (SELECT 1 FROM followq.follow_jobs WHERE target_user_id = '9999')",
        )
        .await;
    assert_eq!(daemon.get("/readyz").await.0, 200);
    let scraped = daemon.scrape().await;
    daemon.stop().await;

    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'")
            .await,
        3
    );
    assert_eq!(
        scraped.value("followq_job_outcomes_total", &[("outcome", "succeeded")]),
        3.0
    );
    assert_eq!(
        harness
            .count("SELECT count(*) FROM followq.accounts WHERE leased_by IS NOT NULL")
            .await,
        0,
        "the stop released the lease as followq_daemon"
    );
    assert_eq!(
        harness.count("SELECT count(*) FROM followq.daemons").await,
        0,
        "and left followq.daemons"
    );
}
