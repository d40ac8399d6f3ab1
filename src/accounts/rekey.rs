//! Key rotation: how many credentials rows each key seals (`followq credentials status`), and
//! re-sealing every row under the active key in short batches (`followq credentials rekey`).
//!
//! Counting needs no key: the key id is written in each stored value. A row counts under
//! every key one of its values uses, and as clear if one of its values was stored in clear by
//! an earlier version.
//!
//! Re-sealing is a compare-and-set per row: a row whose values changed since they were read
//! (the daemon stored a refreshed pair, an operator stored new tokens) is left alone, and so is
//! a row whose refresh is claimed right now, since replacing the refresh token's ciphertext
//! would make the refresher's own compare-and-set fail and lose the pair it just received.
//! Those rows are tried again in a later pass.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use super::keyring::KeyRing;
use super::sealed::{OpenError, SEALED_PREFIX, SealError, TokenColumn, open, seal};
use crate::ids::UserId;

/// Passes over the table before `rekey` reports rows it could not re-seal because they kept
/// changing or were being refreshed.
const PASSES: u32 = 5;
/// Pause between passes, so that a refresh in progress can finish.
const PAUSE_BETWEEN_PASSES: Duration = Duration::from_millis(500);

/// Rows sealed under one key, or stored in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyCount {
    /// `None`: values stored in clear by an earlier version.
    pub key_id: Option<String>,
    pub rows: i64,
}

/// What `credentials status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    /// Rows in `followq.account_credentials`.
    pub total_rows: i64,
    /// Rows per key id (and clear), clear first, then by key id.
    pub by_key: Vec<KeyCount>,
}

impl KeyStatus {
    /// Rows with a value in clear or under a key other than `active`.
    pub fn rows_not_under(&self, active: &str) -> i64 {
        self.by_key
            .iter()
            .filter(|count| count.key_id.as_deref() != Some(active))
            .map(|count| count.rows)
            .sum()
    }

    /// Rows under `key_id` (`None`: clear).
    pub fn rows_under(&self, key_id: Option<&str>) -> i64 {
        self.by_key
            .iter()
            .find(|count| count.key_id.as_deref() == key_id)
            .map_or(0, |count| count.rows)
    }
}

/// What a `rekey` run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RekeyReport {
    /// Rows re-sealed under the active key.
    pub resealed: u64,
    /// Rows that could not be opened with the configured keys, by reason (never a value).
    pub unreadable: BTreeMap<String, u64>,
    /// Rows skipped in the last pass because they changed meanwhile or were being refreshed.
    pub busy: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("database error while re-encrypting credentials")]
    Database(#[from] sqlx::Error),
}

/// Counts rows per key id (and clear).
pub async fn status(pool: &PgPool) -> Result<KeyStatus, sqlx::Error> {
    let total_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM followq.account_credentials")
        .fetch_one(pool)
        .await?;
    let by_key: Vec<(Option<String>, i64)> = sqlx::query_as(
        r#"
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
        "#,
    )
    .bind(SEALED_PREFIX)
    .fetch_all(pool)
    .await?;
    Ok(KeyStatus {
        total_rows,
        by_key: by_key
            .into_iter()
            .map(|(key_id, rows)| KeyCount { key_id, rows })
            .collect(),
    })
}

/// A credentials row as stored.
#[derive(sqlx::FromRow)]
struct StoredRow {
    user_id: String,
    oauth2_access_token: Option<String>,
    oauth2_refresh_token: Option<String>,
    oauth1_token: Option<String>,
    oauth1_token_secret: Option<String>,
}

impl StoredRow {
    fn values(&self) -> [(TokenColumn, Option<&str>); 4] {
        [
            (
                TokenColumn::OAuth2AccessToken,
                self.oauth2_access_token.as_deref(),
            ),
            (
                TokenColumn::OAuth2RefreshToken,
                self.oauth2_refresh_token.as_deref(),
            ),
            (TokenColumn::OAuth1Token, self.oauth1_token.as_deref()),
            (
                TokenColumn::OAuth1TokenSecret,
                self.oauth1_token_secret.as_deref(),
            ),
        ]
    }
}

