//! `followq app …`: the app-wide stop, for an operator (`resume`, in `admin::app`).

use std::process::ExitCode;

use clap::Subcommand;
use sqlx::PgPool;

use crate::admin::app::{self as admin, AppError, Resumed};

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// End the app-wide stop in force (credits topped up, the app's access fixed, a budget
    /// raised, …): every daemon sends again within its poll interval. The daily follow cap
    /// (app_daily_cap) is refused: the daemons keep it themselves.
    Resume,
}

pub async fn run(pool: &PgPool, command: AppCommand) -> anyhow::Result<ExitCode> {
    match command {
        AppCommand::Resume => match admin::resume(pool).await {
            Ok(Resumed::Ended(stop)) => {
                outln!(
                    "app-wide stop ended: {} (since {}); every daemon sends again within its poll interval",
                    stop.reason,
                    stop.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
                Ok(ExitCode::SUCCESS)
            }
            Ok(Resumed::NothingToEnd) => {
                outln!("no app-wide stop is in force");
                Ok(ExitCode::SUCCESS)
            }
            Err(refused @ AppError::NotOperatorsToEnd { .. }) => {
                eprintln!("{refused}");
                Ok(ExitCode::FAILURE)
            }
            Err(AppError::Database(e)) => Err(e.into()),
        },
    }
}
