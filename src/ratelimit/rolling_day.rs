//! Follows of the last 24 hours in constant memory: counts per time bucket.
//!
//! A follow counts against a daily cap for 24 hours from its latest possible arrival at X:
//! until its *expiry*. Keeping one expiry per follow costs memory in proportion to the follows
//! (400 a day per account at X's cap); a [`RollingDay`] keeps instead how many follows expire
//! in each bucket of a fixed grid, and lets every follow count until the *end* of its bucket.
//! So the count it gives is never below the exact count (a slot never comes back early), and a
//! follow counts at most one bucket width longer than it would exactly (a slot comes back at
//! most that late). The memory is `N` counters whatever the number of follows.
//!
//! The grid is abstract: bucket `n` ends at `origin + n × width`, and the caller maps times to
//! bucket numbers ([`DailyFollows`] does it for one account's limiter, on the process's
//! monotonic clock; the per-app counter does it on the database's clock). The ring holds the
//! `N` newest buckets. A bucket that must make room while its follows still count is folded
//! into the next one: its follows then count a bucket longer, never shorter. With `N` large
//! enough for a day plus the longest a request may take to reach X, that never happens.
//!
//! A counter that reaches its type's maximum stays there ("that many or more") and is never
//! decremented again; while such a bucket counts, the cap counts as reached, whatever the cap.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// A bucket's counter: `u16` for an account (a follow every 14 ms for 15 minutes fills one),
/// `u32` for the whole app.
pub trait BucketCount: Copy + Default + Eq + std::fmt::Debug {
    const FULL: Self;
    fn get(self) -> u64;
    /// `self + n`, stopping at [`BucketCount::FULL`].
    fn plus(self, n: u64) -> Self;
}

impl BucketCount for u16 {
    const FULL: u16 = u16::MAX;
    fn get(self) -> u64 {
        u64::from(self)
    }
    fn plus(self, n: u64) -> u16 {
        u16::try_from(u64::from(self).saturating_add(n)).unwrap_or(u16::MAX)
    }
}

impl BucketCount for u32 {
    const FULL: u32 = u32::MAX;
    fn get(self) -> u64 {
        u64::from(self)
    }
    fn plus(self, n: u64) -> u32 {
        u32::try_from(u64::from(self).saturating_add(n)).unwrap_or(u32::MAX)
    }
}

/// Follow counts per bucket for the `N` newest buckets. Bucket numbers are the caller's; a
/// bucket `n` has ended at `now` when `n <= ended`, `ended` being the number of the last
/// bucket whose end is at or before `now`.
#[derive(Debug, Clone)]
pub struct RollingDay<C, const N: usize> {
    /// Slot `n % N` holds bucket `n`, for `n` in `oldest()..=newest`.
    counts: [C; N],
    newest: u32,
    /// The newest bucket that left the ring because it had ended (not folded): a follow of
    /// it, or of an older one, is no longer anywhere.
    dropped_through: u32,
}

impl<C: BucketCount, const N: usize> Default for RollingDay<C, N> {
    fn default() -> Self {
        RollingDay {
            counts: [C::default(); N],
            newest: 0,
            dropped_through: 0,
        }
    }
}

impl<C: BucketCount, const N: usize> RollingDay<C, N> {
    const SPAN: u32 = {
        assert!(N >= 2 && N < u32::MAX as usize);
        N as u32
    };

    /// The oldest bucket the ring holds.
    fn oldest(&self) -> u32 {
        self.newest.saturating_sub(Self::SPAN - 1)
    }

    fn slot(n: u32) -> usize {
        (n % Self::SPAN) as usize
    }

    /// Counts `follows` that stop counting at the end of bucket `bucket`. Returns the bucket
    /// that holds them now (an older bucket than the ring holds goes into its oldest one, so
    /// it counts longer). Nothing is counted for a bucket that has ended.
    pub fn add(&mut self, bucket: u32, follows: u64, ended: u32) -> u32 {
        if bucket <= ended || follows == 0 {
            return bucket;
        }
        if bucket > self.newest {
            self.advance(bucket, ended);
        }
        let at = bucket.max(self.oldest());
        let slot = &mut self.counts[Self::slot(at)];
        *slot = slot.plus(follows);
        at
    }

    /// Takes back one follow counted in bucket `bucket` (as [`RollingDay::add`] returned it),
    /// unless its counter is full or the bucket has left the ring for having ended.
    pub fn remove_one(&mut self, bucket: u32) {
        if bucket <= self.dropped_through || bucket > self.newest {
            return;
        }
        // A bucket that left the ring while it still counted was folded, bucket after bucket,
        // into what is now the oldest.
        let at = bucket.max(self.oldest());
        let slot = &mut self.counts[Self::slot(at)];
        if *slot != C::FULL && slot.get() > 0 {
            *slot = C::default().plus(slot.get() - 1);
        }
    }

