//! `idtoken inspect`: a token's header and claims, decoded and clearly UNVERIFIED.

use std::path::PathBuf;

use idtoken_core::claims::numeric_date;
use idtoken_core::jws;
use idtoken_core::timefmt;
use serde_json::{Map, Value, json};

use crate::token_input;

#[derive(clap::Args)]
pub struct Args {
    /// File holding the token; `-` or absent: standard input.
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Claims that are NumericDates.
const DATE_CLAIMS: [&str; 4] = ["iat", "nbf", "exp", "auth_time"];

pub fn run(args: &Args) -> u8 {
    let raw = match token_input::read(args.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("idtoken inspect: {e}");
            return 2;
        }
    };
    let token = match jws::parse(&raw) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("idtoken inspect: not a JWT: {why}");
            return 2;
        }
    };
    let dates = dates_of(&token.claims);
    if args.json {
        println!(
            "{}",
            json!({"verified": false, "header": token.header, "claims": token.claims, "dates": dates})
        );
        return 0;
    }
    println!("UNVERIFIED: decoded only; nothing here is checked. Use `idtoken check` to verify.");
    println!();
    println!("Header:");
    print_object(&token.header, &Map::new());
    println!();
    println!("Claims:");
    print_object(&token.claims, &dates);
    0
}

fn dates_of(claims: &Map<String, Value>) -> Map<String, Value> {
    DATE_CLAIMS
        .iter()
        .filter_map(|name| {
            let t = claims.get(*name).and_then(numeric_date)?;
            Some((name.to_string(), Value::from(timefmt::utc(t))))
        })
        .collect()
}

fn print_object(m: &Map<String, Value>, dates: &Map<String, Value>) {
    let width = m.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    for (k, v) in m {
        let shown = idtoken_core::sanitize::clean(&v.to_string());
        match dates.get(k).and_then(Value::as_str) {
            Some(date) => println!("  {k:<width$}  {shown}  ({date})"),
            None => println!("  {k:<width$}  {shown}"),
        }
    }
}
