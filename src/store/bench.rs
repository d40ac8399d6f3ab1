//! The benchmark scenarios' statements (`followq bench`, built only with the `bench` feature):
//! filling a scratch database in bulk with accounts, jobs and a day of earlier follows,
//! setting it up between phases, the conditions the scenarios wait for, and the figures they
//! read afterwards (counts, the database's clock, its statistics views).
//!
//! Every text here is static; the bulk fixtures are sized at run time by their parameters
//! (arrays, `generate_series` bounds), and the bench's harness cuts them into statements of a
//! bounded number of rows. None of these statements belongs to the daemon: where one looks
//! like a daemon statement (a queue count, an insert of jobs or accounts), it is the bench's
//! own, simpler and without the daemon's checks, for a database nothing else is using.

use super::Statement;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

// Filling the scratch database.

const INSERT_ACCOUNTS: &str = "INSERT INTO followq.accounts (user_id, auth_kind) \
     SELECT id, 'oauth2' FROM UNNEST($1::text[]) AS id";

/// Registers the OAuth 2.0 accounts `ids`, without credentials (see [`insert_credentials`]).
pub async fn insert_accounts(
    executor: impl PgExecutor<'_>,
    ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_ACCOUNTS)
        .bind(ids)
        .execute(executor)
        .await?;
    Ok(())
}

const INSERT_CREDENTIALS: &str = "INSERT INTO followq.account_credentials (user_id, oauth2_access_token) \
     SELECT * FROM UNNEST($1::text[], $2::text[])";

/// Stores the sealed OAuth 2.0 access token `tokens[i]` of account `ids[i]`.
pub async fn insert_credentials(
    executor: impl PgExecutor<'_>,
    ids: &[String],
    tokens: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_CREDENTIALS)
        .bind(ids)
        .bind(tokens)
        .execute(executor)
        .await?;
    Ok(())
}

const ENQUEUE_JOBS: &str = "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) \
     SELECT ($1::bigint + $2::bigint + g % $3)::text, ($4 + g / $3)::text \
     FROM generate_series($5, $6 - 1) AS g";

/// Jobs number `from..to` of a fill spread over `accounts` accounts: job g belongs to account
/// `first_account + offset + g % accounts` and follows `first_target + g / accounts`, so each
/// account's jobs have targets of their own. One statement, however many rows. (The first
/// two parameters are cast only so that the statement prepares on its own: the binds are
/// `bigint` anyway.)
pub async fn enqueue_jobs(
    executor: impl PgExecutor<'_>,
    first_account: i64,
    offset: i64,
    accounts: i64,
    first_target: i64,
    from: i64,
    to: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(ENQUEUE_JOBS)
        .bind(first_account)
        .bind(offset)
        .bind(accounts)
        .bind(first_target)
        .bind(from)
        .bind(to)
        .execute(executor)
        .await?;
    Ok(())
}

const ENQUEUE_ROUND_ROBIN: &str = "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) \
     SELECT ($1 + g % $2)::text, ($3 + g)::text FROM generate_series($4, $5 - 1) AS g";

/// Jobs number `from..to`: job g for account `first_account + g % accounts`, to target
/// `first_target + g`, each a target of its own.
pub async fn enqueue_round_robin(
    executor: impl PgExecutor<'_>,
    first_account: i64,
    accounts: i64,
    first_target: i64,
    from: i64,
    to: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(ENQUEUE_ROUND_ROBIN)
        .bind(first_account)
        .bind(accounts)
        .bind(first_target)
        .bind(from)
        .bind(to)
        .execute(executor)
        .await?;
    Ok(())
}

const INSERT_JOB: &str =
    "INSERT INTO followq.follow_jobs (source_user_id, target_user_id) VALUES ($1, $2)";

/// One job, inserted as another service would: a plain INSERT.
pub async fn insert_job(
    executor: impl PgExecutor<'_>,
    source_user_id: &str,
    target_user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_JOB)
        .bind(source_user_id)
        .bind(target_user_id)
        .execute(executor)
        .await?;
    Ok(())
}

const INSERT_EARLIER_FOLLOWS: &str = "INSERT INTO followq.attempts (job_id, account_user_id, worker_id, sent_at, \
         completed_at, answer_by, outcome, http_status) \
     SELECT 0, ($1 + g / $2)::text, 'earlier', at, at + interval '80 milliseconds', \
            at + interval '17 seconds', 'succeeded', 200 \
     FROM generate_series($3, $4 - 1) AS g, \
          LATERAL (SELECT now() - interval '23 hours 40 minutes' \
                          + (g % $2) * (interval '23 hours 39 minutes' / $2) AS at) AS t";

