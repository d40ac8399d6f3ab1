//! `followq credentials …`: making a key (`new-key`), counting the rows each key seals
//! (`status`), and re-sealing every row under the active key (`rekey`).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Subcommand;
use secrecy::ExposeSecret;
use sqlx::PgPool;

use super::table::print_json;
use crate::accounts::KeyRing;
use crate::accounts::keyring;
use crate::accounts::rekey::{self, KeyStatus, RekeyReport};
use crate::config::{CredentialsSettings, Settings};

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Print a fresh key (base64 of 32 random bytes) for FOLLOWQ_CREDENTIALS__KEYS__<ID>.
    /// Needs no database.
    NewKey,
    /// How many credentials rows each key seals, and how many are still in clear.
    Status {
        /// Print as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt every credentials row under the active key (rows in clear included), in
    /// short batches, then report the rows left under each key. Safe while daemons run.
    Rekey {
        /// Rows per statement.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
    },
}

/// `new-key` needs no database; `status` and `rekey` connect to it.
pub async fn run(settings: &Settings, command: CredentialsCommand) -> anyhow::Result<ExitCode> {
    let credentials = settings.credentials.clone();
    match command {
        CredentialsCommand::NewKey => new_key(),
        CredentialsCommand::Status { json } => {
            super::on_database(settings, |pool| async move {
                status(&pool, &credentials, json).await
            })
            .await
        }
        CredentialsCommand::Rekey { batch_size } => {
            super::on_database(settings, |pool| async move {
                rekey(&pool, &credentials, batch_size).await
            })
            .await
        }
    }
}

/// Prints a fresh key, and says what to do with it on stderr.
fn new_key() -> anyhow::Result<ExitCode> {
    let key = keyring::new_key()?;
    outln!("{}", key.expose_secret());
    eprintln!(
        "set it as FOLLOWQ_CREDENTIALS__KEYS__<ID>=<the key above> beside the keys in use, and \
         FOLLOWQ_CREDENTIALS__ACTIVE_KEY=<id> to encrypt with it; keep it in your secrets store: \
         tokens sealed with it cannot be read without it"
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(
    pool: &PgPool,
    credentials: &CredentialsSettings,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let status = rekey::status(pool).await?;
    if json {
        print_json(&status)?;
    } else {
        // Counting needs no key; the configured ones only annotate the figures.
        let keys = KeyRing::from_settings(credentials).ok();
        out!("{}", render_status(&status, keys.as_ref()));
    }
    Ok(ExitCode::SUCCESS)
}

async fn rekey(
    pool: &PgPool,
    credentials: &CredentialsSettings,
    batch_size: u32,
) -> anyhow::Result<ExitCode> {
    let keys = KeyRing::from_settings(credentials)?;
    let report = rekey::rekey(pool, &keys, batch_size).await?;
    let status = rekey::status(pool).await?;
    out!("{}", render_rekey(&report, &status, &keys));
    let left = status.rows_not_under(keys.active_id());
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render_status(status: &KeyStatus, keys: Option<&KeyRing>) -> String {
    let mut out = format!("{} credentials rows\n", status.total_rows);
    for count in &status.by_key {
        let note = match (&count.key_id, keys) {
            (None, _) => " (in clear, from an earlier version: run `followq credentials rekey`)",
            (Some(id), Some(keys)) if id == keys.active_id() => " (active)",
            (Some(id), Some(keys)) if !keys.knows(id) => {
                " (not configured here: these rows cannot be read)"
            }
            _ => "",
        };
        let label = match &count.key_id {
            Some(id) => format!("key {id}"),
            None => "clear".to_owned(),
        };
        let _ = writeln!(out, "  {label}: {} rows{note}", count.rows);
    }
    out
}

fn render_rekey(report: &RekeyReport, status: &KeyStatus, keys: &KeyRing) -> String {
    let mut out = format!(
        "re-encrypted {} rows under key {}\n",
        report.resealed,
        keys.active_id()
    );
    for (reason, rows) in &report.unreadable {
        let _ = writeln!(out, "  {rows} rows left as they are: {reason}");
    }
    if report.busy > 0 {
        let _ = writeln!(
            out,
            "  {} rows were being refreshed or changed meanwhile: run rekey again",
            report.busy
        );
    }
    let _ = writeln!(out, "rows left per key:");
    let mut ids: Vec<Option<&str>> = keys.ids().map(Some).collect();
    ids.push(None);
    for count in &status.by_key {
        if !ids.contains(&count.key_id.as_deref()) {
            ids.push(count.key_id.as_deref());
        }
    }
    for id in ids {
        let rows = status.rows_under(id);
        match id {
            Some(id) => {
                let _ = writeln!(out, "  key {id}: {rows}");
            }
            None => {
                let _ = writeln!(out, "  clear: {rows}");
            }
        }
    }
    out
}
