//! The states and reasons the schema stores as text: a job's state, an account's status and
//! why an account is held. Each is a Rust enum that binds and reads as Postgres `text`, so
//! the code never compares bare strings with what a row says.
//!
//! A job state or account status outside the schema's CHECK lists cannot be read (the row
//! would break the constraint); a pause reason is open-ended (operators and older releases
//! write their own words for `needs_reauth` and `disabled`), so an unknown one is kept as
//! written.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

/// `sqlx` reads and writes a type through its text form (`as_str` and `FromStr`), as the
/// schema stores it.
macro_rules! text_column {
    ($type:ty) => {
        impl Type<Postgres> for $type {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $type {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $type {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                Ok(text.parse::<$type>()?)
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A job's state as operators see it: what `follow_jobs.state` stores ([`JobState::STORED`]),
/// and `running` for a job whose request is in the air. That one is never stored (the schema
/// refuses it): such a job stays `queued`, and `running` is derived from its ledger row (the
/// view `followq.jobs_in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}: expected queued, running, succeeded, failed or cancelled")]
pub struct JobStateError(String);

impl JobState {
    /// The states `follow_jobs.state` stores.
    pub const STORED: [JobState; 4] = [
        JobState::Queued,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Succeeded, failed or cancelled: nothing will happen to the job any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl FromStr for JobState {
    type Err = JobStateError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == raw)
            .ok_or_else(|| JobStateError(raw.to_owned()))
    }
}

text_column!(JobState);

/// An account status, as stored in `accounts.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Paused,
    NeedsReauth,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown account status {0:?}: expected active, paused, needs_reauth or disabled")]
pub struct AccountStatusError(String);

impl AccountStatus {
    pub const ALL: [AccountStatus; 4] = [
        AccountStatus::Active,
        AccountStatus::Paused,
        AccountStatus::NeedsReauth,
        AccountStatus::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Paused => "paused",
            AccountStatus::NeedsReauth => "needs_reauth",
            AccountStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for AccountStatus {
    type Err = AccountStatusError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        AccountStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == raw)
            .ok_or_else(|| AccountStatusError(raw.to_owned()))
    }
}

text_column!(AccountStatus);

/// Why an account is held, as stored in `accounts.pause_reason`. The daemon's own reasons are
/// variants; the words an operator or the daemon gave for a `needs_reauth` or `disabled`
/// account ("refresh token revoked", …) are kept as [`PauseReason::Explained`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// An operator paused the account (`followq accounts pause`); only an operator resumes it.
    Operator,
    /// X answered 429: the account waits for the window's reset.
    RateLimited,
    /// The account spent its window (`x-rate-limit-remaining: 0`).
    RateLimitWindow,
    /// The account's follows of the last 24 hours reached `rate_limit.daily_follows_per_account`.
    DailyCap,
    /// X's usage cap for the account is reached.
    UsageCapped,
    /// X's 24-hour limit header for the user reached 0.
    User24hLimit,
    /// Any other words, as written.
    #[serde(untagged)]
    Explained(String),
}

impl PauseReason {
    const KNOWN: [PauseReason; 6] = [
        PauseReason::Operator,
        PauseReason::RateLimited,
        PauseReason::RateLimitWindow,
        PauseReason::DailyCap,
        PauseReason::UsageCapped,
        PauseReason::User24hLimit,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            PauseReason::Operator => "operator",
            PauseReason::RateLimited => "rate_limited",
            PauseReason::RateLimitWindow => "rate_limit_window",
            PauseReason::DailyCap => "daily_cap",
            PauseReason::UsageCapped => "usage_capped",
            PauseReason::User24hLimit => "user_24h_limit",
            PauseReason::Explained(words) => words,
        }
    }

    /// What the reason means, for an operator ("" for words that speak for themselves).
    pub fn meaning(&self) -> &'static str {
        match self {
            PauseReason::Operator => "paused by an operator",
            PauseReason::RateLimited => "X answered 429",
            PauseReason::RateLimitWindow => "X's 15-minute window is spent",
            PauseReason::DailyCap => "the account's 24-hour follow cap is reached",
            PauseReason::UsageCapped => "X's usage cap for the account is reached",
            PauseReason::User24hLimit => "the account's 24-hour limit header reached 0",
            PauseReason::Explained(_) => "",
        }
    }
}

impl FromStr for PauseReason {
    type Err = std::convert::Infallible;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(PauseReason::KNOWN
            .into_iter()
            .find(|reason| reason.as_str() == raw)
            .unwrap_or_else(|| PauseReason::Explained(raw.to_owned())))
    }
}

impl From<&str> for PauseReason {
    fn from(raw: &str) -> Self {
        match raw.parse() {
            Ok(reason) => reason,
            Err(never) => match never {},
        }
    }
}

text_column!(PauseReason);

/// Why every account is stopped, as stored in `followq.app_pause.reason`. The daemon's own
/// reasons are variants; a reason written by hand is kept as [`AppStopReason::Explained`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStopReason {
    /// X refused the app itself (403 client-forbidden or unsupported-authentication).
    AppForbidden,
    /// X's usage cap of the whole product (429 usage-capped, scope Product).
    UsageCapped,
    /// `x-app-limit-24hour-remaining: 0`.
    #[serde(rename = "app_24h_limit")]
    App24hLimit,
    /// The app's follows of the last 24 hours reached `rate_limit.daily_follows_per_app`.
    AppDailyCap,
    /// X answered 402: the app's prepaid credits ran out.
    CreditsDepleted,
    /// followq's spend reached `billing.daily_budget` or `billing.monthly_budget`.
    BudgetReached,
    /// Any other words, as written.
    #[serde(untagged)]
    Explained(String),
}

