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
