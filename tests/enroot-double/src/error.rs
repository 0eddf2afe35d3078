//! Error values shared by every command of the double.
//!
//! enroot reports every failure as one `[ERROR] <message>` line on stderr and exits 1, and answers
//! command-line mistakes with the usage text on stdout. The two cases are kept apart so that `main`
//! is the only place that prints and chooses the exit status.

use std::fmt;
use std::io;

use crate::cli::Topic;

/// Why a command did not complete.
#[derive(Debug)]
pub enum Error {
    /// A failure reported as `[ERROR] <message>`.
    Failed(String),
    /// The command line was wrong (exit 1) or help was requested (exit 0): print `topic`'s usage.
    Usage { topic: Topic, code: i32 },
    /// Leave quietly with this status (e.g. `remove` when the confirmation prompt hits EOF, like
    /// enroot's `read` under `set -e`).
    Exit(i32),
}

/// Result type of the double.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A failure with a message, e.g. `No such file or directory: /x`.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// A failure of an operation on something, formatted `<what>: <strerror>`.
    pub fn io(what: impl fmt::Display, err: &io::Error) -> Self {
        Error::Failed(format!("{what}: {}", strerror(err)))
    }

    /// Like [`Error::io`] for an errno from nix.
    pub fn errno(what: impl fmt::Display, err: nix::errno::Errno) -> Self {
        Error::Failed(format!("{what}: {}", errno_text(err)))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(m) => f.write_str(m),
            Error::Usage { topic, code } => write!(f, "usage error ({topic:?}, exit {code})"),
            Error::Exit(code) => write!(f, "exit {code}"),
        }
    }
}

impl std::error::Error for Error {}

/// The C library's text for an I/O error, without Rust's " (os error N)" suffix, because enroot's
/// messages (and tests grepping them, e.g. `cross-device link`) use plain `strerror(3)` text.
pub fn strerror(err: &io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        // std formats OS errors as "<strerror_r text> (os error N)".
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_string),
        None => text,
    }
}

/// [`strerror`] for an errno from nix (whose own descriptions differ from the C library's).
pub fn errno_text(err: nix::errno::Errno) -> String {
    strerror(&io::Error::from_raw_os_error(err as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_is_plain_libc_text() {
        let e = io::Error::from_raw_os_error(libc::EXDEV);
        assert_eq!(strerror(&e), "Invalid cross-device link");
        assert_eq!(
            Error::io("failed to mount: a at b", &e).to_string(),
            "failed to mount: a at b: Invalid cross-device link"
        );
    }
}
