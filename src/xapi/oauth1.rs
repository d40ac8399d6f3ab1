//! OAuth 1.0a user context: the HMAC-SHA1 `Authorization: OAuth …` header (RFC 5849), made
//! from the app's consumer key and secret and the account's token and secret.
//!
//! The signing is the `oauth1-request` crate's (kept, no_std-clean, RFC 5849 tested); this
//! file only feeds it. The follow request's body is JSON, which RFC 5849 §3.4.1.3 leaves out
//! of the signature, and its URL has no query, so the only signed parameters are the
//! `oauth_*` ones. The tests pin the output to two published vectors byte for byte.

use std::num::NonZeroU64;

use oauth1_request as oauth;
use secrecy::{ExposeSecret, SecretString};

/// The four values that sign a request. Borrowed: nothing here keeps a secret.
pub struct OAuth1Keys<'a> {
    pub consumer_key: &'a str,
    pub consumer_secret: &'a SecretString,
    pub token: &'a SecretString,
    pub token_secret: &'a SecretString,
}

/// The `Authorization` header value for `method uri` with no signed parameters beyond the
/// `oauth_*` ones, with a fresh random nonce and the current time. `uri` must not carry a
/// query string. The value names the token, so it stays a secret.
pub fn authorization_header(
    method: &str,
    uri: &reqwest::Url,
    keys: &OAuth1Keys<'_>,
) -> SecretString {
    SecretString::from(sign(method, uri.as_str(), &(), keys, None, None))
}

/// Signs with optional fixed nonce and timestamp (tests pin them to published examples).
/// `oauth_version="1.0"` is sent, as X's own examples and clients do.
fn sign<R: oauth::Request + ?Sized>(
    method: &str,
    uri: &str,
    request: &R,
    keys: &OAuth1Keys<'_>,
    nonce: Option<&str>,
    timestamp: Option<NonZeroU64>,
) -> String {
    let client = oauth::Credentials::new(keys.consumer_key, keys.consumer_secret.expose_secret());
    let token = oauth::Credentials::new(
        keys.token.expose_secret(),
        keys.token_secret.expose_secret(),
    );
    let mut builder = oauth::Builder::<_, _>::new(client, oauth::HmacSha1::new());
    builder.token(token).version(true);
    if nonce.is_some() {
        builder.nonce(nonce);
    }
    if timestamp.is_some() {
        builder.timestamp(timestamp);
    }
    builder.authorize(method, uri, request)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `name="…"` in an `Authorization: OAuth` header.
    fn param<'h>(header: &'h str, name: &str) -> Option<&'h str> {
        let start = header.find(&format!("{name}=\""))? + name.len() + 2;
        let rest = &header[start..];
        Some(&rest[..rest.find('"')?])
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    /// X's "Creating a signature" guide (docs.x.com, fundamentals/authentication/oauth-1-0a):
    /// its published signature `hCtSmYh+iHYCEqBWrE7C7hYmtUk=` was computed for the
    /// api.twitter.com URL (the page now shows api.x.com beside the old value).
    #[test]
    fn x_docs_creating_a_signature_example() {
        let (cs, t, ts) = (
            secret("kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw"),
            secret("370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            secret("LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"),
        );
        let keys = OAuth1Keys {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog",
            consumer_secret: &cs,
            token: &t,
            token_secret: &ts,
        };
        let request = oauth::ParameterList::new([
            ("include_entities", "true"),
            (
                "status",
                "Hello Ladies + Gentlemen, a signed OAuth request!",
            ),
        ]);
        let header = sign(
            "POST",
            "https://api.twitter.com/1.1/statuses/update.json",
            &request,
            &keys,
            Some("kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            NonZeroU64::new(1_318_622_958),
        );
        assert_eq!(
            header,
            "OAuth \
             oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\",\
             oauth_nonce=\"kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg\",\
             oauth_signature_method=\"HMAC-SHA1\",\
             oauth_timestamp=\"1318622958\",\
             oauth_token=\"370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb\",\
             oauth_version=\"1.0\",\
             oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\""
        );
    }

    /// RFC 5849 §1.2, the photos request: `oauth_signature="MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D"`.
    /// That example sends no `oauth_version`, so it is signed here without one.
    #[test]
    fn rfc5849_section_1_2_example() {
        let (cs, t, ts) = (
            secret("kd94hf93k423kf44"),
            secret("nnch734d00sl2jdk"),
            secret("pfkkdhi9sl3r4s00"),
        );
        let client = oauth::Credentials::new("dpf43f3p2l4k3l03", cs.expose_secret());
        let token = oauth::Credentials::new(t.expose_secret(), ts.expose_secret());
        let mut builder = oauth::Builder::<_, _>::new(client, oauth::HmacSha1::new());
        builder
            .token(token)
            .nonce("chapoH")
            .timestamp(NonZeroU64::new(137_131_202));
        let request = oauth::ParameterList::new([("file", "vacation.jpg"), ("size", "original")]);
        let header = builder.get("http://photos.example.net/photos", &request);
        assert_eq!(
            param(&header, "oauth_signature"),
            Some("MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D")
        );
    }

    #[test]
    fn the_follow_header_is_signed_and_varies_per_request() {
        let (cs, t, ts) = (secret("cs"), secret("tok-1"), secret("tsec"));
        let keys = OAuth1Keys {
            consumer_key: "ck",
            consumer_secret: &cs,
            token: &t,
            token_secret: &ts,
        };
        let uri = reqwest::Url::parse("https://api.x.com/2/users/6253282/following").unwrap();
        let first = authorization_header("POST", &uri, &keys);
        let second = authorization_header("POST", &uri, &keys);
        let first = first.expose_secret();
        assert!(first.starts_with("OAuth "), "{first}");
        assert_eq!(param(first, "oauth_consumer_key"), Some("ck"));
        assert_eq!(param(first, "oauth_token"), Some("tok-1"));
        assert_eq!(param(first, "oauth_signature_method"), Some("HMAC-SHA1"));
        assert_eq!(param(first, "oauth_version"), Some("1.0"));
        assert!(param(first, "oauth_signature").is_some_and(|s| !s.is_empty()));
        // A fresh nonce each time, so X never sees a replay.
        assert_ne!(
            param(first, "oauth_nonce"),
            param(second.expose_secret(), "oauth_nonce")
        );
    }
}
