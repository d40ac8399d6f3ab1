//! `POST /2/users/{id}/following`: authenticates, validates the path and body as strictly as
//! X, asks the state for the answer, and turns it into a response with the
//! `x-rate-limit-*` (and, when configured, 24-hour) headers, applying the injected faults
//! (delay, drop, spoiled body); and logs each request with its answer for the tests.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth;
use super::faults::FaultKind;
use super::problems::{self, Problem};
use super::rules::{Answer, FollowOutcome, FollowRequest, RateHeaders};
use super::state::SimState;
use super::stats::LoggedRequest;
use super::tokens::Caller;
use crate::ids::UserId;

/// Put in a response's extensions to have the server close the connection instead of
/// answering (see `server.rs`).
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

pub async fn follow(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let received_at = Instant::now();
    let _in_flight = state.enter();
    let path_id = match path {
        Ok(Path(id)) => id,
        Err(_) => String::new(),
    };
    // Validated before the credentials are read only so the log can name the target: the
    // answers keep X's order (401 before 400).
    let request = validate(path_id.clone(), &headers, body);
    // Declared after `_in_flight`, so the entry is logged before the request stops counting
    // as in flight: a test that waited for the simulator to settle finds it.
    let mut record = Record::start(&state, received_at, path_id, &request);
    let user_id = match auth::caller(&state, &method, &uri, &headers) {
        Caller::Unknown => {
            state.count_unauthenticated();
            return record.finish(problems::unauthorized().into_response());
        }
        Caller::Expired { user_id } => {
            state.count_unauthorized(&user_id);
            record.user(&user_id);
            return record.finish(problems::unauthorized().into_response());
        }
        Caller::AppOnly => {
            state.count_app_only();
            return record.finish(problems::unsupported_authentication().into_response());
        }
        Caller::BadSignature { user_id } => {
            state.count_bad_signature(&user_id);
            record.user(&user_id);
            return record.finish(problems::unauthorized().into_response());
        }
        Caller::User { user_id } if state.tokens_refused(&user_id) => {
            state.count_unauthorized(&user_id);
            record.user(&user_id);
            return record.finish(problems::unauthorized().into_response());
        }
        Caller::User { user_id } => user_id,
    };
    record.user(&user_id);
    let outcome = state.follow(&user_id, request);
    state.changed();
    // Counted in flight until this handler ends, however it ends (a client that gives up
    // drops it).
    let _handled = outcome.counted.then(|| Handling {
        state: Arc::clone(&state),
        target: outcome.target.clone(),
        user_id,
    });
    if let Some(delay) = outcome.fault.delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(delay) = outcome.user_delay {
        tokio::time::sleep(delay).await;
    }
    record.finish(respond(outcome))
}

/// A request's entry in the simulator's request log, pushed when the answer is handed over
/// ([`Record::finish`]) or, if the client gives up first and the handler is dropped, then.
/// Holds nothing when the log is off, so the benchmark's simulator pays nothing for it.
struct Record {
    state: Arc<SimState>,
    entry: Option<LoggedRequest>,
}

impl Record {
    fn start(
        state: &Arc<SimState>,
        received_at: Instant,
        path_id: String,
        request: &Result<FollowRequest, Problem>,
    ) -> Record {
        let entry = state.logs_requests().then(|| LoggedRequest {
            user_id: path_id,
            target: request.as_ref().ok().map(|r| r.target.clone()),
            received_at,
            answered_at: received_at,
            status: None,
        });
        Record {
            state: Arc::clone(state),
            entry,
        }
    }

    /// The credentials name this user.
    fn user(&mut self, user_id: &str) {
        if let Some(entry) = &mut self.entry
            && entry.user_id != user_id
        {
            user_id.clone_into(&mut entry.user_id);
        }
    }

    /// Logs the answer about to be sent (none when the connection is to be dropped).
    fn finish(mut self, response: Response) -> Response {
        if let Some(entry) = &mut self.entry
            && response.extensions().get::<DropConnection>().is_none()
        {
            entry.status = Some(response.status().as_u16());
        }
        response
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.answered_at = Instant::now();
            self.state.log_request(entry);
        }
    }
}

