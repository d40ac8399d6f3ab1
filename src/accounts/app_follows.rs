//! The app's follows of the last 24 hours (for `rate_limit.daily_follows_per_app`), counted
//! per minute of expiry and kept up to date from the ledger a little at a time.
//!
//! Every account's follows count against the app's cap, so the ledger rows of a whole day
//! would have to be read for each check (millions of rows for a busy app). Instead, a follow
//! counts in a [`RollingDay`] bucket of one minute, on the database's clock, until the end
//! of the minute in which it is a day old: never earlier than exactly, at most a minute later.
//!
//! A ledger row's follow is final once its request can no longer reach X: rows older than
//! the settling time (`answer_within` plus a margin) are read once, as they age past it, and
//! kept in the buckets; younger ones are read again at each refresh. A settled row counts if
//! it was a follow or might still become one (answered `succeeded`, or unanswered: in flight
//! or `abandoned`), until a day after its latest possible arrival. An answer recorded later
//! can only confirm it or take it away, so the settled count never falls short. Rows appear
//! in the ledger at the claim, committed before their request may be sent, and a claim not
//! sent within `worker.send_deadline` is never sent: no follow's row appears after settling.
//!
//! A younger row still unanswered counts only once its request took a slot of the cap
//! (`followq.app_cap_slots`): before that it is only claimed, and may never be sent. The
//! check before each request (`worker::app_cap`) adds the slots to the settled count
//! ([`AppFollows::settled`]) instead of reading the younger rows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::ratelimit::rolling_day::RollingDay;
use crate::store::{app_cap_slots, app_follows};

/// The app's bucket width: a slot under the cap comes back at most this late.
pub const APP_BUCKET: Duration = Duration::from_secs(60);

/// A day of minutes (1,440), one for the minute in progress, and room for requests that may
/// reach X up to an hour from now (`worker.send_deadline` + `x_api.request_timeout`), so that
/// no bucket is ever folded. 6 KB for the whole app.
const APP_BUCKETS: usize = 1500;

/// How long after a row's `sent_at`, beyond `answer_within`, it is read for the last time.
const SETTLE_MARGIN: Duration = Duration::from_secs(10);

/// How far apart the clocks of the ledger's rows (a Citus worker's) and of the cap's slots
/// (the coordinator's) may be: slots this much older than a row's settling still count.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(10);

/// How far back the ledger is read beyond a day, as for an account's seed: an answer recorded
/// this late after its request still counts.
const LATE_ANSWER_HORIZON: Duration = Duration::from_secs(3600);

/// The app's follows of the last 24 hours, as far as the ledger has been read.
#[derive(Debug, Clone, Default)]
pub struct AppFollows {
    /// The follows of rows sent up to `settled_through`, by the minute they stop counting
    /// (minutes since the Unix epoch).
    settled: RollingDay<u32, APP_BUCKETS>,
    settled_through: Option<DateTime<Utc>>,
    /// The database's clock at the last refresh.
    read_at: Option<DateTime<Utc>>,
}

/// The follows of the settled ledger rows, as of the last refresh: every request sent up to
/// `through` that may have followed, and counts until a day after it may have reached X.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Counted as of `read_at`; later, only fewer of them can count (they age out).
    pub follows: u64,
    pub through: DateTime<Utc>,
    /// The database's clock at that refresh.
    pub read_at: DateTime<Utc>,
}

/// The count at one refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppCount {
    /// Follows that count now (a bucket's full counter counts as its maximum).
    pub follows: u64,
    /// When the cap is reached: fewer follows than the cap count from this instant on.
    pub frees_at: Option<DateTime<Utc>>,
}

/// The bucket width in whole seconds.
fn width_seconds() -> i64 {
    i64::try_from(APP_BUCKET.as_secs())
        .unwrap_or(i64::MAX)
        .max(1)
}

impl AppFollows {
    /// Reads what the ledger added since the last refresh (the whole day, the first time)
    /// and counts the app's follows against `cap`, the settled rows' and the fresh ones'.
    /// `answer_within` is how long after its claim a request may reach X.
    pub async fn refresh(
        &mut self,
        pool: &PgPool,
        cap: u32,
        answer_within: Duration,
    ) -> Result<AppCount, sqlx::Error> {
        // The slots of every request that may be among the fresh rows.
        let slotted =
            app_cap_slots::slotted_attempts(pool, answer_within + SETTLE_MARGIN + CLOCK_MARGIN)
                .await?;
        let read = app_follows::read_ledger(
            pool,
            self.settled_through,
            answer_within,
            SETTLE_MARGIN,
            width_seconds(),
            LATE_ANSWER_HORIZON,
            &slotted,
        )
        .await?;
        let ended = bucket_ended_by(read.now);
        let mut all = self.settled.clone();
        for ((&bucket, &settled), &fresh) in read.buckets.iter().zip(&read.settled).zip(&read.fresh)
        {
            // Beyond u32 minutes (year 10,000): the newest bucket the ring can hold.
            let bucket = u32::try_from(bucket).unwrap_or(u32::MAX);
            let settled = u64::try_from(settled).unwrap_or(0);
            let fresh = u64::try_from(fresh).unwrap_or(0);
            self.settled.add(bucket, settled, ended);
            all.add(bucket, settled + fresh, ended);
        }
        self.settled_through = Some(
            self.settled_through
                .map_or(read.settled_by, |before| before.max(read.settled_by)),
        );
        self.read_at = Some(read.now);
        Ok(AppCount {
            follows: all.count(ended),
            frees_at: all.frees_after(u64::from(cap), ended).and_then(bucket_end),
        })
    }

    /// The settled rows' follows as of the last refresh; `None` before the first.
    pub fn settled(&self) -> Option<Settled> {
        let (through, read_at) = (self.settled_through?, self.read_at?);
        Some(Settled {
            follows: self.settled.count(bucket_ended_by(read_at)),
            through,
            read_at,
        })
    }
}

/// The last bucket that has ended at `now`.
fn bucket_ended_by(now: DateTime<Utc>) -> u32 {
    let bucket = now.timestamp().div_euclid(width_seconds());
    u32::try_from(bucket).unwrap_or(if bucket < 0 { 0 } else { u32::MAX })
}

fn bucket_end(bucket: u32) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(i64::from(bucket) * width_seconds(), 0)
}
