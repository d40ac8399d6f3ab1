//! Typed settings, loaded in layers (later wins):
//!
//! 1. `config/default.toml`, compiled into the binary, then the file on disk if present;
//! 2. `config/<FOLLOWQ_ENV>.toml` when `FOLLOWQ_ENV` is set (it must exist);
//! 3. `DATABASE_URL` for `database.url`;
//! 4. `FOLLOWQ_<SECTION>__<KEY>` environment variables.
//!
//! `config/default.toml` documents every key. A bad value or an unknown key stops start-up
//! with one message naming the key and what is wrong ([`ConfigError`]).
//!
//! Also the one set of fast timings for a daemon pointed at a local simulator
//! ([`Settings::for_local_simulator`]), from which the tests, the demo and the bench start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use secrecy::SecretString;
use serde::Deserialize;

/// The documented defaults, built in so the binary runs without the file beside it.
const BUILT_IN_DEFAULTS: &str = include_str!("../config/default.toml");

/// Environment variables under the `FOLLOWQ_` prefix that are not settings.
/// (`FOLLOWQ_ENV` picks the file layer; the others carry tokens for `accounts add`.)
const NON_SETTING_VARIABLES: &[&str] = &[
    "env",
    "config_dir",
    "oauth2_access_token",
    "oauth2_refresh_token",
    "oauth2_expires_in",
    "oauth1_token",
    "oauth1_token_secret",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("configuration: FOLLOWQ_ENV={env} but {} does not exist", path.display())]
    MissingEnvironmentFile { env: String, path: PathBuf },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub x_api: XApiSettings,
    pub rate_limit: RateLimitSettings,
    pub worker: WorkerSettings,
    pub retry: RetrySettings,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub retention: RetentionSettings,
    pub telemetry: TelemetrySettings,
    pub billing: BillingSettings,
    #[serde(default)]
    pub credentials: CredentialsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XApiSettings {
    pub base_url: String,
    /// Allows an `http://` base URL to a host other than loopback (bearer tokens then cross
    /// the network in clear). Off: such a URL stops start-up.
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub oauth2: OAuth2AppSettings,
    pub oauth1: OAuth1AppSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2AppSettings {
    pub client_id: String,
    /// Present only for a confidential client.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    #[serde(with = "humantime_serde")]
    pub refresh_margin: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth1AppSettings {
    pub consumer_key: String,
    #[serde(default)]
    pub consumer_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub requests_per_period: u32,
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    pub daily_follows_per_account: u32,
    #[serde(default)]
    pub daily_follows_per_app: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: u32,
    #[serde(with = "humantime_serde")]
    pub account_lease: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A claimed request not on the wire this long after its account was let through is
    /// never sent (the job goes back, the ledger row says `not_sent`).
    #[serde(with = "humantime_serde")]
    pub send_deadline: Duration,
    /// How often a daemon confirms its own liveness session and looks for peers whose
    /// session ended.
    #[serde(with = "humantime_serde")]
    pub liveness_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub max_accounts: u32,
    #[serde(with = "humantime_serde")]
    pub summary_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub finished_jobs: Duration,
    #[serde(with = "humantime_serde")]
    pub attempts: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub batch_size: u32,
}

/// What X's pay-per-use billing costs, and the budgets no replica may go beyond (`[billing]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// X's price of one request, in the app's currency; zero turns the money figures off.
    #[serde(deserialize_with = "decimal")]
    pub price_per_request: Decimal,
    /// While X answers 402 (credits depleted), one request probes this often whether they
    /// were topped up.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Spend allowed per UTC day; none: no daily budget.
    #[serde(default, deserialize_with = "optional_decimal")]
    pub daily_budget: Option<Decimal>,
    /// Spend allowed per calendar month (UTC); none: no monthly budget.
    #[serde(default, deserialize_with = "optional_decimal")]
    pub monthly_budget: Option<Decimal>,
}

/// A decimal written as a TOML number (`0.015`), a string (`"0.015"`, as environment
/// variables give it) or an integer: read through its shortest decimal text, so that `0.015`
/// is exactly 0.015 and not the binary fraction nearest to it.
fn decimal<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Integer(i64),
        Float(f64),
        Text(String),
    }
    let text = match Written::deserialize(deserializer)? {
        Written::Integer(n) => n.to_string(),
        Written::Float(f) => f.to_string(),
        Written::Text(t) => t.trim().to_owned(),
    };
    Decimal::from_str_exact(&text)
        .map_err(|_| serde::de::Error::custom("expected a decimal number such as 0.015"))
}

