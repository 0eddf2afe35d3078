//! The node-local, per-user, digest-keyed image cache on disk (issue 7 item 2).
//!
//! Runs as the job user: slurmstepd in `user_init` (euid = user) pins the digests the
//! step uses; the creator task looks entries up, imports missing ones and commits
//! them; the user's doctor/prune command lists and prunes. Root (slurmstepd in
//! `task_exit`, the job epilog) only calls [`UserCache::remove_step_temps`] /
//! [`UserCache::remove_job_temps`], [`UserCache::list`] and
//! [`UserCache::free_space`]: they create nothing, and open nothing but the
//! directory and (`list`) existing regular lock files, checked before and after.
//!
//! `<image_cache_path>/<uid>/` is created and checked by root (not here); this module
//! opens it once as a directory fd (`O_DIRECTORY|O_NOFOLLOW`, then `fstat`: a
//! directory owned by the user, mode `& 0o077 == 0`) and reaches every file through
//! that fd with `*at` calls that never follow a symlink; files it opens are checked to
//! be regular files after an `O_NONBLOCK` open (a planted FIFO neither blocks nor is
//! used). The names and the eviction choice are `crate::core::cache`'s.
//!
//! Invariants:
//! - An entry `N.sqsh` only appears by `rename` of a complete, fsynced import output,
//!   done by the holder of `N.lock`; a killed or failed import leaves at most a
//!   `.N.*.tmp`, which the next holder of `N.lock` removes.
//! - Every step using an entry holds `N.use` shared ([`EntryUse`]) from before it
//!   looks the entry up until it ends; an entry is only removed by a process holding
//!   its `N.use` exclusively, so an entry in use is never evicted.
//! - Lock files exist only while someone holds them: a holder that takes one
//!   exclusively when releasing it unlinks it first (the `sys::lockfile` protocol makes
//!   that safe for waiters).
//! - Inserts, evictions and prunes hold `commit.lock`, so the size accounting of one
//!   is not raced by another.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::dir::Dir as DirStream;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, FileStat, Mode, SFlag};
use nix::sys::statvfs::fstatvfs;
use nix::sys::time::TimeSpec;
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};

use crate::core::cache::{plan_eviction, CacheFile, Candidate, Digest, StepFile, COMMIT_LOCK};
use crate::core::naming::{JobId, StepId};
use crate::sys::dirs::Dir;
use crate::sys::lockfile::{
    self, is_regular, kind_name, Attempt, HeldLock, LockFileError, LockKind,
};

/// How often a waiting step is told that it still waits.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Why a cache operation failed; every message names the path.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("couldn't open image cache directory {path}: {source}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("image cache directory {path} is not a directory owned by uid {uid} with mode 0700 (found {found}); refusing to use it")]
    Untrusted {
        path: PathBuf,
        uid: u32,
        found: String,
    },
    #[error("image cache {path}: {op} must run as uid {uid}, not as uid {euid}")]
    NotAsUser {
        path: PathBuf,
        op: &'static str,
        uid: u32,
        euid: u32,
    },
    #[error(transparent)]
    Lock(#[from] LockFileError),
    #[error("timed out after {} s waiting for another step importing {digest} into {path}", waited.as_secs())]
    ImportTimeout {
        digest: Digest,
        path: PathBuf,
        waited: Duration,
    },
    #[error("couldn't {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path} is {found}, not a regular file owned by uid {uid}; refusing to use it")]
    NotRegular {
        path: PathBuf,
        found: String,
        uid: u32,
    },
}

/// What a blocked call is waiting for, passed to its progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// Another step is importing this image (holds its import lock).
    Importer,
}

/// A progress report of a blocked call: first when it starts to wait, then every
/// [`PROGRESS_EVERY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub elapsed: Duration,
    pub what: WaitFor,
}

/// One entry, as [`UserCache::list`] and the eviction reports show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub digest: Digest,
    pub path: PathBuf,
    /// Allocated bytes (`st_blocks * 512`), what the bound counts.
    pub size: u64,
    /// The entry's mtime: its import or its last cache hit.
    pub last_used: SystemTime,
    /// True when a step holds its use lock (or it could not be probed).
    pub in_use: bool,
}

