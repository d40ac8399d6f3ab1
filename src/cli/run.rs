//! `followq run`: the daemon, until SIGTERM or SIGINT (a second signal exits at once).

use std::process::ExitCode;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::worker::Daemon;

pub async fn run(settings: Settings, pool: PgPool) -> anyhow::Result<ExitCode> {
    let daemon = Daemon::new(settings, pool)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    daemon.run(shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// The first signal asks for a graceful stop; the second one ends the process at once.
async fn watch_signals(shutdown: CancellationToken) {
    let mut seen = 0;
    loop {
        match next_signal().await {
            Ok(name) => {
                seen += 1;
                if seen == 1 {
                    info!(
                        signal = name,
                        "stopping gracefully (send it again to exit at once)"
                    );
                    shutdown.cancel();
                } else {
                    warn!(signal = name, "second signal: exiting now");
                    std::process::exit(130);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for signals");
                return;
            }
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
