//! The file-level helpers of the image cache: names of a directory fd, strict opens
//! that never follow or block, sizes and times.

use super::*;

pub(super) fn io(op: &'static str, path: PathBuf) -> impl FnOnce(Errno) -> CacheError {
    move |source| CacheError::Io { op, path, source }
}

pub(super) fn file_size(st: &FileStat) -> u64 {
    u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512)
}

pub(super) fn mtime_ns(st: &FileStat) -> i128 {
    i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec)
}

pub(super) fn system_time(ns: i128) -> SystemTime {
    let abs = Duration::from_nanos(u64::try_from(ns.unsigned_abs()).unwrap_or(u64::MAX));
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + abs
    } else {
        SystemTime::UNIX_EPOCH - abs
    }
}

/// The names in the directory behind `dir`, `.` and `..` left out. Names are bytes:
/// nothing here assumes a user made them well-formed.
pub(super) fn dir_names(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<Vec<u8>>, CacheError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let mut d =
        DirStream::openat(dir, ".", flags, Mode::empty()).map_err(io("read", path.to_owned()))?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(io("read", path.to_owned()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// The cache files in the directory, by kind; every other name is ignored.
pub(super) fn dir_files(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<CacheFile>, CacheError> {
    Ok(dir_names(dir, path)?
        .iter()
        .filter_map(|n| CacheFile::parse(n))
        .collect())
}

/// `unlinkat` of one name (never a directory); a name already gone is fine.
pub(super) fn unlink(dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `name` read-only without following it or blocking on it, and returns it when
/// it is a regular file owned by `uid`; anything else (missing, a symlink, a FIFO, a
/// directory, unreadable, someone else's) is `None`.
pub(super) fn open_regular(
    dir: BorrowedFd<'_>,
    name: &str,
    uid: u32,
) -> Result<Option<(OwnedFd, FileStat)>, Errno> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_CLOEXEC
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ELOOP | Errno::EACCES | Errno::ENXIO | Errno::EISDIR) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let st = fstat(&fd)?;
    Ok((is_regular(&st) && st.st_uid == uid).then_some((fd, st)))
}

/// A second descriptor of the cache directory (`F_DUPFD_CLOEXEC`), for a guard that
/// outlives the borrow of its [`UserCache`].
pub(super) fn dup_dir(dir: &OwnedFd, path: &Path) -> Result<OwnedFd, CacheError> {
    dir.try_clone().map_err(|e| CacheError::Io {
        op: "duplicate the descriptor of",
        path: path.to_owned(),
        source: e
            .raw_os_error()
            .map_or(Errno::UnknownErrno, Errno::from_raw),
    })
}

/// Releases exclusively held use locks, removing their files (nobody else holds them).
pub(super) fn release_use_locks(dir: BorrowedFd<'_>, locks: Vec<(Digest, HeldLock)>) {
    for (digest, lock) in locks {
        let _ = lock.remove(dir, &CacheFile::UseLock(digest).name());
    }
}
