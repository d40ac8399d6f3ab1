//! The HTTP plumbing shared by the follow client and the token client: the one way followq
//! builds a reqwest client for X (user agent, timeouts, no redirects), endpoint URLs under
//! the configured base, bodies read up to a cap, and transport errors described without a
//! secret.

use std::time::Duration;

use crate::config::XApiSettings;

/// `followq/<version>`.
pub const USER_AGENT: &str = concat!("followq/", env!("CARGO_PKG_VERSION"));

/// How idle pooled connections to X are kept; below X's own idle cut-off, so a request
/// rarely lands on a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum XApiError {
    #[error("x_api.base_url {url:?} cannot be used as a base URL")]
    BadBaseUrl { url: String },
    #[error("could not build the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// `base_url` with `segments` appended to its path (a trailing slash on it is allowed).
pub(crate) fn endpoint(base_url: &str, segments: &[&str]) -> Result<reqwest::Url, XApiError> {
    let bad = || XApiError::BadBaseUrl {
        url: base_url.to_owned(),
    };
    let mut url = reqwest::Url::parse(base_url).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
        return Err(bad());
    }
    url.path_segments_mut()
        .map_err(|()| bad())?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// The one way followq builds an HTTP client for X.
pub(crate) fn build_http_client(settings: &XApiSettings) -> Result<reqwest::Client, XApiError> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(XApiError::Build)
}

/// Reads the body, stopping at `cap` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    Ok(body)
}

/// The kind of a transport failure and its message chain (URL included: it holds no secret).
pub(crate) fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "connection"
    };
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
