//! Enqueueing follow requests: one at a time or in batches, both through one UNNEST statement
//! (`store::enqueue`) that is idempotent on (source, target) over the active states.
//!
//! Ids are checked in Rust before any SQL runs; the schema's CHECK and FOREIGN KEY constraints
//! stay the authority for rows written by other services, and [`EnqueueError::from_database`]
//! maps their names back to the same errors.

use chrono::{DateTime, Utc};
use sqlx::{Acquire, PgConnection, PgPool, Postgres};

use crate::ids::{UserId, UserIdError};
use crate::store;
use crate::store::enqueue::ChunkRow;

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
///
/// `conn` is the pool, a connection, or the caller's own transaction (`&mut tx` or
/// `&mut *tx`), in which case the job exists, and its NOTIFY goes out, only once that
/// transaction commits.
//
// Written as a function returning a future, not an `async fn`: the future of an `async fn`
// over a generic `Acquire` is not `Send` when it is given a transaction (the compiler cannot
// prove the connection's lifetime general enough), and a caller may spawn it.
#[allow(clippy::manual_async_fn)]
pub fn enqueue<'a, 'c, A>(
    conn: A,
    request: &'a FollowRequest,
) -> impl Future<Output = Result<EnqueueOutcome, EnqueueError>> + Send + 'a
where
    A: Acquire<'c, Database = Postgres> + Send + 'a,
{
    async move {
        let mut conn = conn.acquire().await.map_err(EnqueueError::from_database)?;
        let outcomes = enqueue_chunk(&mut conn, std::slice::from_ref(request)).await?;
        match outcomes.first() {
            Some(EnqueueOutcome::UnknownAccount) => {
                Err(EnqueueError::UnknownAccount(request.source.clone()))
            }
            Some(outcome) => Ok(*outcome),
            None => Err(EnqueueError::Database(sqlx::Error::RowNotFound)),
        }
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
        let mut conn = pool.acquire().await.map_err(EnqueueError::from_database)?;
        outcomes.extend(enqueue_chunk(&mut conn, chunk).await?);
    }
    Ok(outcomes)
}

/// How often a row whose conflicting job finished between the insert and the look-up (so it
/// got neither a new nor an existing id) is tried again before giving up.
const RACE_RETRIES: usize = 5;

/// One chunk: the statement, then again for the rows that lost a race, on the same
/// connection (each statement is its own transaction unless `conn` is in one).
async fn enqueue_chunk(
    conn: &mut PgConnection,
    requests: &[FollowRequest],
) -> Result<Vec<EnqueueOutcome>, EnqueueError> {
    let mut outcomes: Vec<Option<EnqueueOutcome>> = vec![None; requests.len()];
    let mut pending: Vec<usize> = (0..requests.len()).collect();
    for _ in 0..RACE_RETRIES {
        if pending.is_empty() {
            break;
        }
        let rows = run_chunk_statement(&mut *conn, requests, &pending).await?;
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

/// The requests at `indices`, column by column, through [`store::enqueue::enqueue_chunk`].
async fn run_chunk_statement(
    conn: &mut PgConnection,
    requests: &[FollowRequest],
    indices: &[usize],
) -> Result<Vec<ChunkRow>, EnqueueError> {
    let selected = || indices.iter().map(|&i| &requests[i]);
    let sources: Vec<&str> = selected().map(|r| r.source.as_str()).collect();
    let targets: Vec<&str> = selected().map(|r| r.target.as_str()).collect();
    let priorities: Vec<i32> = selected().map(|r| r.priority).collect();
    let run_ats: Vec<Option<DateTime<Utc>>> = selected().map(|r| r.run_at).collect();
    let max_attempts: Vec<Option<i32>> = selected().map(|r| r.max_attempts).collect();
    store::enqueue::enqueue_chunk(
        conn,
        &sources,
        &targets,
        &priorities,
        &run_ats,
        &max_attempts,
    )
    .await
    .map_err(EnqueueError::from_database)
}
