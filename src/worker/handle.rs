//! A daemon running in this process: the one way the demo, the bench and the tests start
//! one ([`Daemon::spawn`]) and stop it, gracefully as SIGTERM does or abruptly as a crash.
//! `followq run` runs the daemon on its own task instead, tied to the process's signals.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use super::Daemon;

/// A daemon spawned on the current tokio runtime.
#[derive(Debug)]
pub struct DaemonHandle {
    http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// Why [`DaemonHandle::stop_within`] failed.
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
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(self.run(shutdown.clone()));
        DaemonHandle {
            http_addr,
            shutdown,
            task,
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

    /// SIGTERM, in effect: returns once the daemon has stopped gracefully (requests in flight
    /// recorded, leases released).
    pub async fn stop(self) -> Result<(), JoinError> {
        self.shutdown.cancel();
        self.task.await
    }

    /// [`DaemonHandle::stop`], aborting the daemon if it takes longer than `limit`.
    pub async fn stop_within(mut self, limit: Duration) -> Result<(), StopError> {
        self.shutdown.cancel();
        match tokio::time::timeout(limit, &mut self.task).await {
            Ok(joined) => Ok(joined?),
            Err(_) => {
                self.task.abort();
                Err(StopError::TimedOut(limit))
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
