//! `idtoken config check`: 0 valid, 2 invalid, every problem with its line; a valid config
//! whose referenced files (key cache, user map, CA file) are missing gets a warning line each.

use std::path::Path;

use idtoken_core::config::Config;

pub fn run(path: &Path) -> u8 {
    match Config::load(path) {
        Ok(c) => {
            println!("{}", summary(path, &c));
            if c.issuers.is_empty() {
                println!("note: no [[issuer]] is configured, so every token is refused");
            } else if c.rules.is_empty() {
                println!("note: no [[rule]] is configured, so every token is refused");
            }
            for w in missing_files(&c) {
                println!("warning: {w}");
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

/// A line for each file the config names that is not there. The config is still valid
/// (exit 0): a key cache appears with the first `idtoken refresh`, and the files may be
/// installed after the config; but until they exist the issuer's tokens cannot be decided.
fn missing_files(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for i in &c.issuers {
        let mut check = |what: &str, path: &Path, effect: &str| match path.try_exists() {
            Ok(true) => {}
            Ok(false) => out.push(format!(
                "issuer {}: {what} {} does not exist: {effect}",
                i.name,
                path.display()
            )),
            Err(e) => out.push(format!(
                "issuer {}: {what} {} cannot be checked ({e}): {effect}",
                i.name,
                path.display()
            )),
        };
        check(
            "jwks_cache",
            &i.jwks_cache,
            "its tokens are refused as undecidable until `idtoken refresh` (or a copied JWKS) creates it",
        );
        if let Some(m) = &i.user_map {
            check(
                "user_map",
                m,
                "tokens of rules that use it are refused as undecidable until it exists (leave user_map out if you do not map users)",
            );
        }
        if let Some(ca) = &i.ca_file {
            check(
                "ca_file",
                ca,
                "`idtoken refresh` cannot fetch its keys (leave ca_file out to use the system's CAs)",
            );
        }
    }
    out
}

/// `PATH: valid (N issuers, M rules)`: what `config check` and `doctor` say of a good config.
pub fn summary(path: &Path, c: &Config) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "{}: valid ({} issuer{}, {} rule{})",
        path.display(),
        c.issuers.len(),
        plural(c.issuers.len()),
        c.rules.len(),
        plural(c.rules.len())
    )
}
