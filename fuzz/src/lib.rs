//! The fuzz targets' library: the harness itself (fixed world, in-memory stand-ins, token
//! signing, invariants, the reference decision and the target bodies) is
//! `idtoken_testkit::fuzz`, shared with pam/core/tests/fuzz_regressions.rs so that an input
//! replays there exactly as here; this crate re-exports it for fuzz_targets/*.rs and
//! examples/make_seeds.rs, and tests that the harness reaches every kind of decision.

pub use idtoken_testkit::fuzz::checks::*;
pub use idtoken_testkit::fuzz::world::*;
pub use idtoken_testkit::fuzz::{checks, oracle, targets, world};
pub use idtoken_testkit::keys::{Key, b64, gitlab_claims, header, mint_bytes, sign_bytes};

#[cfg(test)]
mod tests {
    use super::*;
    use idtoken_core::decision::{Decision, UseMode, Verdict};
    use idtoken_core::reason::Reason;
    use jsonwebtoken::Algorithm;
    use serde_json::{Value, json};

    fn run(token: &str) -> Decision {
        let (account, service) = request_of(token);
        let d = decide(config(), token, &account, &service, UseMode::Record);
        check_decision_invariants(&d);
        check_against_oracle(config(), token, &account, &service, &d);
        d
    }

    fn mint(claims: &Value) -> String {
        mint_bytes(claims.to_string().as_bytes(), Key::A)
    }

    #[test]
    fn harness_reaches_allow_and_every_kind_of_deny() {
        let d = run(&mint(&gitlab_claims("alice")));
        assert!(d.allowed(), "{:#?}", d.steps);
        assert_eq!(d.rule.as_deref(), Some("own-account"));
        let mut c = gitlab_claims("alice");
        c["exp"] = json!(NOW - 1000);
        assert_eq!(run(&mint(&c)).reason(), Some(Reason::Expired));
        let mut c = gitlab_claims("carol");
        c[ACCOUNT_CLAIM] = json!("carol2");
        let d = run(&mint(&c));
        assert!(d.allowed(), "{:#?}", d.steps);
        let mut c = gitlab_claims("alice");
        c["project_path"] = json!("hpc/deploy-tools");
        c[ACCOUNT_CLAIM] = json!("svc-deploy");
        let d = run(&mint(&c));
        assert_eq!(d.rule.as_deref(), Some("deploy"), "{:#?}", d.rules);
        for (key, alg, name) in [
            (Key::B, Algorithm::RS256, "RS256"),
            (Key::Rsa4096, Algorithm::PS256, "PS256"),
            (Key::Ec, Algorithm::ES256, "ES256"),
            (Key::Ed, Algorithm::EdDSA, "EdDSA"),
        ] {
            let t = sign_bytes(
                &header(name, key.kid()),
                gitlab_claims("alice").to_string().as_bytes(),
                key,
                alg,
            );
            assert!(run(&t).allowed(), "{key:?}");
        }
        let t = sign_bytes(
            &header("RS256", "test-a-old"),
            gitlab_claims("alice").to_string().as_bytes(),
            Key::A,
            Algorithm::RS256,
        );
        assert_eq!(run(&t).reason(), Some(Reason::UnknownKey));
        assert_eq!(run("hunter2").reason(), Some(Reason::Malformed));
    }

