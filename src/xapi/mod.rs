//! The X API client: one follow request (`POST /2/users/:id/following`), its classification,
//! the rate-limit headers that come with it, and the two ways to sign it (OAuth 2.0 user
//! token, OAuth 1.0a).
//!
//! | file | owns |
//! | --- | --- |
//! | `client.rs` | [`XClient`], [`RequestAuth`], [`FollowResponse`]: the HTTP request |
//! | `classify.rs` | [`classify()`] and [`FollowOutcome`]: status + body → outcome |
//! | `ratelimit_headers.rs` | [`RateLimitInfo`]: the window, 24-hour and `Retry-After` headers |
//! | `oauth1.rs` | the HMAC-SHA1 `Authorization: OAuth …` header |
//! | `oauth2.rs` | [`TokenClient`]: the refresh call to `/2/oauth2/token` |
//!
//! Persisting tokens and single-flighting refreshes across processes is
//! [`crate::accounts::token_store`].
//!
//! # Classification
//!
//! Rules are tried top to bottom. "Problem `x`" means a problem JSON `type` of
//! `https://api.x.com/2/problems/x` or `https://api.twitter.com/2/problems/x`, at the top level
//! or in an `errors[]` item; "code" is a v1 `errors[].code`; text matches are
//! case-insensitive over `detail`, `title` and `errors[].message|detail|title`.
//!
//! | status | body | outcome (`kind()`) | what the daemon does |
//! | --- | --- | --- | --- |
//! | 2xx | `data.following` is a boolean | `Followed` (`succeeded`), `errors[]` kept | job succeeded; `pending_follow` defaults to false if absent |
//! | 2xx | no `data.following`, a problem `resource-not-found`, `invalid-request` or `not-authorized-for-resource` | `Permanent` (`permanent`) | job failed |
//! | 2xx | no `data.following`, anything else (other `errors[]`, `{}`, non-JSON, empty, cut short) | `Transient` (`transient`) | retry with backoff (follows are idempotent) |
//! | 429 | problem `usage-capped` | `UsageCapped { period, scope }` (`usage_capped`) | pause the scope it names (account or whole app) for the period |
//! | 429 | anything else, any shape or none | `RateLimited` (`rate_limited`) | pause the account until `RateLimitInfo::resume_at`, job back without an attempt |
//! | 401 | any | `Unauthorized` (`unauthorized`) | refresh once (OAuth 2.0), else needs_reauth |
//! | 403 | problem `client-forbidden` or `unsupported-authentication`, or code 261 / 453 | `AppForbidden` (`app_forbidden`) | stop every account, keep jobs queued |
//! | 403 | code 161, or text "unable to follow" | `AccountDailyCap` (`daily_cap`) | pause this account a day, job stays |
//! | 403 | other JSON (blocked, suspended target, `:id` not the token's user, …) | `Permanent` (`permanent`) | job failed |
//! | 403 | not a JSON object (proxy page, empty) | `Transient` (`transient`) | retry: it says nothing about the target |
//! | 408, 425 | any | `Transient` (`transient`) | retry |
//! | other 4xx (400 invalid request, 404 / `resource-not-found`, …) | any | `Permanent` (`permanent`) | job failed |
//! | 5xx, 1xx, 3xx | any | `Transient` (`transient`) | retry with backoff |
//! | no answer | timeout, connect failure, connection reset | `Transient` (`transient`), `http_status: None` | retry with backoff |
//! | any, body cut short | a status came, its body did not (reset, timeout, `Content-Length` not met) | `Transient` (`transient`), status and headers kept | retry with backoff |
//! | — | a credential that cannot be a header value | `Unauthorized` (`unauthorized`), `http_status: None` | as 401 |
//!
//! [`ErrorDetails`] keeps the status, problem `type`, `title`, `detail`, v1 `code`, X's
//! `reason` (or followq's note for a transport failure: `timeout`, `connect`, `connection`,
//! `body`), and for a body that is not JSON its first 500 characters. Every string is clipped
//! to 500 characters. It is built from the response only, so it never holds a token.
//!
//! [`RateLimitInfo`] comes with every response; a header that is missing or garbage is
//! `None`, never an error.
//!
//! # Shape
//!
//! - [`classify()`] takes the status and body only: no header changes the outcome. The
//!   headers are read by [`RateLimitInfo::from_headers`] beside it.
//! - [`FollowOutcome::details`] gives what a job's `last_error` records,
//!   [`RateLimitInfo::resume_at`] the wait a 429 implies (ignoring a reset already past), and
//!   [`TokenClient`] is the reqwest-based OAuth 2.0 token client the token store is built from.

pub mod classify;
pub mod client;
pub mod oauth1;
pub mod oauth2;
pub mod ratelimit_headers;
pub mod transport;

pub use classify::{ApiErrorItem, ErrorDetails, FollowOutcome, UsageCapScope, classify};
pub use client::{Fate, FollowResponse, RequestAuth, XClient};
pub use oauth2::{RefreshError, TokenClient, TokenPair};
pub use ratelimit_headers::{Limit24h, RateLimitInfo};
pub use transport::{USER_AGENT, XApiError};
