//! Budgets (`billing.daily_budget`, `billing.monthly_budget`): no replica starts a request that
//! could take a period's spend above its budget.
//!
//! A budget counts requests at `billing.price_per_request`: a daily budget of 0.30 at 0.015
//! allows 20 requests per UTC day. Every request that may be billed counts from the moment it
//! starts (billed, possibly billed, or still in the air); one whose answer proves X billed
//! nothing (a 4xx, or a request that never left) gives its place back.
//!
//! Replicas share a budget through one row per period (`followq.budget_periods`): a daemon
//! reserves a block of requests there before it starts them (one short statement per block,
//! never one per request), and starts only what it has reserved. The row starts at what the
//! period has already spent, and never goes past the budget, so the requests all replicas
//! start never do either, whatever they do at once. A daemon gives back what it did not use
//! when it stops; one that dies keeps its last block unused until the period ends (at most a
//! block, on the safe side).
//!
//! When a period's budget is reached, the app-wide stop `budget_reached` says so until the
//! period ends: every daemon has used what it reserved, and reserves nothing more. (The
//! daemons with budgets keep them by themselves, so the places a replica reserved before the
//! end still go out: exactly the budget is spent.) Raising the budget (the daemons restarted
//! with it) goes on at once: a daemon whose budget allows more ends the stop.
//!
//! [`Allowance`] is the pure bookkeeping of one period (tested as a property below); the
//! [`BudgetGate`] holds one per configured budget for the scheduler, and [`run`] is the task
//! that reserves blocks ahead of need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Context;
use super::decision::{first_of_next_month, next_utc_midnight};
use super::events::Event;
use crate::config::BillingSettings;
use crate::states::AppStopReason;
use crate::store::billing::{self, BudgetPeriod};
use crate::store::pauses;

/// The largest block a daemon reserves at once: one statement per this many requests at
/// full speed, and at most this many reserved and unused by a daemon that dies (a block is
/// also at most 0.5 % of the budget). At 64, a daemon sending 3,000 requests a second ran
/// out between two reservations: its claims shrank and its transactions per job tripled.
/// 1,024 lasts a third of a second at that pace, and the next block is reserved at half.
const BLOCK_MAX: i64 = 1024;

/// How often the reserving task looks, besides being woken when an allowance runs low.
const EVERY: Duration = Duration::from_secs(1);

/// The first instant of the period that holds `now`.
pub fn period_start(period: BudgetPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let day = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |midnight| midnight.and_utc());
    match period {
        BudgetPeriod::Day => day,
        BudgetPeriod::Month => now
            .date_naive()
            .with_day0(0)
            .and_then(|first| first.and_hms_opt(0, 0, 0))
            .map_or(day, |first| first.and_utc()),
    }
}

/// The first instant after the period that holds `now`.
pub fn period_end(period: BudgetPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    match period {
        BudgetPeriod::Day => next_utc_midnight(now),
        BudgetPeriod::Month => first_of_next_month(now),
    }
}

/// What one daemon may still start of one period's budget: the requests it reserved and has
/// not started (or got back). Reservations belong to their period: at a new period nothing is
/// left until the daemon reserves again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowance {
    starts_at: Option<DateTime<Utc>>,
    left: i64,
}

impl Allowance {
    /// Moves to the period starting at `starts_at` (what was left of another is gone).
    fn align(&mut self, starts_at: DateTime<Utc>) {
        if self.starts_at != Some(starts_at) {
            *self = Allowance {
                starts_at: Some(starts_at),
                left: 0,
            };
        }
    }

    /// Whether a request of the period starting at `starts_at` may start.
    pub fn has_left(&self, starts_at: DateTime<Utc>) -> bool {
        self.starts_at == Some(starts_at) && self.left > 0
    }

