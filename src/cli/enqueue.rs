//! `followq enqueue`: one request from flags, or a CSV file of them.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgGroup, Args};
use sqlx::PgPool;

use super::EXIT_ROWS_REJECTED;
use crate::ids::UserId;
use crate::queue::csv_import;
use crate::queue::{EnqueueOutcome, FollowRequest, enqueue};

#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("input").required(true).args(["source", "file"])),
    after_help = "\
CSV files hold one request per line: `source_user_id,target_user_id` (an optional header
line with those names is skipped). Each bad row is reported on stderr with its line number
and the reason (malformed id, self-follow, unregistered source account, wrong field count);
every good row is enqueued all the same. The exit code is then 3, so scripts can tell.
A request whose (source, target) already has a queued or running job is not duplicated."
)]
pub struct EnqueueArgs {
    /// The X user id that will follow (must be a registered account).
    #[arg(long, value_name = "USER_ID", requires = "target")]
    source: Option<UserId>,
    /// The X user id to follow.
    #[arg(long, value_name = "USER_ID", requires = "source")]
    target: Option<UserId>,
    /// A CSV file of `source_user_id,target_user_id` rows; `-` reads stdin.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["source", "target"])]
    file: Option<PathBuf>,
    /// Larger runs first within one account: -1000 to 1000.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    priority: i32,
}

pub async fn run(pool: &PgPool, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    match (args.source, args.target, args.file) {
        (Some(source), Some(target), None) => {
            let request = FollowRequest::new(source.as_str(), target.as_str())?
                .with_priority(args.priority)?;
            match enqueue(pool, &request).await? {
                EnqueueOutcome::Created(id) => {
                    outln!("created job {id}: {source} follows {target}");
                }
                EnqueueOutcome::Existing(id) => {
                    outln!("job {id} is already queued for {source} follows {target}");
                }
                EnqueueOutcome::UnknownAccount => {
                    anyhow::bail!("source user {source} is not a registered account")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, None, Some(path)) => import_file(pool, &path, args.priority).await,
        _ => anyhow::bail!("give either --source and --target, or --file"),
    }
}

async fn import_file(pool: &PgPool, path: &PathBuf, priority: i32) -> anyhow::Result<ExitCode> {
    let mut contents = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut contents)
            .context("reading CSV from stdin")?;
    } else {
        contents = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    let parsed = csv_import::parse_csv(&contents, priority);
    let report = csv_import::import(pool, parsed).await?;
    for row in &report.rejected {
        eprintln!("{}:{}: {}", path.display(), row.line, row.reason);
    }
    outln!(
        "{} created, {} already queued, {} rejected",
        report.created,
        report.existing,
        report.rejected.len()
    );
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ROWS_REJECTED)
    })
}
