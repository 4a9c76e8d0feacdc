//! Packed tokens (pam_idtoken(8) PACKED TOKENS) through the core: the real GitLab tokens and
//! GitLab-shaped ones round-trip to the exact JWS and decide as their JWS does; every way a
//! packed answer can be wrong is refused as `malformed`, before any other step runs; the
//! packer refuses what it could not give back byte for byte.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flate2::{Compress, Compression, FlushCompress};
use idtoken_core::decision::{Env, Request, StepName, UseMode, Verdict, evaluate};
use idtoken_core::packed::{self, DICTIONARIES, GITLAB_1, MAX_INFLATED, PackError};
use idtoken_core::reason::Reason;
use idtoken_core::session_record::NoSessions;
use idtoken_testkit::fakes::Ledger;
use idtoken_testkit::fuzz::checks::{check_against_oracle, check_decision_invariants, decide};
use idtoken_testkit::fuzz::oracle;
use idtoken_testkit::fuzz::world::{ACCOUNT_TABLE, config, issuer_data};
use idtoken_testkit::keys::{gitlab_claims, mint, mint_gitlab_shaped, with};
use serde_json::json;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/gitlab-real"
);

fn real_tokens() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jwt"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(&p).unwrap().trim().to_string(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "{out:?}");
    out
}

/// A packed token's verdict equals its JWS's, agrees with the reference decision (which
/// unpacks with another inflater), and both are as `want` says.
fn decides_alike(jws: &str, packed: &str, account: &str) -> Verdict {
    let plain = decide(config(), jws, account, "sshd", UseMode::ReadOnly);
    let d = decide(config(), packed, account, "sshd", UseMode::ReadOnly);
    check_decision_invariants(&d);
    check_against_oracle(config(), packed, account, "sshd", &d);
    assert_eq!(d.verdict, plain.verdict, "packed and plain decide alike");
    assert_eq!(d.audit_claims, plain.audit_claims);
    d.verdict
}

/// A zlib stream with a chosen dictionary and level, as a third party's packer would write it.
fn zlib(content: &[u8], dictionary: &[u8], level: u32) -> Vec<u8> {
    let mut z = Compress::new(Compression::new(level), true);
    z.set_dictionary(dictionary).unwrap();
    let mut out = Vec::with_capacity(content.len() + 1024);
    z.compress_vec(content, &mut out, FlushCompress::Finish)
        .unwrap();
    out
}

fn packed_of(stream: &[u8]) -> String {
    format!("~1.{}", URL_SAFE_NO_PAD.encode(stream))
}

fn content_of(jws: &str) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = jws
        .split('.')
        .map(|p| URL_SAFE_NO_PAD.decode(p).unwrap())
        .collect();
    parts.join(&0u8)
}

fn refused(packed: &str, why: &str) {
    let d = decide(config(), packed, "alice", "sshd", UseMode::ReadOnly);
    check_decision_invariants(&d);
    check_against_oracle(config(), packed, "alice", "sshd", &d);
    assert_eq!(
        d.verdict,
        Verdict::Deny(Reason::Malformed),
        "{why}: {:#?}",
        d.steps
    );
    assert_eq!(d.steps.len(), 1, "{why}: nothing runs after step 1");
    assert_eq!(d.steps[0].name, StepName::Token);
    assert!(!d.verified);
    let detail = &d.steps[0].detail;
    assert!(detail.contains(why), "{why:?} not in {detail:?}");
    if packed.len() >= 19 {
        assert!(
            !detail.contains(&packed[3..19]),
            "the token is in the trace"
        );
    }
}

#[test]
fn real_gitlab_tokens_round_trip_and_decide_as_their_jws() {
    for (name, jws) in real_tokens() {
        let p = packed::pack(&jws).unwrap();
        assert!(p.starts_with("~1.") && packed::looks_packed(&p), "{name}");
        let u = packed::unpack(&p).unwrap();
        assert_eq!(*u.jws, jws, "{name}: unpacks to the exact JWS");
        assert_eq!(u.dictionary.name, "gitlab-1");
        assert_eq!(oracle::unpack(&p).as_deref(), Some(jws.as_str()), "{name}");
        assert!(
            p.len() < packed::ONE_ANSWER,
            "{name}: {} characters",
            p.len()
        );
        println!("{name}: {} -> {} characters", jws.len(), p.len());
        let verdict = decides_alike(&jws, &p, "alice");
        if name.starts_with("selfhosted_rgl") {
            // Long expired at the harness's "now"; allowed a minute after its iat.
            assert_eq!(verdict, Verdict::Deny(Reason::Expired), "{name}");
            let at = |t: &str| {
                let env = Env {
                    config: config(),
                    issuer_data: issuer_data(),
                    accounts: &ACCOUNT_TABLE,
                    uses: &Ledger::by_digest(),
                    sessions: &NoSessions,
                };
                let req = Request {
                    token: t,
                    account: "alice",
                    service: "sshd",
                    rhost: None,
                    now: 1_677_188_547 + 60,
                    uses: UseMode::ReadOnly,
                };
                evaluate(&env, &req).verdict
            };
            assert_eq!(at(&jws), Verdict::Allow, "{name}");
            assert_eq!(at(&p), Verdict::Allow, "{name} packed");
        }
        if name.starts_with("forged") {
            assert_eq!(verdict, Verdict::Deny(Reason::BadSignature), "{name}");
        }
    }
}

