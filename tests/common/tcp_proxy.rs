//! A TCP forwarder a test puts in front of Postgres (or any TCP server) and cuts and
//! restores, to stage a database outage at an exact moment instead of killing a server:
//! [`CuttableProxy`].
//!
//! While cut, the proxy keeps listening and resets every connection it accepts at once
//! (`SO_LINGER` 0, so the client gets a TCP reset). It does not stop listening: a refused
//! connect (`ECONNREFUSED`) is what sqlx's pool takes for "the server is starting up" and
//! retries until its `acquire_timeout` (30 s by default), whereas a reset connection is an
//! error sqlx returns at once. Keeping the listener also keeps the port, so `restore` cannot
//! fail for a port taken in between.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A running proxy from [`CuttableProxy::addr`] to an upstream address. Dropping it stops
/// the proxy and closes every connection it forwards.
pub struct CuttableProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    /// True while cut. Every connection task watches it.
    cut: watch::Sender<bool>,
    /// Client connections the proxy holds open (forwarded or about to be reset), so that
    /// `cut` can wait until each is closed.
    open: watch::Sender<usize>,
    /// Client connections being forwarded to the upstream now.
    forwarding: watch::Sender<usize>,
}

impl CuttableProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`. Must be called
    /// inside a tokio runtime.
    pub fn start(upstream: SocketAddr) -> CuttableProxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("the proxy binds a loopback port");
        listener
            .set_nonblocking(true)
            .expect("the proxy's listener is non-blocking");
        let listener = TcpListener::from_std(listener).expect("the proxy runs inside tokio");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            cut: watch::Sender::new(false),
            open: watch::Sender::new(0),
            forwarding: watch::Sender::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        CuttableProxy { addr, shared, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every forwarded connection at once, in both directions (the client gets a
    /// reset, the upstream a close), and resets every new connection until [`restore`]. When
    /// this returns, no connection through the proxy is open any more.
    ///
    /// [`restore`]: CuttableProxy::restore
    pub async fn cut(&self) {
        self.shared.cut.send_replace(true);
        let mut open = self.shared.open.subscribe();
        open.wait_for(|n| *n == 0)
            .await
            .expect("the proxy's counter lives as long as the proxy");
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.cut.send_replace(false);
    }

    /// How many connections are being forwarded now.
    pub fn connections(&self) -> usize {
        *self.shared.forwarding.borrow()
    }

    /// `url` (e.g. `postgres://user@host:5432/db?sslmode=disable`) with its host and port
    /// replaced by the proxy's; user, password, database and query are kept.
    pub fn url_through(&self, url: &str) -> String {
        let mut url = reqwest::Url::parse(url).expect("a URL with a host");
        url.set_host(Some(&self.addr.ip().to_string()))
            .expect("the URL takes a host");
        url.set_port(Some(self.addr.port()))
            .expect("the URL takes a port");
        url.to_string()
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        // The connection tasks live in the accept loop's JoinSet: aborting the loop drops
        // the set, which aborts them and closes their sockets.
        self.task.abort();
    }
}

/// The socket address of the host and port in `url` (a `postgres://` URL, say): the
/// upstream for [`CuttableProxy::start`].
pub async fn socket_addr_of(url: &str) -> SocketAddr {
    let url = reqwest::Url::parse(url).expect("a URL with a host");
    let host = url.host_str().expect("the URL names a host");
    let port = url.port().unwrap_or(5432);
    tokio::net::lookup_host((host, port))
        .await
        .expect("the URL's host resolves")
        .next()
        .expect("the URL's host has an address")
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    // Counted before the task starts, so a `cut` that begins now waits for it.
                    shared.open.send_modify(|n| *n += 1);
                    connections.spawn(serve(client, Arc::clone(&shared)));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Decrements a counter when dropped, however the task ends.
struct Counted<'a>(&'a watch::Sender<usize>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let _open = Counted(&shared.open);
    let mut cut = shared.cut.subscribe();
    if *cut.borrow_and_update() {
        reset(client);
        return;
    }
    let mut upstream = tokio::select! {
        connected = TcpStream::connect(shared.upstream) => match connected {
            Ok(upstream) => upstream,
            Err(_) => {
                reset(client);
                return;
            }
        },
        _ = cut.wait_for(|cut| *cut) => {
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    shared.forwarding.send_modify(|n| *n += 1);
    let forwarding = Counted(&shared.forwarding);
    let was_cut = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
        _ = cut.wait_for(|cut| *cut) => true,
    };
    drop(forwarding);
    if was_cut {
        reset(client);
    } else {
        // One side closed: pass the close on, gently.
        let _ = client.shutdown().await;
    }
    drop(upstream);
}

/// Closes `client` with a TCP reset rather than a FIN: the client's next read or write
/// fails at once with "connection reset", as when a database host goes away.
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}
