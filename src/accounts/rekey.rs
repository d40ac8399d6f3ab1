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
//!
//! The statements are in `store::credentials`; opening and sealing stay here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use super::keyring::KeyRing;
use super::sealed::{OpenError, SEALED_PREFIX, SealError, TokenColumn, open, seal};
use crate::ids::UserId;
use crate::store;
use crate::store::credentials::CredentialsRow;

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
    let total_rows = store::credentials::count_credentials(pool).await?;
    let by_key = store::credentials::credentials_by_key(pool, SEALED_PREFIX).await?;
    Ok(KeyStatus {
        total_rows,
        by_key: by_key
            .into_iter()
            .map(|(key_id, rows)| KeyCount { key_id, rows })
            .collect(),
    })
}

/// The row's four values, each with its column.
fn values(row: &CredentialsRow) -> [(TokenColumn, Option<&str>); 4] {
    [
        (
            TokenColumn::OAuth2AccessToken,
            row.oauth2_access_token.as_deref(),
        ),
        (
            TokenColumn::OAuth2RefreshToken,
            row.oauth2_refresh_token.as_deref(),
        ),
        (TokenColumn::OAuth1Token, row.oauth1_token.as_deref()),
        (
            TokenColumn::OAuth1TokenSecret,
            row.oauth1_token_secret.as_deref(),
        ),
    ]
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
        let rows = store::credentials::rows_to_reseal(
            pool,
            &after,
            &active_prefix,
            i64::from(batch_size.max(1)),
        )
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
fn reseal_row(keys: &KeyRing, row: &CredentialsRow) -> Result<[Option<String>; 4], String> {
    let user = UserId::parse(&row.user_id)
        .map_err(|_| String::from("the row's user id is not an X user id"))?;
    let mut new: [Option<String>; 4] = Default::default();
    for (slot, (column, stored)) in new.iter_mut().zip(values(row)) {
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
    fn push(&mut self, row: &CredentialsRow, new: [Option<String>; 4]) {
        self.user_ids.push(row.user_id.clone());
        for (index, (_, stored)) in values(row).into_iter().enumerate() {
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
        store::credentials::reseal_rows(pool, &self.user_ids, &self.old, &self.new).await
    }
}
