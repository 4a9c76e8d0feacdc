//! Packed tokens: a versioned transport form of a compact JWS that fits one answer of an
//! OpenSSH client (1023 characters) where the JWS itself does not (pam_idtoken(8), PACKED
//! TOKENS).
//!
//! `~1.` + base64url (RFC 4648 §5, no padding) of a zlib stream (RFC 1950) with FDICT set
//! and DICTID the Adler-32 of a preset dictionary this module knows ([`DICTIONARIES`]).
//! The stream inflates to `header_json NUL payload_json NUL signature`: the three
//! base64url segments of the JWS, decoded. Unpacking re-encodes them as base64url without
//! padding and joins them with `.`; the packer refuses a token whose segments would not
//! come back byte for byte, so the result is the exact JWS the issuer signed and every
//! later check is unchanged. `~` is outside the base64url alphabet: no JWS starts with it.
//!
//! Unpacking is bounded before anything else runs: the answer is at most 64 KiB, the
//! inflated content at most [`MAX_INFLATED`] bytes and [`MAX_RATIO`] times the stream;
//! a bad marker or version, an unknown dictionary, a truncated or overlong stream and a
//! checksum mismatch are all refused (the decision's `malformed`). Inflating uses
//! miniz_oxide (pure Rust); packing (feature `pack`: the command, tests and fuzzing, never
//! the module) uses zlib's deflateSetDictionary through flate2's zlib-rs backend.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
use zeroize::Zeroizing;

use crate::MAX_TOKEN_BYTES;

/// Every packed token starts with this character; no base64url text does.
pub const MARKER: char = '~';
/// The format version this module writes and reads (the digit after the marker).
pub const VERSION: u32 = 1;
/// What a version-1 packed token starts with.
pub const PREFIX: &str = "~1.";
/// The inflated content (the three decoded segments and two NULs) may not exceed this.
pub const MAX_INFLATED: usize = 49_152;
/// Nor may it be more than this many times the size of the zlib stream.
pub const MAX_RATIO: usize = 64;
/// The answer limit of one OpenSSH prompt is 1023 characters; a packed token of fewer
/// characters than this is sent in one answer (the module asks for a part 2 after 1000).
pub const ONE_ANSWER: usize = 1000;

/// A preset dictionary. Released dictionaries never change: a new one gets a new name and
/// its own id, and the module keeps knowing every released one.
#[derive(Debug)]
pub struct Dictionary {
    pub name: &'static str,
    /// Its Adler-32, which is the DICTID of the zlib header (RFC 1950 §2.2).
    pub id: u32,
    pub bytes: &'static [u8],
}

/// GitLab's claim names in its order, common values and URL pieces, the header shapes
/// (pam/core/dictionaries/gitlab-1.dict).
pub const GITLAB_1: Dictionary = Dictionary {
    name: "gitlab-1",
    id: 0xf8ca_35cc,
    bytes: include_bytes!("../dictionaries/gitlab-1.dict"),
};

/// Every released dictionary.
pub const DICTIONARIES: &[Dictionary] = &[GITLAB_1];

/// The dictionary `idtoken pack` uses.
pub const DEFAULT_DICTIONARY: &Dictionary = &GITLAB_1;

/// A packed token, unpacked.
pub struct Unpacked {
    /// The compact JWS, wiped when dropped.
    pub jws: Zeroizing<String>,
    pub dictionary: &'static Dictionary,
}

impl std::fmt::Debug for Unpacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unpacked")
            .field("jws", &format_args!("<{} characters>", self.jws.len()))
            .field("dictionary", &self.dictionary.name)
            .finish()
    }
}

