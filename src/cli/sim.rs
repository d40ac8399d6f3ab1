//! `followq sim`: runs the X API simulator as a server until Ctrl-C or SIGTERM. It needs no
//! database and no settings beyond its flags.
//!
//! Standard output is for scripts: first `{"base_url": …}`, then one line per `--user` with
//! its tokens, and at exit the final figures. Tokens go to stdout only, never to the log.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::ids::UserId;
use crate::sim::{
    self, DayLimit, FaultConfig, OAuth1Consumer, SimConfig, TargetRules, UsageCap, UsagePeriod,
    UsageScope,
};

#[derive(Debug, Args)]
#[command(after_help = "\
Endpoints: POST /2/users/{id}/following, POST /2/oauth2/token (grant_type=refresh_token),
GET /__sim/stats (JSON figures per user and totals).

Stdout: a line {\"base_url\": ...}, then one JSON line per --user with its access_token and
refresh_token (random unless given), and the final figures when the simulator stops.

Fault rates are probabilities from 0 to 1 per follow request that passed the window check.
With the same --seed and the same requests per user, the same requests meet the same faults.")]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port; the base URL is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// Requests one user may make per fixed window (X: 50).
    #[arg(long, value_name = "N", default_value_t = 50)]
    window_requests: u32,
    /// Length of the fixed window, from the first request after the previous window ended.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    window: Duration,
    /// New follows one user may make per daily window; 0 turns the cap off (X: 400).
    #[arg(long, value_name = "N", default_value_t = 400)]
    daily_cap: u32,
    /// Length of the daily window for --daily-cap and --app-daily-cap.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    daily_window: Duration,
    /// New follows all users together may make per daily window, past which a follow gets
    /// the daily cap's 403 (X: 1000). Off unless set.
    #[arg(long, value_name = "N")]
    app_daily_cap: Option<u32>,
    /// Lifetime of the access tokens the simulator issues (X: 2 hours).
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    access_token_ttl: Duration,

    /// A user the simulator knows: `ID` gets random tokens, `ID:ACCESS:REFRESH` the given
    /// ones. Repeatable; each user's tokens are printed on stdout.
    #[arg(long = "user", value_name = "ID[:ACCESS:REFRESH]", value_parser = parse_user)]
    users: Vec<UserSpec>,
    /// An OAuth 1.0a user: `ID:OAUTH_TOKEN:OAUTH_TOKEN_SECRET`. Its requests must be signed
    /// (HMAC-SHA1) with this secret and --oauth1-consumer's. Repeatable.
    #[arg(long = "oauth1-user", value_name = "ID:TOKEN:SECRET", value_parser = parse_oauth1_user)]
    oauth1_users: Vec<(String, String, String)>,
    /// The app's OAuth 1.0a consumer key and secret. Without it every OAuth 1.0a request gets
    /// 401.
    #[arg(long = "oauth1-consumer", value_name = "KEY:SECRET", value_parser = parse_oauth1_consumer)]
    oauth1_consumer: Option<OAuth1Consumer>,
    /// A bearer token that authenticates the app only (403 unsupported-authentication).
    /// Repeatable.
    #[arg(long = "app-only-token", value_name = "TOKEN")]
    app_only_tokens: Vec<String>,
    /// Client id the token endpoint requires; without it any client id is accepted (one must
    /// still be sent, in the form or as HTTP Basic).
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Reusing a spent refresh token only fails, instead of also revoking the user's tokens.
    #[arg(long)]
    keep_tokens_on_reuse: bool,
    /// Answer without `x-rate-limit-*` headers (the window is still enforced), as through a
    /// proxy that strips them.
    #[arg(long)]
    no_rate_limit_headers: bool,
    /// Requests one user may make per --user-24h-window, reported as x-user-limit-24hour-*
    /// headers and enforced with 429. Off unless set.
    #[arg(long = "user-24h-limit", value_name = "N")]
    user_24h_limit: Option<u32>,
    /// Length of the window for --user-24h-limit.
    #[arg(long = "user-24h-window", value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    user_24h_window: Duration,
    /// Requests all users together may make per --app-24h-window, reported as
    /// x-app-limit-24hour-* headers and enforced with 429. Off unless set.
    #[arg(long = "app-24h-limit", value_name = "N")]
    app_24h_limit: Option<u32>,
    /// Length of the window for --app-24h-limit.
    #[arg(long = "app-24h-window", value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    app_24h_window: Duration,

    /// Target ids divisible by N are protected: follows become pending.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    protected_every: Option<u64>,
    /// A protected target id. Repeatable.
    #[arg(long = "protected", value_name = "ID")]
    protected: Vec<UserId>,
    /// Target ids divisible by N do not exist (404 resource-not-found).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    unknown_every: Option<u64>,
    /// A target id that does not exist. Repeatable.
    #[arg(long = "unknown", value_name = "ID")]
    unknown: Vec<UserId>,
    /// A target id X refuses with 400 invalid-request. Repeatable.
    #[arg(long = "invalid", value_name = "ID")]
    invalid: Vec<UserId>,
    /// A target id that blocks every user (403). Repeatable.
    #[arg(long = "blocking", value_name = "ID")]
    blocking: Vec<UserId>,

    /// Prepaid credits: each follow request acted on spends one, and with none left every
    /// follow request gets 402 CreditsDepleted. Unlimited unless set.
    #[arg(long, value_name = "N")]
    credits: Option<u64>,
    /// Every follow request gets 403 client-forbidden (app not enrolled).
    #[arg(long)]
    app_forbidden: bool,
    /// Every follow request gets 429 usage-capped naming PERIOD (daily|monthly) and SCOPE
    /// (account|product), e.g. `monthly:product`.
    #[arg(long, value_name = "PERIOD:SCOPE", value_parser = parse_usage_cap)]
    usage_capped: Option<UsageCap>,

    /// Seed for the fault decisions.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Rate of 500/503 answers (the follow is not made).
    #[arg(long = "fail-5xx", value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    fail_5xx: f64,
    /// Rate of answers delayed by --delay-ms.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    delay: f64,
    /// Delay for --delay, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    delay_ms: u64,
    /// Rate of connections closed without an answer (the follow is made).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    drop: f64,
    /// Rate of answers whose body is not JSON: truncated JSON or an HTML page (the follow is
    /// made).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    malformed: f64,
    /// Rate of 200 answers carrying errors[] and no data (the follow is not made).
    #[arg(long = "errors-200", value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    errors_200: f64,
    /// Rate of 500/503 answers sent after the follow was made, as X sometimes does (a
    /// refused request keeps its refusal).
    #[arg(long = "applied-5xx", value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    applied_5xx: f64,
}

