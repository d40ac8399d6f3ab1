//! The daemon registry (`followq.daemons`): each daemon registers its liveness session at
//! start, confirms that session, heartbeats, and leaves on a clean stop, so replicas can share
//! the accounts fairly, find peers that are gone (and free what they held), and operators can
//! see who is running.
//!
//! The loops that run these statements, and each daemon's share of the accounts, are in
//! `worker` (`liveness`, `registry`).

use super::Statement;
use std::time::Duration;

use sqlx::{PgConnection, PgExecutor};

const REGISTER: &str = r#"
        INSERT INTO followq.daemons (worker_id, session_pid, session_started_at)
        SELECT $1, pg_backend_pid(),
               (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
        ON CONFLICT (worker_id) DO UPDATE
        SET session_pid = EXCLUDED.session_pid,
            session_started_at = EXCLUDED.session_started_at,
            -- The column's default, now(): Citus refuses a function that is not immutable in
            -- DO UPDATE SET.
            heartbeat_at = EXCLUDED.heartbeat_at
        "#;

/// Records this daemon with the session `connection` belongs to (its liveness session).
pub async fn register(connection: &mut PgConnection, worker_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(REGISTER)
        .bind(worker_id)
        .execute(connection)
        .await?;
    Ok(())
}

const CONFIRM_SESSION: &str = "SELECT 1";

/// One round trip on the liveness session `connection`: it answers, so it still exists.
pub async fn confirm_session(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(CONFIRM_SESSION).execute(connection).await?;
    Ok(())
}

const HEARTBEAT: &str = "INSERT INTO followq.daemons (worker_id) VALUES ($1) \
         ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at";

/// Renews this daemon's heartbeat (re-registering it, without a session, if a peer took it
/// for gone).
pub async fn heartbeat(executor: impl PgExecutor<'_>, worker_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(HEARTBEAT)
        .bind(worker_id)
        .execute(executor)
        .await?;
    Ok(())
}

const LEAVE: &str = "DELETE FROM followq.daemons WHERE worker_id = $1";

/// Removes this daemon's row, on a clean stop.
pub async fn leave(executor: impl PgExecutor<'_>, worker_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(LEAVE).bind(worker_id).execute(executor).await?;
    Ok(())
}

/// What [`reap`] freed.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Reaped {
    pub daemons: Vec<String>,
    pub accounts: i64,
}

