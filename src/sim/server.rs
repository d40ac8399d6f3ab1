//! Running the simulator: the router, the accept loop, the handle tests and the CLI hold, and
//! shutdown.
//!
//! The accept loop serves each connection with hyper directly rather than `axum::serve`: a
//! response marked [`DropConnection`] is turned into a service error, on which hyper closes
//! the connection without writing anything, which is what the "drop" fault needs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::config::{FaultConfig, SimConfig, UsageCap};
use super::follow::{self, DropConnection};
use super::state::SimState;
use super::stats::{LoggedRequest, SimStats};
use super::tokens::SimTokens;
use super::{SimError, oauth, problems};

/// How long shutdown lets open connections finish their request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts the simulator on an ephemeral loopback port (`127.0.0.1:0`). Needs a tokio runtime.
pub fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    spawn_at(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
}

/// Starts the simulator on `addr`. Needs a tokio runtime.
pub fn spawn_at(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, SimError> {
    // Binding with std keeps this function synchronous; tokio's `from_std` would panic outside
    // a runtime, hence the check first.
    tokio::runtime::Handle::try_current().map_err(|_| SimError::NoRuntime)?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| SimError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| SimError::Bind { addr, source })?;
    let listener =
        TcpListener::from_std(listener).map_err(|source| SimError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr, source })?;

    let state = Arc::new(SimState::new(config));
    let router = router(Arc::clone(&state));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, router, stopped));
    tracing::info!(%addr, "X API simulator listening");
    Ok(SimHandle {
        addr,
        state,
        stop,
        task,
    })
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/2/users/{id}/following", post(follow::follow))
        .route("/2/oauth2/token", post(oauth::token))
        .route("/__sim/stats", get(stats))
        .fallback(|| async { problems::no_route() })
        .with_state(state)
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.stats()).into_response()
}

async fn accept_loop(listener: TcpListener, router: Router, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, router.clone(), stopped.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(%error, "sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            // Reap finished connections so the set does not grow for ever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn serve_connection(stream: TcpStream, router: Router, mut stopped: watch::Receiver<bool>) {
    // Small request/response pairs: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(Droppable(router));
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop_requested(&mut stopped) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Dropped on purpose, or the client went away: nothing to act on.
        tracing::debug!(%error, "sim: connection ended with an error");
    }
}

/// Resolves once a stop is asked for, or the handle is gone (the sender dropped). The watch's
/// read guard is dropped here, so callers' futures stay `Send`.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose (injected fault)")]
struct DroppedOnPurpose;

/// The router, with responses marked [`DropConnection`] turned into [`DroppedOnPurpose`].
#[derive(Clone)]
struct Droppable(Router);

impl tower_service::Service<Request<Incoming>> for Droppable {
    type Response = Response;
    type Error = DroppedOnPurpose;
    type Future = Pin<Box<dyn Future<Output = Result<Response, DroppedOnPurpose>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let future = tower_service::Service::call(&mut self.0, request.map(axum::body::Body::new));
        Box::pin(async move {
            let response: Result<Response, Infallible> = future.await;
            let response = match response {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.extensions().get::<DropConnection>().is_some() {
                Err(DroppedOnPurpose)
            } else {
                Ok(response)
            }
        })
    }
}

