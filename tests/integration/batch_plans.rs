//! The batched statements keep their by-key plans on tables with statistics: recording
//! `MAX_OUTCOMES_PER_STATEMENT` outcomes looks each job up by primary key instead of reading
//! the whole table, and a claim looks up the ledger rows of the job it picks instead of the
//! account's whole history.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use followq::store::record::MAX_OUTCOMES_PER_STATEMENT;

use crate::helpers::TestDb;

const ACCOUNTS: i64 = 500;
const JOBS_PER_ACCOUNT: i64 = 100;

/// The claims whose outcomes are recorded: (attempt id, job id, account).
type Claims = (Vec<i64>, Vec<i64>, Vec<String>);

/// 50,000 queued jobs over 500 accounts, one claimed per account for the first
/// `MAX_OUTCOMES_PER_STATEMENT` accounts, with statistics as a running deployment has them.
async fn loaded(db: &TestDb) -> Claims {
    sqlx::query(
        "INSERT INTO followq.accounts (user_id, auth_kind)
         SELECT (100000 + a)::text, 'oauth2' FROM generate_series(1, $1) AS a",
    )
    .bind(ACCOUNTS)
    .execute(&db.pool)
    .await
    .expect("accounts");
    sqlx::query(
        "INSERT INTO followq.follow_jobs (source_user_id, target_user_id)
         SELECT (100000 + a)::text, (9000000 + a * 1000 + t)::text
         FROM generate_series(1, $1) AS a, generate_series(1, $2) AS t",
    )
    .bind(ACCOUNTS)
    .bind(JOBS_PER_ACCOUNT)
    .execute(&db.pool)
    .await
    .expect("jobs");
    let rows = sqlx::query(
        "INSERT INTO followq.attempts (job_id, account_user_id, worker_id, answer_by)
         SELECT min(id), source_user_id, 'plan-test', now() + interval '17 seconds'
         FROM followq.follow_jobs
         GROUP BY source_user_id ORDER BY source_user_id LIMIT $1
         RETURNING id, job_id, account_user_id",
    )
    .bind(MAX_OUTCOMES_PER_STATEMENT as i64)
    .fetch_all(&db.pool)
    .await
    .expect("claims");
    for table in ["followq.follow_jobs", "followq.attempts"] {
        sqlx::raw_sql(AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(&db.pool)
            .await
            .expect("statistics");
    }
    let mut claims: Claims = Default::default();
    for row in rows {
        claims.0.push(row.get("id"));
        claims.1.push(row.get("job_id"));
        claims.2.push(row.get("account_user_id"));
    }
    claims
}

/// `$1` to `$17` of the record statements: every claim succeeded.
fn bind_outcomes<'q>(
    query: Query<'q, Postgres, PgArguments>,
    (attempts, jobs, accounts): &'q Claims,
) -> Query<'q, Postgres, PgArguments> {
    let n = jobs.len();
    let none_time: Vec<Option<DateTime<Utc>>> = vec![None; n];
    let none_int: Vec<Option<i32>> = vec![None; n];
    query
        .bind(jobs)
        .bind(vec!["succeeded"; n])
        .bind(vec![false; n])
        .bind(vec![false; n])
        .bind(none_time.clone())
        .bind(vec![Some(true); n])
        .bind(vec![Some(false); n])
        .bind(vec![None::<serde_json::Value>; n])
        .bind(attempts)
        .bind(vec![Some(12); n])
        .bind(vec![Some(200_i16); n])
        .bind(vec!["succeeded"; n])
        .bind(none_int.clone())
        .bind(none_int)
        .bind(none_time)
        .bind(vec![true; n])
        .bind(accounts)
}

fn statement(name: &str) -> &'static str {
    followq::store::all_statements()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.sql)
        .unwrap_or_else(|| panic!("no statement {name}"))
}

async fn plan(db: &TestDb, query: Query<'_, Postgres, PgArguments>) -> String {
    let lines: Vec<String> = query
        .fetch_all(&db.pool)
        .await
        .expect("EXPLAIN")
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    lines.join("\n")
}

/// Guard: the record's check that a claim is still its job's latest runs before the update
/// (`record_ctes!`'s `checked`), not in its filter, where the planner charged it to every job
/// row and chose to read the whole table for batches of about 100 outcomes.
#[tokio::test]
async fn the_largest_batch_finds_its_jobs_by_primary_key() {
    let db = TestDb::new().await;
    let claims = loaded(&db).await;
    assert_eq!(claims.1.len(), MAX_OUTCOMES_PER_STATEMENT);

    let record_sql = format!("EXPLAIN {}", statement("record::record_batch"));
    let record = plan(
        &db,
        bind_outcomes(sqlx::query(AssertSqlSafe(record_sql)), &claims),
    )
    .await;

    let successors: Vec<String> = (0..MAX_OUTCOMES_PER_STATEMENT as i64)
        .map(|a| (100000 + ACCOUNTS - a).to_string())
        .collect();
    let handoff_sql = format!("EXPLAIN {}", statement("record::record_and_claim"));
    let handoff = plan(
        &db,
        bind_outcomes(sqlx::query(AssertSqlSafe(handoff_sql)), &claims)
            .bind(&successors)
            .bind("plan-test")
            .bind(17.0_f64),
    )
    .await;

    for (name, plan) in [("record_batch", &record), ("record_and_claim", &handoff)] {
        assert!(
            plan.contains("Index Scan using follow_jobs_pkey on follow_jobs j"),
            "{name} should find its jobs by primary key:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan on follow_jobs"),
            "{name} reads the whole job table:\n{plan}"
        );
    }
}

/// Guard: the claim's "not in flight" check looks up the ledger rows of the job the scan
/// reached (a subplan by `job_id`), not every ledger row of the account: as an anti-join the
/// planner read the account's whole history for each claim, a cost that grows with it (43
/// heap rows per claim after 50 requests in the throughput bench).
#[tokio::test]
async fn a_claim_reads_the_ledger_of_its_job_not_the_accounts_history() {
    let db = TestDb::new().await;
    loaded(&db).await;
    // A day of answered requests for every account.
    sqlx::query(
        "INSERT INTO followq.attempts
             (job_id, account_user_id, worker_id, answer_by, completed_at, outcome, http_status)
         SELECT j.id, j.source_user_id, 'plan-test', now() - interval '1 hour',
                now() - interval '1 hour', 'succeeded', 200
         FROM followq.follow_jobs AS j, generate_series(1, 4)",
    )
    .execute(&db.pool)
    .await
    .expect("history");
    sqlx::raw_sql("VACUUM ANALYZE followq.attempts")
        .execute(&db.pool)
        .await
        .expect("statistics");

    let accounts: Vec<String> = (1..=MAX_OUTCOMES_PER_STATEMENT as i64)
        .map(|a| (100000 + a).to_string())
        .collect();
    let claim_sql = format!("EXPLAIN {}", statement("claim::claim_batch"));
    let claim = plan(
        &db,
        sqlx::query(AssertSqlSafe(claim_sql))
            .bind(&accounts)
            .bind("plan-test")
            .bind(17.0_f64),
    )
    .await;
    assert!(
        !claim.contains("Anti Join"),
        "the claim joins the account's ledger history:\n{claim}"
    );
    assert!(
        claim.contains("attempts_by_job"),
        "the claim should look its job's ledger rows up by job:\n{claim}"
    );
}
