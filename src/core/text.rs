//! Text for logs and users: tool output blocks and user strings made safe for one log
//! line. Used by every context that reports errors.

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
/// value cannot forge extra log lines; everything else is kept.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
    }
}
