//! `followq accounts …`: registering an account and storing its tokens (`add`), and the
//! operator's view and controls (`list`, `show`, `pause`, `resume`, `disable`, in
//! `admin::accounts`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use sqlx::PgPool;

use super::table::{Table, opt, print_json, time};
use super::tokens;
use crate::accounts::{AuthKind, KeyRing, NewAccount, Quota, Registered, register};
use crate::admin::accounts::{self as admin, AccountDetail, AccountStatus, AccountSummary};
use crate::config::CredentialsSettings;
use crate::ids::UserId;

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Register an account (or store new tokens for one; a needs_reauth account becomes active).
    #[command(after_help = "\
Tokens are never taken from the command line (it shows in `ps`). Either set
  oauth2: FOLLOWQ_OAUTH2_ACCESS_TOKEN, optional FOLLOWQ_OAUTH2_REFRESH_TOKEN and
          FOLLOWQ_OAUTH2_EXPIRES_IN (seconds)
  oauth1: FOLLOWQ_OAUTH1_TOKEN and FOLLOWQ_OAUTH1_TOKEN_SECRET
or pass --stdin and pipe a JSON object:
  oauth2: {\"access_token\": \"…\", \"refresh_token\": \"…\", \"expires_in\": 7200}
          (the token endpoint's answer as it comes)
  oauth1: {\"oauth_token\": \"…\", \"oauth_token_secret\": \"…\"}")]
    Add {
        /// The account's X user id.
        #[arg(long, value_name = "USER_ID")]
        user_id: UserId,
        /// How the account authenticates.
        #[arg(long, value_enum, default_value_t = AuthArg::Oauth2)]
        auth: AuthArg,
        /// Read the tokens as JSON from stdin instead of the environment.
        #[arg(long)]
        stdin: bool,
        /// Per-account quota override: requests per --quota-period (X tiers: 50, 5 or 1).
        #[arg(long, value_name = "N", requires = "quota_period")]
        quota_requests: Option<u32>,
        /// Per-account quota override: the period, e.g. 15m.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "quota_requests")]
        quota_period: Option<Duration>,
    },
    /// Every account: status, pause, queued and running jobs, the daemon holding it.
    List {
        /// Only accounts with this status: active, paused, needs_reauth, disabled.
        #[arg(long, value_name = "STATUS")]
        status: Option<AccountStatus>,
        /// Print as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One account: its row, whether credentials are stored (never the tokens), its jobs
    /// and its recent requests.
    Show {
        /// The account's X user id.
        user_id: UserId,
        /// Print as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop sending for an account (its jobs stay queued): for a while, until a time, or
    /// until `accounts resume`. The daemon holding it stops claiming at once.
    Pause {
        /// The account's X user id.
        user_id: UserId,
        /// How long, e.g. 30m, 2h, 1day.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "until")]
        for_: Option<Duration>,
        /// Until this time (RFC 3339, e.g. 2026-11-28T09:00:00Z).
        #[arg(long, value_name = "TIME")]
        until: Option<DateTime<Utc>>,
    },
    /// End any pause, re-enable a disabled account, or clear needs_reauth when credentials
    /// are stored (`accounts add` stores new ones and does this by itself).
    Resume {
        /// The account's X user id.
        user_id: UserId,
    },
    /// Stop an account for good: its jobs stay queued and are never sent until it is resumed.
    Disable {
        /// The account's X user id.
        user_id: UserId,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthArg {
    /// OAuth 2.0 user token (with an optional refresh token).
    Oauth2,
    /// OAuth 1.0a user token and secret.
    Oauth1,
}

pub async fn run(
    pool: &PgPool,
    credentials: &CredentialsSettings,
    command: AccountsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        AccountsCommand::List { status, json } => {
            let accounts = admin::list(pool, status).await?;
            if json {
                print_json(&accounts)?;
            } else {
                out!("{}", render_list(&accounts));
            }
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::Show { user_id, json } => {
            let detail = admin::show(pool, &user_id).await?;
            if json {
                print_json(&detail)?;
            } else {
                out!("{}", render_show(&detail));
            }
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::Pause {
            user_id,
            for_,
            until,
        } => {
            let until = match (for_, until) {
                (Some(duration), _) => Some(
                    admin::until_after(duration)
                        .ok_or_else(|| anyhow::anyhow!("--for {duration:?} is too long"))?,
                ),
                (None, until) => until,
            };
            outln!("{}", admin::pause(pool, &user_id, until).await?);
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::Resume { user_id } => {
            outln!("{}", admin::resume(pool, &user_id).await?);
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::Disable { user_id } => {
            outln!("{}", admin::disable(pool, &user_id).await?);
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::Add {
            user_id,
            auth,
            stdin,
            quota_requests,
            quota_period,
        } => {
            // Before reading any token: without a key there is nothing to store them with.
            let keys = KeyRing::from_settings(credentials)?;
            let kind = match auth {
                AuthArg::Oauth2 => AuthKind::OAuth2,
                AuthArg::Oauth1 => AuthKind::OAuth1,
            };
            let credentials = if stdin {
                tokens::from_json(kind, std::io::stdin().lock())?
            } else {
                tokens::from_env(kind, |name| std::env::var(name).ok())?
            };
            let quota = match (quota_requests, quota_period) {
                (Some(requests), Some(period)) => Some(Quota {
                    requests,
                    period_seconds: u32::try_from(period.as_secs()).unwrap_or(u32::MAX),
                }),
                _ => None,
            };
            let account = NewAccount {
                user_id: user_id.clone(),
                credentials,
                quota,
            };
            match register(pool, &keys, &account).await? {
                Registered::Created => outln!("registered account {user_id} ({})", kind.as_sql()),
                Registered::Updated {
                    previous_status,
                    status,
                } if previous_status != status => outln!(
                    "stored new {} tokens for account {user_id}; status {previous_status} -> {status}",
                    kind.as_sql()
                ),
                Registered::Updated { status, .. } => outln!(
                    "stored new {} tokens for account {user_id} (status {status})",
                    kind.as_sql()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render_list(accounts: &[AccountSummary]) -> String {
    if accounts.is_empty() {
        return "no accounts match\n".to_owned();
    }
    let now = Utc::now();
    let mut table = Table::new(&[
        "ACCOUNT", "AUTH", "STATUS", "UNTIL", "QUEUED", "RUNNING", "DAEMON", "REASON",
    ]);
    for a in accounts {
        table.row(vec![
            a.user_id.clone(),
            a.auth_kind.clone(),
            a.status.to_string(),
            time(a.paused_until, now),
            a.queued.to_string(),
            a.running.to_string(),
            opt(a.leased_by.as_deref()),
            opt(a.pause_reason.as_ref().map(|r| r.as_str())),
        ]);
    }
    let mut out = table.render("");
    out.push('\n');
    out
}

fn render_show(detail: &AccountDetail) -> String {
    let now = Utc::now();
    let a = &detail.account;
    let mut out = String::new();
    let _ = writeln!(out, "account {} ({}): {}", a.user_id, a.auth_kind, a.status);
    if let Some(reason) = &a.pause_reason {
        let label = if a.status == AccountStatus::NeedsReauth {
            "reason"
        } else {
            "pause"
        };
        let _ = writeln!(
            out,
            "  {label}:      {reason} (until {})",
            time(a.paused_until, now)
        );
    }
    let quota = match (a.quota_requests, a.quota_period_seconds) {
        (Some(n), Some(period)) => format!("{n} per {period} s (override)"),
        _ => "the configured default".to_owned(),
    };
    let _ = writeln!(out, "  quota:       {quota}");
    let lease = match &a.leased_by {
        Some(worker) if a.lease_expires_at.is_some_and(|at| at > now) => {
            format!("{worker} until {}", time(a.lease_expires_at, now))
        }
        _ => "none".to_owned(),
    };
    let _ = writeln!(out, "  lease:       {lease}");
    let credentials = match &detail.credentials {
        None => "none stored (store them with `followq accounts add`)".to_owned(),
        Some(c) => format!(
            "{}{}, stored {}{}",
            c.kind,
            if c.has_refresh_token {
                " with refresh token"
            } else {
                ""
            },
            time(Some(c.updated_at), now),
            c.oauth2_expires_at.map_or_else(String::new, |at| format!(
                ", access token expires {}",
                time(Some(at), now)
            ))
        ),
    };
    let _ = writeln!(out, "  credentials: {credentials}");
    let j = &detail.jobs;
    let _ = writeln!(
        out,
        "  jobs:        {} queued, {} running, {} succeeded, {} failed, {} cancelled",
        j.queued, j.running, j.succeeded, j.failed, j.cancelled
    );
    let r = &detail.requests;
    let _ = writeln!(
        out,
        "  requests:    {} in the last 15 min, {} in the last 24 h, last sent {}",
        r.last_15_minutes,
        r.last_24_hours,
        time(r.last_sent_at, now)
    );
    let _ = writeln!(out, "  created:     {}", time(Some(a.created_at), now));
    let _ = writeln!(out, "  updated:     {}", time(Some(a.updated_at), now));
    out
}
