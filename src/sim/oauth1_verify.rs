//! Verifying an OAuth 1.0a `Authorization: OAuth …` header as X does: the HMAC-SHA1 signature
//! (RFC 5849 §3.4) over the method, the base URI and the request's parameters, keyed with the
//! consumer secret and the token secret.
//!
//! Written from the RFC, independently of the signer followq uses (`oauth1-request`), so that
//! the simulator is a check on the client rather than a copy of it; the tests pin it to the
//! RFC's and X's published examples. The follow endpoint takes a JSON body, which is never
//! signed (§3.4.1.3.1 signs form bodies only), so the signed parameters are the URL's query
//! and the header's `oauth_*` ones.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha1::Sha1;

/// RFC 5849 §3.6: everything but the unreserved characters is percent-encoded.
const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The parameters of an `Authorization: OAuth …` header, percent-decoded, in header order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth1Params(Vec<(String, String)>);

impl OAuth1Params {
    /// Parses a whole header value (`OAuth k="v", k="v"`). `None` when it is not the OAuth
    /// scheme, a parameter is malformed or not percent-decodable, or one appears twice
    /// (RFC 5849 §3.5.1 allows each once).
    pub fn parse(header_value: &str) -> Option<OAuth1Params> {
        let (scheme, rest) = header_value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("oauth") {
            return None;
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in rest.split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=')?;
            let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
            let name = decode(name.trim())?;
            if params.iter().any(|(seen, _)| *seen == name) {
                return None;
            }
            params.push((name, decode(value)?));
        }
        Some(OAuth1Params(params))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn decode(text: &str) -> Option<String> {
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, RFC3986_RESERVED).to_string()
}

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureProblem {
    /// A required parameter is missing (`oauth_consumer_key`, `oauth_token`,
    /// `oauth_signature_method`, `oauth_timestamp`, `oauth_nonce`, `oauth_signature`).
    Missing,
    /// `oauth_signature_method` other than `HMAC-SHA1`, or `oauth_version` other than `1.0`.
    Unsupported,
    /// `url` is not an absolute http(s) URL.
    BadUrl,
    /// The signature does not match.
    Mismatch,
}

/// Checks the signature of a request to `url` (absolute, query included) with `method`,
/// signed with `params`, against the secrets the server holds. The consumer key and token are
/// not looked up here: the caller found the secrets by them.
pub fn verify(
    method: &str,
    url: &str,
    params: &OAuth1Params,
    consumer_secret: &str,
    token_secret: &str,
) -> Result<(), SignatureProblem> {
    for required in [
        "oauth_consumer_key",
        "oauth_token",
        "oauth_signature_method",
        "oauth_timestamp",
        "oauth_nonce",
        "oauth_signature",
    ] {
        if params.get(required).is_none() {
            return Err(SignatureProblem::Missing);
        }
    }
    if params.get("oauth_signature_method") != Some("HMAC-SHA1")
        || params.get("oauth_version").is_some_and(|v| v != "1.0")
    {
        return Err(SignatureProblem::Unsupported);
    }
    let base = base_string(method, url, params).ok_or(SignatureProblem::BadUrl)?;
    let sent = params
        .get("oauth_signature")
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or(SignatureProblem::Mismatch)?;
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    let mut mac =
        Hmac::<Sha1>::new_from_slice(key.as_bytes()).map_err(|_| SignatureProblem::Mismatch)?;
    mac.update(base.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&sent)
        .map_err(|_| SignatureProblem::Mismatch)
}

/// The signature base string (RFC 5849 §3.4.1): `METHOD&base-uri&normalized-parameters`.
fn base_string(method: &str, url: &str, params: &OAuth1Params) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    // §3.4.1.2: scheme and host lower case (the parser does it), the port only when it is
    // not the scheme's default (the parser drops a default one), no query, no fragment.
    let host = url.host_str()?;
    let base_uri = match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    };
    // §3.4.1.3: the query's parameters and the header's, but not `realm` nor the signature;
    // each name and value encoded, sorted by name then value.
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(name, value)| (encode(&name), encode(&value)))
        .chain(
            params
                .0
                .iter()
                .filter(|(name, _)| name != "realm" && name != "oauth_signature")
                .map(|(name, value)| (encode(name), encode(value))),
        )
        .collect();
    pairs.sort();
    let normalized = pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    Some(format!(
        "{}&{}&{}",
        encode(&method.to_ascii_uppercase()),
        encode(&base_uri),
        encode(&normalized)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5849 §1.2: GET http://photos.example.net/photos?file=vacation.jpg&size=original,
    /// published signature `MdpQcU8iPSUjWoN/UDMsK2sui9I=` (no `oauth_version`; `realm` is
    /// not signed).
    #[test]
    fn rfc5849_section_1_2_example() {
        let header = r#"OAuth realm="Photos", oauth_consumer_key="dpf43f3p2l4k3l03", oauth_token="nnch734d00sl2jdk", oauth_signature_method="HMAC-SHA1", oauth_timestamp="137131202", oauth_nonce="chapoH", oauth_signature="MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D""#;
        let params = OAuth1Params::parse(header).unwrap();
        assert_eq!(params.get("oauth_nonce"), Some("chapoH"));
        assert_eq!(
            params.get("oauth_signature"),
            Some("MdpQcU8iPSUjWoN/UDMsK2sui9I=")
        );
        let url = "http://photos.example.net/photos?file=vacation.jpg&size=original";
        assert_eq!(
            verify("GET", url, &params, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00"),
            Ok(())
        );
        assert_eq!(
            verify("GET", url, &params, "kd94hf93k423kf44", "another secret"),
            Err(SignatureProblem::Mismatch)
        );
        assert_eq!(
            verify(
                "GET",
                "http://photos.example.net/photos?file=vacation.jpg&size=small",
                &params,
                "kd94hf93k423kf44",
                "pfkkdhi9sl3r4s00"
            ),
            Err(SignatureProblem::Mismatch),
            "a changed query is a changed request"
        );
        assert_eq!(
            verify("POST", url, &params, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00"),
            Err(SignatureProblem::Mismatch)
        );
    }

    /// X's "Creating a signature" guide: `hCtSmYh+iHYCEqBWrE7C7hYmtUk=` for a POST whose form
    /// body parameters are signed; here they are given as the query, which signs the same.
    #[test]
    fn x_docs_creating_a_signature_example() {
        let header = "OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\",\
            oauth_nonce=\"kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg\",\
            oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\",\
            oauth_signature_method=\"HMAC-SHA1\",oauth_timestamp=\"1318622958\",\
            oauth_token=\"370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb\",\
            oauth_version=\"1.0\"";
        let params = OAuth1Params::parse(header).unwrap();
        let url = "https://api.twitter.com/1.1/statuses/update.json?include_entities=true&\
                   status=Hello%20Ladies%20%2B%20Gentlemen%2C%20a%20signed%20OAuth%20request%21";
        assert_eq!(
            verify(
                "POST",
                url,
                &params,
                "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
                "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        assert_eq!(OAuth1Params::parse("Bearer abc"), None);
        assert_eq!(
            OAuth1Params::parse(r#"OAuth oauth_token="a", oauth_token="b""#),
            None,
            "a parameter twice"
        );
        assert_eq!(
            OAuth1Params::parse(r#"OAuth oauth_token=a"#),
            None,
            "unquoted"
        );
        let partial = OAuth1Params::parse(r#"OAuth oauth_token="t", oauth_signature="s""#).unwrap();
        assert_eq!(
            verify("POST", "http://h/p", &partial, "c", "t"),
            Err(SignatureProblem::Missing)
        );
        let plaintext = OAuth1Params::parse(
            r#"OAuth oauth_consumer_key="k", oauth_token="t", oauth_signature_method="PLAINTEXT", oauth_timestamp="1", oauth_nonce="n", oauth_signature="c%26t""#,
        )
        .unwrap();
        assert_eq!(
            verify("POST", "http://h/p", &plaintext, "c", "t"),
            Err(SignatureProblem::Unsupported)
        );
    }
}