/// The result of [`ImportSlot::commit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// The image is in the cache at `path`.
    Cached {
        path: PathBuf,
        size: u64,
        /// Entries removed to make room, least recently used first.
        evicted: Vec<EntryInfo>,
        /// The cache's size now, this entry included.
        total: u64,
        /// True when `total` is still above the bound because every other entry is in
        /// use (the caller should log it).
        over_bound: bool,
    },
    /// The image alone is larger than the bound: it is not cached. `path` (a hidden
    /// per-step file) serves this step only; remove it at step end with
    /// [`UserCache::remove_step_temps`] once nothing of the step uses it any more.
    StepOnly { path: PathBuf, size: u64 },
}

impl Committed {
    /// The squashfs the step starts from.
    pub fn path(&self) -> &Path {
        match self {
            Committed::Cached { path, .. } | Committed::StepOnly { path, .. } => path,
        }
    }
}

/// The result of [`UserCache::begin_import`].
#[derive(Debug)]
pub enum Import {
    /// The entry exists (another step finished importing it while this one waited).
    Hit(PathBuf),
    /// This process imports: run the import into [`ImportSlot::temp_path`], then
    /// commit or abort.
    Slot(ImportSlot),
}

/// The result of [`UserCache::prune`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries removed, least recently used first.
    pub evicted: Vec<EntryInfo>,
    /// The entries' total size afterwards.
    pub total: u64,
    /// Leftovers of killed imports and unheld lock files that were removed.
    pub stale_removed: Vec<String>,
    /// Per-step files of images too large for the cache; they belong to running or
    /// killed steps and are removed by [`UserCache::remove_step_temps`] or
    /// [`UserCache::remove_job_temps`], not here.
    pub step_files: Vec<String>,
}

/// The result of [`UserCache::remove_step_temps`] and [`UserCache::remove_job_temps`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub removed: Vec<String>,
    /// Matching names that could not be unlinked (e.g. a directory planted there).
    pub failed: Vec<(String, Errno)>,
}

/// The file system holding the cache, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeSpace {
    /// Free for the user (`f_bavail * f_frsize`).
    pub available: u64,
    /// The file system's size.
    pub size: u64,
}

/// One user's cache directory, opened and verified.
#[derive(Debug)]
pub struct UserCache {
    dir: OwnedFd,
    path: PathBuf,
    uid: u32,
}

/// A step's use of one digest: the shared `N.use` lock. While it is held the entry
/// (when it exists or appears) is never evicted. Dropping it releases the lock and,
/// when no other step holds it, removes the lock file. Hold it in the process that
/// took it (slurmstepd) until the step's last use of the entry; a forked copy may be
/// dropped or exec'd freely (the fd is `O_CLOEXEC`; only the owner acts on drop).
#[derive(Debug)]
pub struct EntryUse {
    dir: OwnedFd,
    digest: Digest,
    lock: Option<HeldLock>,
}

/// This process's right to import one digest: the exclusive `N.lock`. Dropping it
/// without [`ImportSlot::commit`] (or with [`ImportSlot::abort`]) unlinks the import's
/// output and removes the lock.
#[derive(Debug)]
pub struct ImportSlot {
    dir: OwnedFd,
    dir_path: PathBuf,
    uid: u32,
    temp: StepFile,
    lock: Option<HeldLock>,
    /// Set once the output was renamed away from the temporary name.
    moved: bool,
    owner: u32,
}

/// Entries found by a scan, each with its use lock when the scan holds it.
pub(super) type Scanned = Vec<(Candidate<Digest>, Option<HeldLock>)>;

/// What [`UserCache::make_room`] did.
pub(super) struct Room {
    keep_new: bool,
    evicted: Vec<EntryInfo>,
    total: u64,
    /// Use locks still held exclusively (entries not evicted).
    held: Vec<(Digest, HeldLock)>,
}

mod files;
mod import;
mod store;

use files::*;