const REAP: &str = r#"
        WITH gone AS (
            DELETE FROM followq.daemons AS d
            WHERE d.worker_id <> $1
              -- A session recorded before the server started was ended by a restart, not by
              -- its daemon's death: such a daemon is judged by its heartbeat, counted from the
              -- restart at the earliest, while it opens a new session.
              -- Two cases joined by IS TRUE / IS NOT TRUE rather than a CASE: Citus refuses
              -- a function that is not immutable inside a CASE (pg_postmaster_start_time()).
              AND (((d.session_pid IS NOT NULL
                     AND d.session_started_at >= pg_postmaster_start_time()) IS TRUE
                    AND NOT EXISTS (
                        SELECT 1 FROM pg_stat_activity AS s
                        WHERE s.pid = d.session_pid
                          AND (s.backend_start IS NULL
                               OR s.backend_start = d.session_started_at)))
                   OR ((d.session_pid IS NOT NULL
                        AND d.session_started_at >= pg_postmaster_start_time()) IS NOT TRUE
                       AND greatest(d.heartbeat_at, pg_postmaster_start_time())
                           < now() - make_interval(secs => $2)))
            RETURNING d.worker_id
        ),
        -- One UPDATE, without first locking the rows in key order as the claim does: Citus
        -- takes no row lock (FOR UPDATE) in a statement that spans shards. The update still
        -- waits for a claim holding one of these accounts to commit, so whoever leases the
        -- account next reads that claim's ledger row. A deadlock with a statement that locks
        -- these accounts in key order (a claim of the gone daemon, should it come back, or an
        -- operator's command) is broken by Postgres, and either side failing is safe: no
        -- request goes out without its committed claim, and the next reap frees the rest.
        freed AS (
            UPDATE followq.accounts AS a
            SET leased_by = NULL, lease_expires_at = NULL
            WHERE a.leased_by IN (SELECT worker_id FROM gone)
            RETURNING a.user_id
        ),
        -- Their unanswered requests: marked for operators; they still count until their
        -- answer_by (answer_by is at most minutes after sent_at, so the last two hours hold
        -- every one that matters).
        ledger AS (
            UPDATE followq.attempts AS t
            SET outcome = 'abandoned', completed_at = now()
            WHERE t.worker_id IN (SELECT worker_id FROM gone)
              AND t.outcome IS NULL
              AND t.sent_at > now() - interval '2 hours'
        )
        SELECT coalesce((SELECT array_agg(worker_id) FROM gone), '{}') AS daemons,
               (SELECT count(*) FROM freed) AS accounts
        "#;

/// Forgets the peers that are gone, in one statement, and frees their account leases. The
/// ledger rows of their unanswered requests are marked `abandoned` for operators; they still
/// count, and their jobs stay in flight, until their `answer_by`. A peer is gone when the
/// liveness session it recorded no longer exists, or, for a daemon whose row names no session
/// (it came back by its heartbeat after a peer took it for gone) or a session older than the
/// server's last start, when its heartbeat (or that start, if later) is older than
/// `dead_after`.
///
/// A session of another database role shows its pid but not its start time in
/// `pg_stat_activity`: such a session counts as alive while its pid exists.
pub async fn reap(
    executor: impl PgExecutor<'_>,
    worker_id: &str,
    dead_after: Duration,
) -> Result<Reaped, sqlx::Error> {
    sqlx::query_as::<_, Reaped>(REAP)
        .bind(worker_id)
        .bind(dead_after.as_secs_f64())
        .fetch_one(executor)
        .await
}

const LIVE_DAEMONS: &str = "SELECT count(*) FROM followq.daemons \
         WHERE heartbeat_at > now() - make_interval(secs => $1) OR worker_id = $2";

/// How many daemons are live: heartbeat within `dead_after`, and this one (`worker_id`)
/// whatever its heartbeat.
pub async fn live_daemons(
    executor: impl PgExecutor<'_>,
    worker_id: &str,
    dead_after: Duration,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(LIVE_DAEMONS)
        .bind(dead_after.as_secs_f64())
        .bind(worker_id)
        .fetch_one(executor)
        .await
}

const ACCOUNTS_WANTING_WORK: &str = r#"
        SELECT count(*) FROM followq.accounts AS a
        WHERE (a.leased_by IS NOT NULL AND a.lease_expires_at > now())
           OR (a.status IN ('active', 'paused')
               AND EXISTS (SELECT 1 FROM followq.follow_jobs AS j
                           WHERE j.source_user_id = a.user_id
                             AND j.state = 'queued' AND j.run_at <= now()))
        "#;

/// How many accounts want a daemon: those leased now, and those (active or paused) with a
/// ready job.
pub async fn accounts_wanting_work(executor: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(ACCOUNTS_WANTING_WORK)
        .fetch_one(executor)
        .await
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "daemons::register",
        sql: REGISTER,
    },
    Statement {
        name: "daemons::confirm_session",
        sql: CONFIRM_SESSION,
    },
    Statement {
        name: "daemons::heartbeat",
        sql: HEARTBEAT,
    },
    Statement {
        name: "daemons::leave",
        sql: LEAVE,
    },
    Statement {
        name: "daemons::reap",
        sql: REAP,
    },
    Statement {
        name: "daemons::live_daemons",
        sql: LIVE_DAEMONS,
    },
    Statement {
        name: "daemons::accounts_wanting_work",
        sql: ACCOUNTS_WANTING_WORK,
    },
];
