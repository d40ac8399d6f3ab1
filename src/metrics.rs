//! The daemon's Prometheus metrics: one typed registry per daemon (not a process-global
//! recorder, so several daemons in one test process keep their own figures), the handles the
//! worker records into, and the text exposition `/metrics` serves.
//!
//! Counters and histograms are recorded where things happen (`worker/turn.rs`, `worker/record.rs`,
//! `worker/scheduler.rs`, `worker/retention.rs`); the gauges (queue depth, paused accounts,
//! accounts held, the app-wide stop) are set from the database when `/metrics` is scraped,
//! see `http.rs`.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `followq_job_outcomes_total` | counter | `outcome`: succeeded, failed, requeued |
//! | `followq_follows_pending_total` | counter | (succeeded jobs whose follow awaits approval) |
//! | `followq_requests_total` | counter | `status_class`: 2xx, 3xx, 4xx, 5xx, none (no answer) |
//! | `followq_rate_limited_total` | counter | (429 answers) |
//! | `followq_request_duration_seconds` | histogram | |
//! | `followq_token_wait_seconds` | histogram | |
//! | `followq_retention_deleted_total` | counter | `table`: follow_jobs, attempts |
//! | `followq_task_panics_total` | counter | `task`: the daemon task that panicked and was recovered |
//! | `followq_send_deadline_missed_total` | counter | (claimed requests not sent: their send deadline passed) |
//! | `followq_daemons_reaped_total` | counter | (peers found gone and taken over by this daemon) |
//! | `followq_jobs_claimed_total` | counter | `how`: claim_statement (a claim of its own), with_record (in the statement that recorded the outcome of the request before it) |
//! | `followq_queue_jobs` | gauge | `state`: queued, running |
//! | `followq_accounts_paused` | gauge | `reason` |
//! | `followq_accounts_held` | gauge | |
//! | `followq_app_stopped` | gauge | (1 while an app-wide stop is in force) |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::store::record::NextState;

/// The `Content-Type` of [`Metrics::encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Pause reasons exported as their own `reason` label value; any other reason an operator
/// wrote is counted as `other`, so the label's values stay a small fixed set.
pub const PAUSE_REASONS: &[&str] = &[
    "rate_limit_window",
    "rate_limited",
    "daily_cap",
    "usage_capped",
    "user_24h_limit",
    "operator",
    "needs_reauth",
    "disabled",
    "other",
];

