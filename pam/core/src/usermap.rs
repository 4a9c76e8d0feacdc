//! `user_map`: lines `TOKEN_USER LOCAL_ACCOUNT`, for sites whose GitLab and cluster user
//! names differ. `#` starts a comment; blank lines are ignored.

use std::collections::HashMap;

pub const MAX_USER_MAP_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMap {
    map: HashMap<String, String>,
}

impl UserMap {
    pub fn get(&self, token_user: &str) -> Option<&str> {
        self.map.get(token_user).map(String::as_str)
    }
}

/// Parses a map; errors name the line.
pub fn parse(bytes: &[u8]) -> Result<UserMap, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_string())?;
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let lineno = n.saturating_add(1);
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(from), Some(to), None) => {
                if map.insert(from.to_string(), to.to_string()).is_some() {
                    return Err(format!("line {lineno}: {from:?} is mapped twice"));
                }
            }
            _ => {
                return Err(format!(
                    "line {lineno}: expected \"TOKEN_USER LOCAL_ACCOUNT\""
                ));
            }
        }
    }
    Ok(UserMap { map })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_and_rejects() {
        let m = super::parse(b"# comment\nalice.smith  asmith # trailing\n\nbob bob2\n").unwrap();
        assert_eq!(m.get("alice.smith"), Some("asmith"));
        assert_eq!(m.get("bob"), Some("bob2"));
        assert_eq!(m.get("carol"), None);
        assert!(super::parse(b"a b c\n").unwrap_err().contains("line 1"));
        assert!(super::parse(b"a b\na c\n").unwrap_err().contains("twice"));
    }
}
