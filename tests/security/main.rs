//! Security properties against a real Postgres, the `followq` binary and the bundled
//! simulator: tokens sealed at rest and key rotation, inputs refused at the contract and in
//! the configuration without echoing a secret, and what each database role can and cannot do.

#[path = "../common/mod.rs"]
mod common;
// The daemon tests' harness (simulator + test database + settings); each test binary uses
// its own part of it.
#[allow(dead_code)]
#[path = "../ops/ops_support.rs"]
mod ops_support;
#[allow(dead_code)]
#[path = "../daemon/support.rs"]
mod support;

mod at_rest;
mod inputs;
mod no_echo;
mod ops_listener;
mod roles;
mod transport;
