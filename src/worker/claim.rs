//! The claim task: one statement claims the next ready job of every account the scheduler let
//! through in a round; for the accounts it found nothing for, a second task asks when their
//! next job is due. Both hand their result back to the scheduler, which starts the turns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use tracing::warn;

use super::Context;
use super::events::{NoTurn, TaskDone};
use super::retry::RetryPolicy;
use crate::store::claim::{claim_batch, next_run_at};

/// Claims the next ready job of each of `accounts` in one statement (on Citus, one per
/// shard, in flight together). The accounts of a statement that failed are absent from the
/// answer, like those with nothing ready, and are asked again; only when every statement
/// failed is the whole claim an error.
pub async fn claim(ctx: Arc<Context>, accounts: Vec<String>) -> TaskDone {
    let groups = match ctx.shards.group(&ctx.pool, &accounts).await {
        Ok(groups) => groups,
        Err(e) => {
            warn!(error = %e, accounts = accounts.len(), "database error while claiming; the accounts retry in 1 s");
            return TaskDone::Claimed(Err(()));
        }
    };
    let answer_within = ctx.answer_within();
    let results = join_all(
        groups
            .iter()
            .map(|group| claim_batch(&ctx.pool, &ctx.worker_id, group, answer_within)),
    )
    .await;
    let mut claimed = Vec::new();
    let mut failures = 0;
    for result in results {
        match result {
            Ok(jobs) => claimed.extend(jobs),
            Err(e) => {
                failures += 1;
                warn!(error = %e, shards = groups.len(), "database error while claiming for one shard's accounts; they are looked at again");
            }
        }
    }
    if failures > 0 && failures == groups.len() {
        return TaskDone::Claimed(Err(()));
    }
    ctx.metrics.claimed_alone(claimed.len() as u64);
    TaskDone::Claimed(Ok(claimed))
}

/// Accounts whose claim found nothing: when each one's next job is due.
pub async fn nothing_claimed(ctx: Arc<Context>, accounts: Vec<String>) -> TaskDone {
    TaskDone::NothingClaimed(next_turns(&ctx, accounts).await)
}

/// When the next job of each of `accounts` is due (see [`NoTurn::NoJob`]), or to try again in
/// a second after a database error.
pub async fn next_turns(ctx: &Context, accounts: Vec<String>) -> Vec<(String, NoTurn)> {
    match next_run_at(&ctx.pool, &accounts).await {
        Ok(due) => {
            let due: HashMap<String, DateTime<Utc>> = due.into_iter().collect();
            accounts
                .into_iter()
                .map(|account| {
                    let next_run_at = due.get(&account).copied();
                    (account, NoTurn::NoJob { next_run_at })
                })
                .collect()
        }
        Err(e) => {
            warn!(error = %e, "database error while looking for the next jobs; retrying in 1 s");
            let at = Instant::now() + RetryPolicy::AFTER_DATABASE_ERROR;
            accounts
                .into_iter()
                .map(|account| (account, NoTurn::RetryAt(at)))
                .collect()
        }
    }
}