/// Ledger rows `from..to` of `per_account` follows for each account from `first_account` on
/// (row g is account `first_account + g / per_account`'s), evenly spread from 23 h 40 min
/// ago to a few minutes ago, answered after 80 ms, as an earlier daemon (`earlier`) would
/// have left them.
pub async fn insert_earlier_follows(
    executor: impl PgExecutor<'_>,
    first_account: i64,
    per_account: i64,
    from: i64,
    to: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_EARLIER_FOLLOWS)
        .bind(first_account)
        .bind(per_account)
        .bind(from)
        .bind(to)
        .execute(executor)
        .await?;
    Ok(())
}

// Setting the scene between phases.

const PACE_EVERY_OTHER_ACCOUNT: &str = "UPDATE followq.accounts SET quota_requests = 1, quota_period_seconds = 2 \
     WHERE (user_id::bigint - $1) % 2 = 0";

/// Gives every other account, counting from `first_account`, a quota of one request per 2 s.
pub async fn pace_every_other_account(
    executor: impl PgExecutor<'_>,
    first_account: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(PACE_EVERY_OTHER_ACCOUNT)
        .bind(first_account)
        .execute(executor)
        .await?;
    Ok(())
}

const FORGET_DAEMONS: &str = "DELETE FROM followq.daemons";

/// Forgets every daemon that ever registered.
pub async fn forget_daemons(executor: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(FORGET_DAEMONS).execute(executor).await?;
    Ok(())
}

const VACUUM_ANALYZE_JOBS: &str = "VACUUM ANALYZE followq.follow_jobs";

/// Vacuums the job table and refreshes its planner statistics.
pub async fn vacuum_analyze_jobs(executor: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(VACUUM_ANALYZE_JOBS).execute(executor).await?;
    Ok(())
}

const VACUUM_ANALYZE_ATTEMPTS: &str = "VACUUM ANALYZE followq.attempts";

/// Vacuums the ledger and refreshes its planner statistics.
pub async fn vacuum_analyze_attempts(executor: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(VACUUM_ANALYZE_ATTEMPTS)
        .execute(executor)
        .await?;
    Ok(())
}

const RELEASE_AND_RESUME_ALL_ACCOUNTS: &str = "UPDATE followq.accounts SET leased_by = NULL, lease_expires_at = NULL, \
     status = 'active', paused_until = NULL, pause_reason = NULL";

/// Frees every account of its lease and its pause, whoever held it.
pub async fn release_and_resume_all_accounts(
    executor: impl PgExecutor<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(RELEASE_AND_RESUME_ALL_ACCOUNTS)
        .execute(executor)
        .await?;
    Ok(())
}

const FINISH_ALL_BUT_ONE_PERCENT: &str = "UPDATE followq.follow_jobs SET state = 'succeeded', following = true, \
     pending_follow = false, finished_at = now() WHERE state = 'queued' AND id % 100 <> 0";

/// Marks every queued job succeeded but one in a hundred (by id), in place: the dead rows are
/// left for vacuum, as a real drain would leave them.
pub async fn finish_all_but_one_percent(executor: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(FINISH_ALL_BUT_ONE_PERCENT)
        .execute(executor)
        .await?;
    Ok(())
}

// What the scenarios wait for.

const ALL_FINISHED: &str =
    "SELECT NOT EXISTS (SELECT 1 FROM followq.follow_jobs WHERE state = 'queued')";

/// True once no job is queued (a job in flight stays queued until its outcome is recorded;
/// served by a partial index).
pub async fn all_finished(executor: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(ALL_FINISHED).fetch_one(executor).await
}

const ANY_ACCOUNT_LEASED: &str =
    "SELECT count(*) > 0 FROM followq.accounts WHERE leased_by IS NOT NULL";

/// True once some daemon holds an account.
pub async fn any_account_leased(executor: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(ANY_ACCOUNT_LEASED)
        .fetch_one(executor)
        .await
}

const SMALL_ACCOUNTS_SERVED: &str = "SELECT NOT EXISTS (SELECT 1 FROM followq.follow_jobs \
     WHERE source_user_id <> '1000000000' AND state <> 'succeeded')";