/// Re-seals every row that has a value in clear or under another key with the active key,
/// `batch_size` rows per statement.
pub async fn rekey(
    pool: &PgPool,
    keys: &KeyRing,
    batch_size: u32,
) -> Result<RekeyReport, RekeyError> {
    let mut report = RekeyReport::default();
    for pass in 1..=PASSES {
        if pass > 1 {
            tokio::time::sleep(PAUSE_BETWEEN_PASSES).await;
        }
        let (resealed, unreadable, busy) = one_pass(pool, keys, batch_size).await?;
        report.resealed += resealed;
        report.unreadable = unreadable;
        report.busy = busy;
        if busy == 0 {
            break;
        }
    }
    Ok(report)
}

/// One walk over the table in user id order. Returns rows re-sealed, rows unreadable (by
/// reason) and rows skipped as busy.
async fn one_pass(
    pool: &PgPool,
    keys: &KeyRing,
    batch_size: u32,
) -> Result<(u64, BTreeMap<String, u64>, u64), RekeyError> {
    let active_prefix = format!("{SEALED_PREFIX}{}:", keys.active_id());
    let mut after = String::new();
    let (mut resealed, mut busy) = (0u64, 0u64);
    let mut unreadable: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let rows: Vec<StoredRow> = sqlx::query_as(
            r#"
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
            "#,
        )
        .bind(&after)
        .bind(&active_prefix)
        .bind(i64::from(batch_size.max(1)))
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.user_id.clone();

        let mut batch = ResealBatch::default();
        for row in &rows {
            match reseal_row(keys, row) {
                Ok(new) => batch.push(row, new),
                Err(reason) => *unreadable.entry(reason).or_default() += 1,
            }
        }
        let changed = batch.store(pool).await?;
        resealed += changed;
        busy += batch.len() - changed;
    }
    Ok((resealed, unreadable, busy))
}

/// The row's values opened and sealed again under the active key; on failure, why (the
/// error's kind, naming the column and key id, never a value).
fn reseal_row(keys: &KeyRing, row: &StoredRow) -> Result<[Option<String>; 4], String> {
    let user = UserId::parse(&row.user_id)
        .map_err(|_| String::from("the row's user id is not an X user id"))?;
    let mut new: [Option<String>; 4] = Default::default();
    for (slot, (column, stored)) in new.iter_mut().zip(row.values()) {
        let Some(stored) = stored else { continue };
        let token = open(keys, &user, column, stored).map_err(|e| reason(&e))?;
        *slot = Some(seal(keys, &user, column, &token).map_err(|e| e.to_string())?);
    }
    Ok(new)
}

fn reason(error: &OpenError) -> String {
    match error {
        OpenError::UnknownKey { key_id, .. } => {
            format!("sealed with key {key_id:?}, which is not configured")
        }
        OpenError::Undecryptable { key_id, .. } => {
            format!("does not decrypt with key {key_id:?}")
        }
        OpenError::Malformed { .. } => String::from("not a well-formed sealed value"),
    }
}

/// Re-sealed rows waiting for their compare-and-set, as columns for one UNNEST statement.
#[derive(Default)]
struct ResealBatch {
    user_ids: Vec<String>,
    old: [Vec<Option<String>>; 4],
    new: [Vec<Option<String>>; 4],
}

impl ResealBatch {
    fn push(&mut self, row: &StoredRow, new: [Option<String>; 4]) {
        self.user_ids.push(row.user_id.clone());
        for (index, (_, stored)) in row.values().into_iter().enumerate() {
            self.old[index].push(stored.map(str::to_owned));
        }
        for (column, value) in self.new.iter_mut().zip(new) {
            column.push(value);
        }
    }

    fn len(&self) -> u64 {
        self.user_ids.len() as u64
    }

    /// Writes the rows whose values are still the ones read and whose refresh is not
    /// claimed; returns how many were written.
    async fn store(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        if self.user_ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            r#"
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
            "#,
        )
        .bind(&self.user_ids)
        .bind(&self.old[0])
        .bind(&self.old[1])
        .bind(&self.old[2])
        .bind(&self.old[3])
        .bind(&self.new[0])
        .bind(&self.new[1])
        .bind(&self.new[2])
        .bind(&self.new[3])
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }
}
