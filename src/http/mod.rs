//! The daemon's operations listener (`[http]`, off by default, loopback by default):
//!
//! - `GET /healthz`: 200 while the process runs (liveness: restart it if this fails);
//! - `GET /readyz`: 200 when the database answers within [`READY_TIMEOUT`] and no app-wide
//!   stop is in force, else 503 with a one-line reason (also while shutting down);
//! - `GET /metrics`: the Prometheus text exposition of [`Metrics`], with the gauges read from
//!   the database at most every [`gauges::GAUGE_TTL`];
//! - `GET /`: the status page (HTML, reloading itself), and `GET /api/status`: its data as
//!   JSON, from one snapshot read at most every [`page::PAGE_TTL`].
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | binding, the routes and the state the handlers share |
//! | `serve.rs` | the accept loop: connection cap, header-read timeout, per-connection deadline |
//! | `probes.rs` | `/healthz` and `/readyz` |
//! | `gauges.rs` | `/metrics` and its cached gauges |
//! | `page.rs` | `/` and `/api/status`: the status page, its cached snapshot, HTML escaping |
//!
//! A route is one line in [`router`] and a handler taking [`State<Shared>`](Shared).
//!
//! Nothing a client does can load the database or starve the daemon: at most
//! [`serve::MAX_CONNECTIONS`] connections at once, each closed if its request headers take
//! longer than [`serve::HEADER_READ_TIMEOUT`] or the whole exchange longer than
//! [`serve::CONNECTION_DEADLINE`]; the handlers take at most one pooled connection at a time
//! between them ([`Shared::database`]), and the gauges are read at most every few seconds
//! whatever the scrape rate (the status page's snapshot likewise, whatever the viewers).
//!
//! The socket is bound when the daemon is built ([`HttpListener::bind`]), so a port already in
//! use stops start-up with a clear error, and port 0 works: [`HttpListener::local_addr`] (and
//! a log line) gives the port picked.

mod gauges;

pub use gauges::GAUGE_TTL;
pub mod page;
mod page_html;
mod probes;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::dashboard::Limits;
use crate::config::HttpSettings;
use crate::metrics::Metrics;

/// How long `/readyz` and the gauges of `/metrics` wait for the database. Short: a probe
/// that hangs is worse than one that says "not ready", and the pool's own acquire timeout
/// (`database.acquire_timeout`) is far longer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The quotas and caps the status page measures accounts against.
    pub limits: Limits,
}

/// The handlers' state: [`Ops`] and what the listener itself keeps.
#[derive(Clone)]
pub(crate) struct Shared {
    ops: Ops,
    /// One permit: the handlers between them use at most one pooled connection at a time, so
    /// requests to the listener never take the daemon's connections.
    database: Arc<Semaphore>,
    gauges: Arc<gauges::GaugeCache>,
    page: Arc<page::PageCache>,
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
                warn!(%addr, error = %e, "the HTTP listener could not start; /healthz, /readyz, /metrics and the status page are unavailable");
                return;
            }
        };
        info!(%addr, "HTTP listener serving /healthz, /readyz, /metrics and the status page (/)");
        serve::accept_loop(listener, router(ops), stop).await;
    }
}

/// Every route of the listener.
fn router(ops: Ops) -> Router {
    let shared = Shared {
        ops,
        database: Arc::new(Semaphore::new(1)),
        gauges: Arc::new(gauges::GaugeCache::default()),
        page: Arc::new(page::PageCache::default()),
    };
    Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(gauges::metrics_text))
        .route("/", get(page::index))
        .route("/api/status", get(page::api_status))
        .with_state(shared)
}
