//! `followq status`: prints the report of `admin::status` as text, or as JSON with `--json`.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use rust_decimal::Decimal;
use sqlx::PgPool;

use super::table::{Table, duration_secs, opt, print_json, time};
use crate::admin::status::{SpendReport, StatusReport, amount, report};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the report as JSON (for scripts) instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(pool: &PgPool, args: StatusArgs, price: Decimal) -> anyhow::Result<ExitCode> {
    let report = report(pool, price).await?;
    if args.json {
        print_json(&report)?;
    } else {
        out!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The text form. Sections with nothing to show say "none" rather than disappear, so an
/// operator can tell "no paused accounts" from "not reported".
pub fn render(report: &StatusReport) -> String {
    let now = report.generated_at;
    let q = &report.queue;
    let mut out = String::new();
    let _ = writeln!(out, "followq status at {}", time(Some(now), now));
    let _ = writeln!(out);

    let _ = writeln!(out, "Queue");
    let mut queue = Table::new(&["", "JOBS", ""]);
    let oldest = report.oldest_ready.as_ref().map_or_else(String::new, |o| {
        format!(
            "oldest: job {} of account {}, ready for {} (enqueued {} ago)",
            o.job_id,
            o.source_user_id,
            duration_secs(o.ready_for_seconds),
            duration_secs(o.age_seconds)
        )
    });
    queue.row(vec!["ready".into(), q.queued_ready.to_string(), oldest]);
    queue.row(vec![
        "scheduled".into(),
        q.queued_scheduled.to_string(),
        "run_at ahead (delay, backoff, 429 reset)".into(),
    ]);
    queue.row(vec![
        "blocked".into(),
        q.queued_blocked.to_string(),
        "account paused, needs_reauth or disabled".into(),
    ]);
    queue.row(vec!["running".into(), q.running.to_string(), String::new()]);
    let _ = writeln!(out, "{}", queue.render("  "));
    let _ = writeln!(
        out,
        "  finished in the last 24 h: {} succeeded, {} failed, {} cancelled",
        q.succeeded_last_24h, q.failed_last_24h, q.cancelled_last_24h
    );
    let _ = writeln!(out);

    let t = &report.throughput;
    let _ = writeln!(out, "Requests sent (ledger)");
    let mut requests = Table::new(&["OUTCOME", "LAST 1M", "LAST 5M", "LAST 15M", "PER MIN (15M)"]);
    let per_minute = |n: i64| format!("{:.1}", n as f64 / 15.0);
    requests.row(vec![
        "all".into(),
        t.total[0].to_string(),
        t.total[1].to_string(),
        t.total[2].to_string(),
        per_minute(t.total[2]),
    ]);
    for row in &t.by_outcome {
        requests.row(vec![
            row.outcome.clone(),
            row.counts[0].to_string(),
            row.counts[1].to_string(),
            row.counts[2].to_string(),
            per_minute(row.counts[2]),
        ]);
    }
    let _ = writeln!(out, "{}", requests.render("  "));
    let _ = writeln!(out);
    spend(&mut out, &report.spend);

    match &report.app_pause {
        None => {
            let _ = writeln!(out, "App-wide stop: none");
        }
        Some(stop) => {
            let until = match stop.paused_until {
                None => format!("until {}", stop.reason.ends_when_untimed()),
                Some(at) => format!("until {}", time(Some(at), now)),
            };
            let _ = writeln!(
                out,
                "App-wide stop: {} since {}, {until}",
                stop.reason,
                time(Some(stop.created_at), now)
            );
            if !stop.reason.meaning().is_empty() {
                let _ = writeln!(out, "  {}; {}", stop.reason.meaning(), stop.reason.remedy());
            }
        }
    }
    let _ = writeln!(out);

    section(
        &mut out,
        "Paused accounts",
        report.paused_accounts.len(),
        || {
            let mut table = Table::new(&["ACCOUNT", "UNTIL", "QUEUED", "REASON"]);
            for a in &report.paused_accounts {
                let reason = a.pause_reason.as_ref().map_or("-", |r| r.as_str());
                let meaning = a.pause_reason.as_ref().map_or("", |r| r.meaning());
                table.row(vec![
                    a.user_id.clone(),
                    time(a.paused_until, now),
                    a.queued.to_string(),
                    if meaning.is_empty() {
                        reason.to_owned()
                    } else {
                        format!("{reason} ({meaning})")
                    },
                ]);
            }
            table
        },
    );
    section(
        &mut out,
        "Accounts needing re-authorization",
        report.needs_reauth_accounts.len(),
        || {
            let mut table = Table::new(&["ACCOUNT", "SINCE", "QUEUED", "REASON"]);
            for a in &report.needs_reauth_accounts {
                table.row(vec![
                    a.user_id.clone(),
                    time(Some(a.since), now),
                    a.queued.to_string(),
                    opt(a.reason.as_deref()),
                ]);
            }
            table
        },
    );
    section(
        &mut out,
        "Disabled accounts",
        report.disabled_accounts.len(),
        || {
            let mut table = Table::new(&["ACCOUNT", "SINCE", "QUEUED"]);
            for a in &report.disabled_accounts {
                table.row(vec![
                    a.user_id.clone(),
                    time(Some(a.since), now),
                    a.queued.to_string(),
                ]);
            }
            table
        },
    );
    section(&mut out, "Live daemons", report.daemons.len(), || {
        let mut table = Table::new(&["WORKER", "STARTED", "HEARTBEAT", "ACCOUNTS", "RUNNING"]);
        for d in &report.daemons {
            table.row(vec![
                d.worker_id.clone(),
                time(d.started_at, now),
                d.heartbeat_at
                    .map_or_else(|| "(lease only)".to_owned(), |at| time(Some(at), now)),
                d.accounts_leased.to_string(),
                d.jobs_running.to_string(),
            ]);
        }
        table
    });
    out
}

fn section(out: &mut String, title: &str, count: usize, table: impl FnOnce() -> Table) {
    if count == 0 {
        let _ = writeln!(out, "{title}: none");
    } else {
        let _ = writeln!(out, "{title} ({count})");
        let _ = writeln!(out, "{}", table().render("  "));
    }
}

/// The spend at X: billed and possibly billed requests, with their cost when a price is set.
fn spend(out: &mut String, spend: &SpendReport) {
    let price = spend.price_per_request;
    let money = !price.is_zero();
    if money {
        let _ = writeln!(out, "Spend at X ({} per request)", price.normalize());
    } else {
        let _ = writeln!(out, "Spend at X (requests; billing.price_per_request is 0)");
    }
    let mut table = if money {
        Table::new(&["PERIOD", "BILLED", "COST", "POSSIBLY BILLED", "COST"])
    } else {
        Table::new(&["PERIOD", "BILLED", "POSSIBLY BILLED"])
    };
    for (name, period) in [
        ("last hour", &spend.last_hour),
        ("today (UTC)", &spend.day),
        ("this month (UTC)", &spend.month),
    ] {
        let cost = |c: Option<Decimal>| c.map_or_else(String::new, |c| amount(c, price));
        table.row(if money {
            vec![
                name.to_owned(),
                period.billed_requests.to_string(),
                cost(period.billed_cost),
                period.possibly_billed_requests.to_string(),
                cost(period.possibly_billed_cost),
            ]
        } else {
            vec![
                name.to_owned(),
                period.billed_requests.to_string(),
                period.possibly_billed_requests.to_string(),
            ]
        });
    }
    let _ = writeln!(out, "{}", table.render("  "));
    let _ = writeln!(
        out,
        "  billed: X answered 2xx; possibly billed: X may have acted and gave no final answer (5xx, none yet)"
    );
    let _ = writeln!(out);
}