fn optional_decimal<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    decimal(deserializer).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub otlp: OtlpSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSettings {
    pub enabled: bool,
    pub endpoint: String,
    pub service_name: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// `[credentials]`: the keys that encrypt stored tokens (see `accounts::keyring`). Checked
/// only by the commands that read or write tokens, so that `status` or `enqueue` run without.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSettings {
    /// The id of the key that encrypts; every key in `keys` decrypts.
    #[serde(default)]
    pub active_key: Option<String>,
    /// Key id → base64 of 32 bytes, from `FOLLOWQ_CREDENTIALS__KEYS__<ID>` only.
    #[serde(default)]
    pub keys: BTreeMap<String, SecretString>,
}

/// The shortest retention: ledger rows of the last 24 hours plus one quota period seed the
/// limiters and the daily caps, and two days leaves a margin for any period up to a day.
pub const MIN_RETENTION: Duration = Duration::from_secs(2 * 24 * 3600);

/// Where the file layers come from. Environment variables are read from the process
/// (tests set them inside a `figment::Jail`).
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// Directory holding `default.toml` and `<env>.toml`.
    pub config_dir: PathBuf,
    /// The value of `FOLLOWQ_ENV`.
    pub environment: Option<String>,
}

impl ConfigSources {
    /// `--config-dir`, else `FOLLOWQ_CONFIG_DIR`, else `./config`; `FOLLOWQ_ENV` if set.
    pub fn from_process(config_dir: Option<&Path>) -> Self {
        let config_dir = config_dir
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("FOLLOWQ_CONFIG_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config"));
        ConfigSources {
            config_dir,
            environment: std::env::var("FOLLOWQ_ENV").ok().filter(|e| !e.is_empty()),
        }
    }
}