/// True once every job of every account but the first one (`1000000000`, the noisy
/// neighbour's big account) has succeeded.
pub async fn small_accounts_served(executor: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(SMALL_ACCOUNTS_SERVED)
        .fetch_one(executor)
        .await
}

// Figures.

const COUNT_REQUESTS: &str = "SELECT count(*) FROM followq.attempts";

/// Ledger rows: every request sent (and every earlier follow filled in).
pub async fn count_requests(executor: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(COUNT_REQUESTS).fetch_one(executor).await
}

const COUNT_SUCCEEDED: &str = "SELECT count(*) FROM followq.follow_jobs WHERE state = 'succeeded'";

/// Jobs that succeeded.
pub async fn count_succeeded(executor: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(COUNT_SUCCEEDED)
        .fetch_one(executor)
        .await
}

const COUNT_QUEUED: &str = "SELECT count(*) FROM followq.follow_jobs WHERE state = 'queued'";

/// Jobs queued and not yet claimed (the queued partial index).
pub async fn count_queued(executor: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(COUNT_QUEUED).fetch_one(executor).await
}

const HELD_AND_CAPPED_ACCOUNTS: &str = "SELECT count(*) FILTER (WHERE leased_by IS NOT NULL), \
            count(*) FILTER (WHERE pause_reason = 'daily_cap') \
     FROM followq.accounts";

/// How many accounts are leased, and how many are paused at their daily cap.
pub async fn held_and_capped_accounts(
    executor: impl PgExecutor<'_>,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(HELD_AND_CAPPED_ACCOUNTS)
        .fetch_one(executor)
        .await
}

const ACCOUNTS_PER_HOLDER: &str = "SELECT leased_by, count(*) FROM followq.accounts \
     WHERE leased_by IS NOT NULL GROUP BY 1";

/// Each daemon holding accounts, with how many it holds.
pub async fn accounts_per_holder(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(ACCOUNTS_PER_HOLDER)
        .fetch_all(executor)
        .await
}

const ACCOUNTS_HELD_BY: &str = "SELECT user_id FROM followq.accounts WHERE leased_by = $1";

/// The accounts `worker_id` holds.
pub async fn accounts_held_by(
    executor: impl PgExecutor<'_>,
    worker_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(ACCOUNTS_HELD_BY)
        .bind(worker_id)
        .fetch_all(executor)
        .await
}

const HOLDERS_OF: &str = "SELECT user_id, leased_by FROM followq.accounts WHERE user_id = ANY($1)";

/// Who holds each of `accounts` (`None`: no one).
pub async fn holders_of(
    executor: impl PgExecutor<'_>,
    accounts: &[String],
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(HOLDERS_OF)
        .bind(accounts)
        .fetch_all(executor)
        .await
}

const RECENT_AND_UNANSWERED_REQUESTS: &str = "SELECT count(*) FILTER (WHERE sent_at > now() - interval '3 seconds'), \
            count(*) FILTER (WHERE outcome IS NULL) \
     FROM followq.attempts WHERE worker_id = $1";

/// Of `worker_id`'s requests: how many it sent in the last 3 seconds, and how many have no
/// outcome yet.
pub async fn recent_and_unanswered_requests(
    executor: impl PgExecutor<'_>,
    worker_id: &str,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(RECENT_AND_UNANSWERED_REQUESTS)
        .bind(worker_id)
        .fetch_one(executor)
        .await
}

const DATABASE_CLOCK: &str = "SELECT clock_timestamp()";

/// The database's clock now (not the transaction's start).
pub async fn database_clock(executor: impl PgExecutor<'_>) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(DATABASE_CLOCK).fetch_one(executor).await
}

const FIRST_REQUESTS_SINCE: &str = "SELECT account_user_id, extract(epoch FROM min(sent_at) - $3)::float8 \
     FROM followq.attempts \
     WHERE account_user_id = ANY($1) AND worker_id <> $2 AND sent_at > $3 \
     GROUP BY 1";

/// For each of `accounts` that a daemon other than `worker_id` has sent for since `since`:
/// seconds from `since` to its first such request.
pub async fn first_requests_since(
    executor: impl PgExecutor<'_>,
    accounts: &[String],
    worker_id: &str,
    since: DateTime<Utc>,
) -> Result<Vec<(String, f64)>, sqlx::Error> {
    sqlx::query_as(FIRST_REQUESTS_SINCE)
        .bind(accounts)
        .bind(worker_id)
        .bind(since)
        .fetch_all(executor)
        .await
}