impl UserCache {
    /// Opens `<root>/<uid>` and checks it: a directory (not a symlink), owned by `uid`,
    /// closed to group and others. Any user may open it this way; the operations that
    /// create files additionally require euid == `uid`.
    pub fn open(root: &Path, uid: u32) -> Result<UserCache, CacheError> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| CacheError::OpenDir {
            path: root.to_owned(),
            source,
        })?;
        let name = uid.to_string();
        let path = root.join(&name);
        let untrusted = |found: String| CacheError::Untrusted {
            path: path.clone(),
            uid,
            found,
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir = match openat(&root_fd, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let found = fstatat(&root_fd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_or("something that changed", |st| kind_name(st.st_mode));
                return Err(untrusted(found.to_owned()));
            }
            Err(source) => return Err(CacheError::OpenDir { path, source }),
        };
        UserCache::checked(dir, path, uid)
    }

    /// The same cache from a directory root already opened and checked on a trusted
    /// path (`Dir::open_trusted(image_cache_path)?.existing_user_subdir(uid)?`), which
    /// is what root should use: its fd is duplicated and checked again here.
    pub fn from_dir(dir: &Dir, uid: u32) -> Result<UserCache, CacheError> {
        let fd = dir.fd().try_clone_to_owned().map_err(|e| CacheError::Io {
            op: "duplicate the descriptor of",
            path: dir.path().to_owned(),
            source: e
                .raw_os_error()
                .map_or(Errno::UnknownErrno, Errno::from_raw),
        })?;
        UserCache::checked(fd, dir.path().to_owned(), uid)
    }

    /// Accepts an open directory only if it is owned by `uid` and closed to others.
    fn checked(dir: OwnedFd, path: PathBuf, uid: u32) -> Result<UserCache, CacheError> {
        let st = fstat(&dir).map_err(io("stat", path.clone()))?;
        if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits()
            || st.st_uid != uid
            || st.st_mode & 0o077 != 0
        {
            return Err(CacheError::Untrusted {
                found: format!(
                    "{} owned by uid {} with mode {:04o}",
                    kind_name(st.st_mode),
                    st.st_uid,
                    st.st_mode & 0o7777
                ),
                path,
                uid,
            });
        }
        Ok(UserCache { dir, path, uid })
    }

    /// `<root>/<uid>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    fn require_user(&self, op: &'static str) -> Result<(), CacheError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid == self.uid {
            Ok(())
        } else {
            Err(CacheError::NotAsUser {
                path: self.path.clone(),
                op,
                uid: self.uid,
                euid,
            })
        }
    }

    fn dup_dir(&self) -> Result<OwnedFd, CacheError> {
        dup_dir(&self.dir, &self.path)
    }

    /// Declares that this step uses `digest`: takes `N.use` shared, waiting until
    /// `deadline` if an eviction or prune holds it for a moment. Call it before
    /// [`UserCache::lookup`] and keep it until the step no longer uses the entry.
    pub fn pin(&self, digest: &Digest, deadline: Instant) -> Result<EntryUse, CacheError> {
        self.require_user("pin")?;
        let name = CacheFile::UseLock(digest.clone()).name();
        let lock = lockfile::lock(
            self.fd(),
            &self.path,
            &name,
            LockKind::Shared,
            deadline,
            PROGRESS_EVERY,
            &mut |_| {},
        )?;
        Ok(EntryUse {
            dir: self.dup_dir()?,
            digest: digest.clone(),
            lock: Some(lock),
        })
    }

    /// The entry of the pinned digest, if the cache has it (a regular file of the user;
    /// anything else planted at its name counts as missing). A hit refreshes the
    /// entry's mtime, which orders evictions.
    pub fn lookup(&self, pin: &EntryUse) -> Result<Option<PathBuf>, CacheError> {
        self.require_user("lookup")?;
        self.lookup_digest(&pin.digest)
    }

    fn lookup_digest(&self, digest: &Digest) -> Result<Option<PathBuf>, CacheError> {
        let name = CacheFile::Entry(digest.clone()).name();
        let path = self.path.join(&name);
        let Some((fd, _)) =
            open_regular(self.fd(), &name, self.uid).map_err(io("open", path.clone()))?
        else {
            return Ok(None);
        };
        // Best effort: a failed refresh only makes the entry look older.
        let _ = futimens(&fd, &TimeSpec::UTIME_OMIT, &TimeSpec::UTIME_NOW);
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests;
