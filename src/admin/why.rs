//! "Why is this job waiting?": one sentence from the job row, its account row, the app-wide
//! stop and the job's `last_error`. Pure (the caller reads the rows and passes `now`), so each
//! case is unit-tested.
//!
//! The order of the checks is the order in which the daemon itself would be stopped: the
//! app-wide stop first, then the account (disabled, needs_reauth, paused), then the job's own
//! `run_at`, and only then its place in the account's line.

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;

use crate::states::{AccountStatus, ErrorKind, JobState, PauseReason};
use crate::store::admin_jobs::JobRow;
pub use crate::store::admin_jobs::{AccountFacts, AppStopFacts};

/// Everything [`explain`] looks at.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub job: &'a JobRow,
    pub account: Option<&'a AccountFacts>,
    pub app: Option<&'a AppStopFacts>,
    /// Ready jobs of the same account that run before this one (priority, run_at, id).
    pub ahead: i64,
    /// `retry.max_attempts`, for jobs whose `max_attempts` is NULL.
    pub default_max_attempts: u32,
    pub now: DateTime<Utc>,
}

/// A time for a sentence: `12:03:05 UTC` today, `2026-11-28 12:03:05 UTC` otherwise.
pub fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if at.date_naive() == now.date_naive() {
        at.format("%H:%M:%S UTC").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    }
}

/// Operator pauses without an end are stored with this far-future `paused_until` (the
/// schema needs a value for every pause).
pub fn is_indefinite(at: DateTime<Utc>) -> bool {
    at.year() >= 9999
}

fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if is_indefinite(at) {
        "until an operator resumes it".to_owned()
    } else {
        format!("until {}", when(at, now))
    }
}

/// A short phrase for a `last_error` value: "a 503", "a timeout", "a 429", ….
pub fn error_phrase(error: &Value) -> String {
    let kind = ErrorKind::of(error);
    let status = error.get("status").and_then(Value::as_u64);
    let reason = error.get("reason").and_then(Value::as_str);
    let detail = error.get("detail").and_then(Value::as_str);
    match (kind, status) {
        (kind, Some(status)) => match detail {
            Some(detail) if kind != Some(ErrorKind::RateLimited) => {
                format!("a {status} ({detail})")
            }
            _ => format!("a {status}"),
        },
        (Some(ErrorKind::NeedsReauth), None) => {
            format!("no usable token ({})", detail.unwrap_or("needs_reauth"))
        }
        (Some(kind), None) => match reason.or(detail) {
            Some(what) => format!("a {kind} error ({what})"),
            None => format!("a {kind} error"),
        },
        (None, None) if error.get("partial_errors").is_some() => {
            "partial errors in X's answer".to_owned()
        }
        (None, None) => "an error".to_owned(),
    }
}

/// The one sentence.
pub fn explain(facts: &Facts<'_>) -> String {
    let job = facts.job;
    let now = facts.now;
    let max_attempts = job
        .max_attempts
        .map_or(i64::from(facts.default_max_attempts), i64::from);
    match job.state {
        JobState::Running => running(facts, max_attempts),
        JobState::Succeeded => {
            let what = if job.pending_follow == Some(true) {
                "follow request pending (the target's account is protected)"
            } else {
                "following"
            };
            format!("succeeded{}: {what}", finished_at(job, now))
        }
        JobState::Failed => {
            let error = job
                .last_error
                .as_ref()
                .map_or_else(|| "no error recorded".to_owned(), error_phrase);
            format!(
                "failed{} after {} attempt(s): {error}; `followq jobs retry {}` queues it again",
                finished_at(job, now),
                job.attempts,
                job.id
            )
        }
        JobState::Cancelled => format!(
            "cancelled{}; `followq jobs retry {}` queues it again",
            finished_at(job, now),
            job.id
        ),
        JobState::Queued => queued(facts, max_attempts),
    }
}

fn finished_at(job: &JobRow, now: DateTime<Utc>) -> String {
    job.finished_at
        .map_or_else(String::new, |at| format!(" at {}", when(at, now)))
}

fn running(facts: &Facts<'_>, max_attempts: i64) -> String {
    let job = facts.job;
    let now = facts.now;
    let daemon = job.sent_by.as_deref().unwrap_or("(unknown)");
    // A job in flight shows since its request was sent (the row's updated_at is its claim).
    let mut sentence = format!(
        "running on daemon {daemon} since {} (attempt {} of {max_attempts})",
        when(job.updated_at, now),
        job.attempts
    );
    if let Some(answer_by) = job.answer_by {
        sentence.push_str(&format!(
            "; its request may reach X until {}",
            when(answer_by, now)
        ));
    }
    sentence
}

