//! A daemon with its HTTP listener on a free loopback port, plain HTTP GETs against it, and
//! /metrics read through a Prometheus text parser.

use std::net::SocketAddr;
use std::time::Duration;

use followq::config::Settings;
use followq::worker::{Daemon, DaemonHandle};
use prometheus_parse::{Scrape, Value};
use sqlx::PgPool;

/// Settings with the listener on: loopback, a port the OS picks.
pub fn with_http(settings: &Settings) -> Settings {
    let mut settings = settings.clone();
    settings.http.enabled = true;
    settings.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings
}

/// A daemon running in this process, with its listener's address.
pub struct OpsDaemon {
    pub addr: SocketAddr,
    daemon: DaemonHandle,
}

impl OpsDaemon {
    /// Starts a daemon on its own pool (`followq::db::connect`, as `followq run` does).
    pub async fn start(settings: &Settings) -> OpsDaemon {
        let pool = followq::db::connect(&settings.database)
            .await
            .expect("daemon pool");
        OpsDaemon::start_on(settings, pool)
    }

    /// Starts a daemon on the given pool.
    pub fn start_on(settings: &Settings, pool: PgPool) -> OpsDaemon {
        let daemon = Daemon::new(settings.clone(), pool).expect("daemon").spawn();
        let addr = daemon.http_addr().expect("the listener is enabled");
        OpsDaemon { addr, daemon }
    }

    /// GET `path`: the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        get(self.addr, path).await
    }

    /// GET /metrics, parsed as a Prometheus server would.
    pub async fn scrape(&self) -> Scraped {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        let lines = body.lines().map(|line| Ok(line.to_owned()));
        Scraped {
            scrape: Scrape::parse(lines).expect("/metrics is valid Prometheus text"),
            text: body,
        }
    }

    /// Graceful stop (SIGTERM, in effect), bounded by the daemon's grace period and slack.
    pub async fn stop(self) {
        if let Err(e) = self.daemon.stop().await {
            panic!("{e}");
        }
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// A parsed scrape, with its text for failure messages.
pub struct Scraped {
    pub scrape: Scrape,
    pub text: String,
}

impl Scraped {
    /// The value of the sample `metric` whose labels include `labels` (panics if absent).
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let sample = self
            .scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == metric
                    && labels
                        .iter()
                        .all(|(name, value)| s.labels.get(name) == Some(*value))
            })
            .unwrap_or_else(|| panic!("no sample {metric}{labels:?} in:\n{}", self.text));
        match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is not a plain value: {other:?}"),
        }
    }

    /// The type the exposition declared for the metric family of `metric`.
    pub fn is_counter(&self, metric: &str) -> bool {
        self.scrape
            .samples
            .iter()
            .any(|s| s.metric == metric && matches!(s.value, Value::Counter(_)))
    }
}
