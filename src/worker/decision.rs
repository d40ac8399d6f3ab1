//! What to do with a job, its account and the app after one answer from X: a pure function
//! of the classified outcome, the rate-limit headers and the retry policy, so every rule can
//! be unit-tested without a server.
//!
//! | outcome | job | account | app |
//! | --- | --- | --- | --- |
//! | followed | succeeded (`errors[]` kept in `last_error`) | – | – |
//! | 429 window | queued at the reset, attempt refunded, `rate_limited_count` + 1 | paused until the reset (`rate_limited`) | – |
//! | 429 usage cap, scope account | queued at the period's end (next UTC midnight, or the first of next month), attempt refunded | paused (`usage_capped`) | – |
//! | 429 usage cap, scope product | queued at the period's end, attempt refunded | – | stopped until then |
//! | 401 | queued now, attempt refunded | token refresh (a second 401 in a row: needs_reauth) | – |
//! | 402 credits depleted | queued now, attempt refunded | – | stopped until a probe succeeds or an operator acts |
//! | 403 app forbidden | queued, attempt refunded | – | stopped until an operator acts |
//! | 403 daily cap | queued at the 24-hour reset, attempt refunded | paused (`daily_cap`) | – |
//! | permanent | failed | – | – |
//! | transient | queued after backoff; failed once attempts reach max_attempts, unless the last one's fate is unknown (no answer): then queued again without spending it | – | – |
//!
//! Besides the outcome, the headers can pause: `x-rate-limit-remaining: 0` pauses the account
//! until the reset (`rate_limit_window`), `x-user-limit-24hour-remaining: 0` until its reset
//! (`user_24h_limit`), `x-app-limit-24hour-remaining: 0` stops the app until its reset.

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde_json::{Value, json};

use super::retry::RetryPolicy;
use crate::states::{AppStopReason, ErrorKind, PauseReason};
use crate::store::record::NextState;
use crate::xapi::{FollowOutcome, RateLimitInfo, UsageCapScope};

/// An account-level consequence.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountAction {
    /// Persist a pause until this instant, with this reason.
    Pause {
        until: DateTime<Utc>,
        reason: PauseReason,
    },
    /// X rejected the token: refresh it before the account's next request.
    Refresh,
}

/// An app-level consequence: no account sends until `until` (`None`: until an operator acts).
#[derive(Debug, Clone, PartialEq)]
pub struct AppStop {
    pub until: Option<DateTime<Utc>>,
    pub reason: AppStopReason,
}

/// Everything that follows from one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub next: NextState,
    /// For the job's `last_error` and the ledger row's `error`.
    pub error: Option<Value>,
    pub account: Vec<AccountAction>,
    pub app: Option<AppStop>,
}

/// What the decision needs to know about the job.
#[derive(Debug, Clone, Copy)]
pub struct JobFacts {
    /// Attempts including the one just made.
    pub attempts: i32,
    pub max_attempts: i32,
    pub rate_limited_count: i32,
    /// The outcome rests on an answer (or on a request known never to have left). When false
    /// (a timeout, a connection lost after sending, a body cut short) X may have acted on it,
    /// and the job is never failed for it.
    pub answered: bool,
}

const DAY: TimeDelta = TimeDelta::hours(24);

/// The next midnight, UTC, after `now`: when a daily usage cap ends.
pub fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    today
        .succ_opt()
        .and_then(|tomorrow| tomorrow.and_hms_opt(0, 0, 0))
        .map_or(now + DAY, |midnight| midnight.and_utc())
}

/// The first instant of the next calendar month, UTC: when a monthly usage cap ends.
pub fn first_of_next_month(now: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = (now.year(), now.month());
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    chrono::NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|first| first.and_hms_opt(0, 0, 0))
        .map_or(now + TimeDelta::days(31), |first| first.and_utc())
}

