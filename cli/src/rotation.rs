//! Key rotation: what the new key cache holds, from the keys the issuer publishes now and
//! the keys the cache held before.
//!
//! GitLab publishes its next key before it signs with it, and withdraws the old key some
//! time after it stopped signing with it. Tokens signed with the old key may still be alive
//! when it disappears (they live as long as their job may), and a refresh can run at any
//! moment of that dance. So a key that vanished from the endpoint is not dropped at once:
//! it stays in the cache, marked with [`RETIRED_AT`] (when it was first seen missing), and
//! the login path trusts it for `key_grace` seconds more. After that, refresh drops it, so
//! a withdrawn key does not live forever. A key that reappears loses its mark.

use std::collections::HashSet;

use idtoken_core::jwks::{self, MAX_KEYS, RETIRED_AT};
use serde_json::{Map, Value, json};

/// The usable JWKs of a document, as JSON objects, first occurrence of each kid: exactly
/// the keys the login path would use, so the cache never holds what nothing can use.
pub fn usable_keys(doc: &Value) -> Vec<Map<String, Value>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for jwk in doc
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(obj) = jwk.as_object() else { continue };
        let single = json!({ "keys": [jwk] }).to_string();
        let usable = jwks::parse(single.as_bytes()).is_ok_and(|s| s.keys.len() == 1);
        let Some(kid) = obj.get("kid").and_then(Value::as_str) else {
            continue;
        };
        if usable && seen.insert(kid.to_string()) {
            out.push(obj.clone());
        }
    }
    out
}

/// What a refresh did to the cache, for its report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Published now and not in the previous cache at all.
    pub added: Vec<String>,
    /// Published now after having been marked retired.
    pub reappeared: Vec<String>,
    /// Published under a kid the cache knew, with other key material: the old material is
    /// not kept (a kid names one key; an issuer that reuses one is replacing a key in a
    /// hurry, and tokens signed with the old material are refused from now on).
    pub replaced: Vec<String>,
    /// Vanished from the endpoint, still trusted: (kid, retired at).
    pub retired: Vec<(String, i64)>,
    /// Vanished longer than `key_grace` ago (or `key_grace` is 0): no longer in the cache.
    pub dropped: Vec<String>,
}

/// The new cache document: the published keys as published (any retired mark removed),
/// then the previous keys that vanished, marked retired, while their grace lasts.
pub fn merge(
    published: &[Map<String, Value>],
    previous: &[Map<String, Value>],
    now: i64,
    grace: i64,
) -> (Value, Changes) {
    let mut changes = Changes::default();
    let mut keys: Vec<Value> = Vec::new();
    let mut fresh = HashSet::new();
    for jwk in published {
        let mut jwk = jwk.clone();
        jwk.remove(RETIRED_AT); // the mark is ours; an endpoint cannot set it
        let kid = kid_of(&jwk);
        match previous.iter().find(|p| kid_of(p) == kid) {
            None => changes.added.push(kid.clone()),
            Some(p) if !same_material(p, &jwk) => changes.replaced.push(kid.clone()),
            Some(p) if p.contains_key(RETIRED_AT) => changes.reappeared.push(kid.clone()),
            Some(_) => {}
        }
        fresh.insert(kid);
        keys.push(Value::Object(jwk));
    }
    let mut retired: Vec<(i64, Map<String, Value>)> = Vec::new();
    for old in previous {
        let kid = kid_of(old);
        if fresh.contains(&kid) {
            continue;
        }
        // The earliest stamp wins; one from the future (clock set back, hand edits) is
        // clamped to now, so it cannot stretch the grace.
        let stamp = old
            .get(RETIRED_AT)
            .and_then(Value::as_i64)
            .map_or(now, |t| t.min(now));
        if grace == 0 || now > stamp.saturating_add(grace) {
            changes.dropped.push(kid);
            continue;
        }
        let mut jwk = old.clone();
        jwk.insert(RETIRED_AT.to_string(), Value::from(stamp));
        retired.push((stamp, jwk));
    }
    // Bounded like any cache: when too many keys retired at once, the newest stay.
    retired.sort_by_key(|r| std::cmp::Reverse(r.0));
    let room = MAX_KEYS.saturating_sub(keys.len());
    for (n, (stamp, jwk)) in retired.into_iter().enumerate() {
        let kid = kid_of(&jwk);
        if n < room {
            changes.retired.push((kid, stamp));
            keys.push(Value::Object(jwk));
        } else {
            changes.dropped.push(kid);
        }
    }
    (json!({ "keys": keys }), changes)
}

/// Whether two JWKs hold the same key material (kty and the public key's members); other
/// members (alg, use, x5t, our retired mark) may change without it being another key.
fn same_material(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    ["kty", "n", "e", "crv", "x", "y"]
        .iter()
        .all(|m| a.get(*m) == b.get(*m))
}

