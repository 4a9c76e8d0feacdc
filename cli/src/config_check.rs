//! `idtoken config check`: 0 valid, 2 invalid, every problem with its line.

use std::path::Path;

use idtoken_core::config::Config;

pub fn run(path: &Path) -> u8 {
    match Config::load(path) {
        Ok(c) => {
            println!(
                "{}: valid ({} issuer{}, {} rule{})",
                path.display(),
                c.issuers.len(),
                if c.issuers.len() == 1 { "" } else { "s" },
                c.rules.len(),
                if c.rules.len() == 1 { "" } else { "s" }
            );
            if c.issuers.is_empty() {
                println!("note: no [[issuer]] is configured, so every token is refused");
            } else if c.rules.is_empty() {
                println!("note: no [[rule]] is configured, so every token is refused");
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}
