//! Option values as bytes: a lossless, reversible mapping between arbitrary bytes and
//! `String`, so every decision of `core` works on text while a value that is not UTF-8
//! still reaches enroot and the file system byte for byte, as in pyxis (which treats
//! every value as a C string).
//!
//! Used in every context at the boundaries: option arguments and `PYXIS_*` variables
//! are [`decode`]d where they enter (the option callback, `init_post_opt` of srun,
//! sbatch/salloc and slurmstepd), and [`encode`]d where a value leaves to the OS (enroot
//! and importer argv, the `--conf` script, paths the plugin stats or opens). Output of
//! enroot is decoded the same way, so a path the importer prints comes back exact.
//!
//! The mapping: valid UTF-8 stays as it is; each byte `b` (always `>= 0x80`) of an
//! invalid sequence becomes the private-use code point `U+10FE00 + b`. The 128 code
//! points used (`U+10FE80..=U+10FEFF`) would make the mapping ambiguous if they could
//! also appear as themselves, so a valid UTF-8 sequence of one of them is mapped byte
//! by byte too (its four bytes are all `>= 0x80`). Hence `encode(decode(b)) == b` for
//! every `b`, nothing is ever refused, and logs show mapped bytes as `\xNN`
//! ([`crate::core::text::printable`]).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// `U+10FE00 + b` stands for the byte `b` (`0x80..=0xFF`).
const BASE: u32 = 0x10_FE00;

/// The byte a mapped code point stands for; `None` for every other char.
pub fn mapped_byte(c: char) -> Option<u8> {
    u32::from(c)
        .checked_sub(BASE)
        .and_then(|b| u8::try_from(b).ok())
        .filter(|b| *b >= 0x80)
}

/// The code point standing for a byte `>= 0x80` of a value that is not UTF-8 (for
/// smaller bytes, which are always valid UTF-8, the byte's own char).
fn mapped_char(b: u8) -> char {
    match b {
        0..=0x7f => char::from(b),
        _ => char::from_u32(BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER),
    }
}

/// Bytes → text, losslessly (see the module docs).
pub fn decode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if mapped_byte(c).is_some() {
                let mut buf = [0u8; 4];
                out.extend(c.encode_utf8(&mut buf).bytes().map(mapped_char));
            } else {
                out.push(c);
            }
        }
        out.extend(chunk.invalid().iter().copied().map(mapped_char));
    }
    out
}

/// [`decode`] of an OS string (an environment value, a path).
pub fn decode_os(s: &OsStr) -> String {
    decode(s.as_bytes())
}

/// Text → the bytes it stands for: the inverse of [`decode`].
pub fn encode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match mapped_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// [`encode`] as an OS string (argv, environment).
pub fn to_os(s: &str) -> OsString {
    OsString::from_vec(encode(s))
}

/// [`encode`] as a path (a file the plugin stats or opens).
pub fn to_path(s: &str) -> PathBuf {
    PathBuf::from(to_os(s))
}

/// The length in bytes of the value `s` stands for.
pub fn encoded_len(s: &str) -> usize {
    s.chars()
        .map(|c| match mapped_byte(c) {
            Some(_) => 1,
            None => c.len_utf8(),
        })
        .sum()
}

/// True when `s` stands for bytes that are valid UTF-8 text as given.
pub fn is_exact_utf8(s: &str) -> bool {
    !s.chars().any(|c| mapped_byte(c).is_some())
}

/// Text read as UTF-8 (an environment definition file) made safe for [`encode`]: the
/// reserved code points, should the text contain them, are mapped byte by byte.
pub fn from_utf8_text(s: String) -> String {
    if is_exact_utf8(&s) {
        s
    } else {
        decode(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utf8_is_kept_and_other_bytes_are_mapped() {
        assert_eq!(decode(b"/tmp/\xc3\xa9"), "/tmp/é");
        assert_eq!(decode(b"/tmp/d\xff/x"), "/tmp/d\u{10feff}/x");
        assert_eq!(decode(b"\xc3"), "\u{10fec3}", "a truncated sequence");
        assert_eq!(
            decode(b"\xed\xa0\x80"),
            "\u{10feed}\u{10fea0}\u{10fe80}",
            "a UTF-16 surrogate"
        );
        assert_eq!(encode("/tmp/d\u{10feff}/x"), b"/tmp/d\xff/x");
        assert_eq!(to_os("a\u{10fefe}"), OsString::from_vec(b"a\xfe".to_vec()));
        assert_eq!(encoded_len("a\u{10fefe}é"), 4);
        assert!(is_exact_utf8("/tmp/é"));
        assert!(!is_exact_utf8("/tmp/\u{10feff}"));
    }

    #[test]
    fn reserved_code_points_stay_themselves() {
        // U+10FE80 as valid UTF-8 input is mapped byte by byte, so it comes back exact.
        let reserved = "\u{10fe80}".as_bytes();
        assert_eq!(reserved, b"\xf4\x8f\xba\x80");
        let text = decode(reserved);
        assert_eq!(text, "\u{10fef4}\u{10fe8f}\u{10feba}\u{10fe80}");
        assert_eq!(encode(&text), reserved);
        assert_eq!(
            from_utf8_text("x\u{10fe80}".into()),
            decode("x\u{10fe80}".as_bytes())
        );
        assert_eq!(from_utf8_text("x\u{10ff80}".into()), "x\u{10ff80}");
        // The neighbours of the range are ordinary chars.
        assert_eq!(mapped_byte('\u{10fe7f}'), None);
        assert_eq!(mapped_byte('\u{10ff00}'), None);
        assert_eq!(mapped_byte('\u{10fe80}'), Some(0x80));
        assert_eq!(mapped_byte('\u{10feff}'), Some(0xff));
        assert_eq!(mapped_byte('a'), None);
    }

    /// Text with many chars from around the reserved range.
    fn text() -> impl Strategy<Value = String> {
        let near = (0x10_FE70u32..0x10_FF10).prop_map(|c| char::from_u32(c).unwrap_or('?'));
        proptest::collection::vec(prop_oneof![any::<char>(), near], 0..32)
            .prop_map(String::from_iter)
    }

    proptest! {
        #[test]
        fn bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = decode(&bytes);
            prop_assert_eq!(encode(&text), bytes.clone());
            prop_assert_eq!(encoded_len(&text), bytes.len());
            prop_assert_eq!(is_exact_utf8(&text), std::str::from_utf8(&bytes).is_ok_and(is_exact_utf8));
        }

        #[test]
        fn text_round_trip(s in text()) {
            // Any text the decoder made decodes back to itself from its bytes.
            let text = decode(s.as_bytes());
            prop_assert_eq!(decode(&encode(&text)), text.clone());
            prop_assert_eq!(encode(&text), s.as_bytes());
        }

        #[test]
        fn splitting_at_ascii_commutes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // What the parsers do: split the text at ASCII separators, encode the parts.
            let text = decode(&bytes);
            let parts: Vec<Vec<u8>> = text.split(',').map(encode).collect();
            let expected: Vec<Vec<u8>> = bytes.split(|b| *b == b',').map(<[u8]>::to_vec).collect();
            prop_assert_eq!(parts, expected);
        }
    }
}
