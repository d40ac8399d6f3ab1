//! Counters of what this daemon did, for the periodic summary line (and tests).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent to X.
    pub sent: AtomicU64,
    pub succeeded: AtomicU64,
    /// Succeeded with `pending_follow: true` (protected targets).
    pub pending: AtomicU64,
    pub failed: AtomicU64,
    /// 429 answers (window or usage cap).
    pub rate_limited: AtomicU64,
    /// Jobs put back to the queue (retry, snooze, pause).
    pub requeued: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sent: u64,
    pub succeeded: u64,
    pub pending: u64,
    pub failed: u64,
    pub rate_limited: u64,
    pub requeued: u64,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: self.sent.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            requeued: self.requeued.load(Ordering::Relaxed),
        }
    }
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            sent: self.sent - earlier.sent,
            succeeded: self.succeeded - earlier.succeeded,
            pending: self.pending - earlier.pending,
            failed: self.failed - earlier.failed,
            rate_limited: self.rate_limited - earlier.rate_limited,
            requeued: self.requeued - earlier.requeued,
        }
    }
}