    /// Makes `bucket` the newest, folding buckets that leave the ring while they still count
    /// into the next one.
    fn advance(&mut self, bucket: u32, ended: u32) {
        let steps = bucket - self.newest;
        if steps >= Self::SPAN {
            // Every bucket leaves: whatever still counts goes into the new oldest.
            let carried = self
                .live(ended)
                .fold(C::default(), |sum, (_, count)| sum.plus(count.get()));
            let carried = if self.live(ended).any(|(_, c)| c == C::FULL) {
                C::FULL
            } else {
                carried
            };
            self.dropped_through = self.dropped_through.max(ended.min(self.newest));
            self.counts = [C::default(); N];
            self.newest = bucket;
            self.counts[Self::slot(self.oldest())] = carried;
            return;
        }
        for n in self.newest + 1..=bucket {
            let slot = Self::slot(n);
            let leaving = std::mem::take(&mut self.counts[slot]);
            // The slot held bucket n - N (none below N).
            let Some(left) = n.checked_sub(Self::SPAN) else {
                continue;
            };
            if left <= ended {
                self.dropped_through = self.dropped_through.max(left);
            } else if leaving != C::default() {
                // The slot of bucket n + 1.
                let next = &mut self.counts[(slot + 1) % N];
                *next = if leaving == C::FULL {
                    C::FULL
                } else {
                    next.plus(leaving.get())
                };
            }
        }
        self.newest = bucket;
    }

    /// The buckets that still count, oldest first, with their counters.
    fn live(&self, ended: u32) -> impl Iterator<Item = (u32, C)> + '_ {
        let first = self.oldest().max(ended.saturating_add(1));
        (first..=self.newest)
            .map(|n| (n, self.counts[Self::slot(n)]))
            .filter(|&(_, count)| count != C::default())
    }

    /// Raises every bucket that still counts to at least `other`'s count for it: the stricter
    /// of two counts of the same follows (kept by two holders of one account).
    pub fn raise_to(&mut self, other: &Self, ended: u32) {
        for (n, theirs) in other.live(ended) {
            let ours = if n >= self.oldest() && n <= self.newest {
                self.counts[Self::slot(n)]
            } else {
                C::default()
            };
            if ours == C::FULL || theirs.get() <= ours.get() && theirs != C::FULL {
                continue;
            }
            let missing = if theirs == C::FULL {
                C::FULL.get()
            } else {
                theirs.get() - ours.get()
            };
            self.add(n, missing, ended);
        }
    }

    /// Follows that still count (a full counter counts as its maximum).
    pub fn count(&self, ended: u32) -> u64 {
        self.live(ended).map(|(_, count)| count.get()).sum()
    }

    /// Whether `cap` follows or more still count.
    pub fn reached(&self, cap: u64, ended: u32) -> bool {
        self.count(ended) >= cap || self.live(ended).any(|(_, count)| count == C::FULL)
    }

    /// When the cap is reached: the bucket at whose end fewer than `cap` follows count again.
    pub fn frees_after(&self, cap: u64, ended: u32) -> Option<u32> {
        if !self.reached(cap, ended) {
            return None;
        }
        let mut left = self.count(ended);
        let mut full_left = self
            .live(ended)
            .filter(|&(_, count)| count == C::FULL)
            .count();
        for (n, count) in self.live(ended) {
            left -= count.get();
            if count == C::FULL {
                full_left -= 1;
            }
            if left < cap && full_left == 0 {
                return Some(n);
            }
        }
        // Every bucket ended: free after the newest (unreachable, as the cap is at least 1).
        Some(self.newest)
    }
}

/// How long a follow counts against the daily cap.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// An account's bucket width: a follow's slot comes back at most this late.
pub const ACCOUNT_BUCKET: Duration = Duration::from_secs(15 * 60);

/// An account's buckets: a day of them (96), one for the bucket in progress, and one for a
/// follow that may reach X up to a bucket's width from now (`worker.send_deadline` +
/// `x_api.request_timeout` under 15 minutes), so that no bucket is ever folded.
pub const ACCOUNT_BUCKETS: usize = 98;

/// Where this process's grid of account buckets starts: its first use.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// One account's follows of the last 24 hours, on this process's monotonic clock: 15-minute
/// buckets of `u16` counters, 200 bytes.
#[derive(Debug, Clone, Default)]
pub struct DailyFollows {
    buckets: RollingDay<u16, ACCOUNT_BUCKETS>,
}

/// The bucket a follow expiring at `expiry` stops counting at the end of (rounded up).
fn bucket_of(expiry: Instant) -> u32 {
    let since = expiry.saturating_duration_since(*ORIGIN).as_nanos();
    let width = ACCOUNT_BUCKET.as_nanos();
    u32::try_from(since.div_ceil(width)).unwrap_or(u32::MAX)
}

/// The last bucket that has ended at `now`.
fn ended_at(now: Instant) -> u32 {
    let since = now.saturating_duration_since(*ORIGIN).as_nanos();
    u32::try_from(since / ACCOUNT_BUCKET.as_nanos()).unwrap_or(u32::MAX)
}

fn end_of(bucket: u32) -> Instant {
    *ORIGIN + ACCOUNT_BUCKET * bucket
}