    /// Starts one request of the period; false when nothing is left.
    pub fn take(&mut self, starts_at: DateTime<Utc>) -> bool {
        self.align(starts_at);
        if self.left <= 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    /// A request taken in the period starting at `taken_in` proved unbilled: its place comes
    /// back, if that period is still this allowance's.
    pub fn give_back(&mut self, taken_in: DateTime<Utc>) {
        if self.starts_at == Some(taken_in) {
            self.left += 1;
        }
    }

    /// Adds `granted` requests reserved of the period starting at `starts_at`.
    pub fn add(&mut self, starts_at: DateTime<Utc>, granted: i64) {
        self.align(starts_at);
        self.left = self.left.saturating_add(granted.max(0));
    }

    /// What is left of the period starting at `starts_at` (0 for another).
    pub fn left(&self, starts_at: DateTime<Utc>) -> i64 {
        if self.starts_at == Some(starts_at) {
            self.left
        } else {
            0
        }
    }
}

/// One configured budget: its period and the requests it allows.
#[derive(Debug, Clone, Copy)]
struct Budget {
    period: BudgetPeriod,
    allowed: i64,
    /// Requests reserved at once.
    block: i64,
}

impl Budget {
    /// Below this many requests left, the next block is reserved ahead of need.
    fn low_water(&self) -> i64 {
        (self.block + 1) / 2
    }
}

/// What one round of reservations did.
#[derive(Debug, Default)]
struct Round {
    /// Some budget granted a block.
    granted: bool,
    /// The first period whose budget is reached: nothing granted and nothing left.
    reached: Option<BudgetPeriod>,
}

/// The periods of the requests a turn started (its place in each budget), for giving it back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    taken_in: [Option<DateTime<Utc>>; 2],
}

/// The budgets' allowances of this daemon, shared by the scheduler (which takes one place per
/// request) and the reserving task.
pub struct BudgetGate {
    budgets: Vec<Budget>,
    allowances: Mutex<[Allowance; 2]>,
    /// Wakes the reserving task: an allowance ran low.
    wanted: Notify,
    /// The app monitor saw a `budget_reached` stop in force (written by any replica).
    stop_seen: AtomicBool,
}

impl BudgetGate {
    pub fn new(billing: &BillingSettings) -> BudgetGate {
        let budgets = [
            (BudgetPeriod::Day, billing.daily_budget),
            (BudgetPeriod::Month, billing.monthly_budget),
        ]
        .into_iter()
        .filter_map(|(period, budget)| {
            let allowed = billing.requests_within(budget?);
            Some(Budget {
                period,
                allowed,
                block: (allowed / 200).clamp(1, BLOCK_MAX),
            })
        })
        .collect();
        BudgetGate {
            budgets,
            allowances: Mutex::new([Allowance::default(); 2]),
            wanted: Notify::new(),
            stop_seen: AtomicBool::new(false),
        }
    }

    /// The app monitor's word on whether a `budget_reached` stop is in force: the reserving
    /// task ends it once its budget grants more.
    pub fn saw_budget_stop(&self, in_force: bool) {
        self.stop_seen.store(in_force, Ordering::Relaxed);
    }

    /// Whether any budget is configured (without one, every request may start).
    pub fn is_on(&self) -> bool {
        !self.budgets.is_empty()
    }

    /// Starts one request in every budget, or none: `None` when a budget has nothing left
    /// (the reserving task is woken to reserve more).
    pub fn take(&self, now: DateTime<Utc>) -> Option<Ticket> {
        if self.budgets.is_empty() {
            return Some(Ticket::default());
        }
        let Ok(mut allowances) = self.allowances.lock() else {
            return None;
        };
        let mut ticket = Ticket::default();
        let all_left = self
            .budgets
            .iter()
            .enumerate()
            .all(|(i, budget)| allowances[i].has_left(period_start(budget.period, now)));
        if all_left {
            for (i, budget) in self.budgets.iter().enumerate() {
                let starts_at = period_start(budget.period, now);
                allowances[i].take(starts_at);
                ticket.taken_in[i] = Some(starts_at);
            }
        }
        let low = self.budgets.iter().enumerate().any(|(i, budget)| {
            allowances[i].left(period_start(budget.period, now)) < budget.low_water()
        });
        drop(allowances);
        if low {
            self.wanted.notify_one();
        }
        all_left.then_some(ticket)
    }

    /// A request that proved unbilled (a 4xx, or never sent) gives its places back.
    pub fn give_back(&self, ticket: Ticket) {
        if let Ok(mut allowances) = self.allowances.lock() {
            for (i, taken_in) in ticket.taken_in.iter().enumerate() {
                if let Some(taken_in) = taken_in {
                    allowances[i].give_back(*taken_in);
                }
            }
        }
    }

