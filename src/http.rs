//! The daemon's operations listener (`[http]`, off by default, loopback by default):
//!
//! - `GET /healthz`: 200 while the process runs (liveness: restart it if this fails);
//! - `GET /readyz`: 200 when the database answers within [`READY_TIMEOUT`] and no app-wide
//!   stop is in force, else 503 with a one-line reason (also while shutting down);
//! - `GET /metrics`: the Prometheus text exposition of [`Metrics`], with the gauges read from
//!   the database just before.
//!
//! The socket is bound when the daemon is built ([`HttpListener::bind`]), so a port already in
//! use stops start-up with a clear error, and port 0 works: [`HttpListener::local_addr`] (and
//! a log line) gives the port picked.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::HttpSettings;
use crate::metrics::{self, Metrics};

/// How long `/readyz` and the gauges of `/metrics` wait for the database. Short: a probe
/// that hangs is worse than one that says "not ready", and the pool's own acquire timeout
/// (`database.acquire_timeout`) is far longer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// After shutdown, how long a request still in progress may take before the listener closes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.listen: cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound socket, not yet serving.
#[derive(Debug)]
pub struct HttpListener {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

/// What the handlers read.
#[derive(Clone)]
pub struct Ops {
    pub pool: PgPool,
    pub metrics: Metrics,
    /// The daemon's id, for the accounts it holds.
    pub worker_id: String,
    /// Cancelled when the daemon starts stopping: `/readyz` then says so.
    pub stopping: CancellationToken,
}

impl HttpListener {
    /// Binds `settings.listen` when the listener is enabled; `None` when it is not.
    pub fn bind(settings: &HttpSettings) -> Result<Option<HttpListener>, HttpError> {
        if !settings.enabled {
            return Ok(None);
        }
        let addr = settings.listen;
        let bind_error = |source| HttpError::Bind { addr, source };
        // std binds without a runtime, so the daemon can be built (and fail) before it runs.
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Some(HttpListener { listener, addr }))
    }

    /// The address actually bound (the port picked when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` is cancelled (then lets requests in progress finish, briefly).
    pub async fn serve(self, ops: Ops, stop: CancellationToken) {
        let addr = self.addr;
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(e) => {
                warn!(%addr, error = %e, "the HTTP listener could not start; /healthz, /readyz and /metrics are unavailable");
                return;
            }
        };
        info!(%addr, "HTTP listener serving /healthz, /readyz and /metrics");
        let app = router(ops);
        let graceful = stop.clone().cancelled_owned();
        let server = async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .await
        };
        tokio::select! {
            result = server => {
                if let Err(e) = result {
                    warn!(%addr, error = %e, "the HTTP listener stopped");
                }
            }
            // A scrape stuck on a slow client must not hold up the daemon's exit.
            _ = async { stop.cancelled().await; tokio::time::sleep(CLOSE_GRACE).await } => {}
        }
    }
}

fn router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ops)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(ops): State<Ops>) -> (StatusCode, String) {
    let unready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
    };
    if ops.stopping.is_cancelled() {
        return unready("shutting down".into());
    }
    // The app-stop query is the database check too: it answers only if the database does.
    match tokio::time::timeout(READY_TIMEOUT, app_stop(&ops.pool)).await {
        Err(_) => unready(format!(
            "the database did not answer within {READY_TIMEOUT:?}"
        )),
        Ok(Err(e)) => unready(format!("the database is unreachable: {e}")),
        Ok(Ok(Some(reason))) => unready(format!(
            "app-wide stop in force ({reason}); DELETE FROM followq.app_pause once the cause is fixed"
        )),
        Ok(Ok(None)) => (StatusCode::OK, "ready\n".into()),
    }
}

async fn metrics_text(State(ops): State<Ops>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, refresh_gauges(&ops)).await {
        Ok(Ok(())) => {}
        // The counters are still worth serving; the gauges keep their last values.
        Ok(Err(e)) => warn!(error = %e, "/metrics: could not read the gauges from the database"),
        Err(_) => warn!("/metrics: the database did not answer in time; gauges are stale"),
    }
    match ops.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics\n",
        )
            .into_response(),
    }
}

/// The reason of the app-wide stop in force, if any.
async fn app_stop(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT reason FROM followq.app_pause WHERE paused_until IS NULL OR paused_until > now()",
    )
    .fetch_optional(pool)
    .await
}

/// Sets the gauges from two short queries.
async fn refresh_gauges(ops: &Ops) -> Result<(), sqlx::Error> {
    let (queued, running, held, stopped): (i64, i64, i64, bool) = sqlx::query_as(
        r#"
        SELECT (SELECT count(*) FROM followq.follow_jobs WHERE state = 'queued'),
               (SELECT count(*) FROM followq.follow_jobs WHERE state = 'running'),
               (SELECT count(*) FROM followq.accounts
                WHERE leased_by = $1 AND lease_expires_at > now()),
               EXISTS (SELECT 1 FROM followq.app_pause
                       WHERE paused_until IS NULL OR paused_until > now())
        "#,
    )
    .bind(&ops.worker_id)
    .fetch_one(&ops.pool)
    .await?;
    let paused: Vec<(String, i64)> = sqlx::query_as(
        r#"
        SELECT CASE WHEN status = 'paused' THEN coalesce(pause_reason, 'other') ELSE status END,
               count(*)
        FROM followq.accounts
        WHERE status IN ('needs_reauth', 'disabled')
           OR (status = 'paused' AND paused_until > now())
        GROUP BY 1
        "#,
    )
    .fetch_all(&ops.pool)
    .await?;
    ops.metrics.set_queue_depth(queued, running);
    ops.metrics.set_accounts_held(held);
    ops.metrics.set_app_stopped(stopped);
    ops.metrics.set_paused_accounts(
        paused
            .iter()
            .map(|(reason, count)| (reason.as_str(), *count)),
    );
    Ok(())
}