/// True when `answer` has the shape of a packed token of any version: the marker, a
/// version number, a dot, then base64url text only. The PAM module treats such an answer
/// as a token attempt (refused as `malformed` if it does not unpack), never as a password
/// to pass on.
pub fn looks_packed(answer: &str) -> bool {
    let Some(rest) = answer.trim().strip_prefix(MARKER) else {
        return false;
    };
    let Some((version, body)) = rest.split_once('.') else {
        return false;
    };
    !version.is_empty()
        && version.len() <= 3
        && version.bytes().all(|b| b.is_ascii_digit())
        && !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `Ok(None)` for an answer that does not start with the marker (a plain JWS, or
/// anything else: the JWS parser judges it); the unpacked JWS for a packed one; why not
/// for a packed one that does not unpack.
pub fn unpack_if_packed(raw: &str) -> Result<Option<Unpacked>, String> {
    if raw.trim_start().starts_with(MARKER) {
        unpack(raw).map(Some)
    } else {
        Ok(None)
    }
}

/// Unpacks a packed token (surrounding whitespace stripped). The error is a short
/// description for the trace; it never contains the token.
pub fn unpack(raw: &str) -> Result<Unpacked, String> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "packed token is {} bytes, over the {MAX_TOKEN_BYTES}-byte limit",
            raw.len()
        ));
    }
    let Some(rest) = raw.trim().strip_prefix(MARKER) else {
        return Err(format!("a packed token starts with {MARKER:?}"));
    };
    let Some((version, body)) = rest.split_once('.') else {
        return Err("packed token has no version".to_string());
    };
    if version != "1" {
        let shown: String = version
            .chars()
            .take(8)
            .filter(char::is_ascii_alphanumeric)
            .collect();
        return Err(format!(
            "packed token version {shown:?} is not known (this module reads version {VERSION})"
        ));
    }
    let stream = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| "packed token is not base64url after \"~1.\"".to_string())?,
    );
    let (dictionary, deflated) = zlib_header(&stream)?;
    let content = inflate(dictionary, deflated, stream.len())?;
    let jws = reassemble(&content)?;
    Ok(Unpacked { jws, dictionary })
}

/// Checks the 6-byte zlib header (CMF, FLG, DICTID) and returns the dictionary it names
/// and the rest of the stream (deflate data and the Adler-32 trailer).
fn zlib_header(stream: &[u8]) -> Result<(&'static Dictionary, &[u8]), String> {
    let (Some(&cmf), Some(&flg), Some(dictid), Some(rest)) = (
        stream.first(),
        stream.get(1),
        stream.get(2..6),
        stream.get(6..),
    ) else {
        return Err("packed token is too short for a zlib header with a dictionary".to_string());
    };
    if cmf & 0x0f != 8 || cmf >> 4 > 7 {
        return Err(
            "packed token's zlib header is not deflate with a window of at most 32 KiB".to_string(),
        );
    }
    if (u32::from(cmf) << 8 | u32::from(flg)) % 31 != 0 {
        return Err("packed token's zlib header check (FCHECK) fails".to_string());
    }
    if flg & 0x20 == 0 {
        return Err("packed token's zlib header names no dictionary (FDICT unset)".to_string());
    }
    let id = dictid
        .try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| "packed token's DICTID is cut".to_string())?;
    let dictionary = DICTIONARIES
        .iter()
        .find(|d| d.id == id)
        .ok_or_else(|| format!("packed token's dictionary id {id:08x} is not known"))?;
    Ok((dictionary, rest))
}

