//! The leaser: finds accounts with ready jobs and leases them to this daemon, seeding each
//! one's limiter from the ledger before the scheduler may send for it.
//!
//! It wakes on `NOTIFY followq_job_enqueued` (payload: the source account) within
//! milliseconds of an insert, and polls every `worker.poll_interval` in case a notification
//! was lost (the listener's connection dropped, or the account was being given back).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Context;
use super::events::{Event, Holding};
use crate::queue::JOB_ENQUEUED_CHANNEL;
use crate::ratelimit::rolling_day::{ACCOUNT_BUCKET, DAY, account_grid_origin_ago};
use crate::ratelimit::{AccountLimiter, LedgerSeed, Quota, SeedFollows, SeedReport};
use crate::store::leases::{self, FollowGrid, LeasedAccount};

/// Accounts leased per statement on the poll path.
const LEASE_BATCH: u32 = 500;

pub async fn run(
    ctx: Arc<Context>,
    events: mpsc::UnboundedSender<Event>,
    shutdown: CancellationToken,
) {
    let mut listener = connect_listener(&ctx).await;
    // The first poll waits one interval, so that replicas started together have all
    // registered before the first of them works out its share.
    let mut poll = tokio::time::interval_at(
        tokio::time::Instant::now() + ctx.settings.worker.poll_interval,
        ctx.settings.worker.poll_interval,
    );
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = poll.tick() => {
                lease_ready_accounts(&ctx, &events, &shutdown).await;
                if listener.is_none() {
                    listener = connect_listener(&ctx).await;
                }
            }
            // Peers were found gone: their accounts are free now.
            _ = ctx.lease_now.notified() => lease_ready_accounts(&ctx, &events, &shutdown).await,
            accounts = next_notifications(&mut listener) => match accounts {
                Some(accounts) => on_enqueued(&ctx, &events, accounts, &shutdown).await,
                None => {
                    warn!("lost the NOTIFY listener; polling every {:?} until it is back", ctx.settings.worker.poll_interval);
                    listener = None;
                }
            },
        }
    }
}

async fn connect_listener(ctx: &Context) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(&ctx.pool).await {
        Ok(listener) => listener,
        Err(e) => {
            warn!(error = %e, "could not open the NOTIFY listener; polling only");
            return None;
        }
    };
    if let Err(e) = listener.listen(JOB_ENQUEUED_CHANNEL).await {
        warn!(error = %e, "could not LISTEN; polling only");
        return None;
    }
    Some(listener)
}

/// The accounts named by the next notification and any already buffered behind it.
/// `None` when the listener failed; pending forever when there is none.
async fn next_notifications(listener: &mut Option<PgListener>) -> Option<Vec<String>> {
    let Some(active) = listener.as_mut() else {
        return std::future::pending().await;
    };
    let first = active.recv().await.ok()?;
    let mut accounts: HashSet<String> = HashSet::from([first.payload().to_owned()]);
    // Drain what is already buffered, so a batch insert becomes one lease statement.
    while accounts.len() < LEASE_BATCH as usize {
        match tokio::time::timeout(Duration::ZERO, active.recv()).await {
            Ok(Ok(more)) => {
                accounts.insert(more.payload().to_owned());
            }
            Ok(Err(_)) => return None,
            Err(_) => break,
        }
    }
    Some(accounts.into_iter().collect())
}

/// Asks the scheduler which accounts it holds (see [`Event::Holding`]). `None` while it
/// stops (it answers nothing then) or once `shutdown` is cancelled.
async fn holding(
    events: &mpsc::UnboundedSender<Event>,
    enqueued: Vec<String>,
    shutdown: &CancellationToken,
) -> Option<Holding> {
    let (reply, answer) = oneshot::channel();
    events.send(Event::Holding { enqueued, reply }).ok()?;
    tokio::select! {
        _ = shutdown.cancelled() => None,
        answer = answer => answer.ok(),
    }
}

async fn on_enqueued(
    ctx: &Context,
    events: &mpsc::UnboundedSender<Event>,
    accounts: Vec<String>,
    shutdown: &CancellationToken,
) {
    // The scheduler wakes the accounts it holds; the others may be leased.
    let Some(held) = holding(events, accounts, shutdown).await else {
        return;
    };
    if held.not_held.is_empty()
        || held.count >= ctx.settings.worker.max_accounts as usize
        || fenced(ctx)
    {
        return;
    }
    match leases::acquire_named(
        &ctx.pool,
        &ctx.shards,
        &ctx.worker_id,
        &held.not_held,
        ctx.settings.worker.account_lease,
    )
    .await
    {
        Ok(leased) => hand_over(ctx, events, leased).await,
        Err(e) => warn!(error = %e, "could not lease notified accounts; the poll will retry"),
    }
}

/// Leases free accounts with ready jobs, batch after batch, up to `worker.max_accounts`.
async fn lease_ready_accounts(
    ctx: &Context,
    events: &mpsc::UnboundedSender<Event>,
    shutdown: &CancellationToken,
) {
    if fenced(ctx) {
        return;
    }
    let lease_length = ctx.settings.worker.account_lease;
    let limit = match super::registry::fair_share(&ctx.pool, &ctx.worker_id, lease_length).await {
        Ok(Some(share)) => share.min(ctx.settings.worker.max_accounts as usize),
        Ok(None) => ctx.settings.worker.max_accounts as usize,
        Err(e) => {
            warn!(error = %e, "could not work out this daemon's share of accounts");
            ctx.settings.worker.max_accounts as usize
        }
    };
    loop {
        // Asked each batch: the scheduler takes the last batch's accounts before it answers
        // (one channel, in order), so the room left counts them.
        let Some(held) = holding(events, Vec::new(), shutdown).await else {
            return;
        };
        let room = limit.saturating_sub(held.count);
        let batch = room.min(LEASE_BATCH as usize);
        if batch == 0 {
            return;
        }
        let leased = match leases::acquire(
            &ctx.pool,
            &ctx.shards,
            &ctx.worker_id,
            ctx.settings.worker.account_lease,
            batch as i64,
        )
        .await
        {
            Ok(leased) => leased,
            Err(e) => {
                warn!(error = %e, "could not lease accounts; retrying at the next poll");
                return;
            }
        };
        let full = leased.len() == batch;
        hand_over(ctx, events, leased).await;
        if !full {
            return;
        }
    }
}

