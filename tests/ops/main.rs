//! Operations: the HTTP listener (/healthz, /readyz, /metrics, the status page), retention,
//! the database roles of deploy/roles.sql, and trace export, against a real Postgres and the
//! bundled simulator.
//! Scenarios that run a daemon take the daemon tests' lock (`support::serial`) so their timing
//! does not compete for the machine's two cores.

#[path = "../common/mod.rs"]
mod common;
// The daemon tests' harness (simulator + test database + settings); each test binary uses
// its own part of it.
#[allow(dead_code)]
#[path = "../daemon/support.rs"]
mod support;

mod health;
mod metrics;
mod ops_support;
mod retention;
mod roles;
mod status_page;
mod telemetry;
