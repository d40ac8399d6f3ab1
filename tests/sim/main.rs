//! Integration tests of the bundled X API simulator over real HTTP on loopback: its window,
//! rules, token endpoint, faults, usage caps, prepaid credits, figures (under concurrency
//! too) and request log, and the `followq sim` command. None needs a database.

mod cli;
mod controls;
mod counts;
mod credits;
mod day_limits;
mod faults;
mod oauth;
mod oauth1;
mod rules;
mod stats;
mod usage_caps;
mod window;

use std::time::Duration;

use followq::sim::{self, SimConfig, SimHandle};
use serde_json::Value;

/// A running simulator and a client for it.
pub struct Sim {
    pub handle: SimHandle,
    pub client: reqwest::Client,
}

/// One answer of the follow endpoint, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset: Option<u64>,
    pub content_type: String,
    pub text: String,
    /// `Value::Null` when the body is not JSON.
    pub json: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// A header's value as a number; `None` when absent or not a number.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The problem `type`, or the first error's `type`.
    pub fn problem_type(&self) -> &str {
        self.json["type"]
            .as_str()
            .or_else(|| self.json["errors"][0]["type"].as_str())
            .unwrap_or("")
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

impl Sim {
    pub fn start(config: SimConfig) -> Sim {
        Sim {
            handle: sim::spawn(config).expect("simulator starts"),
            client: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    /// `POST /2/users/{user}/following` with `{"target_user_id": target}`.
    pub async fn follow(&self, token: &str, user: &str, target: &str) -> Reply {
        self.follow_raw(
            token,
            user,
            "application/json",
            format!(r#"{{"target_user_id":"{target}"}}"#),
        )
        .await
        .expect("an answer")
    }

    pub async fn follow_raw(
        &self,
        token: &str,
        user: &str,
        content_type: &str,
        body: String,
    ) -> Result<Reply, reqwest::Error> {
        let response = self
            .client
            .post(self.url(&format!("/2/users/{user}/following")))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        read(response).await
    }

    /// `POST /2/oauth2/token` refreshing with `refresh` as public client `followq-test`.
    pub async fn refresh(&self, refresh: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/2/oauth2/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", "followq-test"),
            ])
            .send()
            .await
            .expect("token endpoint answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("token endpoint JSON"))
    }
}

pub async fn read(response: reqwest::Response) -> Result<Reply, reqwest::Error> {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (limit, remaining, reset) = (
        header("x-rate-limit-limit"),
        header("x-rate-limit-remaining"),
        header("x-rate-limit-reset"),
    );
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        limit,
        remaining,
        reset,
        content_type,
        text,
        json,
        headers,
    })
}

/// X's rules with the daily cap off and a long window, for tests about other rules.
pub fn roomy() -> SimConfig {
    SimConfig {
        window_requests: 1000,
        daily_cap: None,
        ..SimConfig::default()
    }
}

pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}
