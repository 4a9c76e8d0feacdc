//! Module arguments: `config=PATH`, `debug`. Anything else is an error, so a typo in a
//! PAM stack is noticed instead of silently running with defaults.

use std::path::PathBuf;

use idtoken_core::config::DEFAULT_PATH;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    pub config: PathBuf,
    pub debug: bool,
    /// Test builds only (feature `panic-injection`): panic inside the hook.
    pub test_panic: bool,
}

pub fn parse(args: &[String]) -> Result<ModuleArgs, String> {
    let mut out = ModuleArgs {
        config: PathBuf::from(DEFAULT_PATH),
        debug: false,
        test_panic: false,
    };
    for a in args {
        if let Some(path) = a.strip_prefix("config=") {
            if !path.starts_with('/') {
                return Err(format!(
                    "module argument {a:?}: config= needs an absolute path"
                ));
            }
            out.config = PathBuf::from(path);
        } else if a == "debug" {
            out.debug = true;
        } else if a == "test_panic" && cfg!(feature = "panic-injection") {
            out.test_panic = true;
        } else {
            return Err(format!(
                "unknown module argument {a:?}; pam_idtoken.so takes config=PATH and debug"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_known_arguments() {
        let a = parse(&s(&["config=/etc/x.toml", "debug"])).unwrap();
        assert_eq!(a.config, PathBuf::from("/etc/x.toml"));
        assert!(a.debug);
        assert_eq!(parse(&[]).unwrap().config, PathBuf::from(DEFAULT_PATH));
    }

    #[test]
    fn refuses_unknown_and_relative() {
        assert!(
            parse(&s(&["conf=/x"]))
                .unwrap_err()
                .contains("unknown module argument")
        );
        assert!(parse(&s(&["config=rel.toml"])).is_err());
        assert!(parse(&s(&["try_first_pass"])).is_err());
    }
}
