//! Lock files in a directory reached by fd: `flock(2)` plus the re-check that makes
//! removing a lock file safe.
//!
//! Used as the job user by slurmstepd and the creator task (the named-container lock
//! of `sys::fs`, the import, use and commit locks of `sys::cache`), and by the image
//! cache's read-only listing, which may run as root. The protocol:
//!
//! 1. open the name through the directory fd with `O_NOFOLLOW|O_NONBLOCK` (created
//!    0600 when asked), and refuse anything but a regular file;
//! 2. `flock` it with `LOCK_NB`;
//! 3. check that the name still refers to the inode just locked.
//!
//! A holder that no longer needs the file unlinks it *while still holding the lock*
//! and then closes it. A process that was waiting on that inode gets the lock after
//! the close, fails the re-check and starts over on the current file, so two
//! processes never both believe they hold the same lock. Blocking waits poll with
//! `LOCK_NB` in short sleeps up to a deadline: no threads, no signals (slurmstepd is
//! multithreaded and owns its signal handlers).
//!
//! `flock` is called directly rather than through `nix::fcntl::Flock`, whose `Drop`
//! runs `LOCK_UN`: flock locks belong to the open file description, so a forked child
//! dropping its copy would release the parent's lock. Here a lock ends when the last fd
//! of its description is closed, and only the process that took it unlinks the file.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// How long a waiter sleeps between two attempts.
pub const POLL_SLICE: Duration = Duration::from_millis(20);

/// Attempts of one [`try_lock`] when the re-check keeps failing (the file is being
/// removed and recreated under us); after that the lock counts as busy.
const RECHECK_ATTEMPTS: usize = 16;

/// Shared (`LOCK_SH`) or exclusive (`LOCK_EX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// Why a lock file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockFileError {
    #[error("couldn't open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("lock file {path} is {found}, not a regular file; refusing to use it")]
    NotRegular { path: PathBuf, found: &'static str },
    #[error("couldn't lock {path}: {source}")]
    Flock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("timed out after {} s waiting for lock {path}", waited.as_secs())]
    Timeout { path: PathBuf, waited: Duration },
}

/// A lock held on an open lock file. Closing the fd (drop) releases it.
#[derive(Debug)]
pub struct HeldLock {
    file: OwnedFd,
    /// The process that took the lock: only it unlinks the file.
    owner: u32,
}

/// The result of one non-blocking attempt.
#[derive(Debug)]
pub enum Attempt {
    Locked(HeldLock),
    /// Someone holds a conflicting lock.
    Busy,
    /// The file does not exist (only when not asked to create it).
    Missing,
}

/// What a file type is called in errors.
pub fn kind_name(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "of unknown type",
    }
}