    /// Reserves, for every budget running low, a block of its current period.
    async fn reserve(&self, ctx: &Context, now: DateTime<Utc>) -> Result<Round, sqlx::Error> {
        let mut round = Round::default();
        for (i, budget) in self.budgets.iter().enumerate() {
            let starts_at = period_start(budget.period, now);
            let left = self.left(i, starts_at);
            if left >= budget.low_water() {
                continue;
            }
            // Cheap and idempotent: the row of a period is made once, by whoever comes first.
            billing::open_period(&ctx.pool, budget.period, starts_at).await?;
            let granted = billing::reserve(
                &ctx.pool,
                budget.period,
                starts_at,
                budget.block,
                budget.allowed,
            )
            .await?;
            if let Ok(mut allowances) = self.allowances.lock() {
                allowances[i].add(starts_at, granted);
            }
            round.granted |= granted > 0;
            if granted == 0 && left == 0 && round.reached.is_none() {
                round.reached = Some(budget.period);
            }
        }
        Ok(round)
    }

    fn left(&self, i: usize, starts_at: DateTime<Utc>) -> i64 {
        self.allowances
            .lock()
            .map_or(0, |allowances| allowances[i].left(starts_at))
    }

    /// Gives back what this daemon reserved and did not start (it stops).
    async fn give_back_unused(&self, ctx: &Context, now: DateTime<Utc>) {
        for (i, budget) in self.budgets.iter().enumerate() {
            let starts_at = period_start(budget.period, now);
            let unused = self
                .allowances
                .lock()
                .map_or(0, |mut allowances| std::mem::take(&mut allowances[i].left));
            if unused > 0
                && let Err(e) =
                    billing::give_back(&ctx.pool, budget.period, starts_at, unused).await
            {
                warn!(error = %e, period = budget.period.as_str(), unused, "could not give back the unused part of the budget; it is lost for this period");
            }
        }
    }
}

/// Reserves blocks of the budgets ahead of need, until `shutdown`; writes the app-wide stop
/// when a budget is reached, and ends it when this daemon's budget allows more again (it was
/// raised). Gives back what is unused when it stops.
pub async fn run(
    ctx: Arc<Context>,
    events: mpsc::UnboundedSender<Event>,
    shutdown: CancellationToken,
) {
    let gate = &ctx.budget;
    if !gate.is_on() {
        return;
    }
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reached: Option<BudgetPeriod> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = gate.wanted.notified() => {}
        }
        let now = Utc::now();
        match gate.reserve(&ctx, now).await {
            Ok(Round {
                reached: Some(period),
                ..
            }) => {
                if reached != Some(period) {
                    stop_for_budget(&ctx, period, now).await;
                    reached = Some(period);
                }
            }
            Ok(Round { granted, .. }) => {
                if granted {
                    let _ = events.send(Event::BudgetReserved);
                    // The budget allows more (a new period, or it was raised): a stop for it
                    // (this daemon's, or one written before this daemon started) ends.
                    if reached.take().is_some() || gate.stop_seen.load(Ordering::Relaxed) {
                        end_budget_stop(&ctx).await;
                    }
                }
            }
            Err(e) => warn!(error = %e, "could not reserve part of the budget; retrying"),
        }
    }
    gate.give_back_unused(&ctx, Utc::now()).await;
}

/// The budget of `period` is reached: every account stops until the period ends.
async fn stop_for_budget(ctx: &Context, period: BudgetPeriod, now: DateTime<Utc>) {
    let until = period_end(period, now);
    if let Err(e) = pauses::pause_app(
        &ctx.pool,
        &AppStopReason::BudgetReached,
        Some(&serde_json::json!({"period": period.as_str()})),
        Some(until),
        None,
    )
    .await
    {
        error!(error = %e, "could not write the budget_reached stop; this daemon starts nothing meanwhile");
    }
    error!(
        period = period.as_str(),
        until = %until,
        "the budget is reached: every account stops until the period ends (raise it and `followq app resume` to go on sooner)"
    );
    ctx.app_check.notify_one();
}