impl Settings {
    /// Loads and validates the settings from `sources`.
    pub fn load(sources: &ConfigSources) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(BUILT_IN_DEFAULTS));
        let default_file = sources.config_dir.join("default.toml");
        if default_file.exists() {
            figment = figment.merge(Toml::file(&default_file));
        }
        if let Some(env) = &sources.environment {
            let path = sources.config_dir.join(format!("{env}.toml"));
            if !path.exists() {
                return Err(ConfigError::MissingEnvironmentFile {
                    env: env.clone(),
                    path,
                });
            }
            figment = figment.merge(Toml::file(path));
        }

        figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(
                Env::prefixed("FOLLOWQ_")
                    .ignore(NON_SETTING_VARIABLES)
                    .split("__"),
            );

        refuse_keys_from_files(&figment)?;
        let settings: Settings = figment.extract().map_err(describe_figment_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the relations between values that serde cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                problem: problem.into(),
            }
        }
        self.validate_maximums()?;
        if self.database.max_connections < 2 {
            return Err(invalid(
                "database.max_connections",
                "must be at least 2 (one connection listens for notifications)",
            ));
        }
        let base = reqwest::Url::parse(&self.x_api.base_url)
            .map_err(|e| invalid("x_api.base_url", format!("not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(
                "x_api.base_url",
                "must start with https:// or http://",
            ));
        }
        if base.scheme() == "http" && !is_loopback(&base) && !self.x_api.allow_insecure_http {
            return Err(invalid(
                "x_api.base_url",
                "http:// would send bearer tokens in clear: use https://, or set \
                 x_api.allow_insecure_http = true for a host you trust (http:// to a loopback \
                 address needs no setting)",
            ));
        }
        if self.x_api.request_timeout.is_zero() {
            return Err(invalid("x_api.request_timeout", "must be more than zero"));
        }
        if self.x_api.connect_timeout.is_zero() {
            return Err(invalid("x_api.connect_timeout", "must be more than zero"));
        }
        if self.rate_limit.requests_per_period == 0 {
            return Err(invalid(
                "rate_limit.requests_per_period",
                "must be at least 1",
            ));
        }
        if self.rate_limit.period.is_zero() {
            return Err(invalid("rate_limit.period", "must be more than zero"));
        }
        self.billing.validate()?;
        if self.rate_limit.daily_follows_per_account == 0 {
            return Err(invalid(
                "rate_limit.daily_follows_per_account",
                "must be at least 1",
            ));
        }
        if self.rate_limit.daily_follows_per_app == Some(0) {
            return Err(invalid(
                "rate_limit.daily_follows_per_app",
                "must be at least 1 (leave it unset to turn the app cap off)",
            ));
        }
        if self.worker.concurrency == 0 {
            return Err(invalid("worker.concurrency", "must be at least 1"));
        }
        if self.worker.heartbeat_interval.is_zero()
            || self.worker.heartbeat_interval >= self.worker.account_lease
        {
            return Err(invalid(
                "worker.heartbeat_interval",
                "must be more than zero and shorter than worker.account_lease",
            ));
        }
        if self.worker.account_lease <= self.x_api.request_timeout + self.worker.heartbeat_interval
        {
            return Err(invalid(
                "worker.account_lease",
                "must be longer than x_api.request_timeout plus worker.heartbeat_interval, or a lease could lapse while a request is in flight",
            ));
        }
        if self.worker.max_accounts == 0 {
            return Err(invalid("worker.max_accounts", "must be at least 1"));
        }
        if self.worker.summary_interval.is_zero() {
            return Err(invalid("worker.summary_interval", "must be more than zero"));
        }
        if self.worker.send_deadline.is_zero() {
            return Err(invalid("worker.send_deadline", "must be more than zero"));
        }
        if self.worker.liveness_interval.is_zero()
            || self.worker.liveness_interval >= self.worker.account_lease
        {
            return Err(invalid(
                "worker.liveness_interval",
                "must be more than zero and shorter than worker.account_lease",
            ));
        }
        if self.worker.poll_interval.is_zero() {
            return Err(invalid("worker.poll_interval", "must be more than zero"));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if self.retry.base_delay > self.retry.max_delay {
            return Err(invalid(
                "retry.base_delay",
                "must not exceed retry.max_delay",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(invalid("log.filter", format!("not a valid filter: {e}")));
        }
        self.validate_ops()
    }

    /// The largest (and smallest) values each setting may take. Beyond them a value overflows
    /// something (a timestamp, an `i32` column, `Instant` arithmetic) or makes the daemon spin
    /// (a poll every nanosecond), long before it means anything.
    fn validate_maximums(&self) -> Result<(), ConfigError> {
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let durations: [(&'static str, Duration, Duration, Duration); 18] = [
            (
                "database.acquire_timeout",
                self.database.acquire_timeout,
                Duration::ZERO,
                10 * MINUTE,
            ),
            (
                "x_api.connect_timeout",
                self.x_api.connect_timeout,
                Duration::ZERO,
                10 * MINUTE,
            ),
            (
                "x_api.request_timeout",
                self.x_api.request_timeout,
                Duration::ZERO,
                10 * MINUTE,
            ),
            (
                "x_api.oauth2.refresh_margin",
                self.x_api.oauth2.refresh_margin,
                Duration::ZERO,
                DAY,
            ),
            (
                "rate_limit.period",
                self.rate_limit.period,
                Duration::ZERO,
                7 * DAY,
            ),
            (
                "worker.account_lease",
                self.worker.account_lease,
                Duration::ZERO,
                HOUR,
            ),
            (
                "worker.heartbeat_interval",
                self.worker.heartbeat_interval,
                Duration::ZERO,
                HOUR,
            ),
            (
                "worker.poll_interval",
                self.worker.poll_interval,
                Duration::from_millis(10),
                HOUR,
            ),
            (
                "worker.send_deadline",
                self.worker.send_deadline,
                Duration::ZERO,
                10 * MINUTE,
            ),
            (
                "worker.liveness_interval",
                self.worker.liveness_interval,
                Duration::from_millis(10),
                HOUR,
            ),
            (
                "worker.shutdown_grace",
                self.worker.shutdown_grace,
                Duration::ZERO,
                HOUR,
            ),
            (
                "worker.summary_interval",
                self.worker.summary_interval,
                Duration::ZERO,
                DAY,
            ),
            (
                "retry.base_delay",
                self.retry.base_delay,
                Duration::ZERO,
                DAY,
            ),
            (
                "retry.max_delay",
                self.retry.max_delay,
                Duration::ZERO,
                7 * DAY,
            ),
            (
                "retention.finished_jobs",
                self.retention.finished_jobs,
                Duration::ZERO,
                3650 * DAY,
            ),
            (
                "retention.attempts",
                self.retention.attempts,
                Duration::ZERO,
                3650 * DAY,
            ),
            (
                "retention.interval",
                self.retention.interval,
                Duration::ZERO,
                DAY,
            ),
            (
                "telemetry.otlp.timeout",
                self.telemetry.otlp.timeout,
                Duration::ZERO,
                10 * MINUTE,
            ),
        ];
        for (key, value, min, max) in durations {
            if value < min || value > max {
                let shown = |d: Duration| humantime::format_duration(d).to_string();
                let problem = if min.is_zero() {
                    format!("must be at most {}", shown(max))
                } else {
                    format!("must be between {} and {}", shown(min), shown(max))
                };
                return Err(ConfigError::Invalid { key, problem });
            }
        }
        let counts: [(&'static str, u32, u32); 6] = [
            (
                "database.max_connections",
                self.database.max_connections,
                1_000,
            ),
            (
                "rate_limit.requests_per_period",
                self.rate_limit.requests_per_period,
                1_000_000,
            ),
            ("worker.concurrency", self.worker.concurrency, 100_000),
            ("worker.max_accounts", self.worker.max_accounts, 10_000_000),
            ("retry.max_attempts", self.retry.max_attempts, 1_000),
            ("retention.batch_size", self.retention.batch_size, 100_000),
        ];
        for (key, value, max) in counts {
            if value > max {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!("must be at most {max}"),
                });
            }
        }
        Ok(())
    }

    /// The operations sections: retention ages the daemon can live with, a usable OTLP URL.
    fn validate_ops(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                problem: problem.into(),
            }
        }
        let retention = &self.retention;
        if retention.finished_jobs < MIN_RETENTION {
            return Err(invalid(
                "retention.finished_jobs",
                "must be at least 2d, so that services have time to read a job's outcome",
            ));
        }
        let ledger_needed =
            MIN_RETENTION.max(Duration::from_secs(24 * 3600) + self.rate_limit.period);
        if retention.attempts < ledger_needed {
            return Err(invalid(
                "retention.attempts",
                format!(
                    "must be at least {} (2d, and 24h + rate_limit.period): the daemon reads that much of the ledger to keep the rate limits and daily caps",
                    humantime::format_duration(ledger_needed)
                ),
            ));
        }
        if retention.interval.is_zero() {
            return Err(invalid("retention.interval", "must be more than zero"));
        }
        if retention.batch_size == 0 {
            return Err(invalid("retention.batch_size", "must be at least 1"));
        }
        let otlp = &self.telemetry.otlp;
        if otlp.enabled {
            let url = reqwest::Url::parse(&otlp.endpoint)
                .map_err(|e| invalid("telemetry.otlp.endpoint", format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(
                    "telemetry.otlp.endpoint",
                    "must start with http:// or https:// (OTLP over HTTP)",
                ));
            }
            if otlp.service_name.trim().is_empty() {
                return Err(invalid("telemetry.otlp.service_name", "must not be empty"));
            }
            if otlp.timeout.is_zero() {
                return Err(invalid("telemetry.otlp.timeout", "must be more than zero"));
            }
        }
        Ok(())
    }
}

