//! The per-app daily follow cap (`rate_limit.daily_follows_per_app`), checked right before
//! each request. The app monitor writes the app-wide stop (`app_daily_cap`) once the
//! ledger's follows reach the cap, but only every `worker.poll_interval`: between two of its
//! polls a busy daemon would follow past the cap. So each request first takes a slot here.
//!
//! A slot is granted while the follows that may have happened in the last 24 hours (the
//! ledger's `succeeded` and `abandoned` rows, and the other daemons' requests still
//! unanswered) and this daemon's own requests holding a slot stay below the cap. The check and the count are serialised within
//! this daemon, and a slot is held until its answer is recorded, so one daemon never passes
//! the cap. Replicas see each other's requests only once their ledger rows are committed,
//! at the claim: two replicas checking in the same few milliseconds may still both pass.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::PgPool;

pub struct AppCapGate {
    cap: Option<u32>,
    /// Serialises check-and-take, so two requests of this daemon never both take the last
    /// slot.
    check: tokio::sync::Mutex<()>,
    /// This daemon's requests holding a slot.
    held: AtomicU32,
}

/// A request's place under the cap, given back when dropped (after its answer is recorded).
pub struct Slot<'a> {
    gate: Option<&'a AppCapGate>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.gate {
            gate.held.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl AppCapGate {
    pub fn new(cap: Option<u32>) -> AppCapGate {
        AppCapGate {
            cap,
            check: tokio::sync::Mutex::new(()),
            held: AtomicU32::new(0),
        }
    }

    /// A slot for one request, or `None` when the cap is reached. Without a cap, always a
    /// slot, and no query.
    pub async fn admit(
        &self,
        pool: &PgPool,
        worker_id: &str,
    ) -> Result<Option<Slot<'_>>, sqlx::Error> {
        let Some(cap) = self.cap else {
            return Ok(Some(Slot { gate: None }));
        };
        let _serial = self.check.lock().await;
        let counted: i64 = sqlx::query_scalar(
            r#"
            SELECT count(*) FROM followq.attempts
            WHERE sent_at > now() - interval '24 hours'
              AND (outcome IN ('succeeded', 'abandoned')
                   OR (outcome IS NULL AND worker_id <> $1))
            "#,
        )
        .bind(worker_id)
        .fetch_one(pool)
        .await?;
        let held = i64::from(self.held.load(Ordering::SeqCst));
        if counted + held >= i64::from(cap) {
            return Ok(None);
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Slot { gate: Some(self) }))
    }
}