/// This daemon's budget allows more (raised, or a new period): a `budget_reached` stop, if
/// one is in force, ends.
async fn end_budget_stop(ctx: &Context) {
    match pauses::end_app_stop(&ctx.pool, Some(&AppStopReason::BudgetReached)).await {
        Ok(Some(_)) => {
            info!("the budget allows more again: the budget_reached stop ends");
            ctx.app_check.notify_one();
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "could not end the budget_reached stop"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("a time")
            .with_timezone(&Utc)
    }

    #[test]
    fn periods_are_the_utc_day_and_the_calendar_month() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(
            period_start(BudgetPeriod::Day, now),
            at("2026-12-31T00:00:00Z")
        );
        assert_eq!(
            period_end(BudgetPeriod::Day, now),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            period_start(BudgetPeriod::Month, now),
            at("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            period_end(BudgetPeriod::Month, now),
            at("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn an_allowance_belongs_to_its_period() {
        let day1 = at("2026-12-05T00:00:00Z");
        let day2 = at("2026-12-06T00:00:00Z");
        let mut allowance = Allowance::default();
        allowance.add(day1, 2);
        assert!(allowance.take(day1));
        // A new day: what was left of the last one is gone, and a place given back for it
        // does not count in the new one.
        assert!(!allowance.take(day2));
        allowance.give_back(day1);
        assert_eq!(allowance.left(day2), 0);
    }

    /// What happens to one request once started.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Ok2xx,
        Server5xx,
        Timeout,
        TooMany429,
        NeverSent,
    }

    fn answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            Just(Answer::Ok2xx),
            Just(Answer::Server5xx),
            Just(Answer::Timeout),
            Just(Answer::TooMany429),
            Just(Answer::NeverSent),
        ]
    }

    /// One step of several daemons sharing a budget row: a daemon reserves a block, starts
    /// a request, or an answer comes back.
    #[derive(Debug, Clone)]
    enum Step {
        Reserve { daemon: usize, want: i64 },
        Start { daemon: usize },
        Answer { daemon: usize, answer: Answer },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, 1..8i64).prop_map(|(daemon, want)| Step::Reserve { daemon, want }),
            (0..3usize).prop_map(|daemon| Step::Start { daemon }),
            (0..3usize, answer()).prop_map(|(daemon, answer)| Step::Answer { daemon, answer }),
        ]
    }

    proptest! {
        /// For any interleaving of reservations, starts and answers (2xx, 5xx, timeouts,
        /// 429s, requests never sent) across three daemons, the requests that may be billed
        /// (started and not proved unbilled) never exceed what the budget allows, and the row
        /// never reserves more than it.
        #[test]
        fn requests_started_never_exceed_the_budget(
            allowed in 0..40i64,
            spent_before in 0..50i64,
            steps in proptest::collection::vec(step(), 0..200),
        ) {
            let day = at("2026-12-05T00:00:00Z");
            // The row, as store::billing::open_period and reserve keep it: it starts at what
            // the period spent before (which may already be over the budget).
            let mut reserved = spent_before;
            let left_at_start = (allowed - spent_before).max(0);
            let mut allowances = [Allowance::default(); 3];
            let mut in_flight = [0u32; 3];
            // Requests started that may be billed: not (yet) proved unbilled.
            let mut may_be_billed = 0i64;
            for step in steps {
                match step {
                    Step::Reserve { daemon, want } => {
                        let granted = want.min((allowed - reserved).max(0));
                        reserved += granted;
                        allowances[daemon].add(day, granted);
                    }
                    Step::Start { daemon } => {
                        if allowances[daemon].take(day) {
                            in_flight[daemon] += 1;
                            may_be_billed += 1;
                        }
                    }
                    Step::Answer { daemon, answer } => {
                        if in_flight[daemon] > 0 {
                            in_flight[daemon] -= 1;
                            if matches!(answer, Answer::TooMany429 | Answer::NeverSent) {
                                allowances[daemon].give_back(day);
                                may_be_billed -= 1;
                            }
                        }
                    }
                }
                prop_assert!(
                    may_be_billed <= left_at_start,
                    "{may_be_billed} requests may be billed, {left_at_start} were left"
                );
            }
        }
    }
}