/// Releases a counted request's place in the user's in-flight figures.
struct Handling {
    state: Arc<SimState>,
    user_id: String,
    target: Option<String>,
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.state.leave(&self.user_id, self.target.as_deref());
    }
}

/// The path's `:id` and the body, checked as X does: ids `^[0-9]{1,19}$`, a JSON body that is
/// exactly `{"target_user_id":"<digits>"}`.
fn validate(
    path_id: String,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<FollowRequest, Problem> {
    if UserId::parse(&path_id).is_err() {
        return Err(problems::invalid_request(
            "id",
            &path_id,
            &format!("The `id` query parameter value [{path_id}] is not valid"),
        ));
    }
    let json_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_content {
        return Err(problems::invalid_request(
            "Content-Type",
            "",
            "The request body must be JSON with Content-Type application/json.",
        ));
    }
    let body = body.map_err(|e| problems::invalid_request("body", "", &e.body_text()))?;
    let not_valid = |value: &str| {
        problems::invalid_request(
            "target_user_id",
            value,
            "The body must be exactly {\"target_user_id\": \"<1 to 19 digits>\"}.",
        )
    };
    let object = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => object,
        _ => return Err(not_valid("")),
    };
    if let Some(extra) = object.keys().find(|k| *k != "target_user_id") {
        return Err(problems::invalid_request(
            extra,
            "",
            &format!("The parameter [{extra}] is not one of [target_user_id]"),
        ));
    }
    match object.get("target_user_id") {
        Some(Value::String(target)) if UserId::parse(target).is_ok() => Ok(FollowRequest {
            path_id,
            target: target.clone(),
        }),
        Some(Value::String(target)) => Err(not_valid(target)),
        _ => Err(not_valid("")),
    }
}

fn respond(outcome: FollowOutcome) -> Response {
    let mut response = match outcome.fault.kind {
        Some(FaultKind::Drop) => {
            let mut response = Response::new(axum::body::Body::empty());
            response.extensions_mut().insert(DropConnection);
            return response;
        }
        Some(FaultKind::Malformed { html }) => {
            let status = match &outcome.answer {
                Answer::Refused(problem) => problem.status,
                _ => StatusCode::OK,
            };
            let body: &'static str = if html {
                "<html><head><title>Over capacity</title></head><body><h1>Something is technically wrong.</h1>"
            } else {
                r#"{"data":{"following":tru"#
            };
            (
                status,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                body,
            )
                .into_response()
        }
        _ => answer(outcome.answer),
    };
    let headers = response.headers_mut();
    if let Some(rate) = outcome.rate {
        set_rate_headers(headers, "x-rate-limit", rate);
    }
    if let Some(rate) = outcome.user_24h {
        set_rate_headers(headers, "x-user-limit-24hour", rate);
    }
    if let Some(rate) = outcome.app_24h {
        set_rate_headers(headers, "x-app-limit-24hour", rate);
    }
    response
}

fn answer(answer: Answer) -> Response {
    match answer {
        Answer::Follow {
            following,
            pending_follow,
        } => {
            axum::Json(json!({"data": {"following": following, "pending_follow": pending_follow}}))
                .into_response()
        }
        Answer::Refused(problem) => problem.into_response(),
        Answer::ServerError { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let title = status.canonical_reason().unwrap_or("Server Error");
            Problem {
                status,
                body: json!({"title": title, "detail": title, "type": "about:blank", "status": status.as_u16()}),
                problem_json: true,
            }
            .into_response()
        }
        Answer::Errors200 => axum::Json(json!({
            "errors": [{
                "title": "Operational Disruption",
                "detail": "The follow could not be completed because of an operational disruption.",
                "type": "https://api.twitter.com/2/problems/operational-disruption",
            }]
        }))
        .into_response(),
    }
}

/// `{prefix}-limit`, `{prefix}-remaining` and `{prefix}-reset`.
fn set_rate_headers(headers: &mut HeaderMap, prefix: &str, rate: RateHeaders) {
    let pairs = [
        ("limit", u64::from(rate.limit)),
        ("remaining", rate.remaining),
        ("reset", rate.reset),
    ];
    for (suffix, value) in pairs {
        if let Ok(name) = HeaderName::try_from(format!("{prefix}-{suffix}")) {
            headers.insert(name, HeaderValue::from(value));
        }
    }
}