impl Settings {
    /// These settings pointed at the database `database_url` and at a simulator of X
    /// (`crate::sim`) on this machine at `simulator_url`, with `quota` requests per `window`
    /// (the simulator's own, scaled to seconds), and timings fast enough for a test or a demo
    /// to finish in seconds. The tests start from the built-in defaults; the demo and the
    /// bench from the operator's settings, whose other sections (pool, concurrency, logging,
    /// listener, credentials, X app) they keep.
    ///
    /// Each value below is safe only because the other end is a simulator on loopback, which
    /// answers in milliseconds, has no real rate limits behind it, and bans nobody:
    ///
    /// - `x_api.connect_timeout` 1 s, `x_api.request_timeout` 2 s (X: 5 s, 15 s): a loopback
    ///   connection is made at once and the simulator answers in milliseconds unless told to
    ///   hold an answer. Against X a slow answer would be cut off and sent again.
    /// - `rate_limit.daily_follows_per_account` off and `daily_follows_per_app` unset: the
    ///   simulator's window is scaled to seconds but its day is still 24 hours, so X's 400 a
    ///   day would stop a scaled run after a few windows. Against X the daily caps are what
    ///   keeps an account from being locked. A test of the caps sets them.
    /// - `worker.poll_interval` 200 ms (1 s): a lost notification costs a test at most this.
    ///   Against a busy Postgres, five idle polls a second per daemon for nothing.
    /// - `worker.heartbeat_interval` 1 s, `worker.account_lease` 4 s (20 s, 60 s): a
    ///   replica's accounts are taken over within seconds of its death. In production a
    ///   lease that short lapses on a slow database, and a peer takes the account while its
    ///   holder still sends.
    /// - `worker.liveness_interval` 250 ms (1 s): a dead peer is noticed at once, for four
    ///   liveness queries a second.
    /// - `worker.send_deadline` 500 ms (2 s): a frozen daemon's claim is given up within a
    ///   second. Against X over the internet a send deadline that short leaves requests
    ///   unsent (`not_sent`) after any hiccup.
    /// - `worker.shutdown_grace` 5 s (30 s): enough for a simulator's answers in flight, not
    ///   for X's at their timeout.
    /// - `worker.summary_interval` 5 s (30 s): a summary line a few times in a short run.
    /// - `retry.max_attempts` 4, `retry.base_delay` 100 ms, `retry.max_delay` 2 s (8, 2 s,
    ///   10 min): a retried 5xx goes again at once. Against X, retries that quick pile onto
    ///   an outage.
    ///
    /// The relations that loading checks still hold (`account_lease` longer than
    /// `request_timeout` plus `heartbeat_interval`): a caller that lengthens a timeout
    /// lengthens the lease with it.
    pub fn for_local_simulator(
        &self,
        database_url: SecretString,
        simulator_url: &str,
        quota: u32,
        window: Duration,
    ) -> Settings {
        let mut settings = self.clone();
        settings.database.url = database_url;
        settings.x_api.base_url = simulator_url.to_owned();
        settings.x_api.connect_timeout = Duration::from_secs(1);
        settings.x_api.request_timeout = Duration::from_secs(2);
        settings.rate_limit.requests_per_period = quota;
        settings.rate_limit.period = window;
        settings.rate_limit.daily_follows_per_account = u32::MAX;
        settings.rate_limit.daily_follows_per_app = None;
        settings.worker.poll_interval = Duration::from_millis(200);
        settings.worker.heartbeat_interval = Duration::from_secs(1);
        settings.worker.account_lease = Duration::from_secs(4);
        settings.worker.liveness_interval = Duration::from_millis(250);
        settings.worker.send_deadline = Duration::from_millis(500);
        settings.worker.shutdown_grace = Duration::from_secs(5);
        settings.worker.summary_interval = Duration::from_secs(5);
        settings.retry.max_attempts = 4;
        settings.retry.base_delay = Duration::from_millis(100);
        settings.retry.max_delay = Duration::from_secs(2);
        settings
    }
}

