//! `followq run`: the daemon, until SIGTERM or SIGINT (a second signal exits at once).

use std::process::ExitCode;

use sqlx::PgPool;
use tracing::{info, warn};

use crate::config::Settings;
use crate::worker::Daemon;

pub async fn run(settings: Settings, pool: PgPool) -> anyhow::Result<ExitCode> {
    let mut daemon = Daemon::new(settings, pool)?.spawn();
    let mut signals = 0;
    loop {
        tokio::select! {
            ended = daemon.wait() => {
                ended?;
                return Ok(ExitCode::SUCCESS);
            }
            signal = next_signal() => match signal {
                Ok(name) => {
                    signals += 1;
                    if signals == 1 {
                        info!(signal = name, "stopping gracefully (send it again to exit at once)");
                        daemon.begin_stop();
                    } else {
                        warn!(signal = name, "second signal: exiting now");
                        std::process::exit(130);
                    }
                }
                Err(e) => {
                    // Without signals the daemon runs until it is killed.
                    warn!(error = %e, "cannot listen for signals");
                    daemon.wait().await?;
                    return Ok(ExitCode::SUCCESS);
                }
            },
        }
    }
}

#[cfg(unix)]
async fn next_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => Ok("SIGTERM"),
        _ = interrupt.recv() => Ok("SIGINT"),
    }
}

#[cfg(not(unix))]
async fn next_signal() -> std::io::Result<&'static str> {
    tokio::signal::ctrl_c().await?;
    Ok("Ctrl-C")
}
