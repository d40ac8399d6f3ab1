//! `followq jobs show|list|retry|cancel`: argument parsing and printing around `admin::jobs`.
//! Each change prints what it did ("job 42: failed -> queued"); refusals exit 1 with the
//! reason on stderr, malformed ids and states exit 2 (clap).

use std::fmt::Write as _;
use std::process::ExitCode;

use chrono::Utc;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::Value;
use sqlx::PgPool;

use super::table::{Table, opt, print_json, time};
use crate::admin::jobs::{
    self, DEFAULT_LIST_LIMIT, JobDetail, JobId, JobRow, JobState, ListFilter,
};
use crate::admin::why::error_phrase;
use crate::ids::UserId;

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One job: its row, every request the ledger holds for it, and why it is where it is.
    Show {
        /// The job id.
        id: JobId,
        /// Print as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Jobs in id order, optionally of one state and/or one source account.
    List(ListArgs),
    /// Put a failed or cancelled job back in the queue (attempts start again at 0, it runs
    /// now; last_error is kept until the next answer replaces it), or every job of a state.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "state"])))]
    Retry {
        /// The job id.
        id: Option<JobId>,
        /// Every job in this state (failed or cancelled); the newest per (source, target),
        /// and none whose pair already has a queued or running job.
        #[arg(long, value_name = "STATE", conflicts_with = "id")]
        state: Option<JobState>,
        /// With --state: only this source account's jobs.
        #[arg(long, value_name = "USER_ID", requires = "state")]
        source: Option<UserId>,
    },
    /// Cancel a queued job (it is never sent), or every queued job of one source account.
    /// Running jobs are refused: their request may already be in flight.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "source"])))]
    Cancel {
        /// The job id.
        id: Option<JobId>,
        /// Every queued job of this source account.
        #[arg(long, value_name = "USER_ID", conflicts_with = "id")]
        source: Option<UserId>,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
    #[arg(long, value_name = "STATE")]
    state: Option<JobState>,
    /// Only jobs of this source account.
    #[arg(long, value_name = "USER_ID")]
    source: Option<UserId>,
    /// At most this many jobs.
    #[arg(long, default_value_t = DEFAULT_LIST_LIMIT, value_name = "N", allow_negative_numbers = true)]
    limit: i64,
    /// Only jobs with a larger id (the next page: the last id shown).
    #[arg(long, value_name = "ID")]
    after: Option<JobId>,
    /// Print as JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(
    pool: &PgPool,
    command: JobsCommand,
    default_max_attempts: u32,
) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::Show { id, json } => {
            let detail = jobs::show(pool, id, default_max_attempts).await?;
            if json {
                print_json(&detail)?;
            } else {
                out!("{}", render_show(&detail, default_max_attempts));
            }
        }
        JobsCommand::List(args) => {
            let filter = ListFilter {
                state: args.state,
                source: args.source,
                limit: args.limit,
                after: args.after,
            };
            let rows = jobs::list(pool, &filter).await?;
            if args.json {
                print_json(&rows)?;
            } else {
                out!("{}", render_list(&rows, filter.limit));
            }
        }
        JobsCommand::Retry {
            id: Some(id),
            state: None,
            ..
        } => outln!("{}", jobs::retry(pool, id).await?),
        JobsCommand::Retry {
            state: Some(state),
            source,
            ..
        } => {
            let done = jobs::retry_state(pool, state, source.as_ref()).await?;
            let scope = source.map_or_else(String::new, |s| format!(" of account {s}"));
            outln!(
                "retried {} {state} job(s){scope}: {state} -> queued",
                done.retried
            );
            if done.skipped > 0 {
                outln!(
                    "left {} {state} job(s) as they were: their (source, target) already has a queued or running job, or a newer {state} job of the pair was retried",
                    done.skipped
                );
            }
        }
        JobsCommand::Cancel {
            id: Some(id),
            source: None,
        } => outln!("{}", jobs::cancel(pool, id).await?),
        JobsCommand::Cancel {
            source: Some(source),
            ..
        } => {
            let done = jobs::cancel_source(pool, &source).await?;
            outln!(
                "cancelled {} queued job(s) of account {source}: queued -> cancelled",
                done.cancelled
            );
            if done.running > 0 {
                outln!(
                    "left {} running job(s) of account {source} alone: their requests may be in flight",
                    done.running
                );
            }
        }
        // clap's groups require exactly one of id and --state / --source.
        JobsCommand::Retry { .. } | JobsCommand::Cancel { .. } => {
            anyhow::bail!("give a job id or the option, not both")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn error_cell(error: Option<&Value>) -> String {
    error.map_or_else(|| "-".to_owned(), error_phrase)
}

fn render_list(rows: &[JobRow], limit: i64) -> String {
    let now = Utc::now();
    if rows.is_empty() {
        return "no jobs match\n".to_owned();
    }
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "SOURCE",
        "TARGET",
        "PRIO",
        "RUN_AT",
        "ATTEMPTS",
        "LAST ERROR",
    ]);
    for job in rows {
        table.row(vec![
            job.id.to_string(),
            job.state.to_string(),
            job.source_user_id.clone(),
            job.target_user_id.clone(),
            job.priority.to_string(),
            time(Some(job.run_at), now),
            job.attempts.to_string(),
            error_cell(job.last_error.as_ref()),
        ]);
    }
    let mut out = table.render("");
    out.push('\n');
    if i64::try_from(rows.len()).is_ok_and(|n| n >= limit)
        && let Some(last) = rows.last()
    {
        let _ = writeln!(
            out,
            "showing the first {limit}; the next page: --after {}",
            last.id
        );
    }
    out
}

