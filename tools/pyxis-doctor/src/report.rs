//! The doctor's results: one PASS/WARN/FAIL line per check with the fix, or the same
//! as JSON for monitoring. Pure (no I/O): `main` prints what these functions return.

use std::fmt::Write as _;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    /// The word printed at the start of the line.
    pub fn word(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }

    fn json(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check: what was looked at, what was found, and (unless it passed) what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// A short stable identifier (`slurm-release`, `fuse`, ...), the JSON key monitoring
    /// keys on.
    pub name: &'static str,
    pub status: Status,
    /// What was found, in one sentence.
    pub detail: String,
    /// What to do about it; empty when there is nothing to do.
    pub fix: String,
}

impl Check {
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            detail: detail.into(),
            fix: String::new(),
        }
    }

    pub fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// Counts of each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

pub fn summary(checks: &[Check]) -> Summary {
    let mut s = Summary::default();
    for c in checks {
        match c.status {
            Status::Pass => s.pass += 1,
            Status::Warn => s.warn += 1,
            Status::Fail => s.fail += 1,
        }
    }
    s
}

/// The human-readable report: one line per check (`FAIL fuse: ... -> fix: ...`), then
/// the counts.
pub fn text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let _ = write!(out, "{} {:width$}  {}", c.status.word(), c.name, c.detail);
        if !c.fix.is_empty() {
            let _ = write!(out, " -> fix: {}", c.fix);
        }
        out.push('\n');
    }
    let s = summary(checks);
    let _ = writeln!(
        out,
        "{} passed, {} warnings, {} failed",
        s.pass, s.warn, s.fail
    );
    out
}

/// The report as one JSON object:
/// `{"status":"fail","summary":{...},"checks":[{"name":..,"status":..,"detail":..,"fix":..}]}`.
pub fn json(checks: &[Check]) -> String {
    let s = summary(checks);
    let worst = checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Pass);
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"status\":\"{}\",\"summary\":{{\"pass\":{},\"warn\":{},\"fail\":{}}},\"checks\":[",
        worst.json(),
        s.pass,
        s.warn,
        s.fail
    );
    for (i, c) in checks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"status\":\"{}\",\"detail\":{},\"fix\":{}}}",
            json_string(c.name),
            c.status.json(),
            json_string(&c.detail),
            json_string(&c.fix)
        );
    }
    out.push_str("]}\n");
    out
}

/// A JSON string literal (RFC 8259 escaping; control characters as `\u00XX`).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Bytes as a short human size (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_one_line_per_check_and_the_counts() {
        let checks = [
            Check::pass("enroot", "enroot 4.1.2 at /usr/bin/enroot"),
            Check::fail("fuse", "/dev/fuse has mode 0000", "chmod 0666 /dev/fuse"),
            Check::warn("cache", "nearly full", "prune"),
        ];
        assert_eq!(
            text(&checks),
            "PASS enroot  enroot 4.1.2 at /usr/bin/enroot\n\
             FAIL fuse    /dev/fuse has mode 0000 -> fix: chmod 0666 /dev/fuse\n\
             WARN cache   nearly full -> fix: prune\n\
             1 passed, 1 warnings, 1 failed\n"
        );
    }

    #[test]
    fn json_reports_the_worst_status() {
        let checks = [
            Check::pass("a", "ok"),
            Check::warn("b", "hm \"x\"", "do\tit"),
        ];
        assert_eq!(
            json(&checks),
            "{\"status\":\"warn\",\"summary\":{\"pass\":1,\"warn\":1,\"fail\":0},\"checks\":[\
             {\"name\":\"a\",\"status\":\"pass\",\"detail\":\"ok\",\"fix\":\"\"},\
             {\"name\":\"b\",\"status\":\"warn\",\"detail\":\"hm \\\"x\\\"\",\"fix\":\"do\\tit\"}]}\n"
        );
        assert!(json(&[]).starts_with("{\"status\":\"pass\""));
    }

    #[test]
    fn json_strings_escape_controls_and_quotes() {
        assert_eq!(json_string("a\\b\"c\n\u{1}é"), "\"a\\\\b\\\"c\\n\\u0001é\"");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(50 << 30), "50.0 GiB");
    }
}