impl AppStopReason {
    pub const KNOWN: [AppStopReason; 6] = [
        AppStopReason::AppForbidden,
        AppStopReason::UsageCapped,
        AppStopReason::App24hLimit,
        AppStopReason::AppDailyCap,
        AppStopReason::CreditsDepleted,
        AppStopReason::BudgetReached,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            AppStopReason::AppForbidden => "app_forbidden",
            AppStopReason::UsageCapped => "usage_capped",
            AppStopReason::App24hLimit => "app_24h_limit",
            AppStopReason::AppDailyCap => "app_daily_cap",
            AppStopReason::CreditsDepleted => "credits_depleted",
            AppStopReason::BudgetReached => "budget_reached",
            AppStopReason::Explained(words) => words,
        }
    }

    /// What happened, for an operator ("" for words that speak for themselves).
    pub fn meaning(&self) -> &'static str {
        match self {
            AppStopReason::AppForbidden => {
                "X refused the app itself (403 client-forbidden or unsupported-authentication)"
            }
            AppStopReason::UsageCapped => "X's usage cap for the app is reached",
            AppStopReason::App24hLimit => "X's 24-hour limit for the app is reached",
            AppStopReason::AppDailyCap => {
                "the app's daily follow cap (rate_limit.daily_follows_per_app) is reached"
            }
            AppStopReason::CreditsDepleted => "X answered 402: the app's prepaid credits ran out",
            AppStopReason::BudgetReached => {
                "the spend reached billing.daily_budget or billing.monthly_budget"
            }
            AppStopReason::Explained(_) => "",
        }
    }

    /// What ends the stop, for an operator.
    pub fn remedy(&self) -> &'static str {
        match self {
            AppStopReason::AppForbidden => {
                "fix the app's access or authentication in the X developer portal, then `followq app resume`"
            }
            AppStopReason::UsageCapped | AppStopReason::App24hLimit => {
                "it ends by itself when X's period ends; `followq app resume` ends it earlier (X may refuse again)"
            }
            AppStopReason::AppDailyCap => {
                "it ends by itself as the oldest follows age out; raise rate_limit.daily_follows_per_app to go on sooner"
            }
            AppStopReason::CreditsDepleted => {
                "top up the app's credits: one request probes every billing.probe_interval and sending resumes when it goes through, or `followq app resume` at once"
            }
            AppStopReason::BudgetReached => {
                "it ends with the budget's period; to go on now, raise the budget (restart the daemons one by one with it) and `followq app resume`"
            }
            AppStopReason::Explained(_) => "`followq app resume` ends it",
        }
    }

    /// What ends a stop that has no end time, in words that follow "until".
    pub fn ends_when_untimed(&self) -> &'static str {
        match self {
            AppStopReason::CreditsDepleted => {
                "a probe finds credits again (one request every billing.probe_interval) or an operator runs `followq app resume`"
            }
            _ => "an operator runs `followq app resume`",
        }
    }

    /// Whether `followq app resume` may end it. Not the daily follow cap: the daemons count
    /// it themselves and would stop again at once.
    pub fn operator_may_end(&self) -> bool {
        !matches!(self, AppStopReason::AppDailyCap)
    }
}

impl FromStr for AppStopReason {
    type Err = std::convert::Infallible;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(AppStopReason::KNOWN
            .into_iter()
            .find(|reason| reason.as_str() == raw)
            .unwrap_or_else(|| AppStopReason::Explained(raw.to_owned())))
    }
}

impl From<&str> for AppStopReason {
    fn from(raw: &str) -> Self {
        match raw.parse() {
            Ok(reason) => reason,
            Err(never) => match never {},
        }
    }
}

text_column!(AppStopReason);

