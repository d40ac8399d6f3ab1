//! Integration tests of the queue contract, against a real Postgres (see helpers.rs).

mod accounts;
mod app_cap_slots;
mod app_follows;
mod batch_plans;
mod billing;
mod cli;
mod distribution;
mod enqueue;
mod handover;
#[path = "../common/mod.rs"]
mod helpers;
mod leases;
mod ledger;
mod schema;
mod states;
mod store_statements;
mod tcp_proxy;
