//! Integration tests of the X API client, over loopback only: wiremock stands in for
//! X, a bare TCP listener for a server that misbehaves, and each database test gets a fresh
//! database (see `db.rs`; needs `DATABASE_URL`).

#[path = "../common/mod.rs"]
mod db;
mod follow;
mod refresh;
mod secrets;

use std::time::Duration;

use followq::config::{OAuth1AppSettings, OAuth2AppSettings, XApiSettings};
use secrecy::SecretString;

/// Settings pointing at `base_url`, a public OAuth 2.0 client `cid`, OAuth 1.0a consumer
/// `ck`/`cs-SECRET`.
pub fn settings(base_url: &str) -> XApiSettings {
    XApiSettings {
        base_url: base_url.to_owned(),
        allow_insecure_http: false,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        oauth2: OAuth2AppSettings {
            client_id: String::from("cid"),
            client_secret: None,
            refresh_margin: Duration::from_secs(300),
        },
        oauth1: OAuth1AppSettings {
            consumer_key: String::from("ck"),
            consumer_secret: Some(SecretString::from("cs-SECRET")),
        },
    }
}
