//! A recording stand-in for the follow endpoint, for the scenarios that need to know exactly
//! when each request arrived: it answers every follow at once, enforces X's fixed window per
//! user (with the same headers, reset in whole seconds rounded up), counts 429s, and records
//! each request's arrival instant by target id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use tokio::net::TcpListener;

#[derive(Default)]
struct UserWindow {
    started: Option<Instant>,
    count: u32,
}

struct Shared {
    quota: u32,
    window: Duration,
    users: Mutex<HashMap<String, UserWindow>>,
    /// (user, target, arrival) of every request, in arrival order.
    arrivals: Mutex<Vec<(String, String, Instant)>>,
    rate_limited: Mutex<u64>,
}

/// A running endpoint; stops when dropped.
pub struct Endpoint {
    pub base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct Body {
    target_user_id: String,
}

impl Endpoint {
    pub async fn start(quota: u32, window: Duration) -> anyhow::Result<Endpoint> {
        let shared = Arc::new(Shared {
            quota,
            window,
            users: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(Vec::new()),
            rate_limited: Mutex::new(0),
        });
        let router = Router::new()
            .route("/2/users/{id}/following", post(follow))
            .with_state(Arc::clone(&shared));
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Endpoint {
            base_url: format!("http://{addr}"),
            shared,
            task,
        })
    }

    /// When a request for `target` arrived, if it did.
    pub fn arrival_of(&self, target: &str) -> Option<Instant> {
        let arrivals = self.shared.arrivals.lock().ok()?;
        arrivals
            .iter()
            .rev()
            .find(|(_, t, _)| t == target)
            .map(|(_, _, at)| *at)
    }

    /// Every arrival: (user, target, instant).
    pub fn arrivals(&self) -> Vec<(String, String, Instant)> {
        self.shared
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    pub fn rate_limited(&self) -> u64 {
        self.shared.rate_limited.lock().map_or(0, |n| *n)
    }
}

async fn follow(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    axum::Json(body): axum::Json<Body>,
) -> Response {
    let now = Instant::now();
    let (allowed, remaining, ends) = {
        let Ok(mut users) = shared.users.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let window = users.entry(user.clone()).or_default();
        if window.started.is_none_or(|s| now >= s + shared.window) {
            window.started = Some(now);
            window.count = 0;
        }
        let started = window.started.unwrap_or(now);
        window.count += 1;
        let allowed = window.count <= shared.quota;
        (
            allowed,
            shared.quota.saturating_sub(window.count),
            started + shared.window,
        )
    };
    if let Ok(mut arrivals) = shared.arrivals.lock() {
        arrivals.push((user, body.target_user_id, now));
    }
    let mut headers = HeaderMap::new();
    let reset_epoch = SystemTime::now()
        .checked_add(ends.saturating_duration_since(now))
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    for (name, value) in [
        ("x-rate-limit-limit", shared.quota.to_string()),
        ("x-rate-limit-remaining", remaining.to_string()),
        ("x-rate-limit-reset", reset_epoch.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    if allowed {
        (
            headers,
            axum::Json(serde_json::json!({"data": {"following": true, "pending_follow": false}})),
        )
            .into_response()
    } else {
        if let Ok(mut n) = shared.rate_limited.lock() {
            *n += 1;
        }
        (
            StatusCode::TOO_MANY_REQUESTS,
            headers,
            axum::Json(serde_json::json!({"title": "Too Many Requests", "type": "about:blank", "status": 429})),
        )
            .into_response()
    }
}
