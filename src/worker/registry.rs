//! Each daemon's fair share of the accounts, from the live daemons and the accounts that want
//! one (both read from `store::daemons`, which also owns registering, heartbeats, leaving and
//! reaping the peers that are gone).

use std::time::Duration;

use sqlx::PgPool;

use crate::store::daemons::{accounts_wanting_work, live_daemons};

/// How many accounts this daemon should hold at most so that live daemons share the work:
/// the accounts that are leased or have a ready job, divided by the live daemons, rounded up.
/// `None` when this daemon is the only one (no need to count).
pub async fn fair_share(
    pool: &PgPool,
    worker_id: &str,
    dead_after: Duration,
) -> Result<Option<usize>, sqlx::Error> {
    let live = live_daemons(pool, worker_id, dead_after).await?;
    if live <= 1 {
        return Ok(None);
    }
    let wanting = accounts_wanting_work(pool).await?;
    let share = (wanting + live - 1) / live;
    Ok(Some(usize::try_from(share).unwrap_or(0).max(1)))
}
