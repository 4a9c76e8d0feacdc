//! Per-rule session limits (SPEC v3): how big a token login's session may get. They reach
//! the session as the PAM data items pam_systemd reads (pam_systemd(8), "Session limits"),
//! so logind applies them to the session's scope: no cgroup code here.

/// The limits a granting rule sets; each absent one leaves systemd's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// `MemoryMax`, as written (validated): bytes, a K/M/G/T suffix (1024-based), or
    /// `infinity`, which is what systemd's size parser takes.
    pub memory_max: Option<String>,
    pub tasks_max: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub io_weight: Option<u64>,
    /// Seconds: the session ends then even when the token lives longer.
    pub runtime_max: Option<i64>,
}

/// pam_systemd's data item names (systemd >= 244 reads them in the session phase).
pub const MEMORY_MAX: &str = "systemd.memory_max";
pub const TASKS_MAX: &str = "systemd.tasks_max";
pub const CPU_WEIGHT: &str = "systemd.cpu_weight";
pub const IO_WEIGHT: &str = "systemd.io_weight";
pub const RUNTIME_MAX_SEC: &str = "systemd.runtime_max_sec";

/// The ranges systemd accepts (systemd.resource-control(5)).
pub const TASKS_MAX_RANGE: (u64, u64) = (1, 4_194_304);
pub const WEIGHT_RANGE: (u64, u64) = (1, 10_000);
/// A runtime cap longer than a year is a typo, not a cap.
pub const RUNTIME_MAX_LIMIT: i64 = 366 * 86_400;

impl SessionLimits {
    pub fn is_empty(&self) -> bool {
        *self == SessionLimits::default()
    }

    /// The data items for a session of a token that expires at `exp`, at `now`: every limit
    /// the rule sets, and the runtime as the earlier of `runtime_max` and, with
    /// `ends_at_exp`, the token's exp (whole seconds from now, at least 1).
    pub fn items(&self, ends_at_exp: bool, exp: i64, now: i64) -> Vec<(&'static str, String)> {
        let mut items = Vec::new();
        if let Some(m) = &self.memory_max {
            items.push((MEMORY_MAX, m.clone()));
        }
        for (name, value) in [
            (TASKS_MAX, self.tasks_max),
            (CPU_WEIGHT, self.cpu_weight),
            (IO_WEIGHT, self.io_weight),
        ] {
            if let Some(v) = value {
                items.push((name, v.to_string()));
            }
        }
        if let Some(seconds) = runtime_seconds(self.runtime_max, ends_at_exp, exp, now) {
            items.push((RUNTIME_MAX_SEC, seconds.to_string()));
        }
        items
    }
}

/// The session's runtime cap in seconds from now: the earlier of the rule's `runtime_max`
/// and (with `ends_at_exp`) the token's exp; at least 1 (a token allowed within the leeway
/// after exp still gets a session of 1 s). None when neither applies.
pub fn runtime_seconds(
    runtime_max: Option<i64>,
    ends_at_exp: bool,
    exp: i64,
    now: i64,
) -> Option<i64> {
    let until_exp = ends_at_exp.then(|| exp.saturating_sub(now));
    let seconds = match (runtime_max, until_exp) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return None,
    };
    Some(seconds.max(1))
}

/// A `memory_max` value: digits with an optional K, M, G or T suffix (1024-based, as
/// systemd reads them), or `infinity`. The error says what is accepted.
pub fn memory_max(text: &str) -> Result<String, String> {
    if text == "infinity" {
        return Ok(text.to_string());
    }
    let (digits, suffix) = match text.char_indices().last() {
        Some((i, c)) if matches!(c, 'K' | 'M' | 'G' | 'T') => {
            (text.get(..i).unwrap_or(""), Some(c))
        }
        _ => (text, None),
    };
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
        && (suffix.is_some() || digits.len() <= 19);
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "memory_max must be a size such as \"4G\", \"512M\" or \"1073741824\" (bytes; K, M, G, T \
             are 1024-based), or \"infinity\", not {text:?}"
        ))
    }
}

/// A whole number within `range`, named `key` in the error.
pub fn in_range(key: &str, value: i64, range: (u64, u64)) -> Result<u64, String> {
    match u64::try_from(value) {
        Ok(v) if v >= range.0 && v <= range.1 => Ok(v),
        _ => Err(format!(
            "{key} must be from {} to {}, not {value}",
            range.0, range.1
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_as_systemd_reads_them() {
        for good in ["4G", "512M", "1073741824", "infinity", "1T", "64K"] {
            assert_eq!(memory_max(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "",
            "4GB",
            "4g",
            "-1",
            "0",
            "G",
            "1.5G",
            "4 G",
            "99999999999999999999",
        ] {
            assert!(memory_max(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_runtime_is_the_earlier_of_the_cap_and_exp() {
        assert_eq!(runtime_seconds(Some(7200), true, 1300, 1000), Some(300));
        assert_eq!(runtime_seconds(Some(60), true, 1300, 1000), Some(60));
        assert_eq!(runtime_seconds(Some(60), false, 1300, 1000), Some(60));
        assert_eq!(runtime_seconds(None, true, 1300, 1000), Some(300));
        assert_eq!(runtime_seconds(None, true, 990, 1000), Some(1));
        assert_eq!(runtime_seconds(None, false, 1300, 1000), None);
    }

    #[test]
    fn items_name_what_pam_systemd_reads() {
        let l = SessionLimits {
            memory_max: Some("4G".into()),
            tasks_max: Some(512),
            cpu_weight: Some(50),
            io_weight: None,
            runtime_max: Some(7200),
        };
        assert_eq!(
            l.items(true, 1300, 1000),
            vec![
                (MEMORY_MAX, "4G".to_string()),
                (TASKS_MAX, "512".to_string()),
                (CPU_WEIGHT, "50".to_string()),
                (RUNTIME_MAX_SEC, "300".to_string()),
            ]
        );
        assert!(SessionLimits::default().items(false, 1300, 1000).is_empty());
    }
}
