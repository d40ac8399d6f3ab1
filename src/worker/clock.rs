//! Wall-clock instants (the database's and X's times) as instants of this process's
//! monotonic clock, which every timer and limiter of the daemon runs on.

use std::time::Instant;

use chrono::{DateTime, Utc};

/// A wall-clock instant as a monotonic one (now, if it is already past).
pub fn instant_at(at: DateTime<Utc>) -> Instant {
    let now = Instant::now();
    (at - Utc::now()).to_std().map_or(now, |ahead| now + ahead)
}
