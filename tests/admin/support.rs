//! Known rows for the operator tests: jobs in every state, ledger rows at chosen ages,
//! leases, daemons and the app-wide stop, written with plain SQL the way the daemon would.

use serde_json::Value;
use sqlx::PgPool;

pub use crate::common::{TestDb, describe};

/// A fresh database with accounts 100 and 101 registered.
pub async fn db_with_accounts() -> TestDb {
    let db = TestDb::new().await;
    db.add_account("100").await;
    db.add_account("101").await;
    db
}

/// Enqueues `source` follows `target`; returns the job id.
pub async fn enqueue(pool: &PgPool, source: &str, target: &str) -> i64 {
    sqlx::query_scalar("SELECT followq.enqueue($1, $2)")
        .bind(source)
        .bind(target)
        .fetch_one(pool)
        .await
        .expect("enqueue")
}

/// What the daemon's `record` leaves for a job that failed after `attempts` attempts.
pub async fn make_failed(pool: &PgPool, id: i64, attempts: i32, error: Value) {
    sqlx::query(
        "UPDATE followq.follow_jobs SET state = 'failed', attempts = $2, last_error = $3, \
         finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(attempts)
    .bind(error)
    .execute(pool)
    .await
    .expect("make failed");
}

/// What a claim leaves: the job queued, with a ledger row of `worker` that has no answer and
/// may still reach X for a minute (the job is in flight: `running` to operators).
pub async fn make_running(pool: &PgPool, id: i64, worker: &str) {
    sqlx::query(
        "INSERT INTO followq.attempts (job_id, account_user_id, worker_id, answer_by) \
         SELECT id, source_user_id, $2, now() + interval '1 minute' \
         FROM followq.follow_jobs WHERE id = $1",
    )
    .bind(id)
    .bind(worker)
    .execute(pool)
    .await
    .expect("make running");
}

pub async fn make_succeeded(pool: &PgPool, id: i64) {
    sqlx::query(
        "UPDATE followq.follow_jobs SET state = 'succeeded', attempts = 1, following = true, \
         pending_follow = false, finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .expect("make succeeded");
}

/// A ledger row sent `ago_seconds` ago; `outcome` None means no answer yet.
pub async fn attempt(
    pool: &PgPool,
    job_id: i64,
    account: &str,
    outcome: Option<&str>,
    http_status: Option<i16>,
    ago_seconds: f64,
) -> i64 {
    sqlx::query_scalar(
        r#"
        INSERT INTO followq.attempts
            (job_id, account_user_id, worker_id, sent_at, completed_at, http_status, outcome,
             rate_limit_limit, rate_limit_remaining)
        VALUES ($1, $2, 'host-a', now() - make_interval(secs => $5),
                CASE WHEN $3::text IS NULL THEN NULL
                     ELSE now() - make_interval(secs => $5) + interval '100 ms' END,
                $4, $3, 50, 49)
        RETURNING id
        "#,
    )
    .bind(job_id)
    .bind(account)
    .bind(outcome)
    .bind(http_status)
    .bind(ago_seconds)
    .fetch_one(pool)
    .await
    .expect("insert attempt")
}

/// Gives `worker` a live lease on `account`.
pub async fn lease(pool: &PgPool, account: &str, worker: &str) {
    sqlx::query(
        "UPDATE followq.accounts SET leased_by = $2, lease_expires_at = now() + interval '1 minute' \
         WHERE user_id = $1",
    )
    .bind(account)
    .bind(worker)
    .execute(pool)
    .await
    .expect("lease");
}

/// A daemon row whose last heartbeat was `ago_seconds` ago.
pub async fn daemon(pool: &PgPool, worker: &str, ago_seconds: f64) {
    sqlx::query(
        "INSERT INTO followq.daemons (worker_id, started_at, heartbeat_at) \
         VALUES ($1, now() - interval '1 hour', now() - make_interval(secs => $2))",
    )
    .bind(worker)
    .bind(ago_seconds)
    .execute(pool)
    .await
    .expect("daemon");
}

/// The job's state as operators see it: `running` while its request is in flight (the table
/// keeps it `queued`).
///
/// Two statements (the job's row, then the ledger): Citus plans no subquery over the ledger
/// inside a statement reading the jobs by id alone.
pub async fn state_of(pool: &PgPool, id: i64) -> String {
    let state: String = sqlx::query_scalar("SELECT state FROM followq.follow_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job state");
    let in_flight: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM followq.jobs_in_flight WHERE job_id = $1)",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("job in flight");
    if in_flight {
        "running".to_owned()
    } else {
        state
    }
}

pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn user(id: &str) -> followq::ids::UserId {
    followq::ids::UserId::parse(id).expect("valid user id")
}

pub fn job_id(id: i64) -> followq::admin::jobs::JobId {
    followq::admin::jobs::JobId::new(id).expect("positive job id")
}