/// App-wide stop reasons exported as their own `reason` label of `followq_app_stop_info`; a
/// reason written by hand is `other`.
pub const APP_STOP_REASONS: &[&str] = &[
    "app_forbidden",
    "usage_capped",
    "app_24h_limit",
    "app_daily_cap",
    "credits_depleted",
    "budget_reached",
    "other",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpendLabels {
    period: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeriodLabels {
    period: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusClassLabels {
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

struct Inner {
    /// Registered once in [`Metrics::new`] and never changed, so encoding needs no lock.
    registry: Registry,
    job_outcomes: Family<OutcomeLabels, Counter>,
    follows_pending: Counter,
    requests: Family<StatusClassLabels, Counter>,
    rate_limited: Counter,
    request_duration: Histogram,
    token_wait: Histogram,
    retention_deleted: Family<TableLabels, Counter>,
    task_panics: Family<TaskLabels, Counter>,
    send_deadline_missed: Counter,
    daemons_reaped: Counter,
    jobs_claimed: Family<ClaimLabels, Counter>,
    queue_jobs: Family<StateLabels, Gauge>,
    accounts_paused: Family<ReasonLabels, Gauge>,
    accounts_held: Gauge,
    app_stopped: Gauge,
    app_stop_info: Family<ReasonLabels, Gauge>,
    oldest_ready_job_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    outcomes_waiting: Gauge,
    requests_billed: Counter,
    requests_possibly_billed: Counter,
    price_per_request: Gauge<f64, std::sync::atomic::AtomicU64>,
    spend_requests: Family<SpendLabels, Gauge>,
    budget_requests: Family<PeriodLabels, Gauge>,
}

/// The daemon's metrics. Cheap to clone: every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("followq");
        let job_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "job_outcomes",
            "Jobs whose next state was recorded after a turn: succeeded, failed, or requeued (retry, 429 snooze, no usable token)",
            job_outcomes.clone(),
        );
        let follows_pending = Counter::default();
        registry.register(
            "follows_pending",
            "Succeeded jobs whose follow awaits the target's approval (protected accounts)",
            follows_pending.clone(),
        );
        let requests = Family::<StatusClassLabels, Counter>::default();
        registry.register(
            "requests",
            "Follow requests sent to X, by HTTP status class (none: no answer arrived)",
            requests.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Follow requests X answered with 429 (window spent or usage cap)",
            rate_limited.clone(),
        );
        // 5 ms to about 20 s: the request timeout's range.
        let request_duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register_with_unit(
            "request_duration",
            "Time from sending a follow request to its answer (or its failure)",
            Unit::Seconds,
            request_duration.clone(),
        );
        // 10 ms to about 45 minutes: a spent 15-minute window, or a daily cap's first hours.
        let token_wait = Histogram::new(exponential_buckets(0.01, 4.0, 10));
        registry.register_with_unit(
            "token_wait",
            "Time an account with work waited for its rate limiter before a turn (0 when it did not wait)",
            Unit::Seconds,
            token_wait.clone(),
        );
        let retention_deleted = Family::<TableLabels, Counter>::default();
        registry.register(
            "retention_deleted",
            "Rows deleted by retention, by table",
            retention_deleted.clone(),
        );
        let task_panics = Family::<TaskLabels, Counter>::default();
        registry.register(
            "task_panics",
            "Daemon tasks that panicked; each was logged with its cause and recovered from",
            task_panics.clone(),
        );
        let send_deadline_missed = Counter::default();
        registry.register(
            "send_deadline_missed",
            "Claimed requests never sent because worker.send_deadline passed first (the job went back to the queue)",
            send_deadline_missed.clone(),
        );
        let daemons_reaped = Counter::default();
        registry.register(
            "daemons_reaped",
            "Peer daemons this daemon found gone (their liveness session ended) and whose accounts and jobs it freed",
            daemons_reaped.clone(),
        );
        let jobs_claimed = Family::<ClaimLabels, Counter>::default();
        registry.register(
            "jobs_claimed",
            "Jobs claimed, by how: a claim statement of its own, or with the record of the request before it",
            jobs_claimed.clone(),
        );
        let queue_jobs = Family::<StateLabels, Gauge>::default();
        registry.register(
            "queue_jobs",
            "Jobs in the queue by state, read from the database at scrape time (the same on every replica)",
            queue_jobs.clone(),
        );
        let accounts_paused = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "accounts_paused",
            "Accounts that cannot send now, by reason (pause reason, needs_reauth, disabled), read at scrape time",
            accounts_paused.clone(),
        );
        let accounts_held = Gauge::default();
        registry.register(
            "accounts_held",
            "Accounts this daemon holds a lease on, read at scrape time",
            accounts_held.clone(),
        );
        let app_stopped = Gauge::default();
        registry.register(
            "app_stopped",
            "1 while an app-wide stop (followq.app_pause) is in force, read at scrape time",
            app_stopped.clone(),
        );
        let app_stop_info = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "app_stop_info",
            "1 for the reason of the app-wide stop in force (followq.app_pause), 0 for the others, read at scrape time",
            app_stop_info.clone(),
        );
        let oldest_ready_job_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "oldest_ready_job_age",
            "How long the oldest job that is due, of an account that may send, has been ready (0 when none), read at scrape time",
            Unit::Seconds,
            oldest_ready_job_age.clone(),
        );
        let requests_billed = Counter::default();
        registry.register(
            "requests_billed",
            "Requests X billed: answered 2xx (pay-per-use); multiply by followq_price_per_request for the money",
            requests_billed.clone(),
        );
        let requests_possibly_billed = Counter::default();
        registry.register(
            "requests_possibly_billed",
            "Requests X may have billed without a 2xx: it may have acted and answered 5xx, or no answer came",
            requests_possibly_billed.clone(),
        );
        let price_per_request = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "price_per_request",
            "X's price of one request (billing.price_per_request), in the app's currency; 0 when not set",
            price_per_request.clone(),
        );
        let spend_requests = Family::<SpendLabels, Gauge>::default();
        registry.register(
            "spend_requests",
            "Requests of the UTC day and the calendar month that X billed (kind billed) or may have billed (kind possibly_billed), read from the database at scrape time (the same on every replica)",
            spend_requests.clone(),
        );
        let budget_requests = Family::<PeriodLabels, Gauge>::default();
        registry.register(
            "budget_requests",
            "Requests billing.daily_budget (period day) and monthly_budget (period month) allow at billing.price_per_request; 0 without a budget",
            budget_requests.clone(),
        );
        let outcomes_waiting = Gauge::default();
        registry.register(
            "outcomes_waiting",
            "Answers from X this daemon holds because they could not be written to the database yet (their accounts send nothing meanwhile)",
            outcomes_waiting.clone(),
        );

        // Every label value from the start, so dashboards see zeros rather than gaps.
        for outcome in ["succeeded", "failed", "requeued"] {
            let _ = job_outcomes.get_or_create(&OutcomeLabels { outcome });
        }
        for status_class in STATUS_CLASSES {
            let _ = requests.get_or_create(&StatusClassLabels { status_class });
        }
        for table in ["follow_jobs", "attempts"] {
            let _ = retention_deleted.get_or_create(&TableLabels { table });
        }
        for reason in PAUSE_REASONS {
            let _ = accounts_paused.get_or_create(&ReasonLabels { reason });
        }
        for period in ["day", "month"] {
            let _ = budget_requests.get_or_create(&PeriodLabels { period });
            for kind in ["billed", "possibly_billed"] {
                let _ = spend_requests.get_or_create(&SpendLabels { period, kind });
            }
        }
        for reason in APP_STOP_REASONS {
            let _ = app_stop_info.get_or_create(&ReasonLabels { reason });
        }

        Metrics {
            inner: Arc::new(Inner {
                registry,
                job_outcomes,
                follows_pending,
                requests,
                rate_limited,
                request_duration,
                token_wait,
                retention_deleted,
                task_panics,
                send_deadline_missed,
                daemons_reaped,
                jobs_claimed,
                queue_jobs,
                accounts_paused,
                accounts_held,
                app_stopped,
                app_stop_info,
                oldest_ready_job_age,
                outcomes_waiting,
                requests_billed,
                requests_possibly_billed,
                price_per_request,
                spend_requests,
                budget_requests,
            }),
        }
    }

    /// A job's next state was recorded.
    pub fn job_recorded(&self, next: &NextState) {
        let outcome = match next {
            NextState::Succeeded { pending_follow, .. } => {
                if *pending_follow {
                    self.inner.follows_pending.inc();
                }
                "succeeded"
            }
            NextState::Failed => "failed",
            NextState::Queued { .. } => "requeued",
        };
        self.inner
            .job_outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A follow request got its answer (`status`), or none, after `latency`.
    pub fn request_sent(&self, status: Option<u16>, latency: Duration) {
        let status_class = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            // No answer, or a status outside HTTP's classes: either way not a real answer.
            _ => "none",
        };
        self.inner
            .requests
            .get_or_create(&StatusClassLabels { status_class })
            .inc();
        if status == Some(429) {
            self.inner.rate_limited.inc();
        }
        self.inner.request_duration.observe(latency.as_secs_f64());
    }

    /// An account's limiter let it go after it waited `waited` (zero: it did not wait).
    pub fn token_wait(&self, waited: Duration) {
        self.inner.token_wait.observe(waited.as_secs_f64());
    }

    /// A daemon task panicked (and was recovered from).
    pub fn task_panicked(&self, task: &'static str) {
        self.inner
            .task_panics
            .get_or_create(&TaskLabels { task })
            .inc();
    }

    /// `n` jobs claimed by a claim statement of their own.
    pub fn claimed_alone(&self, n: u64) {
        self.inner
            .jobs_claimed
            .get_or_create(&ClaimLabels {
                how: "claim_statement",
            })
            .inc_by(n);
    }

    /// A job claimed in the statement that recorded the outcome of the request before it.
    pub fn claimed_with_record(&self) {
        self.inner
            .jobs_claimed
            .get_or_create(&ClaimLabels { how: "with_record" })
            .inc();
    }

    /// A claimed request was not sent: its send deadline passed first.
    pub fn send_deadline_missed(&self) {
        self.inner.send_deadline_missed.inc();
    }

    /// Peers found gone and taken over.
    pub fn daemons_reaped(&self, n: u64) {
        self.inner.daemons_reaped.inc_by(n);
    }

    /// Retention deleted `rows` rows of `table` (`follow_jobs` or `attempts`).
    pub fn retention_deleted(&self, table: &'static str, rows: u64) {
        self.inner
            .retention_deleted
            .get_or_create(&TableLabels { table })
            .inc_by(rows);
    }

    /// The queue's depth.
    pub fn set_queue_depth(&self, queued: i64, running: i64) {
        let family = &self.inner.queue_jobs;
        family
            .get_or_create(&StateLabels { state: "queued" })
            .set(queued);
        family
            .get_or_create(&StateLabels { state: "running" })
            .set(running);
    }

    /// Paused accounts by reason; reasons not listed are set to 0. `reason` must be one of
    /// [`PAUSE_REASONS`] (anything else is counted as `other`).
    pub fn set_paused_accounts<'a>(&self, counts: impl IntoIterator<Item = (&'a str, i64)>) {
        let mut values = vec![0i64; PAUSE_REASONS.len()];
        let other = PAUSE_REASONS.len() - 1;
        for (reason, count) in counts {
            let index = PAUSE_REASONS
                .iter()
                .position(|known| *known == reason)
                .unwrap_or(other);
            values[index] += count;
        }
        for (reason, value) in PAUSE_REASONS.iter().zip(values) {
            self.inner
                .accounts_paused
                .get_or_create(&ReasonLabels { reason })
                .set(value);
        }
    }

    pub fn set_accounts_held(&self, held: i64) {
        self.inner.accounts_held.set(held);
    }

    /// The app-wide stop in force (its reason), or none: `followq_app_stopped` and
    /// `followq_app_stop_info{reason}`.
    pub fn set_app_stop(&self, reason: Option<&str>) {
        self.inner.app_stopped.set(i64::from(reason.is_some()));
        let other = APP_STOP_REASONS.len() - 1;
        let current = reason.map(|reason| {
            APP_STOP_REASONS
                .iter()
                .position(|known| *known == reason)
                .unwrap_or(other)
        });
        for (index, reason) in APP_STOP_REASONS.iter().enumerate() {
            self.inner
                .app_stop_info
                .get_or_create(&ReasonLabels { reason })
                .set(i64::from(current == Some(index)));
        }
    }

    /// How long the oldest ready job has waited (`None`: no job is ready).
    pub fn set_oldest_ready_job_age(&self, age: Option<Duration>) {
        self.inner
            .oldest_ready_job_age
            .set(age.map_or(0.0, |age| age.as_secs_f64()));
    }

    /// A request's answer as X bills it: billed (2xx), possibly billed (X may have acted, no
    /// 2xx), or neither (a 4xx, or the request never left).
    pub fn request_billed(&self, billed: bool, possibly: bool) {
        if billed {
            self.inner.requests_billed.inc();
        } else if possibly {
            self.inner.requests_possibly_billed.inc();
        }
    }

    /// X's price of one request, for dashboards that turn the request counters into money.
    pub fn set_price_per_request(&self, price: f64) {
        self.inner.price_per_request.set(price);
    }

    /// The requests of the UTC day and the calendar month billed and possibly billed.
    pub fn set_spend(&self, day: (i64, i64), month: (i64, i64)) {
        for (period, (billed, possibly)) in [("day", day), ("month", month)] {
            for (kind, value) in [("billed", billed), ("possibly_billed", possibly)] {
                self.inner
                    .spend_requests
                    .get_or_create(&SpendLabels { period, kind })
                    .set(value);
            }
        }
    }

    /// The requests each budget allows (0: no budget for that period).
    pub fn set_budgets(&self, day: Option<i64>, month: Option<i64>) {
        for (period, allowed) in [("day", day), ("month", month)] {
            self.inner
                .budget_requests
                .get_or_create(&PeriodLabels { period })
                .set(allowed.unwrap_or(0));
        }
    }

    /// Answers from X waiting to be written (see `worker::completer`).
    pub fn set_outcomes_waiting(&self, waiting: i64) {
        self.inner.outcomes_waiting.set(waiting);
    }

    pub fn outcomes_waiting(&self) -> i64 {
        self.inner.outcomes_waiting.get()
    }

    /// What the counters have counted so far, for the summary line (which reports the same
    /// figures as `/metrics`, read from the same handles).
    pub fn tally(&self) -> Tally {
        let outcome = |outcome| {
            self.inner
                .job_outcomes
                .get_or_create(&OutcomeLabels { outcome })
                .get()
        };
        Tally {
            sent: STATUS_CLASSES
                .iter()
                .map(|&status_class| {
                    self.inner
                        .requests
                        .get_or_create(&StatusClassLabels { status_class })
                        .get()
                })
                .sum(),
            succeeded: outcome("succeeded"),
            pending: self.inner.follows_pending.get(),
            failed: outcome("failed"),
            rate_limited: self.inner.rate_limited.get(),
            requeued: outcome("requeued"),
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }
}