/// A running simulator. Dropping it stops the server too (without waiting); prefer
/// [`SimHandle::shutdown`].
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: the base URL for the follow and
    /// token endpoints.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers `user_id` (if new) and issues it a fresh random token pair.
    pub fn add_user(&self, user_id: &str) -> SimTokens {
        self.state.add_user(user_id)
    }

    /// Registers `user_id` (if new) with these tokens.
    pub fn add_user_with_tokens(&self, user_id: &str, access: &str, refresh: &str) {
        self.state.add_user_with_tokens(user_id, access, refresh);
    }

    /// A bearer token that authenticates the app only (403 `unsupported-authentication`).
    pub fn add_app_only_token(&self, token: &str) {
        self.state.add_app_only_token(token);
    }

    /// An OAuth 1.0a `oauth_token` and its secret acting for `user_id`. Requests signed with
    /// it must carry a valid HMAC-SHA1 signature made with this secret and the consumer secret
    /// of `SimConfig::oauth1_consumer`.
    pub fn add_oauth1_user(&self, user_id: &str, token: &str, token_secret: &str) {
        self.state.add_oauth1_user(user_id, token, token_secret);
    }

    /// While `refused`, X answers 401 to every follow request of `user_id` whatever its
    /// token, fresh ones included (the user withdrew the app's access), while the token
    /// endpoint still refreshes.
    pub fn set_tokens_refused(&self, user_id: &str, refused: bool) {
        self.state.set_tokens_refused(user_id, refused);
    }

    /// Sends (true) or leaves out (false) the `x-rate-limit-*` headers from now on.
    pub fn set_rate_limit_headers(&self, on: bool) {
        self.state.set_rate_limit_headers(on);
    }

    /// Every later answer to `user_id` waits `delay` before it is sent (`None`: at once). The
    /// request is counted in the window when it arrives, as X counts it.
    pub fn set_answer_delay(&self, user_id: &str, delay: Option<Duration>) {
        self.state.set_answer_delay(user_id, delay);
    }

    /// While held, token endpoint requests wait without an answer: a refresh stalls.
    pub fn hold_token_endpoint(&self, held: bool) {
        self.state.hold_token_endpoint(held);
    }

    /// Token endpoint requests waiting on the hold right now.
    pub fn token_requests_waiting(&self) -> u64 {
        self.state.token_requests_waiting()
    }

    /// App-wide 403 `client-forbidden` on every follow request while on.
    pub fn set_app_forbidden(&self, on: bool) {
        self.state.set_app_forbidden(on);
    }

    /// App-wide 429 `usage-capped` naming `cap` while set: every account is refused,
    /// whatever scope `cap` names (X's Product cap; an Account cap on every account).
    pub fn set_usage_capped(&self, cap: Option<UsageCap>) {
        self.state.set_usage_capped(cap);
    }

    /// 429 `usage-capped` naming `cap` for `user_id` alone while set (`None` lifts it), while
    /// other accounts go on: X's `scope: Account` cap. The app-wide cap wins while both are
    /// set. Counted in the user's window and `usage_capped`, like the app-wide one.
    pub fn set_account_usage_capped(&self, user_id: &str, cap: Option<UsageCap>) {
        self.state.set_account_usage_capped(user_id, cap);
    }

    /// Adds `n` prepaid credits (unlimited stays unlimited): after a 402, follows work again.
    pub fn top_up(&self, n: u64) {
        self.state.top_up(n);
    }

    /// Sets the prepaid credits left; `None`: unlimited, `Some(0)`: 402 from the next request.
    pub fn set_credits(&self, credits: Option<u64>) {
        self.state.set_credits(credits);
    }

    /// Replaces the fault settings; later requests use the new rates.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.state.set_faults(faults);
    }

    /// Another app of `user_id` spends `n` requests of the current window (starting one if
    /// none is running).
    pub fn prespend(&self, user_id: &str, n: u64) {
        self.state.prespend(user_id, n);
    }

    /// Every access token of `user_id` is expired from now on (401 until refreshed).
    pub fn expire_access_token(&self, user_id: &str) {
        self.state.expire_access_tokens(user_id);
    }

    /// The figures once no follow request is being handled (delayed answers included), or
    /// after the longest injected delay plus one second, whichever comes first.
    pub async fn stats(&self) -> SimStats {
        let bound = self.state.faults().delay_duration + Duration::from_secs(1);
        self.state.settle(bound).await;
        self.state.stats()
    }

    /// The figures right now.
    pub fn stats_now(&self) -> SimStats {
        self.state.stats()
    }

    /// Every follow request that reached the follow handler so far, in the order their
    /// answers were given (empty when `SimConfig::request_log` is off). A request still being
    /// handled is not in it yet: await [`SimHandle::stats`] first to let them finish.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.state.request_log()
    }

    /// How many follow requests `user_id` sent for each target (valid bodies only, whatever
    /// the answer: refusals, faults and 402s included), e.g. to check that every job was sent
    /// exactly once. Kept out of [`SimStats`] so that snapshots stay small.
    pub fn requests_by_target(&self, user_id: &str) -> BTreeMap<String, u64> {
        self.state.requests_by_target(user_id)
    }

    /// [`SimHandle::requests_by_target`] for every user, keyed by (user, target).
    pub fn requests_by_pair(&self) -> BTreeMap<(String, String), u64> {
        self.state.requests_by_pair()
    }

    /// Waits until `done` holds for the figures, checking them again whenever they change (a
    /// follow request counted, refused or answered; a token endpoint answer), for at most
    /// `limit`. `Ok` with the figures that satisfied it, or `Err` with the last ones seen.
    pub async fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&SimStats) -> bool,
    ) -> Result<SimStats, SimStats> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.state.changes();
        loop {
            changes.borrow_and_update();
            let stats = self.state.stats();
            if done(&stats) {
                return Ok(stats);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the simulator is gone.
                _ => return Err(self.state.stats()),
            }
        }
    }

    /// Stops accepting, lets open requests finish (up to 5 s), and waits for the server.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Err(error) = (&mut self.task).await {
            tracing::warn!(%error, "sim: server task ended abnormally");
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // Harmless after shutdown; otherwise it stops a server nobody can reach any more.
        let _ = self.stop.send(true);
    }
}
