//! The named-container lock (taken by the creator task as the user; stale files removed
//! by root through a checked directory fd) and the `/proc` files of the container
//! helper that the tasks read. Root's directories are in `sys::dirs`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::core::envfilter::{split_entry, EnvPairs};

use super::dirs::{Dir, DirError};
use crate::sys::lockfile::{self, HeldLock, LockFileError, LockKind};

/// Errors with pyxis's wording where it has one.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("couldn't read container cwd: {0}")]
    Cwd(#[source] io::Error),
    #[error("couldn't read /proc/{pid}/environ: {source}")]
    Environ {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// Why a named container's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("couldn't open container lock directory {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    File(#[from] LockFileError),
    #[error("timed out after {secs} s waiting for another step using container {name}")]
    Timeout { name: String, secs: u64 },
}

/// An exclusive per-user, per-node lock on one named container, held while a step
/// creates or starts it (W2). The kernel drops it if the holder dies; the holder removes
/// the lock file when done, so nothing is left behind (the protocol is
/// `sys::lockfile`'s).
pub struct NameLock {
    dir: OwnedFd,
    file: String,
    lock: Option<HeldLock>,
}

impl NameLock {
    /// Takes `<dir>/<name>.lock` (created 0600, never through a symlink), waiting at
    /// most `timeout` for the step that holds it (which creates a large image meanwhile).
    pub fn acquire(dir: &Path, name: &str, timeout: Duration) -> Result<NameLock, LockError> {
        let dir_fd = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| LockError::Open {
            path: dir.to_owned(),
            source: e.into(),
        })?;
        let file = format!("{name}.lock");
        let deadline = std::time::Instant::now() + timeout;
        let lock = lockfile::lock(
            dir_fd.as_fd(),
            dir,
            &file,
            LockKind::Exclusive,
            deadline,
            timeout,
            &mut |_| {},
        )
        .map_err(|e| match e {
            LockFileError::Timeout { .. } => LockError::Timeout {
                name: name.to_owned(),
                secs: timeout.as_secs(),
            },
            other => LockError::File(other),
        })?;
        Ok(NameLock {
            dir: dir_fd,
            file,
            lock: Some(lock),
        })
    }
}

impl NameLock {
    /// Removes `<name>.lock` of `dir` if nobody holds it: a holder killed with SIGKILL
    /// leaves the file behind. Used by root (`task_exit`, the job epilog) in the user's
    /// runtime directory, through its checked fd: only a regular file is opened (without
    /// following links or blocking), locked without waiting and unlinked while locked,
    /// which waiters notice by the inode check in [`acquire`](Self::acquire).
    pub fn remove_stale(dir: &Dir, name: &str) -> Result<bool, DirError> {
        let file_name = std::ffi::OsString::from(format!("{name}.lock"));
        let Some(file) = dir.open_regular(&file_name)? else {
            return Ok(false);
        };
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(_locked) => dir.unlink(&file_name).map(|()| true),
            Err(_) => Ok(false),
        }
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock; waiters notice and retry (sys::lockfile).
        if let Some(lock) = self.lock.take() {
            let _ = lock.remove(self.dir.as_fd(), &self.file);
        }
    }
}

/// The working directory of a container process, as seen inside the container.
pub fn process_cwd(pid: u32) -> Result<OsString, FsError> {
    fs::read_link(format!("/proc/{pid}/cwd"))
        .map(PathBuf::into_os_string)
        .map_err(FsError::Cwd)
}

/// The environment of a process as `(name, value)` pairs, byte-exact; entries without
/// `=` or with an empty name are skipped.
pub fn process_environ(pid: u32) -> Result<EnvPairs, FsError> {
    let raw = fs::read(format!("/proc/{pid}/environ"))
        .map_err(|source| FsError::Environ { pid, source })?;
    Ok(parse_environ(&raw))
}

fn parse_environ(raw: &[u8]) -> EnvPairs {
    raw.split(|b| *b == 0)
        .filter_map(|entry| split_entry(OsStr::from_bytes(entry)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lock_is_exclusive_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("pyxis-rs-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let held = NameLock::acquire(&dir, "pyxis_x", Duration::from_secs(5)).unwrap();
        // A second open file description cannot take it while held.
        let other = fs::File::open(dir.join("pyxis_x.lock")).unwrap();
        let busy = nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusiveNonblock);
        assert!(busy.is_err());
        drop(held);
        assert!(!dir.join("pyxis_x.lock").exists(), "lock file left behind");
        NameLock::acquire(&dir, "pyxis_x", Duration::from_secs(5)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[allow(unsafe_code)] // fork/_exit to get real competing processes
    fn name_lock_serialises_processes() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        let dir = std::env::temp_dir().join(format!("pyxis-rs-lock2-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let counter = dir.join("counter");
        fs::write(&counter, "0").unwrap();
        let mut children = Vec::new();
        for _ in 0..8 {
            // SAFETY: the child only takes the lock, edits a file and _exits.
            match unsafe { fork() }.unwrap() {
                ForkResult::Child => {
                    let ok = (0..20).all(|_| {
                        let Ok(_lock) = NameLock::acquire(&dir, "pyxis_c", Duration::from_secs(60))
                        else {
                            return false;
                        };
                        let n: u32 = fs::read_to_string(&counter).unwrap().parse().unwrap();
                        std::thread::yield_now();
                        fs::write(&counter, (n + 1).to_string()).is_ok()
                    });
                    // SAFETY: leave the forked test child without unwinding.
                    unsafe { libc::_exit(i32::from(!ok)) };
                }
                ForkResult::Parent { child } => children.push(child),
            }
        }
        for child in children {
            assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        }
        // Lost updates would show as a count below 160.
        assert_eq!(fs::read_to_string(&counter).unwrap(), "160");
        assert!(!dir.join("pyxis_c.lock").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn environ_parsing_skips_junk() {
        let raw = b"A=1\0NOEQ\0B=x=y\0=bad\0\xff=1\0";
        assert_eq!(
            parse_environ(raw),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                (OsStr::from_bytes(b"\xff").to_owned(), "1".into())
            ]
        );
    }

    #[test]
    fn own_cwd_and_environ_are_readable() {
        let pid = std::process::id();
        assert_eq!(
            process_cwd(pid).unwrap(),
            std::env::current_dir().unwrap().into_os_string()
        );
        assert!(!process_environ(pid).unwrap().is_empty());
    }
}