/// Inflates `deflated` (raw deflate data, then the big-endian Adler-32 of the content)
/// with `dictionary` as the history before it, bounded by [`MAX_INFLATED`] and
/// [`MAX_RATIO`] times `stream_len`. Nothing may follow the checksum.
fn inflate(
    dictionary: &Dictionary,
    deflated: &[u8],
    stream_len: usize,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let start = dictionary.bytes.len();
    let cap = MAX_INFLATED.min(stream_len.saturating_mul(MAX_RATIO));
    // The dictionary, then room for the content and one byte more (to see an overlong
    // one): a buffer that does not wrap, so back-references may reach into the dictionary.
    let mut out = Zeroizing::new(vec![0u8; start.saturating_add(cap).saturating_add(1)]);
    if let Some(head) = out.get_mut(..start) {
        head.copy_from_slice(dictionary.bytes);
    }
    let mut state = Box::<DecompressorOxide>::default();
    let (status, read, written) = decompress(
        &mut state,
        deflated,
        &mut out,
        start,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    match status {
        TINFLStatus::Done => {}
        TINFLStatus::HasMoreOutput => {
            return Err(if cap < MAX_INFLATED {
                format!("packed token inflates more than {MAX_RATIO} times its size")
            } else {
                format!("packed token inflates past {MAX_INFLATED} bytes")
            });
        }
        TINFLStatus::FailedCannotMakeProgress | TINFLStatus::NeedsMoreInput => {
            return Err("packed token is cut short".to_string());
        }
        _ => return Err("packed token's deflate data is corrupt".to_string()),
    }
    let content = out
        .get(start..start.saturating_add(written))
        .ok_or_else(|| "packed token inflated out of bounds".to_string())?;
    match deflated.get(read..) {
        Some(trailer) if trailer.len() == 4 => {
            if trailer != adler32(content).to_be_bytes() {
                return Err("packed token's checksum (Adler-32) does not match".to_string());
            }
        }
        Some(trailer) if trailer.len() < 4 => {
            return Err("packed token is cut short (checksum missing)".to_string());
        }
        _ => return Err("packed token has bytes after its checksum".to_string()),
    }
    Ok(Zeroizing::new(content.to_vec()))
}

/// `header NUL payload NUL signature` → `b64(header).b64(payload).b64(signature)`, built
/// in a buffer of its final size (a growing String would leave freed copies unwiped).
fn reassemble(content: &[u8]) -> Result<Zeroizing<String>, String> {
    let mut parts = content.splitn(3, |&b| b == 0);
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("packed token's content is not header NUL payload NUL signature".to_string());
    };
    let encoded_len = |n: usize| n.saturating_mul(4).div_ceil(3);
    let mut jws = Zeroizing::new(String::with_capacity(
        encoded_len(header.len())
            .saturating_add(encoded_len(payload.len()))
            .saturating_add(encoded_len(signature.len()))
            .saturating_add(2),
    ));
    URL_SAFE_NO_PAD.encode_string(header, &mut jws);
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut jws);
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
    Ok(jws)
}

/// Adler-32 (RFC 1950 §8.2).
pub fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        // a < MOD and b < MOD before each step: no sum reaches 2^32.
        a = a.wrapping_add(u32::from(byte)) % MOD;
        b = b.wrapping_add(a) % MOD;
    }
    b << 16 | a
}

/// Why a token cannot be packed (`idtoken pack` exits 2 and says so; askpass sends it
/// unpacked).
#[cfg(feature = "pack")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackError {
    /// Not three dot-separated parts.
    NotCompact,
    /// A part is not canonical base64url without padding: unpacking would not give back
    /// the same text, and the signature would no longer match.
    NotCanonical(&'static str),
    /// The header or payload holds a NUL byte (JSON text never does).
    Nul(&'static str),
    Deflate(String),
}

#[cfg(feature = "pack")]
impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackError::NotCompact => f.write_str("not a compact JWS (three dot-separated parts)"),
            PackError::NotCanonical(part) => write!(
                f,
                "the {part} is not canonical base64url without padding, so its packed form could not give back the same token"
            ),
            PackError::Nul(part) => write!(f, "the {part} holds a NUL byte"),
            PackError::Deflate(why) => write!(f, "deflate failed: {why}"),
        }
    }
}

/// Packs a compact JWS (surrounding whitespace stripped) with [`DEFAULT_DICTIONARY`].
#[cfg(feature = "pack")]
pub fn pack(jws: &str) -> Result<String, PackError> {
    pack_with(jws, DEFAULT_DICTIONARY)
}

