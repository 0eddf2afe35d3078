//! `enroot list` and `enroot list -f`.
//!
//! The fancy listing must find containers that are running even when their processes never ran
//! enroot (pyxis' tasks join the namespaces directly), so it inspects processes: one process per
//! mount namespace (the lowest pid, like `lsns`) is attributed to a container when its root
//! directory holds the rootfs `.lock` file and is the container directory itself (same device and
//! inode). Processes that cannot be inspected are skipped. Roots with a `.lock` that match no
//! directory (containers started from a squashfs file) are listed as `<unknown>`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys;

/// The name used for processes whose container directory is unknown.
pub const UNKNOWN: &str = "<unknown>";

/// The header line enroot prints first (pyxis discards the first line unconditionally).
pub const HEADER: [&str; 9] = [
    "NAME", "PID", "COMM", "STATE", "STARTED", "TIME", "MNTNS", "USERNS", "COMMAND",
];

/// What the fancy listing shows about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    pub state: String,
    pub started: String,
    pub elapsed: String,
    pub mntns: u64,
    pub userns: u64,
    pub command: String,
}

/// Non-hidden entries of the data directory, sorted bytewise like `ls -1` in the C locale.
pub fn names(data: &Path) -> Result<Vec<OsString>> {
    let entries = fs::read_dir(data).map_err(|e| {
        Error::io(
            format!("Could not change directory: {}", data.display()),
            &e,
        )
    })?;
    let mut names: Vec<OsString> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.as_bytes().first() != Some(&b'.'))
        .collect();
    names.sort();
    Ok(names)
}

/// `enroot list`.
pub fn plain(data: &Path) -> Result<()> {
    let mut out = Vec::new();
    for n in names(data)? {
        out.extend_from_slice(n.as_bytes());
        out.push(b'\n');
    }
    write_stdout(&out)
}

/// `enroot list -f`.
pub fn fancy(data: &Path) -> Result<()> {
    let mut containers: BTreeMap<String, Vec<Process>> = BTreeMap::new();
    let mut by_inode: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for n in names(data)? {
        let path = data.join(&n);
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let name = n.to_string_lossy().into_owned();
        by_inode.insert((meta.dev(), meta.ino()), name.clone());
        containers.insert(name, Vec::new());
    }
    for (root, pid) in namespace_leaders() {
        let name = by_inode
            .get(&root)
            .cloned()
            .unwrap_or_else(|| UNKNOWN.to_string());
        if let Some(p) = describe(pid) {
            containers.entry(name).or_default().push(p);
        }
    }
    let rows: Vec<(String, Vec<Process>)> = containers.into_iter().collect();
    write_stdout(format_fancy(&rows).as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("Could not write the listing", &e))
}

/// For every mount namespace whose root holds a `.lock` file: the (device, inode) of that root and
/// the lowest pid in the namespace.
fn namespace_leaders() -> Vec<((u64, u64), u32)> {
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = proc_dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    pids.sort_unstable();
    let mut seen: BTreeMap<u64, ()> = BTreeMap::new();
    let mut leaders = Vec::new();
    for pid in pids {
        let base = format!("/proc/{pid}");
        // EACCES/ENOENT (other users' or vanished processes) simply skip the process.
        let Ok(ns) = fs::metadata(format!("{base}/ns/mnt")) else {
            continue;
        };
        if seen.insert(ns.ino(), ()).is_some() {
            continue;
        }
        if fs::symlink_metadata(format!("{base}/root/.lock")).is_err() {
            continue;
        }
        let Ok(root) = fs::metadata(format!("{base}/root")) else {
            continue;
        };
        leaders.push(((root.dev(), root.ino()), pid));
    }
    leaders
}