impl BillingSettings {
    /// The most a price or a budget may be: beyond it the request counts overflow nothing,
    /// but no real price or budget is that large.
    const MAX_MONEY: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str| ConfigError::Invalid {
            key,
            problem: problem.to_owned(),
        };
        if self.price_per_request.is_sign_negative() || self.price_per_request > Self::MAX_MONEY {
            return Err(invalid(
                "billing.price_per_request",
                "must be between 0 and 1,000,000,000",
            ));
        }
        for (key, budget) in [
            ("billing.daily_budget", self.daily_budget),
            ("billing.monthly_budget", self.monthly_budget),
        ] {
            let Some(budget) = budget else { continue };
            if budget.is_sign_negative() || budget > Self::MAX_MONEY {
                return Err(invalid(key, "must be between 0 and 1,000,000,000"));
            }
            if self.price_per_request.is_zero() {
                return Err(invalid(
                    key,
                    "needs billing.price_per_request above 0 (a budget is counted in requests at that price)",
                ));
            }
        }
        if self.probe_interval < Duration::from_millis(100)
            || self.probe_interval > Duration::from_secs(24 * 3600)
        {
            return Err(invalid(
                "billing.probe_interval",
                "must be between 100ms and 1 day",
            ));
        }
        Ok(())
    }

    /// The requests a budget allows at the configured price (whole requests: a budget of
    /// 0.30 at 0.015 allows 20).
    pub fn requests_within(&self, budget: Decimal) -> i64 {
        if self.price_per_request.is_zero() {
            return i64::MAX;
        }
        (budget / self.price_per_request)
            .floor()
            .to_i64()
            .unwrap_or(i64::MAX)
    }

    /// What `requests` cost at the configured price.
    pub fn cost_of(&self, requests: i64) -> Decimal {
        self.price_per_request * Decimal::from(requests)
    }
}