fn queued(facts: &Facts<'_>, max_attempts: i64) -> String {
    let job = facts.job;
    let now = facts.now;
    let source = &job.source_user_id;
    if let Some(app) = facts.app
        && app.paused_until.is_none_or(|at| at > now)
    {
        return match app.paused_until {
            None => format!(
                "waiting: the app is stopped ({}) until {}",
                app.reason,
                app.reason.ends_when_untimed()
            ),
            Some(at) => format!(
                "waiting: the app is stopped ({}) until {}",
                app.reason,
                when(at, now)
            ),
        };
    }
    if let Some(account) = facts.account {
        match account.status {
            AccountStatus::Disabled => {
                return format!(
                    "waiting: account {source} is disabled; `followq accounts resume {source}` lets its jobs run"
                );
            }
            AccountStatus::NeedsReauth => {
                let reason = account
                    .pause_reason
                    .as_ref()
                    .map_or("X refused its tokens", PauseReason::as_str);
                return format!(
                    "waiting: account {source} needs re-authorization: {reason}; store new tokens with followq accounts add"
                );
            }
            AccountStatus::Paused => {
                if let Some(at) = account.paused_until
                    && at > now
                {
                    let reason = match &account.pause_reason {
                        Some(reason) if reason.meaning().is_empty() => reason.as_str().to_owned(),
                        Some(reason) => format!("{reason}: {}", reason.meaning()),
                        None => "unknown".to_owned(),
                    };
                    return format!(
                        "waiting: account {source} is paused {} ({reason})",
                        until(at, now)
                    );
                }
            }
            AccountStatus::Active => {}
        }
    }
    let next_attempt = i64::from(job.attempts) + 1;
    if job.run_at > now {
        return match &job.last_error {
            Some(error) => format!(
                "queued until {} after {} (attempt {next_attempt} of {max_attempts})",
                when(job.run_at, now),
                error_phrase(error)
            ),
            None => format!(
                "scheduled: not sent before {} (attempt {next_attempt} of {max_attempts})",
                when(job.run_at, now)
            ),
        };
    }
    let holder = facts.account.and_then(|account| {
        account
            .leased_by
            .as_deref()
            .filter(|_| account.lease_expires_at.is_some_and(|at| at > now))
    });
    let holder = match holder {
        Some(daemon) => format!("daemon {daemon} holds the account"),
        None => "no live daemon holds the account yet".to_owned(),
    };
    match facts.ahead {
        0 => format!("ready: next in line for account {source} ({holder})"),
        1 => format!("ready: 1 job ahead of it for account {source} ({holder})"),
        n => format!("ready: {n} jobs ahead of it for account {source} ({holder})"),
    }
}

/// What the status page knows of an account with work.
#[derive(Debug, Clone)]
pub struct AccountState<'a> {
    pub user_id: &'a str,
    pub status: AccountStatus,
    pub pause_reason: Option<&'a PauseReason>,
    pub paused_until: Option<DateTime<Utc>>,
    /// The holder of a live lease.
    pub leased_by: Option<&'a str>,
    pub queued: i64,
    pub window_spent: i64,
    pub window_limit: i64,
    pub window_resets_at: Option<DateTime<Utc>>,
    pub follows_24h: i64,
    pub daily_cap: i64,
    pub app: Option<&'a AppStopFacts>,
    pub now: DateTime<Utc>,
}

