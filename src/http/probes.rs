//! `/healthz` (the process runs) and `/readyz` (the database answers, no app-wide stop is in
//! force, and no answer from X is waiting to be written). A database failure is answered as
//! "unreachable", without the driver's text: the listener may be reachable by more people
//! than the logs, which get the details.

use axum::extract::State;
use axum::http::StatusCode;
use sqlx::PgPool;
use tracing::warn;

use super::{READY_TIMEOUT, Shared};
use crate::states::AppStopReason;
use crate::store::pauses;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    let unready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
    };
    if shared.ops.stopping.is_cancelled() {
        return unready("shutting down");
    }
    // Answers from X held in memory: the database did not take them yet (they are written as
    // soon as it does; until then their accounts send nothing).
    let waiting = shared.ops.metrics.outcomes_waiting();
    if waiting > 0 {
        return unready(&format!(
            "{waiting} answer(s) from X waiting to be written to the database"
        ));
    }
    // The app-stop query is the database check too: it answers only if the database does.
    let check = async {
        let _permit = shared.database.acquire().await;
        app_stop(&shared.ops.pool).await
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Err(_) => unready(&format!(
            "the database did not answer within {READY_TIMEOUT:?}"
        )),
        Ok(Err(e)) => {
            warn!(error = %e, "/readyz: the database is unreachable");
            unready("the database is unreachable")
        }
        Ok(Ok(Some(reason))) => unready(&format!(
            "app-wide stop in force ({reason}): {}; {}",
            reason.meaning(),
            reason.remedy()
        )),
        Ok(Ok(None)) => (StatusCode::OK, "ready\n".into()),
    }
}

/// The reason of the app-wide stop in force, if any.
async fn app_stop(pool: &PgPool) -> Result<Option<AppStopReason>, sqlx::Error> {
    Ok(pauses::app_pause_in_force(pool)
        .await?
        .map(|stop| stop.reason))
}
