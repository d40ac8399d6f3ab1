//! The listener's accept loop: hyper serving each connection itself (rather than
//! `axum::serve`, which offers neither a header-read timeout nor a connection cap) so that no
//! client can hold the listener.
//!
//! - At most [`MAX_CONNECTIONS`] at once: one more is closed as soon as it is accepted (a
//!   scraper retries; a flood gets nothing).
//! - One request per connection (no keep-alive), its headers within [`HEADER_READ_TIMEOUT`],
//!   the whole exchange within [`CONNECTION_DEADLINE`]: a client that opens a connection and
//!   sends nothing, or reads its answer a byte a minute, is cut off.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// A request's headers must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's whole life: headers, the handler (bounded by `READY_TIMEOUT` plus a wait for
/// the database permit), and writing the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// After a stop, how long a request still in progress may take before the listener closes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(super) async fn accept_loop(listener: TcpListener, router: Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        let router = router.clone();
                        connections.spawn(async move {
                            serve_connection(stream, router).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        debug!(%peer, "HTTP listener: connection cap reached; closing a new connection");
                        drop(stream);
                    }
                },
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(%error, "HTTP listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow for ever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(CLOSE_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // A scrape stuck on a slow client must not hold up the daemon's exit.
        connections.abort_all();
    }
}

async fn serve_connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!(%error, "HTTP listener: connection ended with an error"),
        Err(_) => debug!("HTTP listener: connection closed at its deadline"),
    }
}
