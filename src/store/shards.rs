//! Which shard holds an account's rows, for the statements that must name one shard's
//! accounts.
//!
//! On Citus a statement that locks rows (`FOR SHARE`, `FOR NO KEY UPDATE`) runs only when
//! Citus routes it to one shard, and it routes a statement that filters every table by a list
//! of accounts of one shard. So a statement about accounts of several shards is sent as one
//! statement per shard, all in flight together. On one Postgres every account is in the one
//! shard and nothing is asked: the statements go out exactly as they would without this file.
//!
//! An account's shard never changes while the cluster keeps its shard count (Citus moves a
//! shard between nodes whole, under the same id), so each is asked once and remembered.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sqlx::PgPool;
use tokio::sync::OnceCell;

use super::Statement;

/// The daemon's map of accounts to shards; see the module documentation.
#[derive(Debug, Default)]
pub struct Shards {
    /// Whether the database is a Citus coordinator, asked at first use.
    citus: OnceCell<bool>,
    known: Mutex<HashMap<String, i64>>,
}

const SHARDS_OF: &str = "SELECT account, shard FROM followq.shards_of($1::text[])";

impl Shards {
    /// A map that learns, at first use, whether the database spreads accounts over shards.
    pub fn new() -> Shards {
        Shards::default()
    }

    /// Whether accounts can be on several shards: the database is a Citus coordinator.
    pub async fn distributed(&self, pool: &PgPool) -> Result<bool, sqlx::Error> {
        self.citus
            .get_or_try_init(|| super::schema::citus_installed(pool))
            .await
            .copied()
    }

    /// Where each of `accounts` lives. On one Postgres nothing is asked: every account is in
    /// shard 0.
    pub async fn place(
        &self,
        pool: &PgPool,
        accounts: &[String],
    ) -> Result<Placement, sqlx::Error> {
        if accounts.is_empty() || !self.distributed(pool).await? {
            return Ok(Placement::default());
        }
        let unknown: Vec<String> = {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            accounts
                .iter()
                .filter(|account| !known.contains_key(*account))
                .cloned()
                .collect()
        };
        if !unknown.is_empty() {
            let found: Vec<(String, i64)> = sqlx::query_as(SHARDS_OF)
                .bind(&unknown)
                .fetch_all(pool)
                .await?;
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            known.extend(found);
        }
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Placement(
            accounts
                .iter()
                .filter_map(|account| Some((account.clone(), *known.get(account)?)))
                .collect(),
        ))
    }

    /// `accounts` in groups of one shard each (one group on one Postgres), each in the order
    /// given. An empty list makes no group.
    pub async fn group(
        &self,
        pool: &PgPool,
        accounts: &[String],
    ) -> Result<Vec<Vec<String>>, sqlx::Error> {
        let placement = self.place(pool, accounts).await?;
        Ok(placement.group(accounts.iter().cloned(), |account| account.as_str()))
    }
}

/// Which shard holds each of some accounts (see [`Shards::place`]).
#[derive(Debug, Default)]
pub struct Placement(HashMap<String, i64>);

impl Placement {
    /// The shard of `account`: 0 on one Postgres (every account asked for has an answer on
    /// Citus, its shard following from its id alone).
    pub fn shard(&self, account: &str) -> i64 {
        self.0.get(account).copied().unwrap_or(0)
    }

    /// `items` in groups of one shard each, by the account `account_of` names, each group in
    /// the order given.
    pub fn group<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        account_of: impl Fn(&T) -> &str,
    ) -> Vec<Vec<T>> {
        let mut groups: Vec<(i64, Vec<T>)> = Vec::new();
        for item in items {
            let shard = self.shard(account_of(&item));
            match groups.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, group)) => group.push(item),
                None => groups.push((shard, vec![item])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }
}

/// The static statements of this file, for the test that prepares every one.
pub const STATEMENTS: &[Statement] = &[Statement {
    name: "shards::shards_of",
    sql: SHARDS_OF,
}];
