//! A running daemon: the one way `followq run`, the demo, the bench and the tests start one
//! ([`Daemon::spawn`]) and stop it, gracefully as SIGTERM does or abruptly as a crash.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use super::Daemon;

/// How long a graceful stop may take beyond `worker.shutdown_grace` before
/// [`DaemonHandle::stop`] gives up on it: the leases' release and the last writes.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// A daemon spawned on the current tokio runtime.
#[derive(Debug)]
pub struct DaemonHandle {
    http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    /// A graceful stop that takes longer is aborted (`worker.shutdown_grace` and some slack).
    stop_limit: Duration,
}

/// Why [`DaemonHandle::stop`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("the daemon did not stop within {0:?} of the signal (aborted)")]
    TimedOut(Duration),
    #[error("the daemon task did not end cleanly")]
    Task(#[from] JoinError),
}

impl Daemon {
    /// Starts the daemon on a task of its own.
    pub fn spawn(self) -> DaemonHandle {
        let http_addr = self.http_addr();
        let stop_limit = self.ctx.settings.worker.shutdown_grace + STOP_SLACK;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(self.run(shutdown.clone()));
        DaemonHandle {
            http_addr,
            shutdown,
            task,
            stop_limit,
        }
    }
}

impl DaemonHandle {
    /// The ops listener's address, when `[http]` is enabled (port 0 is resolved).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The first SIGTERM, in effect, without waiting: the daemon starts its graceful stop.
    pub fn begin_stop(&self) {
        self.shutdown.cancel();
    }

    /// Whether the daemon has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the daemon to end (after [`DaemonHandle::begin_stop`]). Not to be called
    /// again once it has returned.
    pub async fn wait(&mut self) -> Result<(), JoinError> {
        (&mut self.task).await
    }

    /// SIGTERM, in effect: returns once the daemon has stopped gracefully (requests in flight
    /// recorded, leases released), or aborts it if that takes longer than its grace period
    /// and some slack.
    pub async fn stop(mut self) -> Result<(), StopError> {
        self.shutdown.cancel();
        match tokio::time::timeout(self.stop_limit, &mut self.task).await {
            Ok(joined) => Ok(joined?),
            Err(_) => {
                self.task.abort();
                Err(StopError::TimedOut(self.stop_limit))
            }
        }
    }

    /// A crash, in effect: the task is dropped where it stands, nothing is cleaned up (its
    /// leases and unanswered requests are left for its peers, as after kill -9).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