/// Read what the listing shows about a process; `None` if it vanished.
fn describe(pid: u32) -> Option<Process> {
    let base = format!("/proc/{pid}");
    let stat = fs::read_to_string(format!("{base}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; fields follow the last ')'.
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let state = fields.first()?.to_string();
    let start_ticks: u64 = fields.get(19)?.parse().ok()?;
    let comm = fs::read_to_string(format!("{base}/comm"))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let cmdline = fs::read(format!("{base}/cmdline")).unwrap_or_default();
    let command = {
        let parts: Vec<String> = cmdline
            .split(|c| *c == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        if parts.is_empty() {
            format!("[{comm}]")
        } else {
            parts.join(" ")
        }
    };
    let ns_ino = |ns: &str| {
        fs::metadata(format!("{base}/ns/{ns}"))
            .map(|m| m.ino())
            .unwrap_or(0)
    };

    let ticks = sys::clock_ticks();
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0);
    let boot = boot_time().unwrap_or(0);
    let start_secs = start_ticks / ticks;
    // Float seconds from /proc/uptime; truncation is what ps does too.
    let elapsed = (uptime as u64).saturating_sub(start_secs);
    let now = i64::try_from(boot.saturating_add(uptime as u64)).unwrap_or(0);
    let started_at = i64::try_from(boot.saturating_add(start_secs)).unwrap_or(0);
    Some(Process {
        pid,
        comm,
        state,
        started: format_started(started_at, now),
        elapsed: format_elapsed(elapsed),
        mntns: ns_ino("mnt"),
        userns: ns_ino("user"),
        command,
    })
}

fn boot_time() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `ps -o etime`: `[[DD-]hh:]mm:ss`.
pub fn format_elapsed(secs: u64) -> String {
    let (days, rest) = (secs / 86400, secs % 86400);
    let (hours, rest) = (rest / 3600, rest % 3600);
    let (mins, secs) = (rest / 60, rest % 60);
    if days > 0 {
        format!("{days}-{hours:02}:{mins:02}:{secs:02}")
    } else if hours > 0 {
        format!("{hours:02}:{mins:02}:{secs:02}")
    } else {
        format!("{mins:02}:{secs:02}")
    }
}

/// `ps -o stime`: `HH:MM` today, `MonDD` this year, the year otherwise.
pub fn format_started(started: i64, now: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (Some(s), Some(n)) = (sys::local_time(started), sys::local_time(now)) else {
        return "-".to_string();
    };
    if (s.0, s.1, s.2) == (n.0, n.1, n.2) {
        format!("{:02}:{:02}", s.3, s.4)
    } else if s.0 == n.0 {
        let month = usize::try_from(s.1)
            .ok()
            .and_then(|m| MONTHS.get(m))
            .unwrap_or(&"???");
        format!("{month}{:02}", s.2)
    } else {
        s.0.to_string()
    }
}

/// Lay the listing out like `column -t`: every column as wide as its widest cell, two spaces
/// between columns, no padding after the last cell of a line. Containers without processes are a
/// bare name; further processes of one container go on continuation lines with an empty name.
pub fn format_fancy(rows: &[(String, Vec<Process>)]) -> String {
    let mut lines: Vec<Vec<String>> = vec![HEADER.iter().map(|s| s.to_string()).collect()];
    for (name, procs) in rows {
        if procs.is_empty() {
            lines.push(vec![name.clone()]);
            continue;
        }
        let mut sorted = procs.clone();
        sorted.sort_by_key(|p| p.pid);
        for (i, p) in sorted.iter().enumerate() {
            let first = if i == 0 { name.clone() } else { String::new() };
            lines.push(vec![
                first,
                p.pid.to_string(),
                p.comm.clone(),
                p.state.clone(),
                p.started.clone(),
                p.elapsed.clone(),
                p.mntns.to_string(),
                p.userns.to_string(),
                p.command.clone(),
            ]);
        }
    }
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter_map(|l| l.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let last = line.len().saturating_sub(1);
        for (c, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if c < last {
                let width = widths.get(c).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat(' ').take(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_(pid: u32) -> Process {
        Process {
            pid,
            comm: "sh".into(),
            state: "T".into(),
            started: "10:00".into(),
            elapsed: "00:05".into(),
            mntns: 4026532000,
            userns: 4026531999,
            command: "sh -c kill -STOP $$ ; exit 0".into(),
        }
    }

    #[test]
    fn fancy_layout_is_parseable_like_pyxis_does() {
        let rows = vec![
            ("pyxis_1.0".to_string(), vec![proc_(4242), proc_(17)]),
            ("pyxis_idle".to_string(), vec![]),
        ];
        let text = format_fancy(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let header: Vec<&str> = lines[0].split(' ').filter(|t| !t.is_empty()).collect();
        assert_eq!(header, HEADER);
        // Columns line up: the PID column starts at the same offset on every line.
        let pid_col = lines[0].find("PID").unwrap();
        assert_eq!(lines[1].find("17"), Some(pid_col));
        // pyxis: tokens split on spaces; first token is the name, the second the pid.
        let tokens: Vec<&str> = lines[1].split(' ').filter(|t| !t.is_empty()).collect();
        assert_eq!(&tokens[..3], &["pyxis_1.0", "17", "sh"]);
        let cont: Vec<&str> = lines[2].split(' ').filter(|t| !t.is_empty()).collect();
        assert_eq!(cont[0], "4242");
        assert!(lines[2].starts_with(' '));
        assert_eq!(lines[3], "pyxis_idle");
        assert!(!text.lines().any(|l| l.ends_with(' ')));
    }

    #[test]
    fn header_only_when_empty() {
        let text = format_fancy(&[]);
        assert_eq!(
            text,
            "NAME  PID  COMM  STATE  STARTED  TIME  MNTNS  USERNS  COMMAND\n"
        );
    }

    #[test]
    fn elapsed_format() {
        assert_eq!(format_elapsed(5), "00:05");
        assert_eq!(format_elapsed(3725), "01:02:05");
        assert_eq!(format_elapsed(2 * 86400 + 3725), "2-01:02:05");
    }

    #[test]
    fn started_format() {
        let now = 1_700_000_000;
        assert_eq!(format_started(now - 60, now).len(), 5);
        assert!(format_started(now - 200 * 86400, now).len() >= 4);
    }

    #[test]
    fn names_are_sorted_and_skip_hidden() {
        let d = std::env::temp_dir().join(format!("enroot-double-list-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        for n in ["b", "a", ".hidden", "C"] {
            fs::create_dir_all(d.join(n)).unwrap();
        }
        let got = names(&d).unwrap();
        assert_eq!(
            got,
            vec![
                OsString::from("C"),
                OsString::from("a"),
                OsString::from("b")
            ]
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
