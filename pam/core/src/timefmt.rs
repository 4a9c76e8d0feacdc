//! UTC dates for humans, without a date library: the login path only needs to print them.

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
#[allow(clippy::arithmetic_side_effects)] // bounded: callers pass plausible dates; see the clamp
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days.clamp(-100_000_000, 100_000_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1677188547), "2023-02-23 21:42:27 UTC");
        assert_eq!(super::utc(951782400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(-1), "1969-12-31 23:59:59 UTC");
    }
}
