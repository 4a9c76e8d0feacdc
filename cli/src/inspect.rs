//! `idtoken inspect`: a token's header and claims, decoded and clearly UNVERIFIED.

use std::path::PathBuf;

use idtoken_core::claims::numeric_date;
use idtoken_core::jws;
use idtoken_core::packed;
use idtoken_core::sanitize;
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
    // A packed token (pam_idtoken(8) PACKED TOKENS) is shown as the JWS it unpacks to.
    let unpacked = match packed::unpack_if_packed(&raw) {
        Ok(u) => u,
        Err(why) => {
            eprintln!("idtoken inspect: not a packed token: {why}");
            return 2;
        }
    };
    let token = match jws::parse(unpacked.as_ref().map_or(raw.as_str(), |u| u.jws.as_str())) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("idtoken inspect: not a JWT: {why}");
            return 2;
        }
    };
    let packed_from = unpacked.as_ref().map(|u| {
        json!({"dictionary": u.dictionary.name, "packed_chars": raw.trim().len(),
               "token_chars": u.jws.len()})
    });
    let dates = dates_of(&token.claims);
    if args.json {
        println!(
            "{}",
            json!({"verified": false, "header": stripped(&Value::Object(token.header)),
                   "claims": stripped(&Value::Object(token.claims)), "dates": dates,
                   "packed": packed_from})
        );
        return 0;
    }
    println!("UNVERIFIED: decoded only; nothing here is checked. Use `idtoken check` to verify.");
    if let Some(u) = &unpacked {
        println!(
            "Packed: {} characters, dictionary {}; unpacked to a {}-character JWS.",
            raw.trim().len(),
            u.dictionary.name,
            u.jws.len()
        );
    }
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

/// A JSON value with every name and string stripped of control, format and separator
/// characters (JSON escapes C0 controls, but C1 controls, bidi overrides and U+2028 would
/// reach the terminal as they are).
fn stripped(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(sanitize::strip(s)),
        Value::Array(items) => Value::Array(items.iter().map(stripped).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (sanitize::strip(k), stripped(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Names and values as lines; both come from the token, so both are cleaned: a claim name
/// must not clear the screen, move the cursor or set the terminal's title.
fn print_object(m: &Map<String, Value>, dates: &Map<String, Value>) {
    let names: Vec<String> = m.keys().map(|k| sanitize::clean(k)).collect();
    let width = names.iter().map(|k| k.chars().count()).max().unwrap_or(0);
    for ((raw_name, v), k) in m.iter().zip(&names) {
        let shown = sanitize::clean(&v.to_string());
        let k = k.as_str();
        match dates.get(raw_name).and_then(Value::as_str) {
            Some(date) => println!("  {k:<width$}  {shown}  ({date})"),
            None => println!("  {k:<width$}  {shown}"),
        }
    }
}
