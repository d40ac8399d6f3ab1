//! Property tests (proptest) of the two functions every answer from X goes through: whatever
//! the status, the body bytes or the header values, they never panic and always give an
//! answer that keeps their documented invariants. No database, no network.

mod classify;
mod ratelimit_headers;
