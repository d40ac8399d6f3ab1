//! The daemon against a real Postgres and the bundled simulator over loopback, with windows
//! scaled to seconds. Scenarios that assert timings run one at a time (`support::serial`):
//! they must not compete with each other for the machine's two cores; the others
//! (`support::shared`) may run beside each other, never beside a timed one.

mod billing;
mod child;
#[path = "../common/mod.rs"]
mod common;
mod demo;
mod demo_postgres_choice;
mod demo_throwaway;
mod failures;
mod handover;
mod lifecycle;
mod logs;
mod notifications;
mod oauth1;
mod outages;
mod pacing;
mod pauses;
mod processes;
mod quotas;
mod reactions;
mod recording;
mod support;