/// One sentence for an account on the status page: what holds it, in the order the daemon
/// itself would be stopped (as [`explain`] does for a job), or what it is doing.
pub fn account_sentence(account: &AccountState<'_>) -> String {
    let now = account.now;
    let id = account.user_id;
    match account.status {
        AccountStatus::NeedsReauth => {
            let reason = account
                .pause_reason
                .map_or("X refused its tokens", PauseReason::as_str);
            return format!(
                "needs re-authorization: {reason}; store new tokens with `followq accounts add --user-id {id}`"
            );
        }
        AccountStatus::Disabled => {
            return format!(
                "disabled by an operator; `followq accounts resume {id}` lets its jobs run"
            );
        }
        AccountStatus::Active | AccountStatus::Paused => {}
    }
    if let Some(app) = account.app
        && app.paused_until.is_none_or(|at| at > now)
    {
        return match app.paused_until {
            None => format!(
                "held by the app-wide stop ({}) until {}",
                app.reason,
                app.reason.ends_when_untimed()
            ),
            Some(at) => format!(
                "held by the app-wide stop ({}) until {}",
                app.reason,
                when(at, now)
            ),
        };
    }
    if account.status == AccountStatus::Paused
        && let Some(at) = account.paused_until
        && at > now
    {
        let reason = match account.pause_reason {
            Some(reason) if reason.meaning().is_empty() => reason.as_str().to_owned(),
            Some(reason) => format!("{} ({reason})", reason.meaning()),
            None => "unknown".to_owned(),
        };
        return format!("paused {}: {reason}", until(at, now));
    }
    if account.daily_cap > 0 && account.follows_24h >= account.daily_cap {
        return format!(
            "{} follows in 24 h: the daily cap of {} is reached",
            account.follows_24h, account.daily_cap
        );
    }
    if account.window_limit > 0 && account.window_spent >= account.window_limit {
        return match account.window_resets_at {
            Some(at) => format!(
                "window spent ({} of {}): sends again after {}",
                account.window_spent,
                account.window_limit,
                when(at, now)
            ),
            None => format!(
                "window spent ({} of {})",
                account.window_spent, account.window_limit
            ),
        };
    }
    match (account.leased_by, account.queued) {
        (Some(daemon), 0) => format!("held by daemon {daemon}, nothing queued"),
        (Some(daemon), _) => format!("sending on daemon {daemon}"),
        (None, 0) => "nothing queued".to_owned(),
        (None, _) => "ready: waiting for a daemon to take the account".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use serde_json::json;

    use super::*;
    use crate::states::AppStopReason;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap()
    }

    fn job(state: &str) -> JobRow {
        JobRow {
            id: 42,
            source_user_id: "100".into(),
            target_user_id: "200".into(),
            state: state.parse().unwrap(),
            priority: 0,
            run_at: now() - TimeDelta::seconds(10),
            attempts: 0,
            max_attempts: None,
            rate_limited_count: 0,
            following: None,
            pending_follow: None,
            last_error: None,
            created_at: now() - TimeDelta::minutes(5),
            updated_at: now() - TimeDelta::minutes(1),
            finished_at: None,
            sent_by: None,
            answer_by: None,
        }
    }

    fn account(status: &str) -> AccountFacts {
        AccountFacts {
            user_id: "100".into(),
            status: status.parse().unwrap(),
            paused_until: None,
            pause_reason: None,
            leased_by: None,
            lease_expires_at: None,
        }
    }

    fn explain_with(job: &JobRow, account: Option<&AccountFacts>, ahead: i64) -> String {
        explain(&Facts {
            job,
            account,
            app: None,
            ahead,
            default_max_attempts: 8,
            now: now(),
        })
    }

    #[test]
    fn backoff_after_a_503_names_the_status_and_the_attempt() {
        let mut job = job("queued");
        job.attempts = 1;
        job.run_at = now() + TimeDelta::seconds(185);
        job.last_error = Some(json!({"kind": "transient", "status": 503}));
        assert_eq!(
            explain_with(&job, Some(&account("active")), 0),
            "queued until 12:03:05 UTC after a 503 (attempt 2 of 8)"
        );
    }

    #[test]
    fn a_timeout_is_named_by_its_reason() {
        let mut job = job("queued");
        job.attempts = 3;
        job.max_attempts = Some(5);
        job.run_at = now() + TimeDelta::days(1);
        job.last_error = Some(json!({"kind": "transient", "reason": "timeout"}));
        assert_eq!(
            explain_with(&job, None, 0),
            "queued until 2026-11-28 12:00:00 UTC after a transient error (timeout) (attempt 4 of 5)"
        );
    }

    #[test]
    fn the_app_stop_comes_before_everything() {
        let job = job("queued");
        let app = AppStopFacts {
            reason: AppStopReason::AppForbidden,
            paused_until: None,
        };
        let sentence = explain(&Facts {
            job: &job,
            account: Some(&account("disabled")),
            app: Some(&app),
            ahead: 0,
            default_max_attempts: 8,
            now: now(),
        });
        assert_eq!(
            sentence,
            "waiting: the app is stopped (app_forbidden) until an operator runs `followq app resume`"
        );
        // An expired timed stop does not hold the job.
        let expired = AppStopFacts {
            reason: AppStopReason::UsageCapped,
            paused_until: Some(now() - TimeDelta::seconds(1)),
        };
        let sentence = explain(&Facts {
            app: Some(&expired),
            account: Some(&account("active")),
            ..Facts {
                job: &job,
                account: None,
                app: None,
                ahead: 0,
                default_max_attempts: 8,
                now: now(),
            }
        });
        assert!(sentence.starts_with("ready: next in line"), "{sentence}");
    }

    #[test]
    fn account_states_hold_the_job() {
        let job = job("queued");
        let mut paused = account("paused");
        paused.paused_until = Some(now() + TimeDelta::minutes(3));
        paused.pause_reason = Some("rate_limited".into());
        assert_eq!(
            explain_with(&job, Some(&paused), 0),
            "waiting: account 100 is paused until 12:03:00 UTC (rate_limited: X answered 429)"
        );
        paused.pause_reason = Some("operator".into());
        paused.paused_until = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
            .ok()
            .map(|t| t.with_timezone(&Utc));
        assert_eq!(
            explain_with(&job, Some(&paused), 0),
            "waiting: account 100 is paused until an operator resumes it (operator: paused by an operator)"
        );
        let mut reauth = account("needs_reauth");
        reauth.pause_reason = Some("refresh token revoked".into());
        assert_eq!(
            explain_with(&job, Some(&reauth), 0),
            "waiting: account 100 needs re-authorization: refresh token revoked; store new tokens with followq accounts add"
        );
        assert!(explain_with(&job, Some(&account("disabled")), 0).contains("is disabled"));
    }

    #[test]
    fn a_pause_that_ended_no_longer_holds_the_job() {
        let job = job("queued");
        let mut paused = account("paused");
        paused.paused_until = Some(now() - TimeDelta::seconds(1));
        paused.pause_reason = Some("rate_limited".into());
        paused.leased_by = Some("host-1".into());
        paused.lease_expires_at = Some(now() + TimeDelta::seconds(30));
        assert_eq!(
            explain_with(&job, Some(&paused), 2),
            "ready: 2 jobs ahead of it for account 100 (daemon host-1 holds the account)"
        );
    }

    #[test]
    fn running_and_finished_jobs() {
        let mut running = job("running");
        running.attempts = 2;
        running.sent_by = Some("host-1".into());
        running.answer_by = Some(now() + TimeDelta::seconds(5));
        let sentence = explain_with(&running, None, 0);
        assert!(
            sentence.starts_with("running on daemon host-1 since 11:59:00 UTC (attempt 2 of 8)"),
            "{sentence}"
        );
        assert!(
            sentence.ends_with("its request may reach X until 12:00:05 UTC"),
            "{sentence}"
        );

        let mut failed = job("failed");
        failed.attempts = 1;
        failed.finished_at = Some(now());
        failed.last_error = Some(json!({"kind": "permanent", "status": 403, "detail": "nope"}));
        assert_eq!(
            explain_with(&failed, None, 0),
            "failed at 12:00:00 UTC after 1 attempt(s): a 403 (nope); `followq jobs retry 42` queues it again"
        );
    }

    fn account_state<'a>(user_id: &'a str, status: &'a str) -> AccountState<'a> {
        AccountState {
            user_id,
            status: status.parse().unwrap(),
            pause_reason: None,
            paused_until: None,
            leased_by: None,
            queued: 3,
            window_spent: 0,
            window_limit: 50,
            window_resets_at: None,
            follows_24h: 0,
            daily_cap: 400,
            app: None,
            now: now(),
        }
    }

    #[test]
    fn account_sentences_follow_what_holds_the_account() {
        let revoked = PauseReason::from("refresh token revoked");
        let mut reauth = account_state("100", "needs_reauth");
        reauth.pause_reason = Some(&revoked);
        assert_eq!(
            account_sentence(&reauth),
            "needs re-authorization: refresh token revoked; store new tokens with `followq accounts add --user-id 100`"
        );

        let app = AppStopFacts {
            reason: AppStopReason::AppForbidden,
            paused_until: None,
        };
        let mut paused = account_state("101", "paused");
        paused.pause_reason = Some(&PauseReason::RateLimitWindow);
        paused.paused_until = Some(now() + TimeDelta::minutes(4));
        assert_eq!(
            account_sentence(&paused),
            "paused until 12:04:00 UTC: X's 15-minute window is spent (rate_limit_window)"
        );
        paused.app = Some(&app);
        assert_eq!(
            account_sentence(&paused),
            "held by the app-wide stop (app_forbidden) until an operator runs `followq app resume`"
        );

        let mut spent = account_state("102", "active");
        spent.window_spent = 50;
        spent.window_resets_at = Some(now() + TimeDelta::seconds(90));
        assert_eq!(
            account_sentence(&spent),
            "window spent (50 of 50): sends again after 12:01:30 UTC"
        );
        spent.follows_24h = 400;
        assert!(account_sentence(&spent).contains("daily cap of 400 is reached"));

        let mut sending = account_state("103", "active");
        sending.leased_by = Some("host-1");
        assert_eq!(account_sentence(&sending), "sending on daemon host-1");
        sending.leased_by = None;
        assert_eq!(
            account_sentence(&sending),
            "ready: waiting for a daemon to take the account"
        );
    }
}
