//! The daemon against a real Postgres and the bundled simulator over loopback, with windows
//! scaled to seconds. The scenarios run one at a time (see `support::serial`): their timing
//! assertions must not compete with each other for the machine's two cores.

mod child;
#[path = "../common/mod.rs"]
mod common;
mod demo;
mod demo_postgres_choice;
mod demo_throwaway;
mod failures;
mod handover;
mod lifecycle;
mod pacing;
mod processes;
mod support;