/// How long ago, from `now`, this process's grid of account buckets started: the database
/// bins the ledger's follows on the same grid (`origin = now() - this`).
pub fn account_grid_origin_ago(now: Instant) -> Duration {
    now.saturating_duration_since(*ORIGIN)
}

impl DailyFollows {
    /// Counts `follows` that each stop counting at `expiry` at the latest. Returns the bucket
    /// they went into, for [`DailyFollows::forget_one`].
    pub fn add(&mut self, expiry: Instant, follows: u32, now: Instant) -> u32 {
        self.buckets
            .add(bucket_of(expiry), u64::from(follows), ended_at(now))
    }

    /// Takes back one follow that [`DailyFollows::add`] put into `bucket`.
    pub fn forget_one(&mut self, bucket: u32) {
        self.buckets.remove_one(bucket);
    }

    /// Makes every bucket count at least what `other` counts in it (see
    /// [`RollingDay::raise_to`]).
    pub fn raise_to(&mut self, other: &DailyFollows, now: Instant) {
        self.buckets.raise_to(&other.buckets, ended_at(now));
    }

    /// Follows that still count at `now`.
    pub fn count(&self, now: Instant) -> u64 {
        self.buckets.count(ended_at(now))
    }

    /// `Some(until)` while `cap` follows or more count: fewer count again from `until`.
    pub fn blocked_until(&self, cap: u32, now: Instant) -> Option<Instant> {
        self.buckets
            .frees_after(u64::from(cap), ended_at(now))
            .map(end_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ring = RollingDay<u16, 4>;

    #[test]
    fn raising_to_another_count_keeps_the_larger_of_each_bucket() {
        let mut ours = Ring::default();
        ours.add(5, 2, 3);
        ours.add(6, 1, 3);
        let mut theirs = Ring::default();
        theirs.add(5, 1, 3);
        theirs.add(6, 4, 3);
        theirs.add(7, u64::from(u16::MAX), 3);
        ours.raise_to(&theirs, 3);
        assert_eq!(ours.count(6), u64::from(u16::MAX)); // bucket 7 alone, full
        assert_eq!(ours.count(5), u64::from(u16::MAX) + 4);
        assert_eq!(ours.count(4), u64::from(u16::MAX) + 4 + 2);
        assert!(ours.reached(1, 6));
    }

    #[test]
    fn a_follow_counts_until_its_bucket_ends() {
        let mut ring = Ring::default();
        ring.add(5, 2, 0);
        ring.add(7, 1, 0);
        assert_eq!(ring.count(4), 3);
        assert_eq!(ring.count(5), 1);
        assert_eq!(ring.frees_after(3, 4), Some(5));
        assert_eq!(ring.frees_after(2, 4), Some(5));
        assert_eq!(ring.frees_after(1, 4), Some(7));
        assert_eq!(ring.frees_after(4, 4), None);
        assert_eq!(ring.count(7), 0);
    }

    #[test]
    fn a_bucket_that_must_leave_while_it_counts_is_folded_later() {
        let mut ring = Ring::default();
        ring.add(5, 2, 0);
        ring.add(8, 1, 0);
        // Bucket 9 needs the slot of bucket 5, which still counts at 0: it joins bucket 6.
        ring.add(9, 1, 0);
        assert_eq!(
            ring.count(5),
            4,
            "bucket 5's follows now count until 6 ends"
        );
        assert_eq!(ring.count(6), 2);
        // A jump past the whole ring keeps everything that counts, in the new oldest bucket.
        ring.add(40, 1, 0);
        assert_eq!(ring.count(36), 5);
        assert_eq!(ring.count(37), 1);
    }

    #[test]
    fn an_older_bucket_than_the_ring_holds_counts_in_its_oldest() {
        let mut ring = Ring::default();
        ring.add(10, 1, 0);
        assert_eq!(ring.add(3, 1, 0), 7);
        assert_eq!(ring.count(6), 2);
        assert_eq!(ring.count(7), 1);
    }

    #[test]
    fn a_full_counter_means_at_least_that_many_and_is_never_taken_back() {
        let mut ring = Ring::default();
        ring.add(5, u64::from(u16::MAX) + 10, 0);
        ring.remove_one(5);
        assert!(ring.reached(u64::MAX, 0), "a full bucket reaches any cap");
        ring.add(6, 1, 0);
        assert_eq!(ring.frees_after(u64::MAX, 0), Some(5));
        assert_eq!(ring.frees_after(2, 0), Some(5));
        assert_eq!(ring.frees_after(1, 0), Some(6));
    }

    #[test]
    fn taking_back_a_follow_of_an_ended_bucket_changes_nothing() {
        let mut ring = Ring::default();
        ring.add(5, 1, 0);
        ring.add(6, 1, 0);
        // Bucket 5 ended and left the ring without being folded; 6 became the oldest.
        ring.add(9, 1, 5);
        ring.remove_one(5);
        assert_eq!(ring.count(5), 2);
    }
}
