//! `/metrics`: the counters as they are, and the gauges (queue depth, accounts held and
//! paused, the app-wide stop and its reason, the oldest ready job's age, the day's and the
//! month's spend) read from the database at most once per [`GAUGE_TTL`], by one scrape
//! at a time: a scraper polling every 100 ms, or ten scrapers at once, cost the database what
//! one scrape every few seconds does.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;
use tracing::warn;

use super::{Ops, READY_TIMEOUT, Shared};
use crate::metrics;
use crate::store::{billing, status};

/// How long gauges read from the database are served before they are read again.
pub const GAUGE_TTL: Duration = Duration::from_secs(5);

/// When the gauges were last read. Held across a refresh, so concurrent scrapes wait for it
/// and then find them fresh.
#[derive(Default)]
pub(super) struct GaugeCache {
    refreshed_at: Mutex<Option<Instant>>,
}

pub(super) async fn metrics_text(State(shared): State<Shared>) -> Response {
    refresh_if_stale(&shared).await;
    match shared.ops.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics\n",
        )
            .into_response(),
    }
}

async fn refresh_if_stale(shared: &Shared) {
    let Ok(mut refreshed_at) =
        tokio::time::timeout(READY_TIMEOUT, shared.gauges.refreshed_at.lock()).await
    else {
        // Another scrape is refreshing and slow: serve what is there.
        return;
    };
    if refreshed_at.is_some_and(|at| at.elapsed() < GAUGE_TTL) {
        return;
    }
    let refresh = async {
        let _permit = shared.database.acquire().await;
        refresh_gauges(&shared.ops).await
    };
    match tokio::time::timeout(READY_TIMEOUT, refresh).await {
        Ok(Ok(())) => *refreshed_at = Some(Instant::now()),
        // The counters are still worth serving; the gauges keep their last values.
        Ok(Err(e)) => warn!(error = %e, "/metrics: could not read the gauges from the database"),
        Err(_) => warn!("/metrics: the database did not answer in time; gauges are stale"),
    }
}

/// Sets the gauges from four short statements.
async fn refresh_gauges(ops: &Ops) -> Result<(), sqlx::Error> {
    let queue = status::queued_and_in_flight(&ops.pool).await?;
    let daemon = status::daemon_gauges(&ops.pool, &ops.worker_id).await?;
    let paused = status::paused_accounts_by_reason(&ops.pool).await?;
    let spend = billing::spend(&ops.pool).await?;
    ops.metrics.set_spend(
        (spend.day.billed, spend.day.possibly_billed),
        (spend.month.billed, spend.month.possibly_billed),
    );
    ops.metrics.set_queue_depth(queue.queued, queue.running);
    ops.metrics.set_accounts_held(daemon.accounts_held);
    ops.metrics.set_app_stop(daemon.app_stop_reason.as_deref());
    ops.metrics.set_oldest_ready_job_age(
        daemon
            .oldest_ready_seconds
            .and_then(|seconds| Duration::try_from_secs_f64(seconds.max(0.0)).ok()),
    );
    ops.metrics.set_paused_accounts(
        paused
            .iter()
            .map(|(reason, count)| (reason.as_str(), *count)),
    );
    Ok(())
}