#[test]
fn gitlab_shaped_tokens_of_1500_to_2000_characters_fit_one_answer_and_are_allowed() {
    let mut sizes = Vec::new();
    for (i, groups) in [0usize, 4, 8, 12].into_iter().enumerate() {
        let mut c = with(
            gitlab_claims("alice"),
            "jti",
            json!(format!("jti-shaped-{i}")),
        );
        let list: Vec<String> = (0..groups)
            .map(|g| format!("research-computing/team-{g}/subgroup-{}", g * 7))
            .collect();
        if groups > 0 {
            c = with(c, "groups_direct", json!(list));
        } else {
            c = with(c, "groups_direct", serde_json::Value::Null);
        }
        let jws = mint_gitlab_shaped(&c);
        let p = packed::pack(&jws).unwrap();
        sizes.push((jws.len(), p.len()));
        assert_eq!(*packed::unpack(&p).unwrap().jws, jws);
        assert_eq!(decides_alike(&jws, &p, "alice"), Verdict::Allow);
        if jws.len() <= 2048 {
            assert!(p.len() < packed::ONE_ANSWER, "{} -> {}", jws.len(), p.len());
        }
    }
    println!("GitLab-shaped JWS -> packed characters: {sizes:?}");
    assert!(
        sizes.iter().any(|(j, _)| (1500..1700).contains(j)),
        "{sizes:?}"
    );
    assert!(
        sizes.iter().any(|(j, _)| (1900..=2048).contains(j)),
        "{sizes:?}"
    );
}

#[test]
fn a_third_partys_stream_at_any_level_unpacks_and_whitespace_around_it_is_ignored() {
    let jws = mint(&gitlab_claims("alice"));
    for level in [0, 1, 6, 9] {
        let p = packed_of(&zlib(&content_of(&jws), GITLAB_1.bytes, level));
        assert_eq!(*packed::unpack(&p).unwrap().jws, jws, "level {level}");
        assert_eq!(
            decides_alike(&jws, &format!(" {p}\n"), "alice"),
            Verdict::Allow
        );
    }
}

#[test]
fn every_broken_packed_form_is_malformed_before_anything_else() {
    let jws = mint(&gitlab_claims("alice"));
    let content = content_of(&jws);
    let stream = zlib(&content, GITLAB_1.bytes, 9);
    let good = packed_of(&stream);
    assert_eq!(decides_alike(&jws, &good, "alice"), Verdict::Allow);
    let body = &good[3..];

    refused(&format!("~2.{body}"), "version \"2\" is not known");
    refused(&format!("~.{body}"), "version \"\" is not known");
    refused(&format!("~1{body}"), "no version");
    refused(&format!("~1.{body}="), "not base64url");
    refused(&format!("~1.{body}*"), "not base64url");
    refused("~1.", "too short");
    // No dictionary: a plain zlib stream.
    let mut z = Compress::new(Compression::best(), true);
    let mut plain = Vec::with_capacity(4096);
    z.compress_vec(&content, &mut plain, FlushCompress::Finish)
        .unwrap();
    refused(&packed_of(&plain), "FDICT unset");
    // Another dictionary than the released ones.
    refused(
        &packed_of(&zlib(&content, b"{\"kid\":\"\",\"typ\":\"JWT\"}", 9)),
        "is not known",
    );
    // A raw deflate stream, no zlib header at all.
    refused(&packed_of(&stream[2..]), "zlib header");
    // Header check bits wrong.
    let mut bad = stream.clone();
    bad[1] ^= 0x01;
    refused(&packed_of(&bad), "FCHECK");
    // Cut short: in the deflate data, and in the checksum.
    refused(&packed_of(&stream[..stream.len() / 2]), "cut short");
    refused(&packed_of(&stream[..stream.len() - 2]), "checksum missing");
    // Bytes after the checksum.
    let mut longer = stream.clone();
    longer.push(0);
    refused(&packed_of(&longer), "after its checksum");
    // A checksum that does not match.
    let mut sum = stream.clone();
    let last = sum.len() - 1;
    sum[last] ^= 0x40;
    refused(&packed_of(&sum), "checksum (Adler-32) does not match");
    // Content not of three parts.
    refused(
        &packed_of(&zlib(b"no separators here", GITLAB_1.bytes, 9)),
        "not header NUL",
    );
    // Corrupt deflate data (a reserved block type).
    let mut corrupt = stream.clone();
    corrupt[6] |= 0x06;
    refused(&packed_of(&corrupt), "packed token");
}