#[derive(Debug, Clone)]
struct UserSpec {
    id: String,
    tokens: Option<(String, String)>,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err("a rate is a number from 0 to 1".into()),
    }
}

fn parse_user(raw: &str) -> Result<UserSpec, String> {
    let mut parts = raw.split(':');
    let id = UserId::parse(parts.next().unwrap_or_default()).map_err(|e| e.to_string())?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => Ok(UserSpec {
            id: id.to_string(),
            tokens: None,
        }),
        (Some(access), Some(refresh), None) if !access.is_empty() && !refresh.is_empty() => {
            Ok(UserSpec {
                id: id.to_string(),
                tokens: Some((access.to_owned(), refresh.to_owned())),
            })
        }
        _ => Err("expected ID or ID:ACCESS_TOKEN:REFRESH_TOKEN".into()),
    }
}

fn parse_oauth1_user(raw: &str) -> Result<(String, String, String), String> {
    let mut parts = raw.splitn(3, ':');
    let (Some(id), Some(token), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected ID:OAUTH_TOKEN:OAUTH_TOKEN_SECRET".into());
    };
    let id = UserId::parse(id).map_err(|e| e.to_string())?;
    if token.is_empty() || secret.is_empty() {
        return Err("the oauth token and its secret must not be empty".into());
    }
    Ok((id.to_string(), token.to_owned(), secret.to_owned()))
}

fn parse_oauth1_consumer(raw: &str) -> Result<OAuth1Consumer, String> {
    match raw.split_once(':') {
        Some((key, secret)) if !key.is_empty() && !secret.is_empty() => Ok(OAuth1Consumer {
            key: key.to_owned(),
            secret: secret.to_owned(),
        }),
        _ => Err("expected CONSUMER_KEY:CONSUMER_SECRET".into()),
    }
}

