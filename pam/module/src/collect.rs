//! Collecting the token from the client, part by part.
//!
//! OpenSSH clients cut every answer to 1023 characters, and GitLab ID tokens are longer.
//! So while the last answer was 1000-1023 characters long, the module asks for
//! `ID token (part N): ` and appends the answer, up to the 64 KiB token limit. A single
//! longer answer (su, non-OpenSSH clients) is taken whole.
//!
//! Every answer is a [`Secret`], wiped when dropped, and the token grows only by copying
//! into a larger wiped buffer: a `Vec` that reallocates would leave the old part behind.

use idtoken_core::MAX_TOKEN_BYTES;
use zeroize::Zeroizing;

/// An answer from the client (a token, its part, or a password): wiped when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

pub const FIRST_PROMPT: &str = "ID token: ";
/// Answers of this many characters or more (up to the cut length) mean "more follows".
pub const PART_MIN: usize = 1000;
/// What OpenSSH's 1024-byte read buffer leaves of a longer answer.
pub const OPENSSH_CUT: usize = 1023;

pub fn part_prompt(n: usize) -> String {
    format!("ID token (part {n}): ")
}

/// How the client is asked; `None` means the conversation failed or gave no answer.
/// Answers are bytes: a password that is not UTF-8 must reach the next module intact.
pub trait Prompter {
    fn prompt(&mut self, text: &str) -> Option<Secret>;
}

/// What the collection produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub token: Secret,
    pub parts: usize,
    /// The client stopped answering before the token was complete.
    pub interrupted: bool,
}

/// Collects the token. `first` is PAM_AUTHTOK when an earlier module set it (part 1);
/// otherwise part 1 is prompted for. `None`: not even part 1 could be had.
pub fn collect(first: Option<Secret>, prompter: &mut dyn Prompter) -> Option<Collected> {
    let first = match first {
        Some(f) => f,
        None => prompter.prompt(FIRST_PROMPT)?,
    };
    // Lengths in bytes: OpenSSH's buffer is bytes, and tokens are ASCII.
    let mut last_len = first.len();
    let mut out = Collected {
        token: first,
        parts: 1,
        interrupted: false,
    };
    while (PART_MIN..=OPENSSH_CUT).contains(&last_len) && out.token.len() < MAX_TOKEN_BYTES {
        let n = out.parts.saturating_add(1);
        match prompter.prompt(&part_prompt(n)) {
            Some(part) => {
                last_len = part.len();
                if last_len == 0 {
                    break;
                }
                append(&mut out.token, &part);
                out.parts = n;
            }
            None => {
                out.interrupted = true;
                break;
            }
        }
    }
    Some(out)
}

/// Appends `part`. When `buf` is full it is first copied into a new buffer of twice the
/// size (or what is needed), and the old one is wiped as it is dropped: `extend_from_slice`
/// would let the allocator move it and free the old copy unwiped.
fn append(buf: &mut Secret, part: &[u8]) {
    let needed = buf.len().saturating_add(part.len());
    if needed > buf.capacity() {
        let mut grown = Zeroizing::new(Vec::with_capacity(
            needed.max(buf.capacity().saturating_mul(2)),
        ));
        grown.extend_from_slice(buf);
        *buf = grown;
    }
    buf.extend_from_slice(part);
}

/// An answer of exactly the OpenSSH cut length that then failed is most likely a long
/// token cut by a client that does not answer part prompts.
pub fn looks_cut(c: &Collected) -> bool {
    c.parts == 1 && c.token.len() == OPENSSH_CUT
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Script {
        answers: Vec<Option<Secret>>,
        prompts: Vec<String>,
    }

    impl Prompter for Script {
        fn prompt(&mut self, text: &str) -> Option<Secret> {
            self.prompts.push(text.to_string());
            if self.answers.is_empty() {
                None
            } else {
                self.answers.remove(0)
            }
        }
    }

    fn script(answers: &[Option<&str>]) -> Script {
        Script {
            answers: answers
                .iter()
                .map(|a| a.map(|x| Zeroizing::new(x.as_bytes().to_vec())))
                .collect(),
            prompts: vec![],
        }
    }

    fn chars(n: usize) -> String {
        "x".repeat(n)
    }

    #[test]
    fn short_token_is_one_part() {
        let mut s = script(&[Some("a.b.c")]);
        let c = collect(None, &mut s).unwrap();
        assert_eq!(*c.token, b"a.b.c");
        assert_eq!(s.prompts, vec!["ID token: "]);
    }

    #[test]
    fn three_parts() {
        let (a, b, c) = (chars(1000), chars(1000), chars(321));
        let mut s = script(&[Some(&a), Some(&b), Some(&c)]);
        let got = collect(None, &mut s).unwrap();
        assert_eq!(got.token.len(), 2321);
        assert_eq!(got.parts, 3);
        assert_eq!(
            s.prompts,
            vec!["ID token: ", "ID token (part 2): ", "ID token (part 3): "]
        );
    }

    #[test]
    fn exactly_1000_asks_again_and_empty_ends() {
        let a = chars(1000);
        let mut s = script(&[Some(&a), Some("")]);
        let got = collect(None, &mut s).unwrap();
        assert_eq!(got.token.len(), 1000);
        assert_eq!(got.parts, 1);
        assert!(!got.interrupted);
        assert_eq!(s.prompts.len(), 2);
    }

    #[test]
    fn long_single_answer_is_taken_whole() {
        let a = chars(1500);
        let mut s = script(&[Some(&a)]);
        assert_eq!(collect(None, &mut s).unwrap().token.len(), 1500);
        assert_eq!(s.prompts.len(), 1);
    }

    #[test]
    fn cut_token_is_noticed() {
        let a = chars(1023);
        let mut s = script(&[Some(&a), None]);
        let got = collect(None, &mut s).unwrap();
        assert!(got.interrupted);
        assert!(looks_cut(&got));
    }

    #[test]
    fn authtok_is_part_one() {
        let mut s = script(&[Some("rest")]);
        let got = collect(Some(Zeroizing::new(chars(1000).into_bytes())), &mut s).unwrap();
        assert_eq!(got.token.len(), 1004);
        assert_eq!(s.prompts, vec!["ID token (part 2): "]);
    }

    #[test]
    fn stops_at_the_size_limit() {
        let part = chars(1000);
        let answers: Vec<Option<&str>> = (0..100).map(|_| Some(part.as_str())).collect();
        let mut s = script(&answers);
        let got = collect(None, &mut s).unwrap();
        assert!(got.token.len() <= MAX_TOKEN_BYTES + 1000);
        assert!(s.prompts.len() < 70);
    }

    #[test]
    fn append_copies_into_a_larger_buffer_only_when_full() {
        let mut buf = Zeroizing::new(Vec::with_capacity(8));
        buf.extend_from_slice(b"abcd");
        let before = buf.as_ptr();
        append(&mut buf, b"efgh");
        assert_eq!(buf.as_ptr(), before, "room left: appended in place");
        append(&mut buf, b"ij");
        assert_eq!(*buf, b"abcdefghij");
        assert!(buf.capacity() >= 16, "doubled: {}", buf.capacity());
    }

    #[test]
    fn no_answer_at_all() {
        let mut s = script(&[]);
        assert!(collect(None, &mut s).is_none());
    }
}
