//! The SQL contract of the queue, seen from Rust: putting follow requests in
//! ([`enqueue`](enqueue::enqueue), [`enqueue_batch`](enqueue::enqueue_batch)) and reading CSV
//! files of them ([`csv_import`]).
//!
//! The schema itself (tables, constraints, the `followq.enqueue` SQL function and the
//! `followq_job_enqueued` NOTIFY channel) lives in `migrations/` and is documented in
//! README.md, "The SQL contract".

pub mod csv_import;
pub mod enqueue;

pub use enqueue::{EnqueueError, EnqueueOutcome, FollowRequest, enqueue, enqueue_batch};

/// The channel the insert trigger notifies, with the source user id as payload.
pub const JOB_ENQUEUED_CHANNEL: &str = "followq_job_enqueued";

/// The channel notified when jobs reach succeeded, failed or cancelled: once per statement,
/// with the payload `{"jobs":[{"id":…,"state":…,"source_user_id":…,"target_user_id":…},…]}`
/// (at most 50 jobs per notification).
pub const JOB_FINISHED_CHANNEL: &str = "followq_job_finished";