fn parse_usage_cap(raw: &str) -> Result<UsageCap, String> {
    let (period, scope) = raw
        .split_once(':')
        .ok_or_else(|| "expected PERIOD:SCOPE, e.g. monthly:product".to_owned())?;
    let period = match period.to_ascii_lowercase().as_str() {
        "daily" => UsagePeriod::Daily,
        "monthly" => UsagePeriod::Monthly,
        _ => return Err("PERIOD is daily or monthly".into()),
    };
    let scope = match scope.to_ascii_lowercase().as_str() {
        "account" => UsageScope::Account,
        "product" => UsageScope::Product,
        _ => return Err("SCOPE is account or product".into()),
    };
    Ok(UsageCap { period, scope })
}

impl SimArgs {
    fn config(&self) -> SimConfig {
        let ids =
            |ids: &[UserId]| -> HashSet<String> { ids.iter().map(UserId::to_string).collect() };
        SimConfig {
            window_requests: self.window_requests,
            window: self.window,
            daily_cap: (self.daily_cap > 0).then_some(self.daily_cap),
            daily_window: self.daily_window,
            access_token_ttl: self.access_token_ttl,
            client_id: self.client_id.clone(),
            revoke_family_on_reuse: !self.keep_tokens_on_reuse,
            targets: TargetRules {
                protected_every: self.protected_every,
                protected_ids: ids(&self.protected),
                unknown_every: self.unknown_every,
                unknown_ids: ids(&self.unknown),
                invalid_ids: ids(&self.invalid),
                blocking_ids: ids(&self.blocking),
            },
            app_forbidden: self.app_forbidden,
            usage_capped: self.usage_capped,
            faults: FaultConfig {
                seed: self.seed,
                fail_5xx: self.fail_5xx,
                delay: self.delay,
                delay_duration: Duration::from_millis(self.delay_ms),
                drop: self.drop,
                malformed: self.malformed,
                errors_200: self.errors_200,
                applied_5xx: self.applied_5xx,
            },
            rate_limit_headers: !self.no_rate_limit_headers,
            user_24h_limit: self.user_24h_limit.map(|limit| DayLimit {
                limit,
                window: self.user_24h_window,
            }),
            app_24h_limit: self.app_24h_limit.map(|limit| DayLimit {
                limit,
                window: self.app_24h_window,
            }),
            oauth1_consumer: self.oauth1_consumer.clone(),
            app_daily_cap: self.app_daily_cap,
            // Nothing can read this process's request log.
            request_log: false,
            credits: self.credits,
        }
    }
}

pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let config = args.config();
    let ttl = config.access_token_ttl.as_secs();
    let handle = sim::spawn_at(config, args.listen).context("starting the simulator")?;
    outln!("{}", json!({"base_url": handle.base_url()}));
    for user in &args.users {
        let (access, refresh) = match &user.tokens {
            Some((access, refresh)) => {
                handle.add_user_with_tokens(&user.id, access, refresh);
                (access.clone(), refresh.clone())
            }
            None => {
                let tokens = handle.add_user(&user.id);
                (tokens.access_token, tokens.refresh_token)
            }
        };
        outln!(
            "{}",
            json!({"user_id": user.id, "access_token": access, "refresh_token": refresh, "expires_in": ttl})
        );
    }
    for (user_id, token, secret) in &args.oauth1_users {
        handle.add_oauth1_user(user_id, token, secret);
    }
    for token in &args.app_only_tokens {
        handle.add_app_only_token(token);
    }

    wait_for_stop_signal().await?;
    tracing::info!("stopping the simulator");
    let stats = handle.stats_now();
    handle.shutdown().await;
    outln!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("listening for Ctrl-C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_rates_and_caps() {
        let plain = parse_user("42").expect("plain id");
        assert_eq!((plain.id.as_str(), plain.tokens), ("42", None));
        let given = parse_user("42:a:r").expect("id with tokens");
        assert_eq!(given.tokens, Some(("a".into(), "r".into())));
        assert!(parse_user("4x").is_err());
        assert!(parse_user("42:a").is_err());
        assert!(parse_rate("1.5").is_err());
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert_eq!(
            parse_usage_cap("Monthly:product"),
            Ok(UsageCap {
                period: UsagePeriod::Monthly,
                scope: UsageScope::Product
            })
        );
        assert!(parse_usage_cap("weekly:account").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(
            parse_oauth1_user("42:tok:sec:ret"),
            Ok(("42".into(), "tok".into(), "sec:ret".into()))
        );
        assert!(parse_oauth1_user("42:tok").is_err());
        assert!(parse_oauth1_consumer("key:").is_err());
    }
}
