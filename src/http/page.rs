//! `GET /` (the status page: one server-rendered HTML page, inline CSS and SVG, no script,
//! reloading itself every [`REFRESH_SECONDS`]) and `GET /api/status` (the same data as JSON),
//! both from [`admin::dashboard::snapshot`](crate::admin::dashboard::snapshot).
//!
//! One snapshot serves every viewer for [`PAGE_TTL`]: the cache's lock is held across a
//! refresh, so viewers arriving meanwhile wait for it and then find it fresh, and ten open
//! tabs cost the database what one does. `Server-Timing` says how long the snapshot and the
//! rendering took (`db;dur=0` when the snapshot came from the cache).
//!
//! The HTML is rendered by `page_html.rs`, which escapes every string from the database; the
//! page's Content-Security-Policy forbids
//! scripts and any fetch, so nothing outside the page can load either. The snapshot never
//! reads a token, and a database error is shown as "unavailable" without the driver's text,
//! which may name the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;
use tracing::warn;

use super::Shared;
pub use super::page_html::{esc, render};
use crate::admin::dashboard::{self, Dashboard, SettledMinutes};

/// How long one snapshot serves every viewer.
pub const PAGE_TTL: Duration = Duration::from_secs(2);
/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 5;
/// How long a refresh may wait for the database (the permit and the statements).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the page forbids: no script, no fetch, nothing but itself and its inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The last snapshot and when it was read.
#[derive(Default)]
pub(super) struct PageCache {
    state: Mutex<CacheState>,
}

struct Cached {
    read_at: Instant,
    dashboard: Arc<Dashboard>,
}

/// The cache's state: the last snapshot, and the chart's minutes kept between snapshots.
#[derive(Default)]
struct CacheState {
    latest: Option<Cached>,
    settled: SettledMinutes,
}

/// A snapshot and how long reading it took (zero when it came from the cache).
struct Fetched {
    dashboard: Arc<Dashboard>,
    db_time: Duration,
}

pub(super) async fn index(State(shared): State<Shared>) -> Response {
    let fetched = match fetch(&shared).await {
        Ok(fetched) => fetched,
        Err(reason) => return unavailable_page(reason),
    };
    let started = Instant::now();
    let html = render(&fetched.dashboard);
    let timing = server_timing(fetched.db_time, started.elapsed());
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response();
    if let Ok(timing) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", timing);
    }
    response
}

pub(super) async fn api_status(State(shared): State<Shared>) -> Response {
    let fetched = match fetch(&shared).await {
        Ok(fetched) => fetched,
        Err(reason) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(serde_json::json!({ "error": reason })),
            )
                .into_response();
        }
    };
    match serde_json::to_string(&*fetched.dashboard) {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            json,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the status\n",
        )
            .into_response(),
    }
}

/// The cached snapshot, read again when older than [`PAGE_TTL`]. The error is a reason fit to
/// show to anyone who can reach the listener.
async fn fetch(shared: &Shared) -> Result<Fetched, &'static str> {
    let deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    let Ok(mut state) = tokio::time::timeout(SNAPSHOT_TIMEOUT, shared.page.state.lock()).await
    else {
        return Err("another viewer's refresh is taking too long");
    };
    let state = &mut *state;
    if let Some(cached) = state.latest.as_ref()
        && cached.read_at.elapsed() < PAGE_TTL
    {
        return Ok(Fetched {
            dashboard: Arc::clone(&cached.dashboard),
            db_time: Duration::ZERO,
        });
    }
    let started = Instant::now();
    let read = async {
        let _permit = shared.database.acquire().await;
        // On a copy: a refresh cut short by the timeout leaves the kept minutes as they were.
        let mut settled = state.settled.clone();
        dashboard::snapshot(&shared.ops.pool, &shared.ops.limits, &mut settled)
            .await
            .map(|dashboard| (dashboard, settled))
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, read).await {
        Ok(Ok((dashboard, settled))) => {
            let dashboard = Arc::new(dashboard);
            state.settled = settled;
            state.latest = Some(Cached {
                read_at: Instant::now(),
                dashboard: Arc::clone(&dashboard),
            });
            Ok(Fetched {
                dashboard,
                db_time: started.elapsed(),
            })
        }
        Ok(Err(e)) => {
            warn!(error = %e, "status page: could not read the status from the database");
            Err("the database is unreachable")
        }
        Err(_) => {
            warn!("status page: the database did not answer in time");
            Err("the database did not answer in time")
        }
    }
}

fn server_timing(db: Duration, render: Duration) -> String {
    format!(
        "db;dur={:.1}, render;dur={:.1}",
        db.as_secs_f64() * 1e3,
        render.as_secs_f64() * 1e3
    )
}

/// A 503 that reloads itself, so an open page recovers when the database is back.
fn unavailable_page(reason: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>followq status: unavailable</title></head><body>\
         <h1>followq status unavailable</h1><p>{}; trying again every {REFRESH_SECONDS} s.</p>\
         </body></html>",
        esc(reason)
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        html,
    )
        .into_response()
}
