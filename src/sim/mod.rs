//! A simulator of X's follow endpoint and OAuth 2.0 token endpoint, strict enough that a
//! client passing against it means something. Tests, the demo and the benchmark start it with
//! [`spawn`]; `followq sim` runs it as a server.
//!
//! | file | owns |
//! | --- | --- |
//! | `server.rs` | [`spawn`], [`SimHandle`]: the router, the accept loop, shutdown |
//! | `follow.rs` | the follow endpoint's handler: path, body and headers in, response out |
//! | `auth.rs` | reading a follow request's `Authorization` header |
//! | `oauth1_verify.rs` | verifying an OAuth 1.0a signature |
//! | `oauth.rs` | the token endpoint's handler |
//! | `problems.rs` | the bodies X refuses with |
//! | `config.rs` | [`SimConfig`] and the other settings |
//! | `faults.rs` | the seeded fault decisions |
//! | `stats.rs` | [`SimStats`] and the request log's entries |
//! | `state.rs` | `SimState`: the users, the figures read from them, the request log |
//! | `tokens.rs` | [`SimTokens`]: issuing, refreshing, expiring and revoking tokens |
//! | `switches.rs` | what a test flips on a running simulator (through [`SimHandle`]) |
//! | `rules.rs` | the follow rules below: a follow request's answer |
//! | `limits.rs` | what the rules count in: windows, daily windows, prepaid credits |
//!
//! # Endpoints
//! - `POST /2/users/{id}/following`: the follow endpoint (rules below).
//! - `POST /2/oauth2/token`: `grant_type=refresh_token` with rotating single-use refresh
//!   tokens; a spent, revoked or unknown refresh token gets 400 `invalid_request` "Value
//!   passed for the token was invalid.", and reusing a spent one revokes all the user's tokens
//!   (`revoke_family_on_reuse`, on by default, as X may do). Access tokens expire after
//!   `access_token_ttl` (7200 s). A refresh leaves older access tokens valid until they expire.
//! - `GET /__sim/stats`: [`SimStats`] as JSON.
//!
//! # The follow rules, in the order they are applied
//! 1. Credentials: `Bearer <token>` or OAuth 1.0a `OAuth … oauth_token="…"` (mapped to a user
//!    registered with `add_oauth1_user`). An OAuth 1.0a request must name the consumer key of
//!    `oauth1_consumer` and carry a valid HMAC-SHA1 signature (RFC 5849 §3.4) of its method,
//!    its URL (`http://<Host><path>`, with any query) and its `oauth_*` parameters, keyed with
//!    the consumer secret and the token's secret; anything else gets X's 401 (counted in the
//!    user's `bad_signatures`). Missing, unknown, expired or revoked tokens, and the tokens of
//!    a user set with `set_tokens_refused`: 401 problem JSON. App-only bearer token: 403
//!    `unsupported-authentication`. These carry no rate-limit headers (no user window) and are
//!    not counted in the user's `requests`.
//! 2. Prepaid credits (`credits`, unlimited by default): with none left, 402
//!    `CreditsDepleted` (X's body, plain JSON), not counted in the window nor in `requests`
//!    and costing nothing (`TotalStats::payment_required`). A request that gets past this
//!    point holds a credit, spent if the request is acted on (the rules below run to a
//!    success, whatever is then sent) and given back otherwise (`TotalStats::credits_spent`,
//!    `credits_left`; `SimHandle::top_up`, `set_credits`).
//! 3. From here on the request is the user's: it counts in `requests` and in the user's
//!    **fixed window** (`window_requests` per `window`, default 50 per 900 s), whatever its
//!    answer. A window starts at the first request after the previous one ended. Every answer
//!    from here on carries `x-rate-limit-limit`, `x-rate-limit-remaining` and
//!    `x-rate-limit-reset` (epoch seconds of window start + window, rounded up), unless
//!    `rate_limit_headers` is off (the window is enforced all the same). When
//!    `user_24h_limit` (per user) or `app_24h_limit` (every user's requests together) is set,
//!    the request also counts in that fixed window, and the answer carries
//!    `x-user-limit-24hour-{limit,remaining,reset}` or `x-app-limit-24hour-*` alike.
//! 4. App-wide switches: `app_forbidden` gives 403 `client-forbidden`; `usage_capped` gives
//!    429 `usage-capped` with `period` and `scope` to every account. Then one account's own
//!    usage cap (`SimHandle::set_account_usage_capped`, X's `scope: Account`): the same 429
//!    for that user only.
//! 5. Past the window's limit, then past the user's or the app's 24-hour limit: 429 problem
//!    JSON (`about:blank`, "Too Many Requests"), counted in `rate_limited`,
//!    `user_24h_limited` or `app_24h_limited`.
//! 6. Faults (below) may replace or spoil the answer from here on; refusals above are never
//!    faulted.
//! 7. `:id` must match `^[0-9]{1,19}$`, `Content-Type` must be `application/json`, and the
//!    body exactly `{"target_user_id":"<1-19 digits>"}` (no other field): else 400
//!    `invalid-request` in X's shape (`errors[].parameters`, `title`, `detail`, `type`).
//! 8. `:id` not the token's user: 403. Following oneself: 400 `invalid-request`.
//! 9. Unknown target (`TargetRules::unknown_*`): 404 `resource-not-found`. A target in
//!    `invalid_ids`: 400 `invalid-request`. A target in `blocking_ids`: 403 "You cannot follow
//!    an account that is blocking you."
//! 10. Already following or pending: 200 no-op with the current state.
//! 11. Daily cap (`daily_cap` new follows per `daily_window`, default 400 per 24 h, a fixed
//!     window starting at the first follow): 403 "You are unable to follow more people at this
//!     time." Then the app's daily cap (`app_daily_cap`, every user's new follows together per
//!     app daily window of the same length; off by default, X's is 1,000): the same 403,
//!     counted in `TotalStats::app_daily_capped`.
//! 12. Protected target (`TargetRules::protected_*`): 200 `following:false,
//!     pending_follow:true`; otherwise 200 `following:true, pending_follow:false`.
//!
//! Problem `type` URIs use both `api.twitter.com` and `api.x.com` hosts, as X does: match on
//! the path suffix.
//!
//! # Faults
//! [`FaultConfig`] has one rate per kind, each a probability per request past step 5:
//! `fail_5xx` (500 or 503, no follow), `errors_200` (200 with `errors[]` and no `data`, no
//! follow), `drop` (the follow is made, then the connection closes without an answer),
//! `malformed` (the normal status with a body that is not JSON: truncated JSON or an HTML
//! page; the follow is made), `applied_5xx` (the follow is made exactly as for a 200, then
//! 500 or 503 is answered instead; a refusal is left unspoiled), and `delay` (the normal
//! answer after `delay_duration`). They are decided by a hash of (seed, user id, the user's
//! request number, kind), so a run with the same seed and the same requests per user meets
//! the same faults, however users interleave.
//!
//! # Figures
//! Each user's figures ([`UserStats`]) are updated under that user's lock in the step that
//! decides the answer, so they are exact under concurrency; [`TotalStats`] sums them. The one
//! that proves a client never over-sent is `max_requests_in_window`: the most requests received
//! inside any one of the user's windows, rejected ones included. `max_in_flight` (the most
//! requests of one user being handled at once) and `same_target_overlaps` (a request arriving
//! while another for the same target is still being handled) prove one request per account at
//! a time and no job sent twice at once. `max_follows_in_day` (per user) and
//! `TotalStats::app_max_follows_in_day` are the most new follows within any span of
//! `daily_window` (sliding, so stricter than any fixed day), to prove a client kept under
//! X's daily caps.
//!
//! For tests, [`SimHandle::requests_by_target`] counts the requests per (user, target), and
//! [`SimHandle::request_log`] lists every follow request with when it arrived, when it was
//! answered and its status (`SimConfig::request_log`, on by default; off in `followq sim`).
//!
//! # Test controls
//! Beyond the faults, [`SimHandle`] can turn the rate-limit headers off
//! (`set_rate_limit_headers`), make one user's answers slow (`set_answer_delay`), refuse every
//! token of a user while refreshes still work (`set_tokens_refused`), and hold the token
//! endpoint so that a refresh stalls (`hold_token_endpoint`).
//!
//! # Serving and throughput
//! HTTP/1.1 only (what a client reaches over `http://`), keep-alive, one task per connection.
//! Measured on the 2-core development machine with the release build and `wrk` on the same
//! machine (`scripts/sim-wrk.lua`: 1000 users, 64 connections, one wrk thread): about 35,000
//! follow requests per second, with or without faults and whether most answers are 200s or
//! 429s. The benchmark's daemon sends far fewer, so the simulator is not its bottleneck.
//!
//! # Clock
//! Real time: `Instant` for windows and expiry, the system clock for the reset header.

mod auth;
mod config;
mod faults;
mod follow;
mod limits;
mod oauth;
mod oauth1_verify;
mod problems;
mod rules;
mod server;
mod state;
mod stats;
mod switches;
mod tokens;

pub use config::{
    DayLimit, FaultConfig, OAuth1Consumer, SimConfig, TargetRules, UsageCap, UsagePeriod,
    UsageScope,
};
pub use oauth1_verify::{OAuth1Params, SignatureProblem, verify as verify_oauth1_signature};
pub use server::{SimHandle, spawn, spawn_at};
pub use stats::{FaultStats, LoggedRequest, SimStats, TotalStats, UserStats};
pub use tokens::SimTokens;

use std::net::SocketAddr;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulator must be started from inside a tokio runtime")]
    NoRuntime,
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
