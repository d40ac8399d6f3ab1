//! Enqueueing follow requests: one at a time or in batches, both through one UNNEST statement
//! that is idempotent on (source, target) over the active states.
//!
//! Ids are checked in Rust before any SQL runs; the schema's CHECK and FOREIGN KEY constraints
//! stay the authority for rows written by other services, and [`EnqueueError::from_database`]
//! maps their names back to the same errors.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::ids::{UserId, UserIdError};

/// Rows per statement in [`enqueue_batch`]: large enough to amortise the round trip, small
/// enough to keep each statement short.
pub const BATCH_CHUNK: usize = 5_000;

/// The priorities the schema accepts (`follow_jobs_priority_must_be_between_minus_1000_and_1000`).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// The earliest `run_at` the schema accepts: 2000-01-01T00:00:00Z (any past time is ready now).
pub const EARLIEST_RUN_AT_SECONDS: i64 = 946_684_800;
/// The first `run_at` the schema refuses: 2100-01-01T00:00:00Z
/// (`follow_jobs_run_at_must_be_between_2000_and_2100`).
pub const END_OF_RUN_AT_SECONDS: i64 = 4_102_444_800;

/// "`source` should follow `target`", validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowRequest {
    pub source: UserId,
    pub target: UserId,
    /// Larger runs first within one account.
    pub priority: i32,
    /// Not sent before this instant; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// `None` means the daemon's configured `retry.max_attempts`.
    pub max_attempts: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("malformed source user id: {0}")]
    MalformedSource(UserIdError),
    #[error("malformed target user id: {0}")]
    MalformedTarget(UserIdError),
    #[error("user {0} cannot follow itself")]
    SelfFollow(UserId),
    #[error(
        "source user {0} is not a registered account: register it with `followq accounts add` first"
    )]
    UnknownAccount(UserId),
    #[error("max_attempts must be at least 1, got {0}")]
    BadMaxAttempts(i32),
    #[error("priority must be between -1000 and 1000, got {0}")]
    BadPriority(i32),
    #[error("run_at must be in the years 2000 to 2099, got {0}")]
    BadRunAt(DateTime<Utc>),
    #[error("the database rejected the row: {meaning} (constraint {constraint})")]
    Rejected {
        constraint: String,
        meaning: &'static str,
    },
    #[error("database error while enqueueing")]
    Database(#[source] sqlx::Error),
}

impl EnqueueError {
    /// Maps a constraint violation raised by the schema to what the inserting side did wrong.
    /// Rust validates before sending, so this is reached when a row changed underneath (an
    /// account deleted mid-batch) or a rule exists only in SQL.
    pub fn from_database(error: sqlx::Error) -> EnqueueError {
        let constraint = error
            .as_database_error()
            .and_then(|e| e.constraint())
            .map(str::to_owned);
        match constraint {
            Some(constraint) => match constraint_meaning(&constraint) {
                Some(meaning) => EnqueueError::Rejected {
                    constraint,
                    meaning,
                },
                None => EnqueueError::Database(error),
            },
            None => EnqueueError::Database(error),
        }
    }
}

/// What each constraint of `followq.follow_jobs` means for the service that inserted the row.
pub fn constraint_meaning(constraint: &str) -> Option<&'static str> {
    Some(match constraint {
        "follow_jobs_source_user_id_must_be_1_to_19_digits" => {
            "source_user_id must be 1 to 19 digits"
        }
        "follow_jobs_target_user_id_must_be_1_to_19_digits" => {
            "target_user_id must be 1 to 19 digits"
        }
        "follow_jobs_source_cannot_follow_itself" => "source and target are the same user",
        "follow_jobs_source_must_be_a_registered_account" => {
            "source_user_id is not in followq.accounts"
        }
        "follow_jobs_max_attempts_must_be_positive" => "max_attempts must be at least 1",
        "follow_jobs_source_user_id_must_not_start_with_0" => {
            "source_user_id starts with 0: X user ids have no leading zeros"
        }
        "follow_jobs_target_user_id_must_not_start_with_0" => {
            "target_user_id starts with 0: X user ids have no leading zeros"
        }
        "follow_jobs_run_at_must_be_between_2000_and_2100" => {
            "run_at must be a finite time in the years 2000 to 2099"
        }
        "follow_jobs_priority_must_be_between_minus_1000_and_1000" => {
            "priority must be between -1000 and 1000"
        }
        _ => return None,
    })
}

