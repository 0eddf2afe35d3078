//! Parsing of `enroot list -f` output (behaviour spec §5.9).
//!
//! Decides whether a named container exists and, if a process runs in it,
//! which pid to take the namespaces from. Used by slurmstepd `user_init`
//! (as the user) for steps with `--container-name`.
//!
//! Same rules as pyxis (first line is the header, first token is the name,
//! second token the pid) with two robustness fixes for weak spot W8:
//! `[INFO]`/`[WARN]`/`[ERROR]` lines that enroot printed on stderr before the
//! header are skipped instead of being taken for it, and continuation lines
//! (extra pids of a container, which start with blanks), as well as empty
//! lines, are skipped. Tokens are separated by runs of spaces or tabs.

use thiserror::Error;

use crate::core::text::printable;

/// What `enroot list -f` says about one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// No container with that name.
    Absent,
    /// The root filesystem exists but no process uses it.
    Stopped,
    /// A process (the lowest pid enroot found) runs in the container.
    Running(u32),
}

/// Why the listing could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ListError {
    /// Not even a header line.
    #[error("\"enroot list -f\" did not produce any usable output")]
    NoOutput,
    /// The pid column of the matching line is not a pid.
    #[error("couldn't parse pid in \"enroot list -f\" output: {}", printable(.0))]
    InvalidPid(String),
}

/// enroot log prefixes that can precede the header when stderr is merged.
const LOG_PREFIXES: [&str; 3] = ["[INFO]", "[WARN]", "[ERROR]"];

/// Finds `name` in the captured `enroot list -f` output (stdout and stderr).
pub fn find_container(output: &str, name: &str) -> Result<ContainerState, ListError> {
    let mut lines = output
        .lines()
        .skip_while(|l| LOG_PREFIXES.iter().any(|p| l.starts_with(p)));
    // The header (`NAME PID COMM ...`) is discarded unconditionally.
    if lines.next().is_none() {
        return Err(ListError::NoOutput);
    }
    for line in lines {
        if line.is_empty() || line.starts_with(|c: char| c.is_whitespace()) {
            continue;
        }
        let mut tokens = line.split([' ', '\t']).filter(|t| !t.is_empty());
        if tokens.next() != Some(name) {
            continue;
        }
        return match tokens.next() {
            None => Ok(ContainerState::Stopped),
            Some(pid) => parse_pid(pid),
        };
    }
    Ok(ContainerState::Absent)
}

/// A decimal pid that fits `pid_t`; 0 means "no process", as in pyxis.
fn parse_pid(token: &str) -> Result<ContainerState, ListError> {
    let invalid = || ListError::InvalidPid(token.to_owned());
    if !token.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let pid: i32 = token.parse().map_err(|_| invalid())?;
    match u32::try_from(pid) {
        Ok(0) => Ok(ContainerState::Stopped),
        Ok(pid) => Ok(ContainerState::Running(pid)),
        Err(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_pid_message_escapes_control_characters() {
        // found by tests/fuzz (target list): the token went raw into slurmstepd's log
        let err = find_container("NAME PID\nc 1\x1b[2J\x07\n", "c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't parse pid in \"enroot list -f\" output: 1\\u{1b}[2J\\u{7}"
        );
    }

    const HEADER: &str = "NAME      PID  COMM  STATE  STARTED  TIME  MNTNS  USERNS  COMMAND\n";

    #[test]
    fn states() {
        let out = format!(
            "{HEADER}pyxis_a\npyxis_b   1234  sh  S  10:00  0:00  4026  4027  sh -c x\n          \
             1300  bash  S  10:01  0:00  4026  4027  bash\npyxis_c\t77\tsh\n"
        );
        let cases = [
            ("pyxis_a", ContainerState::Stopped),
            ("pyxis_b", ContainerState::Running(1234)),
            ("pyxis_c", ContainerState::Running(77)),
            ("pyxis_d", ContainerState::Absent),
            ("pyxis", ContainerState::Absent),
            ("1300", ContainerState::Absent),
            ("NAME", ContainerState::Absent),
        ];
        for (name, want) in cases {
            assert_eq!(find_container(&out, name), Ok(want), "{name}");
        }
    }

    #[test]
    fn header_handling() {
        let cases = [
            ("", Err(ListError::NoOutput)),
            ("[WARN] something\n", Err(ListError::NoOutput)),
            ("pyxis_a\n", Ok(ContainerState::Absent)),
            ("\n", Ok(ContainerState::Absent)),
            (
                "[WARN] x\n[INFO] y\nNAME PID\npyxis_a 5\n",
                Ok(ContainerState::Running(5)),
            ),
            ("[ERROR] x\npyxis_a 5\n", Ok(ContainerState::Absent)),
            ("NAME PID\n\npyxis_a\n", Ok(ContainerState::Stopped)),
            ("NAME PID\n   \npyxis_a 0\n", Ok(ContainerState::Stopped)),
            ("NAME PID\r\npyxis_a 9\r\n", Ok(ContainerState::Running(9))),
        ];
        for (out, want) in cases {
            assert_eq!(find_container(out, "pyxis_a"), want, "{out:?}");
        }
    }

    #[test]
    fn bad_pids() {
        for pid in [
            "-1",
            "+5",
            "12x",
            "2147483648",
            "99999999999999999999",
            "0x10",
        ] {
            let out = format!("{HEADER}pyxis_a {pid}\n");
            let err = find_container(&out, "pyxis_a").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("couldn't parse pid in \"enroot list -f\" output: {pid}")
            );
        }
        // Only the matching line's pid is parsed.
        let out = format!("{HEADER}pyxis_x zz\npyxis_a 3\n");
        assert_eq!(
            find_container(&out, "pyxis_a"),
            Ok(ContainerState::Running(3))
        );
    }
}
