//! Operator commands as a library: what `followq status`, `followq jobs …` and the operator
//! side of `followq accounts …` read and change. The CLI (`src/cli/`) only parses arguments
//! and prints what these functions return, so every rule here is tested without a terminal.
//!
//! | file | owns |
//! | --- | --- |
//! | `status.rs` | the one-screen report: queue depth, throughput, pauses, live daemons |
//! | `jobs.rs` | job ids and states; show, list, retry, cancel |
//! | `accounts.rs` | list, show, pause, resume, disable |
//! | `app.rs` | ending the app-wide stop (`followq app resume`) |
//! | `why.rs` | the one sentence saying why a job (or an account) is where it is (pure) |
//! | `dashboard.rs` | the ops listener's status page: what its one snapshot reads, and the cache |
//!
//! Their statements live in `crate::store` (`status`, `dashboard`, `admin_jobs`,
//! `admin_accounts`). Every statement is short and every state change is one `UPDATE … WHERE <allowed states>`,
//! so a change races safely with running daemons: a row that moved meanwhile is simply not
//! matched, and the caller learns why from a follow-up read.

pub mod accounts;
pub mod app;
pub mod dashboard;
pub mod jobs;
pub mod status;
pub mod why;