    /// The world's deny rules, `from` and JSON Pointer claims decide as SPEC v3 says, and the
    /// reference agrees (`run` compares every decision with it).
    #[test]
    fn deny_rules_from_and_pointers_decide_as_specified() {
        let matched = |d: &Decision, rule: &str| d.rules.iter().any(|r| r.rule == rule && r.matched);
        // carol's token, which only realm-role can grant (no push pipeline for own-account,
        // no hpc group for hpc-groups).
        let carol = |edit: &dyn Fn(&mut Value)| {
            let mut c = gitlab_claims("carol");
            c[ACCOUNT_CLAIM] = json!("carol2");
            c["pipeline_source"] = json!("schedule");
            c["groups_direct"] = json!(["other"]);
            c["realm_access"] = json!({"roles": ["ci-runner"]});
            c["x/y"] = json!(["z1"]);
            edit(&mut c);
            run(&mint(&c))
        };
        // The pointers hold, from the world's rhost (inside 203.0.113.0/24).
        let d = carol(&|_| {});
        assert_eq!(d.rule.as_deref(), Some("realm-role"), "{:#?}", d.rules);
        // An rhost that is absent or not an address fails the grant's `from`, and holds in
        // no-outside-carol's: refused by the deny.
        for rhost in [json!("host.example"), Value::Null, json!("fe80::1%")] {
            let d = carol(&|c| c[RHOST_CLAIM] = rhost.clone());
            assert_eq!(d.reason(), Some(Reason::PolicyDenied), "{rhost}");
            assert!(matched(&d, "no-outside-carol"), "{rhost}: {:#?}", d.rules);
            assert!(!matched(&d, "realm-role"), "{rhost}: {:#?}", d.rules);
        }
        // An IPv6 zone is stripped: fe80::1%eth0 is inside fe80::/10, the deny holds.
        let d = carol(&|c| c[RHOST_CLAIM] = json!("fe80::1%eth0"));
        assert!(matched(&d, "no-outside-carol"), "{:#?}", d.rules);
        // An address outside every network: the deny does not hold, the grant fails.
        let d = carol(&|c| c[RHOST_CLAIM] = json!("192.0.2.1"));
        assert_eq!(d.reason(), Some(Reason::PolicyDenied));
        assert!(d.rules.iter().all(|r| !r.matched), "{:#?}", d.rules);
        // An IPv4-mapped address is its IPv4 address: inside the grant's network.
        let d = carol(&|c| c[RHOST_CLAIM] = json!("::ffff:203.0.113.9"));
        assert_eq!(d.rule.as_deref(), Some("realm-role"), "{:#?}", d.rules);
        // A pointer whose value fails, or that reaches nothing: not granted.
        for realm in [json!({"roles": ["admin"]}), json!({"roles": "ci-x"}), json!([])] {
            let d = carol(&|c| c["realm_access"] = realm.clone());
            let granted = d.rule.as_deref() == Some("realm-role");
            // A string where a list was: the pointer /realm_access/roles still reads it.
            assert_eq!(granted, realm == json!({"roles": "ci-x"}), "{realm}: {:#?}", d.rules);
        }
        // no-production skips when environment is absent (above), holds when it matches.
        let d = carol(&|c| c["environment"] = json!("production"));
        assert!(matched(&d, "no-production"), "{:#?}", d.rules);
        // no-untrusted-groups holds for bob without groups_direct (a deny fails closed), with
        // an untrusted group, or with a groups_direct that is not a list; not with others.
        let bob = |groups: Option<Value>| {
            let mut c = gitlab_claims("bob");
            match groups {
                Some(g) => c["groups_direct"] = g,
                None => {
                    c.as_object_mut().map(|m| m.remove("groups_direct"));
                }
            }
            run(&mint(&c))
        };
        assert!(bob(Some(json!(["hpc", "hpc/ci"]))).allowed());
        for groups in [Some(json!(["hpc/untrusted-x"])), None, Some(json!("hpc"))] {
            let d = bob(groups.clone());
            assert!(matched(&d, "no-untrusted-groups"), "{groups:?}: {:#?}", d.rules);
        }
    }

    /// Signing plus deciding, per key, natively (the instrumented build is many times slower).
    #[test]
    fn cost_of_a_signed_decision() {
        let claims = gitlab_claims("alice").to_string();
        for (key, alg, name) in [
            (Key::A, Algorithm::RS256, "RS256"),
            (Key::Ec, Algorithm::ES256, "ES256"),
            (Key::Ed, Algorithm::EdDSA, "EdDSA"),
        ] {
            let start = std::time::Instant::now();
            for _ in 0..20 {
                let t = sign_bytes(&header(name, key.kid()), claims.as_bytes(), key, alg);
                assert!(run(&t).allowed());
            }
            println!("{name}: {:?} per signed decision", start.elapsed() / 20);
        }
    }

    /// Every committed packed seed (a token seed packed, or a broken packed form) decides as
    /// its name says, and as the reference does; the edit-mode seeds pass the target.
    #[test]
    fn packed_seeds_decide_as_named() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/packed");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            targets::packed(&bytes);
            if name.starts_with("edit-") {
                continue;
            }
            let answer = String::from_utf8_lossy(&bytes).into_owned();
            let plain = idtoken_core::packed::unpack(&answer)
                .map(|u| u.jws.to_string())
                .unwrap_or_default();
            let (account, service) = request_of(&plain);
            let d = decide(config(), &answer, &account, &service, UseMode::Record);
            let got = match (&d.verdict, d.reason()) {
                (Verdict::Allow, _) => "allow",
                (Verdict::Unavailable(_), _) => "unavailable",
                (_, Some(Reason::Malformed)) => "malformed",
                _ => "deny",
            };
            let want = name.split('-').next().unwrap();
            if want != "real" {
                assert_eq!(got, want, "{name}: {:?} {:#?}", d.verdict, d.steps);
            }
            n += 1;
        }
        assert!(n >= 40, "only {n} seeds");
    }

    /// Every committed token seed decides as its name says (allow-, deny-, malformed-,
    /// unavailable-), and agrees with the reference decision.
    #[test]
    fn token_seeds_decide_as_named() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/token");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let token = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            let d = run(&token);
            let want = name.split('-').next().unwrap();
            let got = match (&d.verdict, d.reason()) {
                (Verdict::Allow, _) => "allow",
                (Verdict::Unavailable(_), _) => "unavailable",
                (_, Some(Reason::Malformed)) => "malformed",
                _ => "deny",
            };
            if want != "real" {
                assert_eq!(got, want, "{name}: {:?} {:#?}", d.verdict, d.steps);
            }
            println!("{name}: {:?} rule={:?}", d.verdict, d.rule);
            n += 1;
        }
        assert!(n >= 20, "only {n} seeds");
    }
}
