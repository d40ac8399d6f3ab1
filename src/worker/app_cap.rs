//! The per-app daily follow cap (`rate_limit.daily_follows_per_app`), checked right before
//! each request. The app monitor writes the app-wide stop (`app_daily_cap`) once the
//! ledger's follows reach the cap (the fresh rows too: answered ones by their answer,
//! unanswered ones once their request took a slot), but only every `worker.poll_interval`:
//! between two of its polls a busy daemon would follow past the cap. So each request first
//! takes a slot here.
//!
//! The app's follows are two figures added up:
//! - the ledger's settled rows (sent more than `answer_within` and a margin ago, their fate
//!   final), counted per minute by [`AppFollows`] and read again by the app monitor every
//!   poll: the one read of every account's ledger, never one per request (on Citus it spans
//!   every shard);
//! - the slots taken since (`followq.app_cap_slots`, one row per request let through, on one
//!   node), which stand for the ledger's fresh rows until they settle. A slot is taken after
//!   its request's ledger row was written (at the claim), so a request whose row is not
//!   among the settled ones has its slot among those counted (those taken after the settled
//!   rows' end, less `CLOCK_MARGIN` for the clocks of Citus's nodes).
//!
//! A slot is taken under the table's lock only while the sum stays below the cap, so neither
//! this daemon nor its replicas together pass it. A request that proved to follow nobody
//! (a 4xx, never sent) gives its slot back once its outcome is written; any other counts as
//! a follow until its ledger row settles, on the safe side.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use tracing::warn;

use crate::accounts::app_follows::{AppCount, AppFollows, CLOCK_MARGIN, Settled};
use crate::store::app_cap_slots;

/// Slots are deleted this long after they were taken, long after their ledger rows settled.
const SLOTS_KEPT: Duration = Duration::from_secs(3600);

/// The settled count a request may rely on: read by the app monitor every poll; one this old
/// (the monitor failing) is read again before the request, well before its slots are pruned.
const SETTLED_STALE_AFTER: TimeDelta = TimeDelta::minutes(20);

pub struct AppCapGate {
    cap: Option<u32>,
    /// How long after its claim a request may reach X.
    answer_within: Duration,
    /// The app's follows in the ledger, locked while they are read (on Citus a read spans
    /// every shard, and may take a second on a loaded cluster).
    follows: tokio::sync::Mutex<AppFollows>,
    /// The settled count of the last read, for the requests: they never wait for a read.
    settled: std::sync::Mutex<Option<Settled>>,
}

/// A request's place under the cap: the slot's id, with the outcome to its write (where the
/// slot is given back if the request followed nobody).
#[derive(Debug)]
pub struct Slot {
    id: Option<i64>,
}

impl AppCapGate {
    pub fn new(cap: Option<u32>, answer_within: Duration) -> AppCapGate {
        AppCapGate {
            cap,
            answer_within,
            follows: tokio::sync::Mutex::new(AppFollows::default()),
            settled: std::sync::Mutex::new(None),
        }
    }

    /// Whether a request may start as far as the cap's count goes: no cap, or the ledger's
    /// settled follows read lately. The scheduler claims nothing before the app monitor's
    /// first read, so that no claim waits for it past its send deadline; a count gone stale
    /// (the monitor failing) is read again by the next request itself.
    pub fn counted(&self) -> bool {
        self.cap.is_none() || self.fresh_settled().is_some()
    }

    /// The app's follows of the last 24 hours in the ledger (the fresh rows too), and when
    /// fewer than the cap count again if it is reached; `None` without a cap. Deletes the
    /// slots old enough to be in the settled count of every daemon.
    pub async fn count(&self, pool: &PgPool) -> Result<Option<AppCount>, sqlx::Error> {
        let Some(cap) = self.cap else {
            return Ok(None);
        };
        let count = self.refresh(pool, cap).await?;
        if let Err(e) = app_cap_slots::prune(pool, SLOTS_KEPT).await {
            warn!(error = %e, "could not delete the per-app cap's old slots; trying again next poll");
        }
        Ok(Some(count))
    }

    /// A slot for one request, or `None` when the cap is reached. Without a cap, always a
    /// slot, and no query.
    pub async fn admit(&self, pool: &PgPool, attempt_id: i64) -> Result<Option<Slot>, sqlx::Error> {
        let Some(cap) = self.cap else {
            return Ok(Some(Slot { id: None }));
        };
        let settled = self.settled(pool, cap).await?;
        let id = app_cap_slots::take(
            pool,
            attempt_id,
            settled.follows,
            // Past chrono's range: every slot counts, on the safe side.
            TimeDelta::from_std(CLOCK_MARGIN)
                .ok()
                .and_then(|margin| settled.through.checked_sub_signed(margin))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            cap,
        )
        .await?;
        Ok(id.map(|id| Slot { id: Some(id) }))
    }

    /// Gives `slot` back once its request's outcome is written, if the request followed
    /// nobody; any other slot stays until its ledger row settles.
    pub async fn outcome_written(
        &self,
        pool: &PgPool,
        slot: Slot,
        followed_nobody: bool,
    ) -> Result<(), sqlx::Error> {
        match slot.id {
            Some(id) if followed_nobody => app_cap_slots::give_back(pool, id).await,
            _ => Ok(()),
        }
    }

    /// The settled rows' follows, read from the ledger first if the app monitor has not read
    /// them lately.
    async fn settled(&self, pool: &PgPool, cap: u32) -> Result<Settled, sqlx::Error> {
        if let Some(settled) = self.fresh_settled() {
            return Ok(settled);
        }
        self.refresh(pool, cap).await?;
        self.fresh_settled()
            .ok_or_else(|| sqlx::Error::Protocol("the ledger read returned no count".into()))
    }

    /// The last read's settled count, unless it is stale.
    fn fresh_settled(&self) -> Option<Settled> {
        let settled = *self
            .settled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        settled.filter(|settled| settled.read_at > Utc::now() - SETTLED_STALE_AFTER)
    }

    /// Reads the ledger's follows, and keeps the settled count for the requests.
    async fn refresh(&self, pool: &PgPool, cap: u32) -> Result<AppCount, sqlx::Error> {
        let mut follows = self.follows.lock().await;
        let count = follows.refresh(pool, cap, self.answer_within).await?;
        *self
            .settled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = follows.settled();
        Ok(count)
    }
}