fn render_show(detail: &JobDetail, default_max_attempts: u32) -> String {
    let now = Utc::now();
    let job = &detail.job;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job {}: {} follows {}, {}",
        job.id, job.source_user_id, job.target_user_id, job.state
    );
    let _ = writeln!(out, "  why:        {}", detail.why);
    let max = job
        .max_attempts
        .map_or(default_max_attempts.to_string(), |m| m.to_string());
    let _ = writeln!(
        out,
        "  attempts:   {} of {max} (429 snoozes, not counted: {})",
        job.attempts, job.rate_limited_count
    );
    let _ = writeln!(out, "  priority:   {}", job.priority);
    let _ = writeln!(out, "  run_at:     {}", time(Some(job.run_at), now));
    let _ = writeln!(out, "  created:    {}", time(Some(job.created_at), now));
    let _ = writeln!(out, "  updated:    {}", time(Some(job.updated_at), now));
    let _ = writeln!(out, "  finished:   {}", time(job.finished_at, now));
    if let Some(worker) = &job.sent_by {
        let _ = writeln!(
            out,
            "  in flight:  sent by {worker}, may reach X until {}",
            time(job.answer_by, now)
        );
    }
    if job.following.is_some() {
        let _ = writeln!(
            out,
            "  outcome:    following={} pending_follow={}",
            opt(job.following),
            opt(job.pending_follow)
        );
    }
    if let Some(error) = &job.last_error {
        let _ = writeln!(out, "  last_error: {error}");
    }
    let _ = writeln!(out);
    if detail.attempts.is_empty() {
        let _ = writeln!(out, "requests: none in the ledger");
        return out;
    }
    let _ = writeln!(out, "requests ({})", detail.attempts.len());
    let mut table = Table::new(&[
        "ID",
        "SENT",
        "WORKER",
        "HTTP",
        "OUTCOME",
        "LATENCY",
        "REMAINING",
        "RESET",
        "ERROR",
    ]);
    for a in &detail.attempts {
        table.row(vec![
            a.id.to_string(),
            time(Some(a.sent_at), now),
            a.worker_id.clone(),
            opt(a.http_status),
            a.outcome.clone().unwrap_or_else(|| "in_flight".into()),
            a.latency_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            match (a.rate_limit_remaining, a.rate_limit_limit) {
                (Some(r), Some(l)) => format!("{r}/{l}"),
                (Some(r), None) => r.to_string(),
                _ => "-".to_owned(),
            },
            time(a.rate_limit_reset_at, now),
            error_cell(a.error.as_ref()),
        ]);
    }
    let _ = writeln!(out, "{}", table.render("  "));
    out
}
