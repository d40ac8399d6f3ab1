//! Liveness bound to a Postgres session, so that a dead daemon's accounts move in about a
//! second instead of one account lease.
//!
//! Each daemon holds a connection of its own (outside the pool) for as long as it lives, and
//! records that session's pid and start time in its `followq.daemons` row. Postgres ends the
//! session the moment the process dies (the kernel closes its socket), and within the
//! keepalive settings below when the host vanishes from the network. Every
//! `worker.liveness_interval` each daemon
//!
//! - confirms its own session with a round trip on it; while it cannot (the connection broke,
//!   or the round trip took longer than the interval) it is *fenced*: the scheduler starts no
//!   request, because peers may soon take its accounts over;
//! - looks for peers whose session no longer exists (or, for a row that names none, whose
//!   heartbeat is older than an account lease) and frees their accounts at once (`store::daemons::reap`); the leaser is then woken to take them. It does so only
//!   once its own session has been up for a few intervals: after a Postgres restart (or a cut
//!   between every daemon and Postgres) every session is gone at once, and peers that are
//!   alive need a moment to open theirs again. A peer whose recorded session is older than
//!   the server itself (a restart) is judged by its heartbeat instead.
//!
//! What it assumes: a daemon's session ending means the daemon either died (its HTTP
//! connections died with it) or has been cut off from Postgres long enough to have fenced
//! itself (its round trips failed for a whole interval before the server could notice). Either
//! way a request it claimed can still be in the air; the claim's send deadline bounds that, and
//! a successor counts such a request until its `answer_by`. Clocks need not agree: every bound
//! is measured on one clock (the daemon's monotonic clock, or the database's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Context;
use crate::store::daemons;

/// Server-side TCP keepalive of the liveness session: a host that vanished from the network is
/// noticed after about idle + interval × count seconds, and its session ended.
const KEEPALIVE: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "5"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "3"),
];

/// After this daemon's own session comes back (or first opens), how many liveness intervals
/// it waits before it takes any peer for gone. A Postgres restart, or a network cut between
/// every daemon and Postgres, ends every session at once: the first daemon back must give its
/// peers time to open theirs again, or it would take the accounts of daemons that are alive.
/// A peer needs at most three intervals: one to notice (its next round trip), one more if that
/// round trip timed out, one to open the session again.
const REAP_AFTER_OWN_SESSION: u32 = 4;

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let every = ctx.settings.worker.liveness_interval;
    let mut session: Option<PgConnection> = None;
    // When the session now open was opened: peers are judged only once it has been up a while.
    let mut opened_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if session.is_none() {
            session = open(&ctx).await;
            opened_at = session.as_ref().map(|_| Instant::now());
        }
        if let Some(connection) = session.as_mut() {
            match tokio::time::timeout(every, daemons::confirm_session(connection)).await {
                Ok(Ok(_)) => ctx.confirm_alive(),
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {every:?}"),
                    };
                    warn!(
                        error,
                        "lost this daemon's liveness session: no new request starts until it is back"
                    );
                    session = None;
                    opened_at = None;
                    continue;
                }
            }
        }
        if opened_at.is_some_and(|at| at.elapsed() >= every * REAP_AFTER_OWN_SESSION) {
            reap(&ctx).await;
        }
    }
    if let Some(connection) = session {
        let _ = connection.close().await;
    }
}

/// Opens the liveness session and records it in this daemon's registry row.
async fn open(ctx: &Context) -> Option<PgConnection> {
    let options = (*ctx.pool.connect_options())
        .clone()
        .application_name("followq liveness")
        .options(KEEPALIVE);
    let mut connection = match PgConnection::connect_with(&options).await {
        Ok(connection) => connection,
        Err(e) => {
            warn!(error = %e, "could not open the liveness session; no new request starts until it is open");
            return None;
        }
    };
    match daemons::register(&mut connection, &ctx.worker_id).await {
        Ok(()) => {
            ctx.confirm_alive();
            info!("liveness session open");
            Some(connection)
        }
        Err(e) => {
            warn!(error = %e, "could not record the liveness session in followq.daemons");
            None
        }
    }
}

/// Frees the accounts of peers that are gone.
async fn reap(ctx: &Context) {
    match daemons::reap(&ctx.pool, &ctx.worker_id, ctx.settings.worker.account_lease).await {
        Ok(reaped) if reaped.daemons.is_empty() => {}
        Ok(reaped) => {
            ctx.metrics
                .daemons_reaped(u64::try_from(reaped.daemons.len()).unwrap_or(0));
            warn!(
                daemons = ?reaped.daemons,
                accounts = reaped.accounts,
                "peer daemons are gone (their database session ended): their accounts are free"
            );
            ctx.lease_now.notify_one();
        }
        Err(e) => warn!(error = %e, "could not look for peers that are gone"),
    }
}

/// Whether a confirmation at `confirmed` still vouches for this daemon at `now`: at most two
/// intervals old (one to send the next round trip, one for its answer).
pub fn vouches(confirmed: Option<Instant>, now: Instant, every: Duration) -> bool {
    confirmed.is_some_and(|at| now.saturating_duration_since(at) <= every * 2)
}