const ACCOUNTS_WITH_ABANDONED_REQUESTS: &str = "SELECT DISTINCT account_user_id FROM followq.attempts \
     WHERE worker_id = $1 AND outcome = 'abandoned'";

/// The accounts with a request of `worker_id` that a survivor marked abandoned: it was in the
/// air when `worker_id` died.
pub async fn accounts_with_abandoned_requests(
    executor: impl PgExecutor<'_>,
    worker_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(ACCOUNTS_WITH_ABANDONED_REQUESTS)
        .bind(worker_id)
        .fetch_all(executor)
        .await
}

const ACCOUNTS_WITH_QUEUED_JOBS: &str = "SELECT DISTINCT source_user_id FROM followq.follow_jobs WHERE state = 'queued' \
     ORDER BY 1 DESC LIMIT $1";

/// Up to `limit` accounts with a queued job, the highest ids first.
pub async fn accounts_with_queued_jobs(
    executor: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(ACCOUNTS_WITH_QUEUED_JOBS)
        .bind(limit)
        .fetch_all(executor)
        .await
}

const SMALL_ACCOUNTS_SERVED_AFTER_FIRST_REQUEST: &str = "SELECT extract(epoch FROM max(finished_at) - (SELECT min(sent_at) FROM followq.attempts))::float8 \
     FROM followq.follow_jobs WHERE source_user_id <> '1000000000'";

/// Seconds from the first request sent to the last job finished of every account but the
/// first one (`1000000000`, the noisy neighbour's big account).
pub async fn small_accounts_served_after_first_request(
    executor: impl PgExecutor<'_>,
) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(SMALL_ACCOUNTS_SERVED_AFTER_FIRST_REQUEST)
        .fetch_one(executor)
        .await
}

// On a Citus worker the tables are its shards, `follow_jobs_102016` and the like: they are
// counted under their table's name.
const HOT_UPDATES: &str = "SELECT regexp_replace(relname, '_[0-9]+$', '') AS table_name, \
            sum(n_tup_upd)::bigint, sum(n_tup_hot_upd)::bigint \
     FROM pg_stat_user_tables \
     WHERE schemaname = 'followq' AND relname ~ '^(follow_jobs|attempts)(_[0-9]+)?$' \
     GROUP BY 1 ORDER BY 1";

/// Updates Postgres could make in place (HOT: no index touched), per table: each of the job
/// table and the ledger, with its updates and its HOT updates (on a Citus worker, of its
/// shards of them).
pub async fn hot_updates(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(HOT_UPDATES).fetch_all(executor).await
}

const DATABASE_ACTIVITY: &str = "SELECT xact_commit, (to_jsonb(d) ->> 'sessions')::bigint \
     FROM pg_stat_database AS d WHERE datname = current_database()";

/// Transactions committed in the connection's database so far (each autocommit statement is
/// one), and sessions opened there (`None` before Postgres 14, which does not count them:
/// read through `to_jsonb` so that the statement still prepares there). The counts are those
/// the backends have reported: a backend reports at most once a second, an idle one up to
/// 10 s late, every one when it ends.
pub async fn database_activity(
    executor: impl PgExecutor<'_>,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(DATABASE_ACTIVITY).fetch_one(executor).await
}

const DATABASE_BACKEND_PIDS: &str = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
     AND backend_type = 'client backend'";

/// The process ids of the client backends connected to this database.
pub async fn database_backend_pids(executor: impl PgExecutor<'_>) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar(DATABASE_BACKEND_PIDS)
        .fetch_all(executor)
        .await
}

const IS_SUPERUSER: &str = "SELECT current_setting('is_superuser') = 'on'";

/// Whether the connection's role is a superuser (which Citus's statement counters need).
pub async fn is_superuser(executor: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(IS_SUPERUSER).fetch_one(executor).await
}

/// What Citus counted in one database of the coordinator, for the sessions that turned the
/// counters on (`citus.enable_stat_counters`).
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct CitusCounters {
    /// Connections to the workers opened.
    pub connections_opened: i64,
    /// Statements Citus ran on one shard, and on several.
    pub single_shard_statements: i64,
    pub multi_shard_statements: i64,
}

const CITUS_COUNTERS: &str = "SELECT connection_establishment_succeeded AS connections_opened, \
            query_execution_single_shard AS single_shard_statements, \
            query_execution_multi_shard AS multi_shard_statements \
     FROM citus_stat_counters((SELECT oid FROM pg_database WHERE datname = current_database()))";