/// Whether `url`'s host is this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Credentials keys belong in the environment (a secrets manager, a systemd credential), never
/// in a config file that ends up in a repository or an image.
fn refuse_keys_from_files(figment: &Figment) -> Result<(), ConfigError> {
    let Ok(keys) = figment.find_value("credentials.keys") else {
        return Ok(());
    };
    let Some(keys) = keys.as_dict() else {
        return Ok(());
    };
    for id in keys.keys() {
        let from_a_file = figment
            .find_metadata(&format!("credentials.keys.{id}"))
            .is_some_and(|metadata| metadata.source.is_some());
        if from_a_file {
            return Err(ConfigError::Invalid {
                key: "credentials.keys",
                problem: format!(
                    "key {:?} is set in a file: credentials keys come from the environment only \
                     (FOLLOWQ_CREDENTIALS__KEYS__{})",
                    id.chars().take(32).collect::<String>(),
                    id.chars().take(32).collect::<String>().to_uppercase()
                ),
            });
        }
    }
    Ok(())
}

/// Turns figment's errors into one line per problem, each naming the key and its source.
fn describe_figment_error(error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::from("(top level)")
            } else {
                e.path.join(".")
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            format!("key `{key}`{source}: {}", describe_kind(&e.kind))
        })
        .collect();
    ConfigError::Load(lines.join("; "))
}

/// What was wrong with a value, without the value: it may be a secret (a key, a password, a
/// client secret set where a number or a list was expected).
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(actual, expected) => {
            format!(
                "invalid type: found {}, expected {expected}",
                type_of(actual)
            )
        }
        Kind::InvalidValue(actual, expected) => {
            format!(
                "invalid value: found {}, expected {expected}",
                type_of(actual)
            )
        }
        Kind::Unsupported(actual) => format!("unsupported type {}", type_of(actual)),
        Kind::UnsupportedKey(actual, expected) => {
            format!("unsupported key type {}, need {expected}", type_of(actual))
        }
        // Field and variant names, lengths and messages about names quote no value.
        other => other.to_string(),
    }
}