/// The values of `followq_requests_total`'s `status_class` label.
const STATUS_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "none"];

/// The counters' values at one instant (see [`Metrics::tally`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests sent to X (answered or not).
    pub sent: u64,
    pub succeeded: u64,
    /// Succeeded with `pending_follow: true` (protected targets).
    pub pending: u64,
    pub failed: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Jobs put back in the queue (retry, snooze, pause).
    pub requeued: u64,
}

impl Tally {
    /// What was counted between `earlier` and `self`.
    pub fn since(self, earlier: Tally) -> Tally {
        Tally {
            sent: self.sent.saturating_sub(earlier.sent),
            succeeded: self.succeeded.saturating_sub(earlier.succeeded),
            pending: self.pending.saturating_sub(earlier.pending),
            failed: self.failed.saturating_sub(earlier.failed),
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            requeued: self.requeued.saturating_sub(earlier.requeued),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_show_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.job_recorded(&NextState::Succeeded {
            following: true,
            pending_follow: true,
        });
        metrics.job_recorded(&NextState::Failed);
        metrics.request_sent(Some(429), Duration::from_millis(30));
        metrics.request_sent(None, Duration::from_secs(2));
        metrics.set_paused_accounts([("daily_cap", 2), ("something an operator wrote", 1)]);
        let text = metrics.encode().expect("encodes");
        for line in [
            "followq_job_outcomes_total{outcome=\"succeeded\"} 1",
            "followq_job_outcomes_total{outcome=\"failed\"} 1",
            "followq_job_outcomes_total{outcome=\"requeued\"} 0",
            "followq_follows_pending_total 1",
            "followq_requests_total{status_class=\"4xx\"} 1",
            "followq_requests_total{status_class=\"none\"} 1",
            "followq_rate_limited_total 1",
            "followq_request_duration_seconds_count 2",
            "followq_accounts_paused{reason=\"daily_cap\"} 2",
            "followq_accounts_paused{reason=\"other\"} 1",
            "followq_accounts_paused{reason=\"operator\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    #[test]
    fn the_tally_reads_what_the_exposition_shows() {
        let metrics = Metrics::new();
        let before = metrics.tally();
        metrics.request_sent(Some(200), Duration::from_millis(30));
        metrics.request_sent(Some(429), Duration::from_millis(30));
        metrics.request_sent(None, Duration::from_secs(2));
        metrics.job_recorded(&NextState::Succeeded {
            following: false,
            pending_follow: true,
        });
        metrics.job_recorded(&NextState::Queued {
            run_at: chrono::Utc::now(),
            refund_attempt: false,
            rate_limited: true,
        });
        assert_eq!(
            metrics.tally().since(before),
            Tally {
                sent: 3,
                succeeded: 1,
                pending: 1,
                failed: 0,
                rate_limited: 1,
                requeued: 1,
            }
        );
    }
}
