//! The per-app daily follow cap (`rate_limit.daily_follows_per_app`), checked right before
//! each request. The app monitor writes the app-wide stop (`app_daily_cap`) once the
//! ledger's follows reach the cap, but only every `worker.poll_interval`: between two of its
//! polls a busy daemon would follow past the cap. So each request first takes a slot here.
//!
//! A slot is granted while the follows that may have happened in the last 24 hours (the
//! ledger's `succeeded` and `abandoned` rows, and the other daemons' requests still
//! unanswered) and this daemon's own requests holding a slot stay below the cap. The check
//! and the count are serialised within this daemon, and a slot is held until its answer is
//! recorded, so one daemon never passes the cap. Replicas see each other's requests only once
//! their ledger rows are committed, at the claim: two replicas checking in the same few
//! milliseconds may still both pass.
//!
//! The follows are counted per minute ([`AppFollows`]): each check reads only the ledger rows
//! of the last `answer_within` and a few seconds (their fate may still change) and what was
//! added since the previous check, not the whole day. The app monitor reads the same count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use crate::accounts::app_follows::{AppCount, AppFollows};

pub struct AppCapGate {
    cap: Option<u32>,
    /// How long after its claim a request may reach X.
    answer_within: Duration,
    /// The app's follows; the lock also serialises check-and-take, so two requests of this
    /// daemon never both take the last slot.
    follows: tokio::sync::Mutex<AppFollows>,
    /// This daemon's requests holding a slot.
    held: AtomicU32,
}

/// A request's place under the cap, given back when dropped (after its answer is recorded:
/// it travels with the turn's outcome to the write).
pub struct Slot {
    gate: Option<Arc<AppCapGate>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            gate.held.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl AppCapGate {
    pub fn new(cap: Option<u32>, answer_within: Duration) -> AppCapGate {
        AppCapGate {
            cap,
            answer_within,
            follows: tokio::sync::Mutex::new(AppFollows::default()),
            held: AtomicU32::new(0),
        }
    }

    /// The app's follows of the last 24 hours, this daemon's requests in flight included, and
    /// when fewer than the cap count again if it is reached; `None` without a cap.
    pub async fn count(&self, pool: &PgPool) -> Result<Option<AppCount>, sqlx::Error> {
        let Some(cap) = self.cap else {
            return Ok(None);
        };
        let mut follows = self.follows.lock().await;
        let count = follows.refresh(pool, cap, self.answer_within, None).await?;
        Ok(Some(count))
    }

    /// A slot for one request, or `None` when the cap is reached. Without a cap, always a
    /// slot, and no query.
    pub async fn admit(
        self: &Arc<Self>,
        pool: &PgPool,
        worker_id: &str,
    ) -> Result<Option<Slot>, sqlx::Error> {
        let Some(cap) = self.cap else {
            return Ok(Some(Slot { gate: None }));
        };
        let mut follows = self.follows.lock().await;
        // This daemon's unanswered rows are left out: its requests holding a slot count
        // instead (the one asking now has its row already, written at the claim).
        let counted = follows
            .refresh(pool, cap, self.answer_within, Some(worker_id))
            .await?
            .follows;
        let held = u64::from(self.held.load(Ordering::SeqCst));
        if counted + held >= u64::from(cap) {
            return Ok(None);
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Slot {
            gate: Some(Arc::clone(self)),
        }))
    }
}
