//! Reading an account's tokens for `accounts add`: from environment variables or from a JSON
//! object on stdin, never from argv (argv shows in `ps` and shell history).

use std::io::Read;

use anyhow::{Context, bail};
use chrono::{Duration, Utc};
use secrecy::SecretString;
use serde::Deserialize;

use crate::accounts::{AuthKind, Credentials};

pub const ENV_OAUTH2_ACCESS_TOKEN: &str = "FOLLOWQ_OAUTH2_ACCESS_TOKEN";
pub const ENV_OAUTH2_REFRESH_TOKEN: &str = "FOLLOWQ_OAUTH2_REFRESH_TOKEN";
pub const ENV_OAUTH2_EXPIRES_IN: &str = "FOLLOWQ_OAUTH2_EXPIRES_IN";
pub const ENV_OAUTH1_TOKEN: &str = "FOLLOWQ_OAUTH1_TOKEN";
pub const ENV_OAUTH1_TOKEN_SECRET: &str = "FOLLOWQ_OAUTH1_TOKEN_SECRET";

/// The OAuth 2.0 token endpoint's answer, so it can be piped in as it comes.
#[derive(Deserialize)]
struct OAuth2Json {
    access_token: SecretString,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct OAuth1Json {
    oauth_token: SecretString,
    oauth_token_secret: SecretString,
}

/// Reads credentials of `kind` from a JSON object on `stdin`.
pub fn from_json(kind: AuthKind, mut stdin: impl Read) -> anyhow::Result<Credentials> {
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .context("reading tokens from stdin")?;
    // serde_json's errors give line and column, never the input.
    Ok(match kind {
        AuthKind::OAuth2 => {
            let json: OAuth2Json = serde_json::from_str(&text).context(
                r#"stdin must be a JSON object {"access_token": "...", "refresh_token": "...", "expires_in": 7200}"#,
            )?;
            oauth2(json.access_token, json.refresh_token, json.expires_in)?
        }
        AuthKind::OAuth1 => {
            let json: OAuth1Json = serde_json::from_str(&text).context(
                r#"stdin must be a JSON object {"oauth_token": "...", "oauth_token_secret": "..."}"#,
            )?;
            Credentials::OAuth1 {
                token: json.oauth_token,
                token_secret: json.oauth_token_secret,
            }
        }
    })
}

/// Reads credentials of `kind` from the `FOLLOWQ_OAUTH*` variables given by `lookup`.
pub fn from_env(
    kind: AuthKind,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Credentials> {
    let required = |name: &str| {
        lookup(name)
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
            .with_context(|| format!("{name} is not set (or pass the tokens as JSON with --stdin)"))
    };
    Ok(match kind {
        AuthKind::OAuth2 => {
            let expires_in = match lookup(ENV_OAUTH2_EXPIRES_IN) {
                None => None,
                Some(raw) => Some(raw.trim().parse::<i64>().with_context(|| {
                    format!("{ENV_OAUTH2_EXPIRES_IN} must be a number of seconds")
                })?),
            };
            oauth2(
                required(ENV_OAUTH2_ACCESS_TOKEN)?,
                lookup(ENV_OAUTH2_REFRESH_TOKEN)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from),
                expires_in,
            )?
        }
        AuthKind::OAuth1 => Credentials::OAuth1 {
            token: required(ENV_OAUTH1_TOKEN)?,
            token_secret: required(ENV_OAUTH1_TOKEN_SECRET)?,
        },
    })
}

fn oauth2(
    access_token: SecretString,
    refresh_token: Option<SecretString>,
    expires_in: Option<i64>,
) -> anyhow::Result<Credentials> {
    let expires_at = match expires_in {
        None => None,
        Some(seconds) if seconds > 0 && seconds < 10 * 365 * 24 * 3600 => {
            Some(Utc::now() + Duration::seconds(seconds))
        }
        Some(seconds) => bail!("expires_in must be a positive number of seconds, got {seconds}"),
    };
    Ok(Credentials::OAuth2 {
        access_token,
        refresh_token,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn reads_the_token_endpoint_answer_from_stdin() {
        let json = r#"{"token_type":"bearer","access_token":"AT","refresh_token":"RT","expires_in":7200,"scope":"follows.write"}"#;
        let Credentials::OAuth2 {
            access_token,
            refresh_token,
            expires_at,
        } = from_json(AuthKind::OAuth2, json.as_bytes()).unwrap()
        else {
            panic!("expected OAuth2 credentials");
        };
        assert_eq!(access_token.expose_secret(), "AT");
        assert_eq!(refresh_token.unwrap().expose_secret(), "RT");
        let remaining = expires_at.unwrap() - Utc::now();
        assert!(remaining > Duration::seconds(7100) && remaining <= Duration::seconds(7200));
    }

    #[test]
    fn bad_json_errors_without_echoing_the_input() {
        let error =
            from_json(AuthKind::OAuth2, r#"{"acces_token":"SECRET"}"#.as_bytes()).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("access_token"), "{message}");
        assert!(!message.contains("SECRET"), "{message}");
    }

    #[test]
    fn environment_needs_both_oauth1_values() {
        let error = from_env(AuthKind::OAuth1, |name| {
            (name == ENV_OAUTH1_TOKEN).then(|| "T".to_owned())
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains(ENV_OAUTH1_TOKEN_SECRET));
    }

    #[test]
    fn environment_rejects_a_bad_expiry() {
        let error = from_env(AuthKind::OAuth2, |name| match name {
            ENV_OAUTH2_ACCESS_TOKEN => Some("AT".to_owned()),
            ENV_OAUTH2_EXPIRES_IN => Some("soon".to_owned()),
            _ => None,
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains(ENV_OAUTH2_EXPIRES_IN));
    }
}
