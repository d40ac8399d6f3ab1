//! followq drains a Postgres queue of X (Twitter) follow requests without ever breaking a
//! user's rate limit.
//!
//! Other services insert rows "source user S should follow target user T" into
//! `followq.follow_jobs` (see README.md, "The SQL contract"); the daemon claims them per
//! account, paces each account with a token bucket and the API's own window headers, calls
//! `POST /2/users/:id/following`, and writes the outcome back.

pub mod accounts;
pub mod admin;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod queue;
pub mod ratelimit;
pub mod scratch_db;
pub mod sim;
pub mod states;
pub mod store;
pub mod telemetry;
pub mod worker;
pub mod xapi;