/// True when `st` is a regular file.
pub fn is_regular(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

/// True when the two stats are of the same inode.
pub fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// `flock(fd, op | LOCK_NB)`: `Ok(false)` when a conflicting lock is held.
fn flock_nb(fd: BorrowedFd<'_>, kind: LockKind) -> Result<bool, Errno> {
    let op = match kind {
        LockKind::Shared => libc::LOCK_SH,
        LockKind::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    loop {
        // SAFETY: flock(2) only reads its two integer arguments; `fd` is a valid open fd
        // borrowed for the duration of the call.
        let rc = unsafe { libc::flock(fd.as_raw_fd(), op) };
        match Errno::result(rc) {
            Ok(_) => return Ok(true),
            Err(Errno::EWOULDBLOCK) => return Ok(false),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One attempt to lock `<dir>/<name>` without waiting. `dir_path` only names the
/// file in errors.
pub fn try_lock(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    kind: LockKind,
    create: bool,
) -> Result<Attempt, LockFileError> {
    let path = || dir_path.join(name);
    let mut flags = OFlag::O_RDONLY
        | OFlag::O_CLOEXEC
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY;
    if create {
        flags |= OFlag::O_CREAT;
    }
    for _ in 0..RECHECK_ATTEMPTS {
        // Look before opening, so that nothing but a regular file is ever opened here
        // (root lists caches too); the fstat after the open covers a swap in between.
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if !is_regular(&st) => {
                return Err(LockFileError::NotRegular {
                    path: path(),
                    found: kind_name(st.st_mode),
                })
            }
            Ok(_) => {}
            Err(Errno::ENOENT) if !create => return Ok(Attempt::Missing),
            Err(Errno::ENOENT) => {}
            Err(source) => {
                return Err(LockFileError::Open {
                    path: path(),
                    source,
                })
            }
        }
        let file = match openat(dir, name, flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(Attempt::Missing),
            Err(source) => {
                return Err(LockFileError::Open {
                    path: path(),
                    source,
                })
            }
        };
        let ours = fstat(&file).map_err(|source| LockFileError::Open {
            path: path(),
            source,
        })?;
        if !is_regular(&ours) {
            return Err(LockFileError::NotRegular {
                path: path(),
                found: kind_name(ours.st_mode),
            });
        }
        if !flock_nb(file.as_fd(), kind).map_err(|source| LockFileError::Flock {
            path: path(),
            source,
        })? {
            return Ok(Attempt::Busy);
        }
        // The previous holder may have unlinked the file before closing it: a lock on
        // an unlinked (or replaced) inode is worthless, take the current file again.
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(now) if same_inode(&now, &ours) => {
                return Ok(Attempt::Locked(HeldLock {
                    file,
                    owner: std::process::id(),
                }))
            }
            Err(Errno::ENOENT) if !create => return Ok(Attempt::Missing),
            _ => continue,
        }
    }
    Ok(Attempt::Busy)
}

/// Locks `<dir>/<name>` (created 0600 if missing), waiting until `deadline`.
/// `on_wait(elapsed)` is called when the lock is first found busy and then every
/// `every` while the wait lasts, so the caller can tell the user what it waits for.
pub fn lock(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    kind: LockKind,
    deadline: Instant,
    every: Duration,
    on_wait: &mut dyn FnMut(Duration),
) -> Result<HeldLock, LockFileError> {
    let started = Instant::now();
    let mut next_report = started;
    loop {
        if let Attempt::Locked(held) = try_lock(dir, dir_path, name, kind, true)? {
            return Ok(held);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(LockFileError::Timeout {
                path: dir_path.join(name),
                waited: now.saturating_duration_since(started),
            });
        }
        if now >= next_report {
            on_wait(now.saturating_duration_since(started));
            next_report = now.checked_add(every).unwrap_or(deadline);
        }
        std::thread::sleep(POLL_SLICE.min(deadline.saturating_duration_since(now)));
    }
}

impl HeldLock {
    /// Converts the lock to exclusive without waiting. flock(2) conversions are not
    /// atomic: when another process holds a conflicting lock the conversion fails and
    /// our lock is gone, so this consumes the lock and is meant for releasing it.
    /// In a forked copy of the holder it does nothing (the conversion would act on the
    /// holder's lock too) and returns `None`.
    pub fn try_exclusive(self) -> Option<HeldLock> {
        if self.owner != std::process::id() {
            return None;
        }
        match flock_nb(self.file.as_fd(), LockKind::Exclusive) {
            Ok(true) => Some(self),
            _ => None,
        }
    }

    /// Releases the lock, first unlinking `<dir>/<name>` if it still is the locked
    /// file. Call it only with an exclusive lock. A forked copy of the holder (which
    /// shares the lock) only closes its fd.
    pub fn remove(self, dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
        if self.owner != std::process::id() {
            return Ok(());
        }
        let ours = fstat(&self.file)?;
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(now) if same_inode(&now, &ours) => {
                match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Ok(_) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::open;

    fn tempdir(tag: &str) -> (PathBuf, OwnedFd) {
        let path =
            std::env::temp_dir().join(format!("pyxis-rs-lockfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        let fd = open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        (path, fd)
    }

    fn attempt(dir: &OwnedFd, path: &Path, kind: LockKind, create: bool) -> Attempt {
        try_lock(dir.as_fd(), path, "l", kind, create).unwrap()
    }

    #[test]
    fn shared_and_exclusive_conflict_across_open_files() {
        let (path, dir) = tempdir("modes");
        assert!(matches!(
            attempt(&dir, &path, LockKind::Shared, false),
            Attempt::Missing
        ));
        let Attempt::Locked(a) = attempt(&dir, &path, LockKind::Shared, true) else {
            panic!()
        };
        let Attempt::Locked(b) = attempt(&dir, &path, LockKind::Shared, false) else {
            panic!()
        };
        assert!(matches!(
            attempt(&dir, &path, LockKind::Exclusive, false),
            Attempt::Busy
        ));
        // b cannot become exclusive while a holds it, and has lost its lock trying.
        assert!(b.try_exclusive().is_none());
        let a = a.try_exclusive().expect("sole holder converts");
        assert!(matches!(
            attempt(&dir, &path, LockKind::Shared, false),
            Attempt::Busy
        ));
        let st = std::fs::metadata(path.join("l")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&st.permissions()) & 0o777,
            0o600
        );
        a.remove(dir.as_fd(), "l").unwrap();
        assert!(!path.join("l").exists());
        assert!(matches!(
            attempt(&dir, &path, LockKind::Exclusive, false),
            Attempt::Missing
        ));
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn waiting_reports_progress_and_times_out() {
        let (path, dir) = tempdir("wait");
        let Attempt::Locked(_held) = attempt(&dir, &path, LockKind::Exclusive, true) else {
            panic!()
        };
        let mut calls = Vec::new();
        let started = Instant::now();
        let err = lock(
            dir.as_fd(),
            &path,
            "l",
            LockKind::Shared,
            started + Duration::from_millis(450),
            Duration::from_millis(100),
            &mut |elapsed| calls.push(elapsed),
        )
        .unwrap_err();
        assert!(matches!(err, LockFileError::Timeout { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(450));
        // The first report comes at once, then one per interval.
        assert!(
            calls.first().unwrap() < &Duration::from_millis(50),
            "{calls:?}"
        );
        assert!((2..=6).contains(&calls.len()), "{calls:?}");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn hostile_files_are_refused_not_followed() {
        let (path, dir) = tempdir("hostile");
        let target = path.join("target");
        std::fs::write(&target, "keep").unwrap();
        type Plant<'a> = &'a dyn Fn(&Path);
        let cases: [(&str, Plant); 4] = [
            ("symlink", &|p| {
                std::os::unix::fs::symlink(&target, p).unwrap()
            }),
            ("dangling symlink", &|p| {
                std::os::unix::fs::symlink(path.join("nowhere"), p).unwrap()
            }),
            ("fifo", &|p| {
                nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o600)).unwrap()
            }),
            ("directory", &|p| std::fs::create_dir(p).unwrap()),
        ];
        for (what, plant) in cases {
            let l = path.join("l");
            plant(&l);
            for create in [true, false] {
                let r = try_lock(dir.as_fd(), &path, "l", LockKind::Exclusive, create);
                assert!(r.is_err(), "{what} create={create}: {r:?}");
            }
            let r = lock(
                dir.as_fd(),
                &path,
                "l",
                LockKind::Shared,
                Instant::now(),
                POLL_SLICE,
                &mut |_| {},
            );
            assert!(
                matches!(
                    r,
                    Err(LockFileError::Open { .. } | LockFileError::NotRegular { .. })
                ),
                "{what}: {r:?}"
            );
            if what == "directory" {
                std::fs::remove_dir(&l).unwrap();
            } else {
                std::fs::remove_file(&l).unwrap();
            }
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(!path.join("nowhere").exists());
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn remove_leaves_a_replaced_file_alone() {
        let (path, dir) = tempdir("replaced");
        let Attempt::Locked(held) = attempt(&dir, &path, LockKind::Exclusive, true) else {
            panic!()
        };
        std::fs::remove_file(path.join("l")).unwrap();
        std::fs::write(path.join("l"), "other").unwrap();
        held.remove(dir.as_fd(), "l").unwrap();
        assert_eq!(std::fs::read_to_string(path.join("l")).unwrap(), "other");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    #[allow(unsafe_code)] // fork/_exit to get a real second process
    fn a_forked_copy_neither_releases_nor_removes() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        let (path, dir) = tempdir("fork");
        let Attempt::Locked(held) = attempt(&dir, &path, LockKind::Exclusive, true) else {
            panic!()
        };
        // SAFETY: the child only drops its copy of the lock and _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let ok = held.remove(dir.as_fd(), "l").is_ok();
                // SAFETY: leave the forked test child without unwinding.
                unsafe { libc::_exit(i32::from(!ok)) };
            }
            ForkResult::Parent { child } => {
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
            }
        }
        assert!(path.join("l").exists());
        assert!(matches!(
            attempt(&dir, &path, LockKind::Shared, false),
            Attempt::Busy
        ));
        held.remove(dir.as_fd(), "l").unwrap();
        assert!(!path.join("l").exists());
        std::fs::remove_dir_all(&path).unwrap();
    }
}
