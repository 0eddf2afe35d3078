//! Invocation records for test assertions.
//!
//! When `ENROOT_DOUBLE_LOG` names a directory, every invocation appends one JSON object per line
//! to `$ENROOT_DOUBLE_LOG/invocations.jsonl`: argv, ids, groups, cwd and the complete environment
//! (as `NAME=VALUE` strings in the order the process received them). Bytes that are not UTF-8 are
//! replaced by U+FFFD. The line is written with a single `write(2)` on an `O_APPEND` descriptor,
//! so concurrent invocations do not interleave. Failures are ignored: recording must never change
//! what the double does (a directory the job user cannot write simply records nothing).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use nix::unistd::{getegid, geteuid, getgid, getgroups, getpid, getppid, getuid};

/// The file name inside `$ENROOT_DOUBLE_LOG`.
pub const FILE_NAME: &str = "invocations.jsonl";

/// JSON string literal of arbitrary text.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_array(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    format!("[{}]", v.join(","))
}

/// The record line for this process.
pub fn line(argv: &[OsString]) -> String {
    let text = |s: &OsString| json_string(&s.to_string_lossy());
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let groups = getgroups().unwrap_or_default();
    let env = std::env::vars_os().map(|(k, v)| {
        let mut e = k;
        e.push("=");
        e.push(v);
        text(&e)
    });
    let mut full_argv = vec![OsString::from("enroot")];
    full_argv.extend(argv.iter().cloned());
    format!(
        "{{\"pid\":{},\"ppid\":{},\"uid\":{},\"gid\":{},\"euid\":{},\"egid\":{},\"groups\":{},\"cwd\":{},\"argv\":{},\"env\":{}}}\n",
        getpid(),
        getppid(),
        getuid(),
        getgid(),
        geteuid(),
        getegid(),
        json_array(groups.iter().map(|g| g.to_string())),
        json_string(&cwd),
        json_array(full_argv.iter().map(text)),
        json_array(env),
    )
}

/// Append the record if `ENROOT_DOUBLE_LOG` is set.
pub fn record(argv: &[OsString]) {
    let Some(dir) = std::env::var_os("ENROOT_DOUBLE_LOG").filter(|d| !d.is_empty()) else {
        return;
    };
    let path = PathBuf::from(dir).join(FILE_NAME);
    let Ok(mut file) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o666)
        .open(&path)
    else {
        return;
    };
    // Several users append to one file; undo the umask when we happen to create it.
    if file
        .metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o666 != 0o666)
    {
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
    }
    let _ = file.write_all(line(argv).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn record_line_shape() {
        let l = line(&[OsString::from("list"), OsString::from("-f")]);
        assert!(l.starts_with("{\"pid\":"));
        assert!(l.contains("\"argv\":[\"enroot\",\"list\",\"-f\"]"));
        assert!(l.ends_with("}\n"));
        assert_eq!(l.matches('\n').count(), 1);
    }
}
