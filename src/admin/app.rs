//! The app-wide stop, for an operator: ending one that an operator may end
//! (`followq app resume`). What the stop is and why is read with `followq status`.

use sqlx::PgPool;

use crate::states::AppStopReason;
use crate::store::pauses::{self, AppPause};

/// What `followq app resume` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Resumed {
    /// The stop in force was ended; every daemon sends again within its poll interval.
    Ended(AppPause),
    /// No app-wide stop was in force.
    NothingToEnd,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The stop is one the daemons keep themselves (they would stop again at once).
    #[error("the app-wide stop ({reason}) is not ended by hand: {remedy}")]
    NotOperatorsToEnd {
        reason: AppStopReason,
        remedy: &'static str,
    },
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// Ends the app-wide stop in force, unless it is one the daemons keep themselves (the daily
/// follow cap: they count it and would stop again at once).
pub async fn resume(pool: &PgPool) -> Result<Resumed, AppError> {
    let Some(stop) = pauses::app_pause_in_force(pool).await? else {
        return Ok(Resumed::NothingToEnd);
    };
    if !stop.reason.operator_may_end() {
        return Err(AppError::NotOperatorsToEnd {
            remedy: stop.reason.remedy(),
            reason: stop.reason,
        });
    }
    // Only the stop read above: one a daemon wrote meanwhile for another reason stays.
    match pauses::end_app_stop(pool, Some(&stop.reason)).await? {
        Some(ended) => Ok(Resumed::Ended(ended)),
        None => Ok(Resumed::NothingToEnd),
    }
}