/// Decides. `jitter` in [0, 1) picks the point inside the backoff's random half.
pub fn decide(
    outcome: &FollowOutcome,
    limits: &RateLimitInfo,
    job: JobFacts,
    retry: &RetryPolicy,
    now: DateTime<Utc>,
    jitter: f64,
) -> Decision {
    let requeue_refunded = |run_at: DateTime<Utc>| NextState::Queued {
        run_at,
        refund_attempt: true,
        rate_limited: false,
    };
    let mut account = header_pauses(limits, now);
    let mut app = app_header_stop(limits, now);
    let (next, error) = match outcome {
        FollowOutcome::Followed {
            following,
            pending_follow,
            errors,
        } => (
            NextState::Succeeded {
                following: *following,
                pending_follow: *pending_follow,
            },
            (!errors.is_empty()).then(|| json!({ "partial_errors": errors })),
        ),
        FollowOutcome::RateLimited => {
            // Retry-After and the reset header may differ by the rounding of either: wait for
            // the later one. A 24-hour limit that the same answer says is spent is what the
            // 429 is about: the 15-minute window's reset would only bring another 429, so
            // its own reset wins. The 429 pause replaces the header's window pause.
            let resume = limits
                .resume_at(now)
                .into_iter()
                .chain(limits.reset_at.filter(|reset| *reset > now))
                .chain(spent_day_reset(limits, now))
                .max()
                .unwrap_or_else(|| now + retry.backoff(job.rate_limited_count + 1, jitter));
            account.retain(|a| {
                !matches!(a, AccountAction::Pause { reason, .. } if *reason == PauseReason::RateLimitWindow)
            });
            account.push(AccountAction::Pause {
                until: resume,
                reason: PauseReason::RateLimited,
            });
            (
                NextState::Queued {
                    run_at: resume,
                    refund_attempt: true,
                    rate_limited: true,
                },
                Some(json!({ "kind": ErrorKind::RateLimited, "status": 429, "retry_at": resume })),
            )
        }
        FollowOutcome::UsageCapped { period, scope } => {
            // The cap lasts until the period it names ends: the next UTC midnight for a
            // daily one, the first of next month (UTC) otherwise (a cap that names no period
            // is taken for the longer). The 15-minute window's reset says nothing about it;
            // only Retry-After, when X sends one, ends it earlier.
            let period_end = match period.as_deref() {
                Some(p) if p.eq_ignore_ascii_case("daily") => next_utc_midnight(now),
                _ => first_of_next_month(now),
            };
            let until = limits
                .retry_after
                .and_then(|wait| TimeDelta::from_std(wait).ok())
                .and_then(|wait| now.checked_add_signed(wait))
                .map_or(period_end, |retry| retry.min(period_end));
            let error = json!({
                "kind": ErrorKind::UsageCapped, "status": 429, "period": period, "scope": scope,
                "retry_at": until,
            });
            match scope {
                Some(UsageCapScope::Product) => {
                    app = Some(AppStop {
                        until: Some(until),
                        reason: AppStopReason::UsageCapped,
                    });
                }
                _ => account.push(AccountAction::Pause {
                    until,
                    reason: PauseReason::UsageCapped,
                }),
            }
            (requeue_refunded(until), Some(error))
        }
        FollowOutcome::Unauthorized(details) => {
            account.push(AccountAction::Refresh);
            (
                requeue_refunded(now),
                Some(tagged(ErrorKind::Unauthorized, details)),
            )
        }
        FollowOutcome::CreditsDepleted(details) => {
            // Nothing is wrong with the job: it waits, unspent, for the credits.
            app = Some(AppStop {
                until: None,
                reason: AppStopReason::CreditsDepleted,
            });
            (
                requeue_refunded(now),
                Some(tagged(ErrorKind::CreditsDepleted, details)),
            )
        }
        FollowOutcome::AppForbidden(details) => {
            app = Some(AppStop {
                until: None,
                reason: AppStopReason::AppForbidden,
            });
            (
                requeue_refunded(now),
                Some(tagged(ErrorKind::AppForbidden, details)),
            )
        }
        FollowOutcome::AccountDailyCap(details) => {
            let until = limits
                .user_24h
                .and_then(|l| l.reset_at)
                .filter(|reset| *reset > now)
                .unwrap_or(now + DAY);
            account.push(AccountAction::Pause {
                until,
                reason: PauseReason::DailyCap,
            });
            (
                requeue_refunded(until),
                Some(tagged(ErrorKind::DailyCap, details)),
            )
        }
        FollowOutcome::Permanent(details) => (
            NextState::Failed,
            Some(tagged(ErrorKind::Permanent, details)),
        ),
        FollowOutcome::Transient(details) => {
            let error = tagged(ErrorKind::Transient, details);
            if job.attempts >= job.max_attempts && job.answered {
                (NextState::Failed, Some(error))
            } else if job.attempts >= job.max_attempts {
                // The last attempt's fate is unknown: the follow may have been made. Failing
                // the job would report a follow that may exist as failed; try again (the
                // endpoint is idempotent) without spending the attempt.
                (
                    NextState::Queued {
                        run_at: now + retry.backoff(job.attempts, jitter),
                        refund_attempt: true,
                        rate_limited: false,
                    },
                    Some(error),
                )
            } else {
                (
                    NextState::Queued {
                        run_at: now + retry.backoff(job.attempts, jitter),
                        refund_attempt: false,
                        rate_limited: false,
                    },
                    Some(error),
                )
            }
        }
    };
    Decision {
        next,
        error,
        account,
        app,
    }
}