/// The kind of a value figment read, without the value itself.
fn type_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit => "nothing",
        Actual::Option => "an option",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another type",
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    fn sources(jail: &Jail) -> ConfigSources {
        ConfigSources {
            config_dir: jail.directory().join("config"),
            environment: None,
        }
    }

    fn message(result: Result<Settings, ConfigError>) -> String {
        match result {
            Ok(_) => panic!("expected a configuration error"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn built_in_defaults_load_without_any_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let settings = Settings::load(&sources(jail)).expect("defaults are valid");
            assert_eq!(settings.x_api.base_url, "https://api.x.com");
            assert_eq!(settings.rate_limit.requests_per_period, 50);
            assert_eq!(settings.rate_limit.period, Duration::from_secs(900));
            assert_eq!(settings.rate_limit.daily_follows_per_account, 400);
            assert_eq!(settings.rate_limit.daily_follows_per_app, None);
            assert_eq!(settings.log.format, LogFormat::Pretty);
            Ok(())
        });
    }

    /// The fast timings keep every relation loading checks, whatever the base's other values.
    #[test]
    fn local_simulator_settings_pass_validation() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let defaults = Settings::load(&sources(jail)).expect("defaults are valid");
            let settings = defaults.for_local_simulator(
                SecretString::from("postgres://postgres@127.0.0.1:5432/followq_test"),
                "http://127.0.0.1:8080",
                10,
                Duration::from_secs(2),
            );
            settings
                .validate()
                .expect("the local-simulator settings are valid");
            assert_eq!(settings.x_api.base_url, "http://127.0.0.1:8080");
            assert_eq!(settings.rate_limit.requests_per_period, 10);
            assert_eq!(settings.rate_limit.period, Duration::from_secs(2));
            assert_eq!(settings.rate_limit.daily_follows_per_account, u32::MAX);
            assert_eq!(settings.worker.concurrency, defaults.worker.concurrency);
            Ok(())
        });
    }

    #[test]
    fn layers_override_in_order() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_dir("config")?;
            jail.create_file(
                "config/default.toml",
                "[worker]\nconcurrency = 8\n[retry]\nmax_attempts = 3\n",
            )?;
            jail.create_file("config/staging.toml", "[worker]\nconcurrency = 16\n")?;
            jail.set_env("DATABASE_URL", "postgres://db.example/followq");
            jail.set_env("FOLLOWQ_LOG__FORMAT", "json");
            jail.set_env("FOLLOWQ_RATE_LIMIT__PERIOD", "5s");
            let mut sources = sources(jail);
            sources.environment = Some("staging".into());
            let settings = Settings::load(&sources).expect("valid layers");
            assert_eq!(
                settings.worker.concurrency, 16,
                "env file over default file"
            );
            assert_eq!(settings.retry.max_attempts, 3, "default file over built-in");
            assert_eq!(settings.log.format, LogFormat::Json, "env var over files");
            assert_eq!(settings.rate_limit.period, Duration::from_secs(5));
            use secrecy::ExposeSecret;
            assert_eq!(
                settings.database.url.expose_secret(),
                "postgres://db.example/followq"
            );
            Ok(())
        });
    }

    #[test]
    fn followq_database_url_wins_over_database_url() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("DATABASE_URL", "postgres://generic/db");
            jail.set_env("FOLLOWQ_DATABASE__URL", "postgres://specific/db");
            let settings = Settings::load(&sources(jail)).expect("valid");
            use secrecy::ExposeSecret;
            assert_eq!(
                settings.database.url.expose_secret(),
                "postgres://specific/db"
            );
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FOLLOWQ_WORKER__CONCURRENCY", "lots");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("worker.concurrency"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_dir("config")?;
            jail.create_file("config/default.toml", "[worker]\nconcurency = 8\n")?;
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("concurency"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_duration_and_a_bad_relation_are_explained() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FOLLOWQ_X_API__REQUEST_TIMEOUT", "fast");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("x_api.request_timeout"), "{text}");

            jail.set_env("FOLLOWQ_X_API__REQUEST_TIMEOUT", "60s");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("worker.account_lease"), "{text}");

            jail.set_env("FOLLOWQ_WORKER__ACCOUNT_LEASE", "5m");
            jail.set_env("FOLLOWQ_X_API__REQUEST_TIMEOUT", "10s");
            jail.set_env("FOLLOWQ_RATE_LIMIT__REQUESTS_PER_PERIOD", "0");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("rate_limit.requests_per_period"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn ops_sections_default_to_off_and_thirty_days() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let settings = Settings::load(&sources(jail)).expect("defaults are valid");
            assert!(!settings.http.enabled);
            assert_eq!(
                settings.http.listen,
                "127.0.0.1:9464".parse().expect("addr")
            );
            assert!(settings.retention.enabled);
            assert_eq!(settings.retention.attempts, Duration::from_secs(30 * 86400));
            assert!(!settings.telemetry.otlp.enabled);
            jail.set_env("FOLLOWQ_HTTP__LISTEN", "0.0.0.0:0");
            jail.set_env("FOLLOWQ_TELEMETRY__OTLP__ENABLED", "true");
            let settings = Settings::load(&sources(jail)).expect("valid");
            assert_eq!(settings.http.listen, "0.0.0.0:0".parse().expect("addr"));
            assert!(settings.telemetry.otlp.enabled);
            Ok(())
        });
    }

    #[test]
    fn retention_shorter_than_the_ledger_the_daemon_needs_is_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FOLLOWQ_RETENTION__ATTEMPTS", "36h");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("retention.attempts"), "{text}");

            jail.set_env("FOLLOWQ_RETENTION__ATTEMPTS", "2d");
            jail.set_env("FOLLOWQ_RATE_LIMIT__PERIOD", "30h");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("24h + rate_limit.period"), "{text}");

            jail.set_env("FOLLOWQ_RATE_LIMIT__PERIOD", "15m");
            jail.set_env("FOLLOWQ_RETENTION__FINISHED_JOBS", "1h");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("retention.finished_jobs"), "{text}");

            jail.set_env("FOLLOWQ_RETENTION__FINISHED_JOBS", "2d");
            Settings::load(&sources(jail)).expect("two days is enough");
            Ok(())
        });
    }

    #[test]
    fn a_bad_otlp_endpoint_is_refused_only_when_enabled() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FOLLOWQ_TELEMETRY__OTLP__ENDPOINT", "collector:4318");
            Settings::load(&sources(jail)).expect("ignored while disabled");
            jail.set_env("FOLLOWQ_TELEMETRY__OTLP__ENABLED", "true");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("telemetry.otlp.endpoint"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_environment_file_is_an_error() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let mut sources = sources(jail);
            sources.environment = Some("prod".into());
            let text = message(Settings::load(&sources));
            assert!(text.contains("prod.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn token_variables_are_not_mistaken_for_settings() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FOLLOWQ_OAUTH2_ACCESS_TOKEN", "x");
            jail.set_env("FOLLOWQ_ENV", "");
            Settings::load(&sources(jail)).expect("token variables are ignored");
            Ok(())
        });
    }

    #[test]
    fn debug_output_hides_secrets() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("DATABASE_URL", "postgres://u:PASSWORD@h/db");
            jail.set_env("FOLLOWQ_X_API__OAUTH2__CLIENT_SECRET", "CLIENTSECRET");
            let settings = Settings::load(&sources(jail)).expect("valid");
            let printed = format!("{settings:?}");
            assert!(!printed.contains("PASSWORD"), "{printed}");
            assert!(!printed.contains("CLIENTSECRET"), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn values_that_would_overflow_or_spin_are_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            for (variable, value, key) in [
                (
                    "FOLLOWQ_RETRY__MAX_ATTEMPTS",
                    "4294967295",
                    "retry.max_attempts",
                ),
                (
                    "FOLLOWQ_RETRY__MAX_DELAY",
                    "1000000years",
                    "retry.max_delay",
                ),
                (
                    "FOLLOWQ_WORKER__POLL_INTERVAL",
                    "1ns",
                    "worker.poll_interval",
                ),
                (
                    "FOLLOWQ_WORKER__ACCOUNT_LEASE",
                    "100000days",
                    "worker.account_lease",
                ),
                (
                    "FOLLOWQ_RETENTION__ATTEMPTS",
                    "500years",
                    "retention.attempts",
                ),
                (
                    "FOLLOWQ_DATABASE__MAX_CONNECTIONS",
                    "100000",
                    "database.max_connections",
                ),
            ] {
                jail.set_env(variable, value);
                let text = message(Settings::load(&sources(jail)));
                assert!(text.contains(key), "{variable}={value}: {text}");
                jail.set_env(variable, "");
                jail.clear_env();
            }
            jail.set_env("FOLLOWQ_WORKER__POLL_INTERVAL", "10ms");
            jail.set_env("FOLLOWQ_RETRY__MAX_ATTEMPTS", "1000");
            Settings::load(&sources(jail)).expect("the bounds themselves are fine");
            Ok(())
        });
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            for (variable, value) in [
                (
                    "FOLLOWQ_X_API__OAUTH2__CLIENT_SECRET",
                    "[1, \"SECRET-LIST\"]",
                ),
                (
                    "FOLLOWQ_X_API__OAUTH1__CONSUMER_SECRET",
                    "{a=\"SECRET-TABLE\"}",
                ),
                ("FOLLOWQ_DATABASE__URL", "[\"postgres://u:SECRET-URL@h/d\"]"),
                ("FOLLOWQ_CREDENTIALS__KEYS__K1", "[\"SECRET-KEY\"]"),
                ("FOLLOWQ_X_API__OAUTH2__CLIENT_SECRET", "123456789"),
            ] {
                jail.set_env(variable, value);
                let text = message(Settings::load(&sources(jail)));
                assert!(!text.contains("SECRET"), "{variable}: {text}");
                assert!(!text.contains("123456789"), "{variable}: {text}");
                assert!(text.contains("invalid type"), "{variable}: {text}");
                jail.clear_env();
            }
            Ok(())
        });
    }

    #[test]
    fn credentials_keys_come_from_the_environment_only() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FOLLOWQ_CREDENTIALS__KEYS__K1", "a2V5");
            jail.set_env("FOLLOWQ_CREDENTIALS__ACTIVE_KEY", "k1");
            let settings = Settings::load(&sources(jail)).expect("keys from the environment");
            assert_eq!(settings.credentials.active_key.as_deref(), Some("k1"));
            assert!(settings.credentials.keys.contains_key("k1"));
            jail.clear_env();
            jail.create_dir("config")?;
            jail.create_file(
                "config/default.toml",
                "[credentials]\nactive_key = \"k1\"\n[credentials.keys]\nk1 = \"a2V5\"\n",
            )?;
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("credentials.keys"), "{text}");
            assert!(text.contains("environment only"), "{text}");
            assert!(!text.contains("a2V5"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn plain_http_to_x_is_refused_unless_loopback_or_allowed() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FOLLOWQ_X_API__BASE_URL", "http://api.x.com");
            let text = message(Settings::load(&sources(jail)));
            assert!(text.contains("x_api.base_url"), "{text}");
            assert!(text.contains("allow_insecure_http"), "{text}");
            for loopback in [
                "http://127.0.0.1:8080",
                "http://localhost:1",
                "http://[::1]:9",
            ] {
                jail.set_env("FOLLOWQ_X_API__BASE_URL", loopback);
                Settings::load(&sources(jail)).expect("loopback needs no setting");
            }
            jail.set_env("FOLLOWQ_X_API__BASE_URL", "http://x-proxy.internal");
            jail.set_env("FOLLOWQ_X_API__ALLOW_INSECURE_HTTP", "true");
            Settings::load(&sources(jail)).expect("allowed on purpose");
            Ok(())
        });
    }
}
