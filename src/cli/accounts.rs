//! `followq accounts …`: registering an account and storing its tokens.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use sqlx::PgPool;

use super::tokens;
use crate::accounts::{AuthKind, NewAccount, Quota, Registered, register};
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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthArg {
    /// OAuth 2.0 user token (with an optional refresh token).
    Oauth2,
    /// OAuth 1.0a user token and secret.
    Oauth1,
}

pub async fn run(pool: &PgPool, command: AccountsCommand) -> anyhow::Result<ExitCode> {
    match command {
        AccountsCommand::Add {
            user_id,
            auth,
            stdin,
            quota_requests,
            quota_period,
        } => {
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
            match register(pool, &account).await? {
                Registered::Created => println!("registered account {user_id} ({})", kind.as_sql()),
                Registered::Updated {
                    previous_status,
                    status,
                } if previous_status != status => println!(
                    "stored new {} tokens for account {user_id}; status {previous_status} -> {status}",
                    kind.as_sql()
                ),
                Registered::Updated { status, .. } => println!(
                    "stored new {} tokens for account {user_id} (status {status})",
                    kind.as_sql()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
