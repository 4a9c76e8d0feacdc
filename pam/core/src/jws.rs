//! Compact JWS parsing (RFC 7515 §7.1): three base64url parts, JSON-object header and
//! payload. Nothing here is trusted yet: this only gives the later steps something to check.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::MAX_TOKEN_BYTES;

/// A token that parsed, but whose signature has not been checked. The signing input and
/// signature together are the bearer credential: both are wiped when dropped.
#[derive(Debug, Clone)]
pub struct UnverifiedToken {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    pub signing_input: Zeroizing<String>,
    /// The third part, decoded.
    pub signature: Zeroizing<Vec<u8>>,
}

impl UnverifiedToken {
    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// True when `answer` is a token attempt rather than a password: only base64url
/// characters and dots, at least one dot, and a first part that begins like a JSON object
/// (`{`, after any whitespace; `eyJ` in GitLab's compact JSON). A token cut short by a
/// client still counts, so it is refused as a token (with a hint) instead of being passed
/// on to the next module as a password.
pub fn looks_like_jws(answer: &str) -> bool {
    let answer = answer.trim();
    let Some((header, _)) = answer.split_once('.') else {
        return false;
    };
    if !answer.bytes().all(|b| b == b'.' || is_base64url_byte(b)) {
        return false;
    }
    // The header is whole even in a cut token (the cut comes later): decode all of it, as
    // the decision does, so any header the decision accepts is recognised here.
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| bytes.into_iter().find(|b| !b.is_ascii_whitespace()))
        == Some(b'{')
}

fn is_base64url_byte(b: u8) -> bool {
    BASE64URL.get(usize::from(b)).copied().unwrap_or(false)
}

/// The base64url alphabet as a table: the answer is scanned byte by byte before anything
/// else, and a table lookup is a third of the work of the three comparisons it replaces.
/// (Built at compile time: an index out of bounds there is a build error, not a panic.)
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
static BASE64URL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        i += 1;
    }
    t
};

/// Parses a compact JWS. Surrounding whitespace is stripped first; the error is a short
/// description for the trace (never containing the token).
pub fn parse(raw: &str) -> Result<UnverifiedToken, String> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "token is {} bytes, over the {MAX_TOKEN_BYTES}-byte limit",
            raw.len()
        ));
    }
    let token = raw.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "expected 3 dot-separated parts, found {}",
            token.split('.').count()
        ));
    };
    let header = decode_object(h, "header")?;
    let claims = decode_object(p, "payload")?;
    if s.is_empty() {
        return Err("the signature part is empty".to_string());
    }
    // Decoded into a buffer that is wiped on drop, like the rest of the credential.
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map(Zeroizing::new)
        .map_err(|_| "the signature part is not base64url".to_string())?;
    if header.contains_key("crit") {
        return Err(
            "header has crit: no JWS extension is understood, so the token is refused".to_string(),
        );
    }
    match header.get("alg") {
        Some(Value::String(_)) => {}
        Some(_) => return Err("header alg is not a string".to_string()),
        None => return Err("header has no alg".to_string()),
    }
    // Built in a buffer of its final size: `format!` grows its String as it writes and
    // would leave the freed smaller copies unwiped.
    let mut signing_input = Zeroizing::new(String::with_capacity(
        h.len().saturating_add(1).saturating_add(p.len()),
    ));
    signing_input.push_str(h);
    signing_input.push('.');
    signing_input.push_str(p);
    Ok(UnverifiedToken {
        header,
        claims,
        signing_input,
        signature,
    })
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("the {what} is not base64url"))?;
    // serde_json refuses nesting deeper than 128 levels: no unbounded recursion.
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("the {what} is JSON but not an object")),
        Err(_) => Err(format!("the {what} is not JSON")),
    }
}

/// The algorithms the config accepts. `none` and the HMAC family are refused: a shared
/// secret cannot be published in a JWKS, and accepting HS* with a public key as the secret
/// is the classic algorithm-confusion forgery.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        n if n.eq_ignore_ascii_case("none") => {
            Err("algorithm \"none\" is refused: unsigned tokens prove nothing".to_string())
        }
        n if n.to_ascii_uppercase().starts_with("HS") => Err(format!(
            "algorithm {n:?} is refused: HMAC needs a shared secret, and ID tokens are signed with public keys"
        )),
        n => Err(format!(
            "unknown algorithm {n:?}; use RS256 (GitLab), or RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
        )),
    }
}

/// The JOSE name of an algorithm, for messages and traces.
pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(h: &str, p: &str) -> String {
        format!("{}.{}.{}", b64(h), b64(p), b64("sig"))
    }

    #[test]
    fn parses_and_strips_whitespace() {
        let t = format!(
            "  {}\n",
            token(r#"{"alg":"RS256","kid":"k"}"#, r#"{"iss":"x"}"#)
        );
        let u = parse(&t).unwrap();
        assert_eq!(u.alg(), Some("RS256"));
        assert_eq!(u.kid(), Some("k"));
        assert_eq!(u.claim_str("iss"), Some("x"));
        assert!(looks_like_jws(&t));
    }

    #[test]
    fn refuses_shapes() {
        assert!(parse("a.b").is_err());
        assert!(parse("a.b.c.d").is_err());
        assert!(
            parse(&token("[1]", "{}"))
                .unwrap_err()
                .contains("not an object")
        );
        assert!(
            parse(&token(r#"{"alg":"RS256"}"#, "\"s\""))
                .unwrap_err()
                .contains("not an object")
        );
        assert!(
            parse(&token(r#"{"alg":"RS256"}"#, "{"))
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            parse(&token(r#"{"alg":"RS256","crit":["b64"]}"#, "{}"))
                .unwrap_err()
                .contains("crit")
        );
        assert!(parse(&token(r#"{"alg":1}"#, "{}")).is_err());
        assert!(parse(&token(r#"{}"#, "{}")).is_err());
        let padded = format!("{}=.{}.{}", b64("{\"alg\":\"RS256\"}"), b64("{}"), b64("s"));
        assert!(parse(&padded).is_err());
        assert!(parse(&format!("{}.{}.", b64(r#"{"alg":"RS256"}"#), b64("{}"))).is_err());
    }

    #[test]
    fn refuses_oversize() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(parse(&big).unwrap_err().contains("limit"));
    }

    #[test]
    fn refuses_deep_nesting_without_crashing() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10000), "]".repeat(10000));
        assert!(parse(&token(r#"{"alg":"RS256"}"#, &deep)).is_err());
    }

    #[test]
    fn password_is_not_jws_shaped() {
        assert!(!looks_like_jws("hunter2"));
        assert!(!looks_like_jws("a.b.c"));
        assert!(!looks_like_jws("eyJhbGciOi"));
        assert!(!looks_like_jws("eyJ pass.word"));
        assert!(!looks_like_jws("my pass.word.x y"));
    }

    #[test]
    fn a_cut_token_is_still_a_token_attempt() {
        let t = token(r#"{"alg":"RS256"}"#, r#"{"iss":"x"}"#);
        assert!(looks_like_jws(&t[..t.len() - 5]));
        assert!(looks_like_jws(&t[..t.find('.').unwrap() + 3]));
        // A header with whitespace before its first member is still a header.
        assert!(looks_like_jws(&token("{ \"alg\": \"RS256\"}", "{}")));
        assert!(looks_like_jws(&token("\n{\"alg\":\"RS256\"}", "{}")));
        assert!(!looks_like_jws(&token("[\"alg\"]", "{}")));
    }
}
