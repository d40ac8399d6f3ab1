//! The retry policy: how long a job waits before its next attempt, how many attempts it gets,
//! the fixed waits of an account whose turn could not start (the database or the token
//! endpoint unreachable), the backoff of an outcome that could not be written, and the restart
//! of a task that panicked. Every wait the worker picks before trying again comes from here;
//! the token store's one (`accounts/token_store.rs`) stays beside the write it retries.

use std::time::Duration;

use chrono::TimeDelta;

use crate::accounts::token_store::AuthError;
use crate::config::RetrySettings;

/// The configured retry rules (`[retry]`), with the fixed waits beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts a job gets unless its row says otherwise (`follow_jobs.max_attempts`).
    pub max_attempts: u32,
    /// The first retry's full delay; each later one doubles it.
    pub base_delay: Duration,
    /// No retry waits longer than this.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// An account's turn that met a database error (claim, credentials, a lookup) tries again
    /// this soon: the pool reconnects meanwhile, and nothing was sent.
    pub const AFTER_DATABASE_ERROR: Duration = Duration::from_secs(1);

    /// An account whose token endpoint is unreachable (or answered 5xx) waits this long
    /// before its credentials are tried again.
    pub const AFTER_TOKEN_ENDPOINT_ERROR: Duration = Duration::from_secs(30);

    /// How long a daemon task that panicked waits before it starts again (one that panics at
    /// once every time must not spin).
    pub const AFTER_TASK_PANIC: Duration = Duration::from_secs(1);

    /// The first wait before an outcome that could not be written is tried again; each
    /// failure in a row doubles it, up to [`RetryPolicy::RECORD_RETRY_MAX`]. An outcome is
    /// tried again for as long as the daemon lives (X's answer must not be lost), and at once
    /// when another write succeeds (the database is back).
    pub const RECORD_RETRY_FIRST: Duration = Duration::from_millis(200);

    /// The longest wait between two tries of an outcome that could not be written.
    pub const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

    /// The wait before the next try of outcomes whose write failed `failures` times in a row.
    pub fn record_retry_delay(failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        Self::RECORD_RETRY_FIRST
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(Self::RECORD_RETRY_MAX)
    }

    /// How long a job and its account wait after the credentials could not be read: nothing
    /// for an account that must be re-authorized (it is parked, its job is ready for whoever
    /// takes it next), the token endpoint's wait or the database's otherwise.
    pub fn wait_after_credentials_problem(problem: &AuthError) -> Duration {
        match problem {
            AuthError::NeedsReauth { .. } | AuthError::NoCredentials => Duration::ZERO,
            AuthError::Transient(_) => Self::AFTER_TOKEN_ENDPOINT_ERROR,
            AuthError::Database(_) => Self::AFTER_DATABASE_ERROR,
        }
    }

    pub fn from_settings(settings: &RetrySettings) -> RetryPolicy {
        RetryPolicy {
            max_attempts: settings.max_attempts,
            base_delay: settings.base_delay,
            max_delay: settings.max_delay,
        }
    }

    /// The attempts a job gets: its own `max_attempts` when the row sets one, else the
    /// policy's.
    pub fn max_attempts_for(&self, row: Option<i32>) -> i32 {
        row.unwrap_or_else(|| i32::try_from(self.max_attempts).unwrap_or(i32::MAX))
    }

    /// The wait before the retry that follows attempt `attempt`: exponential backoff with
    /// "equal jitter" (half the delay fixed, half random, so that retries spread out yet the
    /// wait still grows visibly with each attempt). The n-th retry's full delay is
    /// min(max_delay, base_delay * 2^(n-1)); `jitter` in [0, 1) picks the point in its upper
    /// half.
    pub fn backoff(&self, attempt: i32, jitter: f64) -> TimeDelta {
        let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max_delay);
        let half = full / 2;
        let delay = half + half.mul_f64(jitter.clamp(0.0, 1.0));
        TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unwritten_outcome_is_tried_again_sooner_first_then_every_few_seconds() {
        assert_eq!(
            RetryPolicy::record_retry_delay(1),
            Duration::from_millis(200)
        );
        assert_eq!(
            RetryPolicy::record_retry_delay(2),
            Duration::from_millis(400)
        );
        assert_eq!(
            RetryPolicy::record_retry_delay(5),
            Duration::from_millis(3200)
        );
        assert_eq!(
            RetryPolicy::record_retry_delay(6),
            RetryPolicy::RECORD_RETRY_MAX
        );
        assert_eq!(
            RetryPolicy::record_retry_delay(u32::MAX),
            RetryPolicy::RECORD_RETRY_MAX
        );
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_in_its_upper_half() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), TimeDelta::seconds(1));
        assert_eq!(p.backoff(1, 0.999_999), TimeDelta::microseconds(1_999_999));
        assert_eq!(p.backoff(3, 0.0), TimeDelta::seconds(4));
        // Capped at max_delay, whatever the attempt (no overflow far out).
        assert_eq!(p.backoff(30, 0.0), TimeDelta::seconds(30));
        assert_eq!(p.backoff(i32::MAX, 1.0), TimeDelta::seconds(60));
        // A jitter out of range is clamped, never a longer wait than the cap.
        assert_eq!(p.backoff(30, 7.0), TimeDelta::seconds(60));
    }

    #[test]
    fn a_row_limit_wins_over_the_policy() {
        let p = policy();
        assert_eq!(p.max_attempts_for(Some(1)), 1);
        assert_eq!(p.max_attempts_for(None), 3);
    }

    #[test]
    fn a_job_without_credentials_waits_as_long_as_its_account() {
        // A database error is retried after a second, not after the token endpoint's wait.
        let database = AuthError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(
            RetryPolicy::wait_after_credentials_problem(&database),
            RetryPolicy::AFTER_DATABASE_ERROR
        );
        let endpoint = AuthError::Transient("token endpoint answered 503".into());
        assert_eq!(
            RetryPolicy::wait_after_credentials_problem(&endpoint),
            RetryPolicy::AFTER_TOKEN_ENDPOINT_ERROR
        );
        assert_eq!(
            RetryPolicy::wait_after_credentials_problem(&AuthError::NoCredentials),
            Duration::ZERO
        );
    }
}
