//! Reading an account's tokens for `accounts add`: from environment variables or from a JSON
//! object on stdin, never from argv (argv shows in `ps` and shell history).

use std::io::Read;

use anyhow::{Context, bail};
use chrono::{Duration, Utc};
use secrecy::SecretString;
use serde_json::error::Category;
use serde_json::{Map, Value};

use crate::accounts::{AuthKind, Credentials};

pub const ENV_OAUTH2_ACCESS_TOKEN: &str = "FOLLOWQ_OAUTH2_ACCESS_TOKEN";
pub const ENV_OAUTH2_REFRESH_TOKEN: &str = "FOLLOWQ_OAUTH2_REFRESH_TOKEN";
pub const ENV_OAUTH2_EXPIRES_IN: &str = "FOLLOWQ_OAUTH2_EXPIRES_IN";
pub const ENV_OAUTH1_TOKEN: &str = "FOLLOWQ_OAUTH1_TOKEN";
pub const ENV_OAUTH1_TOKEN_SECRET: &str = "FOLLOWQ_OAUTH1_TOKEN_SECRET";

/// More than this on stdin is not a token object (X's answers are a few hundred bytes).
const MAX_STDIN_BYTES: u64 = 64 * 1024;

/// Reads credentials of `kind` from a JSON object on `stdin`: for OAuth 2.0 the token
/// endpoint's answer as it comes (`access_token`, optional `refresh_token` and `expires_in`,
/// other fields ignored), for OAuth 1.0a `oauth_token` and `oauth_token_secret`.
///
/// Errors say where and what, never the input: serde's own messages quote the value they
/// could not use (`invalid type: string "<the token>"`), so the JSON is read as a value and
/// each field checked here.
pub fn from_json(kind: AuthKind, stdin: impl Read) -> anyhow::Result<Credentials> {
    let mut text = String::new();
    stdin
        .take(MAX_STDIN_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|_| anyhow::anyhow!("stdin must be UTF-8 text holding a JSON object"))?;
    if text.len() as u64 > MAX_STDIN_BYTES {
        bail!("stdin holds more than {MAX_STDIN_BYTES} bytes: not a token object");
    }
    let shape = match kind {
        AuthKind::OAuth2 => {
            r#"{"access_token": "...", "refresh_token": "...", "expires_in": 7200}"#
        }
        AuthKind::OAuth1 => r#"{"oauth_token": "...", "oauth_token_secret": "..."}"#,
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        let what = match e.classify() {
            Category::Eof => "it ends too early",
            Category::Syntax => "a syntax error",
            Category::Data => "a value of the wrong kind",
            Category::Io => "it could not be read",
        };
        anyhow::anyhow!(
            "stdin is not valid JSON ({what} at line {} column {}); expected {shape}",
            e.line(),
            e.column()
        )
    })?;
    let Value::Object(fields) = value else {
        bail!("stdin must be a JSON object {shape}");
    };
    Ok(match kind {
        AuthKind::OAuth2 => {
            let expires_in = match fields.get("expires_in") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
                    anyhow::anyhow!("expires_in must be a whole number of seconds")
                })?),
                Some(_) => bail!("expires_in must be a number of seconds"),
            };
            oauth2(
                required_string(&fields, "access_token", shape)?,
                optional_string(&fields, "refresh_token")?,
                expires_in,
            )?
        }
        AuthKind::OAuth1 => Credentials::OAuth1 {
            token: required_string(&fields, "oauth_token", shape)?,
            token_secret: required_string(&fields, "oauth_token_secret", shape)?,
        },
    })
}

fn required_string(
    fields: &Map<String, Value>,
    name: &str,
    shape: &str,
) -> anyhow::Result<SecretString> {
    optional_string(fields, name)?
        .with_context(|| format!("stdin has no {name:?}: expected {shape}"))
}

fn optional_string(
    fields: &Map<String, Value>,
    name: &str,
) -> anyhow::Result<Option<SecretString>> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(SecretString::from(text.as_str()))),
        Some(_) => bail!("{name} must be a string"),
    }
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
    fn a_value_of_the_wrong_type_is_named_not_quoted() {
        for (kind, json, field) in [
            (
                AuthKind::OAuth2,
                r#"{"access_token":"AT","expires_in":"SECRET-1"}"#,
                "expires_in",
            ),
            (
                AuthKind::OAuth2,
                r#"{"access_token":["SECRET-2"]}"#,
                "access_token",
            ),
            (
                AuthKind::OAuth2,
                r#"{"access_token":"AT","refresh_token":{"t":"SECRET-3"}}"#,
                "refresh_token",
            ),
            (
                AuthKind::OAuth1,
                r#"{"oauth_token":"T","oauth_token_secret":123456789}"#,
                "oauth_token_secret",
            ),
            (AuthKind::OAuth2, r#""SECRET-4""#, "JSON object"),
            (AuthKind::OAuth2, r#"{"access_token":"SECRET-5"#, "line 1"),
            (AuthKind::OAuth2, "SECRET-6", "line 1 column 1"),
        ] {
            let message = format!("{:#}", from_json(kind, json.as_bytes()).unwrap_err());
            assert!(message.contains(field), "{json}: {message}");
            assert!(!message.contains("SECRET"), "{json}: {message}");
            assert!(!message.contains("123456789"), "{json}: {message}");
        }
    }

    #[test]
    fn megabytes_on_stdin_are_refused_unread() {
        let huge = format!(r#"{{"access_token":"{}"}}"#, "A".repeat(2 * 1024 * 1024));
        let message = format!(
            "{:#}",
            from_json(AuthKind::OAuth2, huge.as_bytes()).unwrap_err()
        );
        assert!(message.contains("more than 65536 bytes"), "{message}");
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