#[test]
fn bombs_are_refused_by_size_and_by_ratio() {
    // Over the output cap: 1500 bytes that do not compress, then 60 KB of `a`.
    let mut big = b"{}".to_vec();
    big.push(0);
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    big.extend((0..1500).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    big.extend(std::iter::repeat_n(b'a', 60_000));
    big.extend_from_slice(b"\0sig");
    let stream = zlib(&big, GITLAB_1.bytes, 9);
    assert!(
        stream.len() * 64 > MAX_INFLATED,
        "so the size cap is the one that bites"
    );
    refused(
        &packed_of(&stream),
        &format!("inflates past {MAX_INFLATED} bytes"),
    );
    // Under the output cap but over the ratio: 20 KB from about 40 bytes.
    let mut dense = b"{}".to_vec();
    dense.push(0);
    dense.extend(std::iter::repeat_n(b'a', 20_000));
    dense.extend_from_slice(b"\0sig");
    let stream = zlib(&dense, GITLAB_1.bytes, 9);
    assert!(stream.len() * 64 < dense.len());
    refused(&packed_of(&stream), "more than 64 times its size");
    // An answer over 64 KiB is refused before it is decoded.
    let huge = format!("~1.{}", "A".repeat(64 * 1024));
    refused(&huge, "over the 65536-byte limit");
}

#[test]
fn the_packer_refuses_what_it_could_not_give_back() {
    let jws = mint(&gitlab_claims("alice"));
    let (h, rest) = jws.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    assert_eq!(packed::pack("a.b"), Err(PackError::NotCompact));
    assert_eq!(
        packed::pack(&format!("{jws}.x")),
        Err(PackError::NotCompact)
    );
    // Padding, and non-zero unused bits in the last character, both decode in lenient
    // decoders but would not come back as they were.
    assert_eq!(
        packed::pack(&format!("{h}=.{p}.{s}")),
        Err(PackError::NotCanonical("header"))
    );
    let mut sig = s.to_string();
    let last = sig.pop().unwrap();
    let sibling = (b'A'..=b'z')
        .map(char::from)
        .find(|c| *c != last && c.is_ascii_alphanumeric())
        .unwrap();
    sig.push(sibling);
    if URL_SAFE_NO_PAD.decode(&sig).is_err() {
        assert_eq!(
            packed::pack(&format!("{h}.{p}.{sig}")),
            Err(PackError::NotCanonical("signature"))
        );
    }
    let nul_header = URL_SAFE_NO_PAD.encode(b"{\"alg\":\"RS256\"}\0");
    assert_eq!(
        packed::pack(&format!("{nul_header}.{p}.{s}")),
        Err(PackError::Nul("header"))
    );
    // The signature may hold NUL bytes: only the first two separate.
    let nul_sig = URL_SAFE_NO_PAD.encode([0u8, 1, 0, 2, 0]);
    let odd = format!("{h}.{p}.{nul_sig}");
    assert_eq!(
        *packed::unpack(&packed::pack(&odd).unwrap()).unwrap().jws,
        odd
    );
}

/// The released dictionary never changes: its bytes are pinned here as its id is in the
/// man page (a new dictionary is a new file with a new name and id).
#[test]
fn the_released_dictionary_is_pinned() {
    assert_eq!(DICTIONARIES.len(), 1);
    assert_eq!(GITLAB_1.name, "gitlab-1");
    assert_eq!(GITLAB_1.id, 0xf8ca_35cc);
    assert_eq!(GITLAB_1.bytes.len(), 1646);
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dictionaries/gitlab-1.dict"
    ))
    .unwrap();
    assert_eq!(file, GITLAB_1.bytes);
    // zlib's own Adler-32 of it (deflateSetDictionary returns it) is the id.
    let mut z = Compress::new(Compression::best(), true);
    assert_eq!(z.set_dictionary(GITLAB_1.bytes).unwrap(), GITLAB_1.id);
}
