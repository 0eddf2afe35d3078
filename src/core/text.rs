//! Text for logs and users: tool output blocks and user strings made safe for one log
//! line. Used by every context that reports errors.

use std::borrow::Cow;

use crate::core::bytes;

/// Formats a captured tool log the way pyxis prints it: a header, then each line
/// indented by four spaces; nothing for an empty log.
pub fn log_block(header: &str, log: &str) -> Vec<String> {
    if log.trim().is_empty() {
        return Vec::new();
    }
    std::iter::once(header.to_owned())
        .chain(log.lines().map(|l| format!("    {l}")))
        .collect()
}

/// Renders user text for a one-line log message: control characters are escaped so a
/// value cannot forge extra log lines, bytes that are not UTF-8 (mapped by
/// [`crate::core::bytes`]) are shown as `\xNN`; everything else is kept.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            push_shown(&mut out, c);
        }
    }
    out
}

/// A whole log line with the bytes that are not UTF-8 shown as `\xNN`, for the log
/// bridge: values interpolated without [`printable`] never show as private-use chars.
pub fn show_bytes(s: &str) -> Cow<'_, str> {
    if bytes::is_exact_utf8(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_shown(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_shown(out: &mut String, c: char) {
    match bytes::mapped_byte(c) {
        Some(b) => out.push_str(&format!("\\x{b:02x}")),
        None => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_escapes() {
        assert!(log_block("h:", " \n").is_empty());
        assert_eq!(log_block("h:", "a\nb\n"), vec!["h:", "    a", "    b"]);
        assert_eq!(printable("a\nb\tc\u{1b}[31m"), "a\\nb\\tc\\u{1b}[31m");
        assert_eq!(printable("ünï"), "ünï");
        let raw = bytes::decode(b"/tmp/\xff\xfe\n");
        assert_eq!(printable(&raw), "/tmp/\\xff\\xfe\\n");
        assert_eq!(show_bytes(&raw), "/tmp/\\xff\\xfe\n");
        assert!(matches!(show_bytes("/tmp/é"), Cow::Borrowed("/tmp/é")));
    }
}