/// Packs a compact JWS with `dictionary`: deflate at level 9 with zlib's defaults
/// otherwise (window 32 KiB, memLevel 8, default strategy).
#[cfg(feature = "pack")]
pub fn pack_with(jws: &str, dictionary: &Dictionary) -> Result<String, PackError> {
    use flate2::{Compress, Compression, FlushCompress, Status};

    let mut parts = jws.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PackError::NotCompact);
    };
    let mut content = Zeroizing::new(Vec::with_capacity(jws.len()));
    for (i, (text, what)) in [(h, "header"), (p, "payload"), (s, "signature")]
        .into_iter()
        .enumerate()
    {
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| PackError::NotCanonical(what))?,
        );
        if *URL_SAFE_NO_PAD.encode(&*bytes) != *text {
            return Err(PackError::NotCanonical(what));
        }
        if i < 2 && bytes.contains(&0) {
            return Err(PackError::Nul(what));
        }
        if i > 0 {
            content.push(0);
        }
        content.extend_from_slice(&bytes);
    }
    let mut z = Compress::new(Compression::best(), true);
    let id = z
        .set_dictionary(dictionary.bytes)
        .map_err(|e| PackError::Deflate(e.to_string()))?;
    if id != dictionary.id {
        return Err(PackError::Deflate(format!(
            "dictionary {} has Adler-32 {id:08x}, not its id {:08x}",
            dictionary.name, dictionary.id
        )));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(content.len().saturating_add(64)));
    loop {
        let before = z.total_in();
        let consumed = usize::try_from(before).unwrap_or(usize::MAX);
        let rest = content.get(consumed..).unwrap_or_default();
        if out.len() == out.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(out.capacity().saturating_mul(2)));
            grown.extend_from_slice(&out);
            out = grown;
        }
        match z.compress_vec(rest, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => break,
            Ok(_) => {}
            Err(e) => return Err(PackError::Deflate(e.to_string())),
        }
    }
    let mut packed = String::with_capacity(
        PREFIX
            .len()
            .saturating_add(out.len().saturating_mul(4).div_ceil(3)),
    );
    packed.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(&*out, &mut packed);
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_ids_are_their_adler32_and_distinct() {
        for d in DICTIONARIES {
            assert_eq!(adler32(d.bytes), d.id, "{}", d.name);
            assert!(d.bytes.len() <= 32 * 1024, "{} exceeds the window", d.name);
        }
        for (i, d) in DICTIONARIES.iter().enumerate() {
            assert!(DICTIONARIES.iter().skip(i + 1).all(|o| o.id != d.id));
        }
    }

    #[test]
    fn adler32_known_values() {
        // RFC 1950's definition: "Wikipedia" is the usual check value.
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(&vec![0xff; 100_000]), {
            let (mut a, mut b) = (1u64, 0u64);
            for _ in 0..100_000 {
                a = (a + 255) % 65521;
                b = (b + a) % 65521;
            }
            ((b << 16) | a) as u32
        });
    }

    #[test]
    fn shapes() {
        assert!(looks_packed("~1.eJw"));
        assert!(looks_packed(" ~2.abc_-9\n"));
        assert!(!looks_packed("~1."));
        assert!(!looks_packed("~.abc"));
        assert!(!looks_packed("~1.ab=c"));
        assert!(!looks_packed("~1.ab.c"));
        assert!(!looks_packed("~x.abc"));
        assert!(!looks_packed("1.abc"));
        assert!(!looks_packed("hunter2"));
        assert!(!looks_packed("~/.ssh/id_rsa"));
    }

    #[test]
    fn not_packed_is_left_to_the_jws_parser() {
        assert!(matches!(unpack_if_packed("eyJ.a.b"), Ok(None)));
        assert!(matches!(unpack_if_packed(""), Ok(None)));
        assert!(unpack_if_packed(" ~1.").is_err());
    }
}