/// Citus's counters of the connection's database, on the coordinator.
pub async fn citus_counters(executor: impl PgExecutor<'_>) -> Result<CitusCounters, sqlx::Error> {
    sqlx::query_as(CITUS_COUNTERS).fetch_one(executor).await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "bench::insert_accounts",
        sql: INSERT_ACCOUNTS,
    },
    Statement {
        name: "bench::insert_credentials",
        sql: INSERT_CREDENTIALS,
    },
    Statement {
        name: "bench::enqueue_jobs",
        sql: ENQUEUE_JOBS,
    },
    Statement {
        name: "bench::enqueue_round_robin",
        sql: ENQUEUE_ROUND_ROBIN,
    },
    Statement {
        name: "bench::insert_job",
        sql: INSERT_JOB,
    },
    Statement {
        name: "bench::insert_earlier_follows",
        sql: INSERT_EARLIER_FOLLOWS,
    },
    Statement {
        name: "bench::pace_every_other_account",
        sql: PACE_EVERY_OTHER_ACCOUNT,
    },
    Statement {
        name: "bench::forget_daemons",
        sql: FORGET_DAEMONS,
    },
    Statement {
        name: "bench::vacuum_analyze_jobs",
        sql: VACUUM_ANALYZE_JOBS,
    },
    Statement {
        name: "bench::vacuum_analyze_attempts",
        sql: VACUUM_ANALYZE_ATTEMPTS,
    },
    Statement {
        name: "bench::release_and_resume_all_accounts",
        sql: RELEASE_AND_RESUME_ALL_ACCOUNTS,
    },
    Statement {
        name: "bench::finish_all_but_one_percent",
        sql: FINISH_ALL_BUT_ONE_PERCENT,
    },
    Statement {
        name: "bench::all_finished",
        sql: ALL_FINISHED,
    },
    Statement {
        name: "bench::any_account_leased",
        sql: ANY_ACCOUNT_LEASED,
    },
    Statement {
        name: "bench::small_accounts_served",
        sql: SMALL_ACCOUNTS_SERVED,
    },
    Statement {
        name: "bench::count_requests",
        sql: COUNT_REQUESTS,
    },
    Statement {
        name: "bench::count_succeeded",
        sql: COUNT_SUCCEEDED,
    },
    Statement {
        name: "bench::count_queued",
        sql: COUNT_QUEUED,
    },
    Statement {
        name: "bench::held_and_capped_accounts",
        sql: HELD_AND_CAPPED_ACCOUNTS,
    },
    Statement {
        name: "bench::accounts_per_holder",
        sql: ACCOUNTS_PER_HOLDER,
    },
    Statement {
        name: "bench::accounts_held_by",
        sql: ACCOUNTS_HELD_BY,
    },
    Statement {
        name: "bench::holders_of",
        sql: HOLDERS_OF,
    },
    Statement {
        name: "bench::recent_and_unanswered_requests",
        sql: RECENT_AND_UNANSWERED_REQUESTS,
    },
    Statement {
        name: "bench::database_clock",
        sql: DATABASE_CLOCK,
    },
    Statement {
        name: "bench::first_requests_since",
        sql: FIRST_REQUESTS_SINCE,
    },
    Statement {
        name: "bench::accounts_with_abandoned_requests",
        sql: ACCOUNTS_WITH_ABANDONED_REQUESTS,
    },
    Statement {
        name: "bench::accounts_with_queued_jobs",
        sql: ACCOUNTS_WITH_QUEUED_JOBS,
    },
    Statement {
        name: "bench::small_accounts_served_after_first_request",
        sql: SMALL_ACCOUNTS_SERVED_AFTER_FIRST_REQUEST,
    },
    Statement {
        name: "bench::hot_updates",
        sql: HOT_UPDATES,
    },
    Statement {
        name: "bench::database_activity",
        sql: DATABASE_ACTIVITY,
    },
    Statement {
        name: "bench::database_backend_pids",
        sql: DATABASE_BACKEND_PIDS,
    },
    Statement {
        name: "bench::is_superuser",
        sql: IS_SUPERUSER,
    },
];

/// The statements that need Citus, prepared by the statement test on Citus.
pub const CITUS_STATEMENTS: &[Statement] = &[Statement {
    name: "bench::citus_counters",
    sql: CITUS_COUNTERS,
}];