fn kid_of(jwk: &Map<String, Value>) -> String {
    jwk.get("kid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn key(kid: &str) -> Map<String, Value> {
        let n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB", "use": "sig", "alg": "RS256"})
            .as_object()
            .cloned()
            .unwrap()
    }

    fn retired(kid: &str, at: i64) -> Map<String, Value> {
        let mut k = key(kid);
        k.insert(RETIRED_AT.into(), at.into());
        k
    }

    fn kids(doc: &Value) -> Vec<(String, Option<i64>)> {
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap().to_string(),
                    k[RETIRED_AT].as_i64(),
                )
            })
            .collect()
    }

    #[test]
    fn a_new_key_is_added_and_a_vanished_one_retired() {
        let (doc, ch) = merge(&[key("b")], &[key("a")], NOW, DAY);
        assert_eq!(
            kids(&doc),
            vec![("b".into(), None), ("a".into(), Some(NOW))]
        );
        assert_eq!(ch.added, vec!["b"]);
        assert_eq!(ch.retired, vec![("a".to_string(), NOW)]);
        assert!(ch.dropped.is_empty());
    }

    #[test]
    fn the_earliest_stamp_is_kept_until_the_grace_ends() {
        let prev = [key("b"), retired("a", NOW - 100)];
        let (doc, _) = merge(&[key("b")], &prev, NOW, DAY);
        assert_eq!(kids(&doc)[1], ("a".into(), Some(NOW - 100)));
        // Exactly at the end of the grace the key is still trusted (as the login path does).
        let (doc, _) = merge(&[key("b")], &prev, NOW - 100 + DAY, DAY);
        assert_eq!(kids(&doc).len(), 2);
        let (doc, ch) = merge(&[key("b")], &prev, NOW - 99 + DAY, DAY);
        assert_eq!(kids(&doc), vec![("b".into(), None)]);
        assert_eq!(ch.dropped, vec!["a"]);
    }

    #[test]
    fn a_future_stamp_is_clamped_to_now() {
        let (doc, _) = merge(&[key("b")], &[retired("a", NOW + 10 * DAY)], NOW, DAY);
        assert_eq!(kids(&doc)[1], ("a".into(), Some(NOW)));
    }

    #[test]
    fn a_reappearing_key_loses_its_mark() {
        let (doc, ch) = merge(&[key("a")], &[retired("a", NOW - 5)], NOW, DAY);
        assert_eq!(kids(&doc), vec![("a".into(), None)]);
        assert_eq!(ch.reappeared, vec!["a"]);
        assert!(ch.added.is_empty());
    }

    #[test]
    fn an_endpoint_cannot_mark_its_own_keys() {
        let (doc, _) = merge(&[retired("a", 1)], &[], NOW, DAY);
        assert_eq!(kids(&doc), vec![("a".into(), None)]);
    }

    /// Security review 2, finding 15: new material under a known kid was reported as no
    /// change. It is a rotation, and only the published material stays.
    #[test]
    fn new_material_under_a_known_kid_is_reported_as_replaced() {
        let mut other = key("k1");
        other.insert("n".to_string(), Value::from("AQAB-other-modulus"));
        let (doc, ch) = merge(&[other.clone()], &[key("k1")], NOW, 3600);
        assert_eq!(ch.replaced, vec!["k1".to_string()]);
        assert!(ch.added.is_empty() && ch.retired.is_empty());
        assert_eq!(doc["keys"].as_array().unwrap(), &vec![Value::Object(other)]);
        // The same material with another member added is the same key.
        let mut same = key("k1");
        same.insert("x5t".to_string(), Value::from("thumbprint"));
        let (_, ch) = merge(&[same], &[key("k1")], NOW, 3600);
        assert_eq!(ch, Changes::default());
    }

    #[test]
    fn zero_grace_drops_at_once() {
        let (doc, ch) = merge(&[key("b")], &[key("a")], NOW, 0);
        assert_eq!(kids(&doc), vec![("b".into(), None)]);
        assert_eq!(ch.dropped, vec!["a"]);
    }

    #[test]
    fn retired_keys_are_bounded_newest_first() {
        let prev: Vec<_> = (0..70)
            .map(|i| retired(&format!("old{i}"), NOW - i))
            .collect();
        let (doc, ch) = merge(&[key("b")], &prev, NOW, DAY);
        let k = kids(&doc);
        assert_eq!(k.len(), MAX_KEYS);
        assert_eq!(k[1], ("old0".into(), Some(NOW)));
        assert_eq!(ch.dropped.len(), 70 - (MAX_KEYS - 1));
        assert!(jwks::parse(doc.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn only_usable_keys_are_kept() {
        let small = json!({"kty": "RSA", "kid": "small", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128]), "e": "AQAB"});
        let doc = json!({"keys": [
            key("a"), small, {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}, key("a"), "junk", key("b")
        ]});
        let kept: Vec<_> = usable_keys(&doc).iter().map(kid_of).collect();
        assert_eq!(kept, vec!["a", "b"]);
    }
}
