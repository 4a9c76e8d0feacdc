//! Reading a token from a file or stdin, bounded, for `check` and `inspect`.

use std::io::Read;
use std::path::Path;

use idtoken_core::MAX_TOKEN_BYTES;

/// Reads the token from `path` (`-` or none: stdin). One byte more than the limit is read
/// so that an oversized token reaches the core and is refused as `malformed` there.
pub fn read(path: Option<&Path>) -> Result<String, String> {
    let limit = u64::try_from(MAX_TOKEN_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut bytes = Vec::new();
    match path {
        None => std::io::stdin().take(limit).read_to_end(&mut bytes),
        Some(p) if p == Path::new("-") => std::io::stdin().take(limit).read_to_end(&mut bytes),
        Some(p) => std::fs::File::open(p)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
    }
    .map_err(|e| format!("cannot read the token: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "the token is not text".to_string())
}

/// Now, as the module sees it.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