impl FollowRequest {
    /// Validates raw ids: both must be 1 to 19 digits and differ.
    pub fn new(source: &str, target: &str) -> Result<FollowRequest, EnqueueError> {
        let source = UserId::parse(source).map_err(EnqueueError::MalformedSource)?;
        let target = UserId::parse(target).map_err(EnqueueError::MalformedTarget)?;
        if source == target {
            return Err(EnqueueError::SelfFollow(source));
        }
        Ok(FollowRequest {
            source,
            target,
            priority: 0,
            run_at: None,
            max_attempts: None,
        })
    }

    pub fn with_priority(mut self, priority: i32) -> Result<Self, EnqueueError> {
        if !PRIORITY_RANGE.contains(&priority) {
            return Err(EnqueueError::BadPriority(priority));
        }
        self.priority = priority;
        Ok(self)
    }

    pub fn with_run_at(mut self, run_at: DateTime<Utc>) -> Result<Self, EnqueueError> {
        if !(EARLIEST_RUN_AT_SECONDS..END_OF_RUN_AT_SECONDS).contains(&run_at.timestamp()) {
            return Err(EnqueueError::BadRunAt(run_at));
        }
        self.run_at = Some(run_at);
        Ok(self)
    }

    pub fn with_max_attempts(mut self, max_attempts: i32) -> Result<Self, EnqueueError> {
        if max_attempts < 1 {
            return Err(EnqueueError::BadMaxAttempts(max_attempts));
        }
        self.max_attempts = Some(max_attempts);
        Ok(self)
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// A new job with this id.
    Created(i64),
    /// An active (queued or running) job for the same pair already existed, or an earlier
    /// row of the same batch created it.
    Existing(i64),
    /// The source is not in `followq.accounts`: nothing was written for this row.
    UnknownAccount,
}

impl EnqueueOutcome {
    pub fn job_id(self) -> Option<i64> {
        match self {
            EnqueueOutcome::Created(id) | EnqueueOutcome::Existing(id) => Some(id),
            EnqueueOutcome::UnknownAccount => None,
        }
    }
}

/// Enqueues one request. An unknown source account is an error here.
pub async fn enqueue(
    pool: &PgPool,
    request: &FollowRequest,
) -> Result<EnqueueOutcome, EnqueueError> {
    let outcomes = enqueue_batch(pool, std::slice::from_ref(request)).await?;
    match outcomes.first() {
        Some(EnqueueOutcome::UnknownAccount) => {
            Err(EnqueueError::UnknownAccount(request.source.clone()))
        }
        Some(outcome) => Ok(*outcome),
        None => Err(EnqueueError::Database(sqlx::Error::RowNotFound)),
    }
}

/// Enqueues many requests, [`BATCH_CHUNK`] rows per statement, each chunk committed on its
/// own. Returns one outcome per request, in order. Rows whose source is not a registered
/// account are reported as [`EnqueueOutcome::UnknownAccount`] and do not stop the others.
pub async fn enqueue_batch(
    pool: &PgPool,
    requests: &[FollowRequest],
) -> Result<Vec<EnqueueOutcome>, EnqueueError> {
    let mut outcomes = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(BATCH_CHUNK) {
        outcomes.extend(enqueue_chunk(pool, chunk).await?);
    }
    Ok(outcomes)
}

#[derive(FromRow)]
struct ChunkRow {
    ord: i64,
    known_account: bool,
    job_id: Option<i64>,
    created: bool,
}

/// One statement: insert the rows of known accounts, skip pairs that already have an active
/// job, and report per input row what happened.
const ENQUEUE_CHUNK_SQL: &str = r#"
WITH input AS MATERIALIZED (
    SELECT t.ord, t.source_user_id, t.target_user_id, t.priority, t.run_at, t.max_attempts,
           EXISTS (SELECT 1 FROM followq.accounts AS a WHERE a.user_id = t.source_user_id)
               AS known_account
    FROM UNNEST($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::int[])
         WITH ORDINALITY AS t(source_user_id, target_user_id, priority, run_at, max_attempts, ord)
),
inserted AS (
    INSERT INTO followq.follow_jobs
        (source_user_id, target_user_id, priority, run_at, max_attempts)
    SELECT i.source_user_id, i.target_user_id, i.priority, coalesce(i.run_at, now()), i.max_attempts
    FROM input AS i
    WHERE i.known_account
    ORDER BY i.ord
    ON CONFLICT (source_user_id, target_user_id) WHERE state IN ('queued', 'running')
    DO NOTHING
    RETURNING id, source_user_id, target_user_id
)
SELECT i.ord,
       i.known_account,
       -- A sub-select, evaluated only for rows that inserted nothing: one probe of the
       -- one-active-job index each. As a join, the planner read every active job for every
       -- chunk, which made a large import quadratic.
       CASE WHEN ins.id IS NOT NULL THEN ins.id
            WHEN i.known_account THEN (
                SELECT j.id FROM followq.follow_jobs AS j
                WHERE j.source_user_id = i.source_user_id
                  AND j.target_user_id = i.target_user_id
                  AND j.state IN ('queued', 'running'))
       END AS job_id,
       (ins.id IS NOT NULL
        AND i.ord = min(i.ord) OVER (PARTITION BY i.source_user_id, i.target_user_id)) AS created
FROM input AS i
LEFT JOIN inserted AS ins
       ON ins.source_user_id = i.source_user_id AND ins.target_user_id = i.target_user_id
ORDER BY i.ord
"#;

/// How often a row whose conflicting job finished between the insert and the look-up (so it
/// got neither a new nor an existing id) is tried again before giving up.
const RACE_RETRIES: usize = 5;

async fn enqueue_chunk(
    pool: &PgPool,
    requests: &[FollowRequest],
) -> Result<Vec<EnqueueOutcome>, EnqueueError> {
    let mut outcomes: Vec<Option<EnqueueOutcome>> = vec![None; requests.len()];
    let mut pending: Vec<usize> = (0..requests.len()).collect();
    for _ in 0..RACE_RETRIES {
        if pending.is_empty() {
            break;
        }
        let rows = run_chunk_statement(pool, requests, &pending).await?;
        let mut still_pending = Vec::new();
        for row in rows {
            let Some(&index) = usize::try_from(row.ord - 1)
                .ok()
                .and_then(|position| pending.get(position))
            else {
                continue;
            };
            outcomes[index] = match (row.known_account, row.job_id, row.created) {
                (false, _, _) => Some(EnqueueOutcome::UnknownAccount),
                (true, Some(id), true) => Some(EnqueueOutcome::Created(id)),
                (true, Some(id), false) => Some(EnqueueOutcome::Existing(id)),
                (true, None, _) => {
                    still_pending.push(index);
                    None
                }
            };
        }
        pending = still_pending;
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.ok_or(EnqueueError::Database(sqlx::Error::RowNotFound)))
        .collect()
}

async fn run_chunk_statement(
    pool: &PgPool,
    requests: &[FollowRequest],
    indices: &[usize],
) -> Result<Vec<ChunkRow>, EnqueueError> {
    let selected = || indices.iter().map(|&i| &requests[i]);
    let sources: Vec<&str> = selected().map(|r| r.source.as_str()).collect();
    let targets: Vec<&str> = selected().map(|r| r.target.as_str()).collect();
    let priorities: Vec<i32> = selected().map(|r| r.priority).collect();
    let run_ats: Vec<Option<DateTime<Utc>>> = selected().map(|r| r.run_at).collect();
    let max_attempts: Vec<Option<i32>> = selected().map(|r| r.max_attempts).collect();
    sqlx::query_as::<_, ChunkRow>(ENQUEUE_CHUNK_SQL)
        .bind(&sources)
        .bind(&targets)
        .bind(&priorities)
        .bind(&run_ats)
        .bind(&max_attempts)
        .fetch_all(pool)
        .await
        .map_err(EnqueueError::from_database)
}