/// A daemon that cannot confirm its liveness session takes no account: its peers may take
/// its accounts over at any moment, and it could not send for them anyway.
fn fenced(ctx: &Context) -> bool {
    !ctx.is_alive(Instant::now())
}

/// Builds each leased account's limiter from its quota and the ledger, then hands them to
/// the scheduler.
async fn hand_over(
    ctx: &Context,
    events: &mpsc::UnboundedSender<Event>,
    leased: Vec<LeasedAccount>,
) {
    if leased.is_empty() {
        return;
    }
    let settings = &ctx.settings.rate_limit;
    let quotas: Vec<Quota> = leased
        .iter()
        .map(|account| {
            let own = match (account.quota_requests, account.quota_period_seconds) {
                (Some(requests), Some(seconds)) => Quota::new(
                    u32::try_from(requests).unwrap_or(0),
                    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
                ),
                _ => None,
            };
            own.or_else(|| Quota::new(settings.requests_per_period, settings.period))
                .unwrap_or(Quota {
                    requests: std::num::NonZeroU32::MIN,
                    period: settings.period,
                })
        })
        .collect();
    let names: Vec<String> = leased.iter().map(|a| a.user_id.clone()).collect();
    let periods: Vec<f64> = quotas.iter().map(|q| q.period.as_secs_f64()).collect();
    let limits: Vec<i32> = quotas
        .iter()
        .map(|q| i32::try_from(q.requests.get()).unwrap_or(i32::MAX))
        .collect();
    // The ledger's follows binned on the grid of this process's daily buckets.
    let follow_grid = FollowGrid {
        origin_ago: account_grid_origin_ago(Instant::now()),
        width: ACCOUNT_BUCKET,
    };
    let rows = match leases::ledger_seeds(
        &ctx.pool,
        &names,
        &periods,
        &limits,
        ctx.answer_within(),
        follow_grid,
    )
    .await
    {
        Ok(rows) => rows,
        Err(e) => {
            // Without the ledger we cannot know what was spent: give the accounts back.
            warn!(error = %e, "could not read the ledger for newly leased accounts; releasing them");
            let _ = leases::release(
                &ctx.pool,
                &ctx.shards,
                &ctx.worker_id,
                &names,
                leases::Release::Now,
            )
            .await;
            return;
        }
    };
    let mut by_account: HashMap<String, leases::LedgerRow> = rows
        .into_iter()
        .map(|row| (row.account_user_id.clone(), row))
        .collect();
    // The seconds in the rows are relative to the database's now(), read a moment ago: taking
    // them from this later instant only moves every bound later (the safe way).
    let now = Instant::now();
    let accounts: Vec<(String, AccountLimiter)> = names
        .into_iter()
        .zip(quotas)
        .map(|(name, quota)| {
            let mut limiter = AccountLimiter::new(quota, settings.daily_follows_per_account);
            if let Some(row) = by_account.remove(&name) {
                let seed = seed_from(&row, now);
                debug!(
                    account = name,
                    recent = seed.arrivals.len(),
                    outstanding = ?seed.outstanding_until.map(|until| until.saturating_duration_since(now)),
                    "limiter seeded from the ledger"
                );
                limiter.seed(&seed, now);
            }
            (name, limiter)
        })
        .collect();
    let _ = events.send(Event::Leased(accounts));
}

/// The ledger's figures (seconds relative to the database's now) as instants of this
/// process's monotonic clock, `now` standing for the database's now.
fn seed_from(row: &leases::LedgerRow, now: Instant) -> LedgerSeed {
    let at = |seconds_ahead: f64| -> Instant {
        let magnitude = Duration::try_from_secs_f64(seconds_ahead.abs()).unwrap_or(Duration::MAX);
        if seconds_ahead >= 0.0 {
            now.checked_add(magnitude).unwrap_or(now + DAY)
        } else {
            now.checked_sub(magnitude).unwrap_or(now)
        }
    };
    let reported = match (
        row.report_limit.and_then(|v| u32::try_from(v).ok()),
        row.report_remaining.and_then(|v| u32::try_from(v).ok()),
        row.report_ends_in,
    ) {
        (Some(limit), Some(remaining), Some(ends_in)) => Some(SeedReport {
            limit,
            remaining,
            ends: at(ends_in),
            sent_since: row
                .report_sent_since
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(u32::MAX),
        }),
        _ => None,
    };
    LedgerSeed {
        arrivals: row.arrivals_ago.iter().map(|&ago| at(-ago)).collect(),
        outstanding_until: row.outstanding_for.map(at),
        reported,
        follows: row
            .follow_counts
            .iter()
            .zip(&row.follows_expire_in)
            .map(|(&count, &expire_in)| SeedFollows {
                // A count is never negative; were it unreadable, count the cap's worth.
                count: u32::try_from(count).unwrap_or(u32::MAX),
                expires: at(expire_in),
            })
            .collect(),
    }
}
