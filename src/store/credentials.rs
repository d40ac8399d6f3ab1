//! Accounts' credentials in `followq.account_credentials`: registering an account (its row in
//! `followq.accounts` and its tokens), loading the tokens, storing a refreshed OAuth 2.0 pair
//! by compare-and-set, the per-account refresh claim, and the counts and re-sealing of key
//! rotation.
//!
//! Every token value bound or read here is sealed (a value an earlier version stored in clear
//! is read as it is): sealing, opening and the key ring stay in `accounts`, and a token in
//! clear never reaches this layer. Token values are bound as parameters, never written into a
//! statement's text, and the row types that hold them derive no `Debug`.

use super::Statement;
use crate::states::{AccountStatus, PauseReason};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor};

// Registering.

const ACCOUNT_STATUS_FOR_UPDATE: &str =
    "SELECT status FROM followq.accounts WHERE user_id = $1 FOR NO KEY UPDATE";

/// The account's status, its row locked until the end of the transaction on `conn`; `None`
/// for an account not registered yet.
///
/// FOR NO KEY UPDATE: it does not wait for the key-share locks that enqueueing services'
/// foreign-key checks take on the account row.
pub async fn account_status_for_update(
    conn: &mut PgConnection,
    user_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(ACCOUNT_STATUS_FOR_UPDATE)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

const UPSERT_ACCOUNT: &str = r#"
        INSERT INTO followq.accounts AS a (user_id, auth_kind, quota_requests, quota_period_seconds)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (user_id) DO UPDATE SET
            auth_kind = EXCLUDED.auth_kind,
            quota_requests = coalesce(EXCLUDED.quota_requests, a.quota_requests),
            quota_period_seconds = coalesce(EXCLUDED.quota_period_seconds, a.quota_period_seconds),
            status = CASE WHEN a.status = 'needs_reauth' THEN 'active' ELSE a.status END,
            paused_until = CASE WHEN a.status = 'needs_reauth' THEN NULL ELSE a.paused_until END,
            pause_reason = CASE WHEN a.status = 'needs_reauth' THEN NULL ELSE a.pause_reason END,
            updated_at = EXCLUDED.updated_at
        RETURNING a.status
        "#;

/// Creates the account row, or updates its auth kind and (when given) its quota override; an
/// account that `needs_reauth` becomes `active`, any other keeps its status. Returns the
/// status it has now.
pub async fn upsert_account(
    conn: &mut PgConnection,
    user_id: &str,
    auth_kind: &str,
    quota_requests: Option<i32>,
    quota_period_seconds: Option<i32>,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(UPSERT_ACCOUNT)
        .bind(user_id)
        .bind(auth_kind)
        .bind(quota_requests)
        .bind(quota_period_seconds)
        .fetch_one(conn)
        .await
}

/// An account's tokens as they are stored, sealed: the OAuth 2.0 pair and its expiry, or the
/// OAuth 1.0a token and secret. No `Debug`.
pub struct SealedTokens {
    pub oauth2_access_token: Option<String>,
    pub oauth2_refresh_token: Option<String>,
    pub oauth2_expires_at: Option<DateTime<Utc>>,
    pub oauth1_token: Option<String>,
    pub oauth1_token_secret: Option<String>,
}

// The parameters again rather than EXCLUDED.*: reading EXCLUDED needs SELECT on the token
// columns, which the registering role (deploy/roles.sql) does not have.
//
// `EXCLUDED.updated_at` (the column's default, now()) rather than now() in the DO UPDATE SET
// clauses of these upserts: Citus refuses a function that is not immutable there (it evaluates
// the INSERT's values, defaults among them, on the coordinator).
const UPSERT_CREDENTIALS: &str = r#"
        INSERT INTO followq.account_credentials AS c
            (user_id, oauth2_access_token, oauth2_refresh_token, oauth2_expires_at,
             oauth1_token, oauth1_token_secret)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (user_id) DO UPDATE SET
            oauth2_access_token = $2,
            oauth2_refresh_token = $3,
            oauth2_expires_at = $4,
            oauth1_token = $5,
            oauth1_token_secret = $6,
            updated_at = EXCLUDED.updated_at
        "#;

/// Stores the account's sealed tokens, replacing every token column of a row already there.
pub async fn upsert_credentials(
    conn: &mut PgConnection,
    user_id: &str,
    tokens: &SealedTokens,
) -> Result<(), sqlx::Error> {
    sqlx::query(UPSERT_CREDENTIALS)
        .bind(user_id)
        .bind(&tokens.oauth2_access_token)
        .bind(&tokens.oauth2_refresh_token)
        .bind(tokens.oauth2_expires_at)
        .bind(&tokens.oauth1_token)
        .bind(&tokens.oauth1_token_secret)
        .execute(conn)
        .await?;
    Ok(())
}

// Loading, and storing a refreshed pair.

/// An account row joined with its credentials, as stored (sealed). No `Debug`.
#[derive(FromRow)]
pub struct StoredCredentials {
    pub auth_kind: String,
    pub status: AccountStatus,
    pub pause_reason: Option<PauseReason>,
    pub oauth2_access_token: Option<String>,
    pub oauth2_refresh_token: Option<String>,
    pub oauth2_expires_at: Option<DateTime<Utc>>,
    pub oauth1_token: Option<String>,
    pub oauth1_token_secret: Option<String>,
}

const LOAD_CREDENTIALS: &str = r#"
        SELECT a.auth_kind, a.status, a.pause_reason,
               c.oauth2_access_token, c.oauth2_refresh_token, c.oauth2_expires_at,
               c.oauth1_token, c.oauth1_token_secret
        FROM followq.accounts AS a
        LEFT JOIN followq.account_credentials AS c ON c.user_id = a.user_id
        WHERE a.user_id = $1
        "#;

/// The account's status and its credentials as stored; `None` for an unknown account. The
/// token columns are `None` for an account without a credentials row.
pub async fn load_credentials(
    executor: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Option<StoredCredentials>, sqlx::Error> {
    sqlx::query_as(LOAD_CREDENTIALS)
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

const STORE_REFRESHED_PAIR: &str = r#"
        UPDATE followq.account_credentials
        SET oauth2_access_token = $2,
            oauth2_refresh_token = $3,
            oauth2_expires_at = $4,
            updated_at = now()
        WHERE user_id = $1 AND oauth2_refresh_token = $5
        "#;

/// The compare-and-set: stores the sealed pair if the stored refresh token is still `spent`
/// (its sealed text as read). Returns whether it was stored.
pub async fn store_refreshed_pair(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    spent: &str,
    access: &str,
    refresh: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(STORE_REFRESHED_PAIR)
        .bind(user_id)
        .bind(access)
        .bind(refresh)
        .bind(expires_at)
        .bind(spent)
        .execute(executor)
        .await?;
    Ok(done.rows_affected() == 1)
}

// The refresh claim.

/// What one try at the refresh claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshClaimTry {
    /// The claim is now `holder`'s.
    pub granted: bool,
    /// The account has a row in `followq.account_credentials`.
    pub credentials_exist: bool,
}

// `now()`, not `clock_timestamp()`: Citus refuses a VOLATILE function in an UPDATE of a
// distributed table, and evaluates a STABLE one on the coordinator. The statement runs on
// its own (committed at once), so its transaction's start is the moment it runs.
const TRY_REFRESH_CLAIM: &str = r#"
        WITH claimed AS (
            UPDATE followq.account_credentials
            SET refresh_claimed_by = $2,
                refresh_claimed_until = now() + make_interval(secs => $3)
            WHERE user_id = $1
              AND (refresh_claimed_until IS NULL OR refresh_claimed_until <= now())
            RETURNING 1
        )
        SELECT EXISTS (SELECT 1 FROM claimed),
               EXISTS (SELECT 1 FROM followq.account_credentials WHERE user_id = $1)
        "#;

/// Takes the account's refresh claim for `holder`, for `ttl`, if no one holds it or its
/// holder's claim has expired: one compare-and-set, committed at once.
pub async fn try_refresh_claim(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    holder: &str,
    ttl: Duration,
) -> Result<RefreshClaimTry, sqlx::Error> {
    let (granted, credentials_exist): (bool, bool) = sqlx::query_as(TRY_REFRESH_CLAIM)
        .bind(user_id)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_one(executor)
        .await?;
    Ok(RefreshClaimTry {
        granted,
        credentials_exist,
    })
}

const RELEASE_REFRESH_CLAIM: &str = "UPDATE followq.account_credentials \
         SET refresh_claimed_by = NULL, refresh_claimed_until = NULL \
         WHERE user_id = $1 AND refresh_claimed_by = $2";

/// Gives the account's refresh claim back, if it is still `holder`'s (it may have expired and
/// been taken).
pub async fn release_refresh_claim(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    holder: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(RELEASE_REFRESH_CLAIM)
        .bind(user_id)
        .bind(holder)
        .execute(executor)
        .await?;
    Ok(())
}

// Key rotation.

const COUNT_CREDENTIALS: &str = "SELECT count(*) FROM followq.account_credentials";

/// Rows in `followq.account_credentials`.
pub async fn count_credentials(executor: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(COUNT_CREDENTIALS)
        .fetch_one(executor)
        .await
}

const CREDENTIALS_BY_KEY: &str = r#"
        SELECT key_id, count(DISTINCT user_id)
        FROM (
            SELECT c.user_id,
                   CASE WHEN starts_with(v.value, $1)
                        THEN split_part(substr(v.value, length($1) + 1), ':', 1) END AS key_id
            FROM followq.account_credentials AS c
            CROSS JOIN LATERAL (VALUES (c.oauth2_access_token), (c.oauth2_refresh_token),
                                       (c.oauth1_token), (c.oauth1_token_secret)) AS v(value)
            WHERE v.value IS NOT NULL
        ) AS values_by_key
        GROUP BY key_id
        ORDER BY key_id NULLS FIRST
        "#;

/// How many rows have a value under each key id: the id is the text between `sealed_prefix`
/// and the next `:` of a stored value; `None` counts the rows with a value without the prefix
/// (stored in clear). A row counts under every key one of its values uses. `None` first, then
/// by key id.
pub async fn credentials_by_key(
    executor: impl PgExecutor<'_>,
    sealed_prefix: &str,
) -> Result<Vec<(Option<String>, i64)>, sqlx::Error> {
    sqlx::query_as(CREDENTIALS_BY_KEY)
        .bind(sealed_prefix)
        .fetch_all(executor)
        .await
}

/// A credentials row as stored. No `Debug`.
#[derive(FromRow)]
pub struct CredentialsRow {
    pub user_id: String,
    pub oauth2_access_token: Option<String>,
    pub oauth2_refresh_token: Option<String>,
    pub oauth1_token: Option<String>,
    pub oauth1_token_secret: Option<String>,
}

const ROWS_TO_RESEAL: &str = r#"
        SELECT user_id, oauth2_access_token, oauth2_refresh_token, oauth1_token,
               oauth1_token_secret
        FROM followq.account_credentials
        WHERE user_id > $1
          AND NOT (coalesce(starts_with(oauth2_access_token, $2), true)
               AND coalesce(starts_with(oauth2_refresh_token, $2), true)
               AND coalesce(starts_with(oauth1_token, $2), true)
               AND coalesce(starts_with(oauth1_token_secret, $2), true))
        ORDER BY user_id
        LIMIT $3
        "#;

/// The next `limit` rows after user id `after`, in user id order, that have a value not
/// starting with `active_prefix` (in clear, or under another key).
pub async fn rows_to_reseal(
    executor: impl PgExecutor<'_>,
    after: &str,
    active_prefix: &str,
    limit: i64,
) -> Result<Vec<CredentialsRow>, sqlx::Error> {
    sqlx::query_as(ROWS_TO_RESEAL)
        .bind(after)
        .bind(active_prefix)
        .bind(limit)
        .fetch_all(executor)
        .await
}

const RESEAL_ROWS: &str = r#"
        UPDATE followq.account_credentials AS c
        SET oauth2_access_token = n.new_access,
            oauth2_refresh_token = n.new_refresh,
            oauth1_token = n.new_token,
            oauth1_token_secret = n.new_secret
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::text[], $8::text[], $9::text[])
             AS n(user_id, old_access, old_refresh, old_token, old_secret,
                  new_access, new_refresh, new_token, new_secret)
        WHERE c.user_id = n.user_id
          AND c.oauth2_access_token IS NOT DISTINCT FROM n.old_access
          AND c.oauth2_refresh_token IS NOT DISTINCT FROM n.old_refresh
          AND c.oauth1_token IS NOT DISTINCT FROM n.old_token
          AND c.oauth1_token_secret IS NOT DISTINCT FROM n.old_secret
          AND (c.refresh_claimed_until IS NULL OR c.refresh_claimed_until <= clock_timestamp())
        "#;

/// Writes the `new` values of the rows of `user_ids` whose values are still the `old` ones
/// read and whose refresh is not claimed; returns how many were written. `old` and `new` hold
/// one column each, in the order access token, refresh token, OAuth 1.0a token, token secret,
/// one value per user id.
pub async fn reseal_rows(
    executor: impl PgExecutor<'_>,
    user_ids: &[String],
    old: &[Vec<Option<String>>; 4],
    new: &[Vec<Option<String>>; 4],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(RESEAL_ROWS)
        .bind(user_ids)
        .bind(&old[0])
        .bind(&old[1])
        .bind(&old[2])
        .bind(&old[3])
        .bind(&new[0])
        .bind(&new[1])
        .bind(&new[2])
        .bind(&new[3])
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[
    Statement {
        name: "credentials::account_status_for_update",
        sql: ACCOUNT_STATUS_FOR_UPDATE,
    },
    Statement {
        name: "credentials::upsert_account",
        sql: UPSERT_ACCOUNT,
    },
    Statement {
        name: "credentials::upsert_credentials",
        sql: UPSERT_CREDENTIALS,
    },
    Statement {
        name: "credentials::load_credentials",
        sql: LOAD_CREDENTIALS,
    },
    Statement {
        name: "credentials::store_refreshed_pair",
        sql: STORE_REFRESHED_PAIR,
    },
    Statement {
        name: "credentials::try_refresh_claim",
        sql: TRY_REFRESH_CLAIM,
    },
    Statement {
        name: "credentials::release_refresh_claim",
        sql: RELEASE_REFRESH_CLAIM,
    },
    Statement {
        name: "credentials::count_credentials",
        sql: COUNT_CREDENTIALS,
    },
    Statement {
        name: "credentials::credentials_by_key",
        sql: CREDENTIALS_BY_KEY,
    },
    Statement {
        name: "credentials::rows_to_reseal",
        sql: ROWS_TO_RESEAL,
    },
    Statement {
        name: "credentials::reseal_rows",
        sql: RESEAL_ROWS,
    },
];