/// What kind of error a job's `last_error` (and a ledger row's `error`) records, as stored in
/// its `kind` field. A kind written by an earlier version and unknown here is kept as
/// [`ErrorKind::Explained`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// X answered 429: the account's window (the job waits for its reset).
    RateLimited,
    /// X's usage cap (429 usage-capped).
    UsageCapped,
    /// X refused the token (401).
    Unauthorized,
    /// X refused the app itself (403 client-forbidden or unsupported-authentication).
    AppForbidden,
    /// X's daily follow cap for the account (403 "unable to follow").
    DailyCap,
    /// X answered 402: the app's credits ran out.
    CreditsDepleted,
    /// X refused this follow for good (400, 404, another 403).
    Permanent,
    /// Worth retrying: a 5xx, a timeout, a connection lost, a body cut short.
    Transient,
    /// The account has no usable token (it needs re-authorization).
    NeedsReauth,
    /// The token endpoint could not be reached to refresh the account's token.
    TokenUnavailable,
    /// The database failed while the job was being prepared; nothing was sent.
    Database,
    /// The app's follows of the last 24 hours reached `rate_limit.daily_follows_per_app`.
    AppDailyCap,
    /// The request was not sent: its send deadline passed first.
    SendDeadline,
    /// The daemon that sent the request stopped (or its turn failed) before the answer.
    Abandoned,
    /// Any other kind, as written.
    #[serde(untagged)]
    Explained(String),
}

impl ErrorKind {
    pub const KNOWN: [ErrorKind; 14] = [
        ErrorKind::RateLimited,
        ErrorKind::UsageCapped,
        ErrorKind::Unauthorized,
        ErrorKind::AppForbidden,
        ErrorKind::DailyCap,
        ErrorKind::CreditsDepleted,
        ErrorKind::Permanent,
        ErrorKind::Transient,
        ErrorKind::NeedsReauth,
        ErrorKind::TokenUnavailable,
        ErrorKind::Database,
        ErrorKind::AppDailyCap,
        ErrorKind::SendDeadline,
        ErrorKind::Abandoned,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::UsageCapped => "usage_capped",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::AppForbidden => "app_forbidden",
            ErrorKind::DailyCap => "daily_cap",
            ErrorKind::CreditsDepleted => "credits_depleted",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Transient => "transient",
            ErrorKind::NeedsReauth => "needs_reauth",
            ErrorKind::TokenUnavailable => "token_unavailable",
            ErrorKind::Database => "database",
            ErrorKind::AppDailyCap => "app_daily_cap",
            ErrorKind::SendDeadline => "send_deadline",
            ErrorKind::Abandoned => "abandoned",
            ErrorKind::Explained(words) => words,
        }
    }

    /// The kind of a `last_error` value (`None` without one, as for a success's partial
    /// errors).
    pub fn of(error: &serde_json::Value) -> Option<ErrorKind> {
        error
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .map(ErrorKind::from)
    }
}

impl FromStr for ErrorKind {
    type Err = std::convert::Infallible;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(ErrorKind::KNOWN
            .into_iter()
            .find(|kind| kind.as_str() == raw)
            .unwrap_or_else(|| ErrorKind::Explained(raw.to_owned())))
    }
}

impl From<&str> for ErrorKind {
    fn from(raw: &str) -> Self {
        match raw.parse() {
            Ok(kind) => kind,
            Err(never) => match never {},
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_text() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        for status in AccountStatus::ALL {
            assert_eq!(status.as_str().parse::<AccountStatus>(), Ok(status));
        }
        for reason in PauseReason::KNOWN {
            assert_eq!(PauseReason::from(reason.as_str()), reason);
        }
        for kind in ErrorKind::KNOWN {
            assert_eq!(ErrorKind::from(kind.as_str()), kind);
            assert_eq!(
                serde_json::to_value(&kind).ok(),
                Some(serde_json::Value::from(kind.as_str())),
                "JSON shows the stored text"
            );
        }
        for reason in AppStopReason::KNOWN {
            assert_eq!(AppStopReason::from(reason.as_str()), reason);
            assert_eq!(
                serde_json::to_value(&reason).ok(),
                Some(serde_json::Value::from(reason.as_str())),
                "JSON shows the stored text"
            );
        }
        assert!("runnin".parse::<JobState>().is_err());
        assert!("Active".parse::<AccountStatus>().is_err());
    }

    #[test]
    fn an_unknown_pause_reason_is_kept_as_written() {
        let reason = PauseReason::from("refresh token revoked");
        assert_eq!(
            reason,
            PauseReason::Explained("refresh token revoked".into())
        );
        assert_eq!(reason.as_str(), "refresh token revoked");
        assert_eq!(reason.meaning(), "");
    }
}