/// `{"kind": …, "status": …, "problem_type": …, …}`: the client's details with our kind.
fn tagged(kind: ErrorKind, details: &impl serde::Serialize) -> Value {
    let mut value = serde_json::to_value(details).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
        map.insert("kind".into(), Value::from(kind.as_str()));
    }
    value
}

/// Pauses the headers call for, whatever the outcome.
fn header_pauses(limits: &RateLimitInfo, now: DateTime<Utc>) -> Vec<AccountAction> {
    let mut pauses = Vec::new();
    if limits.window_exhausted()
        && let Some(reset) = limits.reset_at.filter(|r| *r > now)
    {
        pauses.push(AccountAction::Pause {
            until: reset,
            reason: PauseReason::RateLimitWindow,
        });
    }
    if let Some(user) = limits.user_24h
        && user.remaining == Some(0)
    {
        pauses.push(AccountAction::Pause {
            until: user.reset_at.filter(|r| *r > now).unwrap_or(now + DAY),
            reason: PauseReason::User24hLimit,
        });
    }
    pauses
}

/// When the latest 24-hour limit the headers say is spent (`remaining: 0`, user or app) resets
/// (a day from now when it does not say).
fn spent_day_reset(limits: &RateLimitInfo, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    [limits.user_24h, limits.app_24h]
        .into_iter()
        .flatten()
        .filter(|day| day.remaining == Some(0))
        .map(|day| day.reset_at.filter(|r| *r > now).unwrap_or(now + DAY))
        .max()
}

