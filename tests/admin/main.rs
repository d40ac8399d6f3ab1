//! The operator commands: `followq status`, `followq jobs …` and the operator side of
//! `followq accounts …`, as library calls and through the binary, against a real Postgres
//! with known rows (see support.rs).

mod accounts;
mod cli;
#[path = "../common/mod.rs"]
mod common;
mod jobs;
mod status;
mod support;