fn app_header_stop(limits: &RateLimitInfo, now: DateTime<Utc>) -> Option<AppStop> {
    let app = limits.app_24h?;
    (app.remaining == Some(0)).then(|| AppStop {
        until: Some(app.reset_at.filter(|r| *r > now).unwrap_or(now + DAY)),
        reason: AppStopReason::App24hLimit,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::xapi::{ErrorDetails, Limit24h};

    fn retry() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        }
    }

    fn job(attempts: i32) -> JobFacts {
        JobFacts {
            attempts,
            max_attempts: 3,
            rate_limited_count: 0,
            answered: true,
        }
    }

    fn details(status: u16) -> ErrorDetails {
        ErrorDetails {
            status: Some(status),
            ..ErrorDetails::default()
        }
    }

    #[test]
    fn a_429_snoozes_to_the_reset_without_spending_an_attempt() {
        let now = Utc::now();
        let reset = now + TimeDelta::seconds(120);
        let limits = RateLimitInfo {
            limit: Some(50),
            remaining: Some(0),
            reset_at: Some(reset),
            ..RateLimitInfo::default()
        };
        let d = decide(
            &FollowOutcome::RateLimited,
            &limits,
            job(1),
            &retry(),
            now,
            0.5,
        );
        assert_eq!(
            d.next,
            NextState::Queued {
                run_at: reset,
                refund_attempt: true,
                rate_limited: true
            }
        );
        assert!(d.account.contains(&AccountAction::Pause {
            until: reset,
            reason: PauseReason::RateLimited
        }));
        assert_eq!(d.app, None);
    }

    #[test]
    fn a_429_with_a_spent_24_hour_limit_waits_for_that_limits_reset() {
        let now = Utc::now();
        let window_reset = now + TimeDelta::seconds(120);
        let day_reset = now + TimeDelta::hours(20);
        for (user_24h, app_24h) in [(Some(0), None), (None, Some(0)), (Some(0), Some(3))] {
            let day = |remaining: Option<u32>| {
                remaining.map(|remaining| Limit24h {
                    limit: Some(1000),
                    remaining: Some(remaining),
                    reset_at: Some(day_reset),
                })
            };
            let limits = RateLimitInfo {
                limit: Some(50),
                remaining: Some(12),
                reset_at: Some(window_reset),
                user_24h: day(user_24h),
                app_24h: day(app_24h),
                ..RateLimitInfo::default()
            };
            let d = decide(
                &FollowOutcome::RateLimited,
                &limits,
                job(1),
                &retry(),
                now,
                0.5,
            );
            assert_eq!(
                d.next,
                NextState::Queued {
                    run_at: day_reset,
                    refund_attempt: true,
                    rate_limited: true
                },
                "{user_24h:?} {app_24h:?}"
            );
            assert!(d.account.contains(&AccountAction::Pause {
                until: day_reset,
                reason: PauseReason::RateLimited
            }));
        }
        // A 24-hour limit with requests left says nothing about this 429.
        let limits = RateLimitInfo {
            limit: Some(50),
            remaining: Some(0),
            reset_at: Some(window_reset),
            user_24h: Some(Limit24h {
                limit: Some(1000),
                remaining: Some(5),
                reset_at: Some(day_reset),
            }),
            ..RateLimitInfo::default()
        };
        let d = decide(
            &FollowOutcome::RateLimited,
            &limits,
            job(1),
            &retry(),
            now,
            0.5,
        );
        assert_eq!(
            d.next,
            NextState::Queued {
                run_at: window_reset,
                refund_attempt: true,
                rate_limited: true
            }
        );
    }

    #[test]
    fn transient_errors_back_off_then_fail_at_max_attempts() {
        let now = Utc::now();
        let outcome = FollowOutcome::Transient(details(503));
        let first = decide(
            &outcome,
            &RateLimitInfo::default(),
            job(1),
            &retry(),
            now,
            0.0,
        );
        let second = decide(
            &outcome,
            &RateLimitInfo::default(),
            job(2),
            &retry(),
            now,
            0.0,
        );
        let NextState::Queued {
            run_at: a,
            refund_attempt: false,
            ..
        } = first.next
        else {
            panic!("{first:?}");
        };
        let NextState::Queued { run_at: b, .. } = second.next else {
            panic!("{second:?}");
        };
        assert_eq!(a - now, TimeDelta::seconds(1), "half of 2 s");
        assert_eq!(b - now, TimeDelta::seconds(2), "half of 4 s");
        let last = decide(
            &outcome,
            &RateLimitInfo::default(),
            job(3),
            &retry(),
            now,
            0.0,
        );
        assert_eq!(last.next, NextState::Failed);
        assert_eq!(last.error.unwrap()["status"], 503);
    }

    #[test]
    fn a_last_attempt_whose_fate_is_unknown_is_tried_again_not_failed() {
        let now = Utc::now();
        let timeout = FollowOutcome::Transient(ErrorDetails {
            reason: Some("timeout".into()),
            ..ErrorDetails::default()
        });
        let unanswered = JobFacts {
            answered: false,
            ..job(3)
        };
        let last = decide(
            &timeout,
            &RateLimitInfo::default(),
            unanswered,
            &retry(),
            now,
            0.0,
        );
        let NextState::Queued {
            refund_attempt: true,
            run_at,
            ..
        } = last.next
        else {
            panic!("a request that may have made the follow must not fail the job: {last:?}");
        };
        assert!(run_at > now, "after a backoff");
    }

    #[test]
    fn app_forbidden_stops_the_app_and_keeps_the_job() {
        let now = Utc::now();
        let d = decide(
            &FollowOutcome::AppForbidden(details(403)),
            &RateLimitInfo::default(),
            job(1),
            &retry(),
            now,
            0.5,
        );
        assert_eq!(
            d.app,
            Some(AppStop {
                until: None,
                reason: AppStopReason::AppForbidden
            })
        );
        assert!(matches!(
            d.next,
            NextState::Queued {
                refund_attempt: true,
                ..
            }
        ));
    }

    #[test]
    fn usage_caps_pause_the_scope_they_name() {
        let now = at("2026-12-31T10:20:00Z");
        let product = decide(
            &FollowOutcome::UsageCapped {
                period: Some("Daily".into()),
                scope: Some(UsageCapScope::Product),
            },
            &RateLimitInfo::default(),
            job(1),
            &retry(),
            now,
            0.5,
        );
        assert_eq!(
            product.app.unwrap().until,
            Some(at("2027-01-01T00:00:00Z")),
            "a daily cap ends at the next UTC midnight"
        );
        let account = decide(
            &FollowOutcome::UsageCapped {
                period: Some("Monthly".into()),
                scope: Some(UsageCapScope::Account),
            },
            &RateLimitInfo::default(),
            job(1),
            &retry(),
            now,
            0.5,
        );
        assert_eq!(account.app, None);
        assert!(
            account.account.contains(&AccountAction::Pause {
                until: at("2027-01-01T00:00:00Z"),
                reason: PauseReason::UsageCapped
            }),
            "a monthly cap ends on the first of next month: {:?}",
            account.account
        );
        let mid_year = at("2026-06-15T23:59:59Z");
        assert_eq!(first_of_next_month(mid_year), at("2026-07-01T00:00:00Z"));
        assert_eq!(next_utc_midnight(mid_year), at("2026-06-16T00:00:00Z"));
        assert_eq!(
            next_utc_midnight(at("2026-06-16T00:00:00Z")),
            at("2026-06-17T00:00:00Z")
        );
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("a time")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_402_stops_the_app_and_gives_the_attempt_back() {
        let now = Utc::now();
        let d = decide(
            &FollowOutcome::CreditsDepleted(details(402)),
            &RateLimitInfo::default(),
            job(3),
            &retry(),
            now,
            0.5,
        );
        assert_eq!(
            d.next,
            NextState::Queued {
                run_at: now,
                refund_attempt: true,
                rate_limited: false
            },
            "the job waits, unspent, even on its last attempt"
        );
        assert_eq!(
            d.app,
            Some(AppStop {
                until: None,
                reason: AppStopReason::CreditsDepleted
            })
        );
        assert!(d.account.is_empty());
    }

    #[test]
    fn a_usage_cap_lasts_its_period_whatever_the_window_reset_says() {
        let now = at("2026-12-05T10:00:00Z");
        let window = RateLimitInfo {
            limit: Some(50),
            remaining: Some(40),
            reset_at: Some(now + TimeDelta::minutes(10)),
            ..RateLimitInfo::default()
        };
        let capped = FollowOutcome::UsageCapped {
            period: Some("Daily".into()),
            scope: Some(UsageCapScope::Account),
        };
        let d = decide(&capped, &window, job(1), &retry(), now, 0.5);
        assert!(d.account.contains(&AccountAction::Pause {
            until: at("2026-12-06T00:00:00Z"),
            reason: PauseReason::UsageCapped
        }));
        let told = RateLimitInfo {
            retry_after: Some(Duration::from_secs(3600)),
            ..window
        };
        let d = decide(&capped, &told, job(1), &retry(), now, 0.5);
        assert!(
            matches!(d.next, NextState::Queued { run_at, .. } if run_at == now + TimeDelta::hours(1))
        );
    }

    #[test]
    fn the_daily_cap_pauses_until_the_24_hour_reset_when_known() {
        let now = Utc::now();
        let reset = now + TimeDelta::hours(3);
        let limits = RateLimitInfo {
            user_24h: Some(Limit24h {
                limit: Some(400),
                remaining: Some(0),
                reset_at: Some(reset),
            }),
            ..RateLimitInfo::default()
        };
        let d = decide(
            &FollowOutcome::AccountDailyCap(details(403)),
            &limits,
            job(1),
            &retry(),
            now,
            0.5,
        );
        assert!(d.account.contains(&AccountAction::Pause {
            until: reset,
            reason: PauseReason::DailyCap
        }));
        assert!(matches!(d.next, NextState::Queued { run_at, .. } if run_at == reset));
    }

    #[test]
    fn a_success_that_spends_the_window_pauses_the_account() {
        let now = Utc::now();
        let reset = now + TimeDelta::seconds(600);
        let limits = RateLimitInfo {
            limit: Some(50),
            remaining: Some(0),
            reset_at: Some(reset),
            ..RateLimitInfo::default()
        };
        let d = decide(
            &FollowOutcome::Followed {
                following: true,
                pending_follow: false,
                errors: vec![],
            },
            &limits,
            job(1),
            &retry(),
            now,
            0.5,
        );
        assert_eq!(
            d.next,
            NextState::Succeeded {
                following: true,
                pending_follow: false
            }
        );
        assert_eq!(d.error, None);
        assert_eq!(
            d.account,
            vec![AccountAction::Pause {
                until: reset,
                reason: PauseReason::RateLimitWindow
            }]
        );
    }

    #[test]
    fn permanent_errors_fail_the_job_with_the_details() {
        let d = decide(
            &FollowOutcome::Permanent(ErrorDetails {
                status: Some(404),
                problem_type: Some("https://api.x.com/2/problems/resource-not-found".into()),
                ..ErrorDetails::default()
            }),
            &RateLimitInfo::default(),
            job(1),
            &retry(),
            Utc::now(),
            0.5,
        );
        assert_eq!(d.next, NextState::Failed);
        let error = d.error.unwrap();
        assert_eq!(error["kind"], "permanent");
        assert_eq!(error["status"], 404);
        assert!(error.get("title").is_none(), "nulls are dropped: {error}");
    }
}
