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
type Scanned = Vec<(Candidate<Digest>, Option<HeldLock>)>;

/// What [`UserCache::make_room`] did.
struct Room {
    keep_new: bool,
    evicted: Vec<EntryInfo>,
    total: u64,
    /// Use locks still held exclusively (entries not evicted).
    held: Vec<(Digest, HeldLock)>,
}

fn io(op: &'static str, path: PathBuf) -> impl FnOnce(Errno) -> CacheError {
    move |source| CacheError::Io { op, path, source }
}

fn file_size(st: &FileStat) -> u64 {
    u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512)
}

fn mtime_ns(st: &FileStat) -> i128 {
    i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec)
}

fn system_time(ns: i128) -> SystemTime {
    let abs = Duration::from_nanos(u64::try_from(ns.unsigned_abs()).unwrap_or(u64::MAX));
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + abs
    } else {
        SystemTime::UNIX_EPOCH - abs
    }
}

/// The names in the directory behind `dir`, `.` and `..` left out. Names are bytes:
/// nothing here assumes a user made them well-formed.
fn dir_names(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<Vec<u8>>, CacheError> {
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
fn dir_files(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<CacheFile>, CacheError> {
    Ok(dir_names(dir, path)?
        .iter()
        .filter_map(|n| CacheFile::parse(n))
        .collect())
}

/// `unlinkat` of one name (never a directory); a name already gone is fine.
fn unlink(dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `name` read-only without following it or blocking on it, and returns it when
/// it is a regular file owned by `uid`; anything else (missing, a symlink, a FIFO, a
/// directory, unreadable, someone else's) is `None`.
fn open_regular(
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
fn dup_dir(dir: &OwnedFd, path: &Path) -> Result<OwnedFd, CacheError> {
    dir.try_clone().map_err(|e| CacheError::Io {
        op: "duplicate the descriptor of",
        path: path.to_owned(),
        source: e
            .raw_os_error()
            .map_or(Errno::UnknownErrno, Errno::from_raw),
    })
}

/// Releases exclusively held use locks, removing their files (nobody else holds them).
fn release_use_locks(dir: BorrowedFd<'_>, locks: Vec<(Digest, HeldLock)>) {
    for (digest, lock) in locks {
        let _ = lock.remove(dir, &CacheFile::UseLock(digest).name());
    }
}

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

    /// Starts importing the pinned digest: takes `N.lock` exclusively, waiting until
    /// `deadline` for another step importing it (`progress` hears about the wait at
    /// once, then every [`PROGRESS_EVERY`]). Returns [`Import::Hit`] when the entry
    /// exists by then, otherwise a slot whose stale temporaries (of killed imports) are
    /// already removed.
    pub fn begin_import(
        &self,
        pin: &EntryUse,
        job: JobId,
        step: StepId,
        deadline: Instant,
        progress: &mut dyn FnMut(Waiting),
    ) -> Result<Import, CacheError> {
        self.begin_import_every(pin, job, step, deadline, PROGRESS_EVERY, progress)
    }

    fn begin_import_every(
        &self,
        pin: &EntryUse,
        job: JobId,
        step: StepId,
        deadline: Instant,
        every: Duration,
        progress: &mut dyn FnMut(Waiting),
    ) -> Result<Import, CacheError> {
        self.require_user("import")?;
        let digest = &pin.digest;
        let lock_name = CacheFile::ImportLock(digest.clone()).name();
        let lock = lockfile::lock(
            self.fd(),
            &self.path,
            &lock_name,
            LockKind::Exclusive,
            deadline,
            every,
            &mut |elapsed| {
                progress(Waiting {
                    elapsed,
                    what: WaitFor::Importer,
                })
            },
        )
        .map_err(|e| match e {
            LockFileError::Timeout { waited, .. } => CacheError::ImportTimeout {
                digest: digest.clone(),
                path: self.path.clone(),
                waited,
            },
            other => CacheError::Lock(other),
        })?;
        // From here on, dropping `slot` releases the lock (and removes its file).
        let slot = ImportSlot {
            dir: self.dup_dir()?,
            dir_path: self.path.clone(),
            uid: self.uid,
            temp: StepFile {
                digest: digest.clone(),
                job,
                step,
                pid: std::process::id(),
            },
            lock: Some(lock),
            moved: false,
            owner: std::process::id(),
        };
        if let Some(path) = self.lookup_digest(digest)? {
            return Ok(Import::Hit(path));
        }
        // Only a holder of N.lock writes .N.*.tmp: any found now is a killed import's.
        self.remove_temps_of(digest)?;
        Ok(Import::Slot(slot))
    }

    /// Unlinks every `.N.*.tmp` of `digest`; call with its import lock held.
    fn remove_temps_of(&self, digest: &Digest) -> Result<Vec<String>, CacheError> {
        let mut removed = Vec::new();
        for file in dir_files(self.fd(), &self.path)? {
            if matches!(&file, CacheFile::Temp(t) if t.digest == *digest) {
                let name = file.name();
                // A directory planted there is left alone (EISDIR); nothing is followed.
                if unlink(self.fd(), &name).is_ok() {
                    removed.push(name);
                }
            }
        }
        Ok(removed)
    }

    /// The entries with their sizes and last use, least recently used first. `in_use`
    /// is probed with a non-blocking exclusive attempt on `N.use`, released at once.
    /// Safe as root: it only opens lock files, without following or blocking.
    pub fn list(&self) -> Result<Vec<EntryInfo>, CacheError> {
        let mut out = Vec::new();
        for (candidate, lock) in self.scan(None, false)? {
            drop(lock);
            out.push(self.info(&candidate));
        }
        out.sort_by(|a, b| (a.last_used, &a.digest).cmp(&(b.last_used, &b.digest)));
        Ok(out)
    }

    fn info(&self, c: &Candidate<Digest>) -> EntryInfo {
        EntryInfo {
            digest: c.key.clone(),
            path: self.path.join(CacheFile::Entry(c.key.clone()).name()),
            size: c.size,
            last_used: system_time(c.last_used),
            in_use: c.in_use,
        }
    }

    /// Every entry (a regular file of the user at an entry name) except `exclude`,
    /// with its use lock probed. With `hold`, an unused entry's `N.use` is created if
    /// needed and stays locked exclusively (returned), so it cannot be pinned until
    /// released; without, the probe creates nothing and releases at once.
    fn scan(&self, exclude: Option<&Digest>, hold: bool) -> Result<Scanned, CacheError> {
        let mut out = Vec::new();
        for file in dir_files(self.fd(), &self.path)? {
            let CacheFile::Entry(digest) = file else {
                continue;
            };
            if exclude == Some(&digest) {
                continue;
            }
            let name = CacheFile::Entry(digest.clone()).name();
            let st = match fstatat(self.fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_regular(&st) && st.st_uid == self.uid => st,
                Ok(_) | Err(Errno::ENOENT) => continue,
                Err(e) => return Err(io("stat", self.path.join(&name))(e)),
            };
            let use_name = CacheFile::UseLock(digest.clone()).name();
            // A use lock that cannot be probed (something planted there) counts as in
            // use: never remove what might be in use.
            let (in_use, lock) = match lockfile::try_lock(
                self.fd(),
                &self.path,
                &use_name,
                LockKind::Exclusive,
                hold,
            ) {
                Ok(Attempt::Locked(lock)) => (false, hold.then_some(lock)),
                Ok(Attempt::Missing) => (false, None),
                Ok(Attempt::Busy) | Err(_) => (true, None),
            };
            out.push((
                Candidate {
                    key: digest,
                    size: file_size(&st),
                    last_used: mtime_ns(&st),
                    in_use,
                },
                lock,
            ));
        }
        Ok(out)
    }

    /// Removes one entry whose use lock we hold exclusively, with its leftovers: an
    /// unheld import lock and the temporaries of killed imports.
    fn evict(&self, digest: &Digest, use_lock: HeldLock) -> Result<(), CacheError> {
        let name = CacheFile::Entry(digest.clone()).name();
        let result = unlink(self.fd(), &name).map_err(io("remove", self.path.join(&name)));
        let lock_name = CacheFile::ImportLock(digest.clone()).name();
        if let Ok(Attempt::Locked(lock)) = lockfile::try_lock(
            self.fd(),
            &self.path,
            &lock_name,
            LockKind::Exclusive,
            false,
        ) {
            let _ = self.remove_temps_of(digest);
            let _ = lock.remove(self.fd(), &lock_name);
        }
        let _ = use_lock.remove(self.fd(), &CacheFile::UseLock(digest.clone()).name());
        result
    }

    /// Takes `commit.lock` (kept in place between uses).
    fn commit_lock(&self, deadline: Instant) -> Result<HeldLock, CacheError> {
        Ok(lockfile::lock(
            self.fd(),
            &self.path,
            COMMIT_LOCK,
            LockKind::Exclusive,
            deadline,
            PROGRESS_EVERY,
            &mut |_| {},
        )?)
    }

    /// Evicts the unused entries chosen by `plan_eviction` for `incoming` bytes under
    /// `bound`.
    fn make_room(&self, scan: Scanned, incoming: u64, bound: u64) -> Room {
        let candidates: Vec<Candidate<Digest>> = scan.iter().map(|(c, _)| c.clone()).collect();
        let plan = plan_eviction(&candidates, incoming, bound);
        let mut held: Vec<(Digest, HeldLock)> = Vec::new();
        let mut infos = Vec::new();
        for (candidate, lock) in scan {
            if let Some(lock) = lock {
                held.push((candidate.key.clone(), lock));
            }
            infos.push(candidate);
        }
        if !plan.keep_new {
            return Room {
                keep_new: false,
                evicted: Vec::new(),
                total: plan.total,
                held,
            };
        }
        let mut total = plan.total;
        let mut evicted = Vec::new();
        for digest in &plan.evict {
            let Some(candidate) = infos.iter().find(|c| c.key == *digest) else {
                continue;
            };
            // Only an entry whose use lock the scan holds can go (always the case for
            // the unused ones it returns when holding).
            let Some(pos) = held.iter().position(|(d, _)| d == digest) else {
                total = total.saturating_add(candidate.size);
                continue;
            };
            let (_, lock) = held.swap_remove(pos);
            match self.evict(digest, lock) {
                Ok(()) => evicted.push(self.info(candidate)),
                // Still there: it still counts.
                Err(_) => total = total.saturating_add(candidate.size),
            }
        }
        Room {
            keep_new: true,
            evicted,
            total,
            held,
        }
    }

    /// Shrinks the cache to at most `target` bytes by evicting unused entries, least
    /// recently used first (`0`: every unused entry), and removes the leftovers of
    /// killed imports and lock files nobody holds. Never waits for a lock other than
    /// `commit.lock` (until `deadline`); entries in use stay.
    pub fn prune(&self, target: u64, deadline: Instant) -> Result<Pruned, CacheError> {
        self.require_user("prune")?;
        let _commit = self.commit_lock(deadline)?;
        let scan = self.scan(None, true)?;
        let room = self.make_room(scan, 0, target);
        release_use_locks(self.fd(), room.held);
        let mut pruned = Pruned {
            evicted: room.evicted,
            total: room.total,
            ..Pruned::default()
        };
        let files = dir_files(self.fd(), &self.path)?;
        let mut digests: Vec<Digest> = Vec::new();
        for file in &files {
            match file {
                CacheFile::Temp(t) => digests.push(t.digest.clone()),
                CacheFile::ImportLock(d) | CacheFile::UseLock(d) => digests.push(d.clone()),
                CacheFile::StepOnly(_) => pruned.step_files.push(file.name()),
                CacheFile::Entry(_) | CacheFile::CommitLock => {}
            }
        }
        digests.sort();
        digests.dedup();
        for digest in digests {
            let has_temps = files
                .iter()
                .any(|f| matches!(f, CacheFile::Temp(t) if t.digest == digest));
            let lock_name = CacheFile::ImportLock(digest.clone()).name();
            if let Ok(Attempt::Locked(lock)) = lockfile::try_lock(
                self.fd(),
                &self.path,
                &lock_name,
                LockKind::Exclusive,
                has_temps,
            ) {
                pruned.stale_removed.extend(self.remove_temps_of(&digest)?);
                let existed = files.contains(&CacheFile::ImportLock(digest.clone()));
                if lock.remove(self.fd(), &lock_name).is_ok() && existed {
                    pruned.stale_removed.push(lock_name);
                }
            }
            let use_name = CacheFile::UseLock(digest.clone()).name();
            if let Ok(Attempt::Locked(lock)) =
                lockfile::try_lock(self.fd(), &self.path, &use_name, LockKind::Exclusive, false)
            {
                if lock.remove(self.fd(), &use_name).is_ok() {
                    pruned.stale_removed.push(use_name);
                }
            }
        }
        Ok(pruned)
    }

    /// Unlinks the temporaries and per-step files of one step (after its creator task
    /// was killed mid-import, or at step end for a [`Committed::StepOnly`] image). Safe
    /// as root: only names that parse strictly as this step's files are unlinked
    /// through the verified directory fd; nothing is opened or followed, a directory
    /// planted at such a name is left (reported in `failed`).
    pub fn remove_step_temps(&self, job: JobId, step: StepId) -> Result<Removed, CacheError> {
        self.remove_temps(|f| f.job == job && f.step == step)
    }

    /// Like [`UserCache::remove_step_temps`] for every step of `job` (the job's end).
    pub fn remove_job_temps(&self, job: JobId) -> Result<Removed, CacheError> {
        self.remove_temps(|f| f.job == job)
    }

    fn remove_temps(&self, matches: impl Fn(&StepFile) -> bool) -> Result<Removed, CacheError> {
        let mut out = Removed::default();
        for file in dir_files(self.fd(), &self.path)? {
            let (CacheFile::Temp(f) | CacheFile::StepOnly(f)) = &file else {
                continue;
            };
            if !matches(f) {
                continue;
            }
            let name = file.name();
            match unlink(self.fd(), &name) {
                Ok(()) => out.removed.push(name),
                Err(e) => out.failed.push((name, e)),
            }
        }
        Ok(out)
    }

    /// Free and total space of the file system holding the cache, for messages such as
    /// "no space left in <path> (image_cache_size=...)".
    pub fn free_space(&self) -> Result<FreeSpace, CacheError> {
        let st = fstatvfs(self.fd()).map_err(io("statvfs", self.path.clone()))?;
        let frag = st.fragment_size();
        Ok(FreeSpace {
            available: st.blocks_available().saturating_mul(frag),
            size: st.blocks().saturating_mul(frag),
        })
    }
}

impl EntryUse {
    /// The pinned digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl Drop for EntryUse {
    fn drop(&mut self) {
        // The last user takes the lock exclusively and removes the file; when another
        // step still holds it the conversion fails and only our lock goes.
        if let Some(lock) = self.lock.take().and_then(HeldLock::try_exclusive) {
            let _ = lock.remove(
                self.dir.as_fd(),
                &CacheFile::UseLock(self.digest.clone()).name(),
            );
        }
    }
}

impl ImportSlot {
    /// The digest being imported.
    pub fn digest(&self) -> &Digest {
        &self.temp.digest
    }

    /// Where the import writes its squashfs (`enroot import --output`). The file does
    /// not exist yet (enroot refuses to overwrite).
    pub fn temp_path(&self) -> PathBuf {
        self.dir_path.join(self.temp_name())
    }

    fn temp_name(&self) -> String {
        CacheFile::Temp(self.temp.clone()).name()
    }

    /// Gives up: unlinks the output and releases the import lock (same as dropping).
    pub fn abort(self) {}

    /// Inserts the finished output as the entry, evicting unused least recently used
    /// entries while the cache would exceed `bound` bytes (waiting for other commits
    /// until `deadline`). The output must be a regular file of the user at
    /// [`ImportSlot::temp_path`]; it is made 0600 and fsynced before the rename, so a
    /// crash never leaves a truncated entry. On error the output is removed.
    pub fn commit(mut self, bound: u64, deadline: Instant) -> Result<Committed, CacheError> {
        let cache = UserCache {
            dir: dup_dir(&self.dir, &self.dir_path)?,
            path: self.dir_path.clone(),
            uid: self.uid,
        };
        let temp_name = self.temp_name();
        let temp_path = self.temp_path();
        let (fd, st) = open_regular(cache.fd(), &temp_name, self.uid)
            .map_err(io("open", temp_path.clone()))?
            .ok_or_else(|| CacheError::NotRegular {
                path: temp_path.clone(),
                found: fstatat(cache.fd(), temp_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_or_else(
                        |e| format!("missing ({e})"),
                        |st| {
                            if is_regular(&st) {
                                format!("a regular file owned by uid {}", st.st_uid)
                            } else {
                                kind_name(st.st_mode).to_owned()
                            }
                        },
                    ),
                uid: self.uid,
            })?;
        fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(io("chmod", temp_path.clone()))?;
        fsync(&fd).map_err(io("sync", temp_path.clone()))?;
        let size = file_size(&st);
        drop(fd);

        let _commit = cache.commit_lock(deadline)?;
        let scan = cache.scan(Some(&self.temp.digest), true)?;
        let Room {
            keep_new: keep,
            evicted,
            total,
            held,
        } = cache.make_room(scan, size, bound);
        release_use_locks(cache.fd(), held);
        let name = if keep {
            CacheFile::Entry(self.temp.digest.clone()).name()
        } else {
            CacheFile::StepOnly(self.temp.clone()).name()
        };
        let path = self.dir_path.join(&name);
        renameat(cache.fd(), temp_name.as_str(), cache.fd(), name.as_str())
            .map_err(io("move the import output to", path.clone()))?;
        self.moved = true;
        // Best effort: the entry is complete either way; this makes the name durable.
        let _ = fsync(cache.fd());
        if !keep {
            return Ok(Committed::StepOnly { path, size });
        }
        Ok(Committed::Cached {
            path,
            size,
            evicted,
            total,
            over_bound: total > bound,
        })
    }
}

impl Drop for ImportSlot {
    fn drop(&mut self) {
        if self.owner != std::process::id() {
            return;
        }
        if !self.moved {
            let _ = unlink(self.dir.as_fd(), &self.temp_name());
        }
        if let Some(lock) = self.lock.take() {
            let _ = lock.remove(
                self.dir.as_fd(),
                &CacheFile::ImportLock(self.temp.digest.clone()).name(),
            );
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // fork/_exit/alarm to get real competing processes
mod tests {
    use super::*;
    use std::fs;
    use std::io::{Read, Write};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult, Pid};

    /// A cache root with one user directory, removed at the end.
    struct Root {
        root: PathBuf,
        uid: u32,
    }

    impl Root {
        /// `<tmp>/<tag>/<uid>`, mode 0700, owned by `uid` (the caller's euid unless
        /// given).
        fn new(tag: &str, uid: Option<u32>) -> Root {
            let root =
                std::env::temp_dir().join(format!("pyxis-rs-cache-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir(&root).unwrap();
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
            let uid = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
            let dir = root.join(uid.to_string());
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::lchown(&dir, Some(uid), None).unwrap();
            Root { root, uid }
        }

        fn dir(&self) -> PathBuf {
            self.root.join(self.uid.to_string())
        }

        fn open(&self) -> UserCache {
            UserCache::open(&self.root, self.uid).unwrap()
        }

        /// The names in the user directory, sorted, commit.lock left out.
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(self.dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != COMMIT_LOCK)
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    fn entry(d: &Digest) -> String {
        CacheFile::Entry(d.clone()).name()
    }

    const KIB64: usize = 64 << 10;

    /// Imports `d` with `bytes` bytes of content under `bound`.
    fn import(cache: &UserCache, d: &Digest, bytes: usize, bound: u64) -> Committed {
        let pin = cache.pin(d, far()).unwrap();
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(1), StepId(2), far(), &mut |w| {
                panic!("waited: {w:?}")
            })
            .unwrap()
        else {
            panic!("unexpected hit");
        };
        fs::write(slot.temp_path(), vec![0xab; bytes]).unwrap();
        slot.commit(bound, far()).unwrap()
    }

    fn set_mtime(path: &Path, secs: u64) {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    /// Forks; the child runs `f` and exits 0 when it returns true. It is killed after
    /// 60 s so a broken test fails instead of hanging.
    fn spawn(f: impl FnOnce() -> bool) -> Pid {
        // SAFETY: the child runs `f` (file and lock calls) and _exits without unwinding.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // SAFETY: alarm(2) only arms a timer.
                unsafe { libc::alarm(60) };
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
                // SAFETY: leave the forked test child without running the harness.
                unsafe { libc::_exit(i32::from(!ok)) };
            }
            ForkResult::Parent { child } => child,
        }
    }

    fn pipe_files() -> (fs::File, fs::File) {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        (fs::File::from(r), fs::File::from(w))
    }

    #[test]
    fn open_checks_type_owner_and_mode() {
        let r = Root::new("open", None);
        r.open();
        fs::set_permissions(r.dir(), fs::Permissions::from_mode(0o750)).unwrap();
        let err = UserCache::open(&r.root, r.uid).unwrap_err();
        assert!(err.to_string().contains("mode 0750"), "{err}");
        fs::set_permissions(r.dir(), fs::Permissions::from_mode(0o700)).unwrap();
        // Another uid's directory, or ours opened for another uid.
        let other = r.uid.wrapping_add(1);
        fs::create_dir(r.root.join(other.to_string())).unwrap();
        fs::set_permissions(
            r.root.join(other.to_string()),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let err = UserCache::open(&r.root, other).unwrap_err();
        assert!(matches!(err, CacheError::Untrusted { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("owned by uid {}", r.uid)),
            "{err}"
        );
        fs::remove_dir(r.root.join(other.to_string())).unwrap();
        // A symlink to a good directory, a file, nothing.
        let real = r.root.join("real");
        fs::rename(r.dir(), &real).unwrap();
        std::os::unix::fs::symlink(&real, r.dir()).unwrap();
        let err = UserCache::open(&r.root, r.uid).unwrap_err();
        assert!(err.to_string().contains("found a symlink"), "{err}");
        fs::remove_file(r.dir()).unwrap();
        fs::write(r.dir(), "").unwrap();
        let err = UserCache::open(&r.root, r.uid).unwrap_err();
        assert!(err.to_string().contains("found a regular file"), "{err}");
        fs::remove_file(r.dir()).unwrap();
        let err = UserCache::open(&r.root, r.uid).unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::OpenDir {
                    source: Errno::ENOENT,
                    ..
                }
            ),
            "{err}"
        );
        fs::rename(&real, r.dir()).unwrap();
        // Root's way in: the directory checked on a trusted path by sys::dirs.
        let trusted = Dir::open_trusted(&r.root, r.uid).unwrap();
        let dir = trusted.existing_user_subdir(r.uid).unwrap();
        assert_eq!(UserCache::from_dir(&dir, r.uid).unwrap().path(), r.dir());
        let err = UserCache::from_dir(&trusted, r.uid).unwrap_err();
        assert!(err.to_string().contains("mode 0755"), "{err}");
    }

    #[test]
    fn import_commit_hit_and_nothing_left_behind() {
        let r = Root::new("roundtrip", None);
        let cache = r.open();
        let d = digest('a');
        let pin = cache.pin(&d, far()).unwrap();
        assert_eq!(cache.lookup(&pin).unwrap(), None);
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(7), StepId(3), far(), &mut |w| panic!("{w:?}"))
            .unwrap()
        else {
            panic!("hit");
        };
        let temp = slot.temp_path();
        assert_eq!(
            temp.file_name().unwrap().to_str().unwrap(),
            format!(".{}.7.3.{}.tmp", d.stem(), std::process::id())
        );
        assert!(!temp.exists(), "enroot import refuses an existing output");
        assert!(r
            .dir()
            .join(CacheFile::ImportLock(d.clone()).name())
            .exists());
        fs::write(&temp, b"squashfs").unwrap();
        let committed = slot.commit(1 << 30, far()).unwrap();
        let Committed::Cached {
            path,
            evicted,
            over_bound,
            ..
        } = &committed
        else {
            panic!("{committed:?}");
        };
        assert_eq!(path, &r.dir().join(entry(&d)));
        assert!(evicted.is_empty() && !over_bound);
        assert_eq!(fs::metadata(path).unwrap().mode() & 0o777, 0o600);
        // The import lock is gone; the step's use lock stays until the pin is dropped.
        assert_eq!(r.names(), [entry(&d), CacheFile::UseLock(d.clone()).name()]);
        set_mtime(path, 1000);
        assert_eq!(cache.lookup(&pin).unwrap().as_ref(), Some(path));
        let age = SystemTime::now().duration_since(fs::metadata(path).unwrap().modified().unwrap());
        assert!(
            age.unwrap_or_default() < Duration::from_secs(60),
            "a hit refreshes the mtime"
        );
        assert_eq!(fs::read(path).unwrap(), b"squashfs");
        // begin_import on an existing entry is a hit, and leaves no lock behind.
        let Import::Hit(hit) = cache
            .begin_import(&pin, JobId(7), StepId(4), far(), &mut |w| panic!("{w:?}"))
            .unwrap()
        else {
            panic!("slot for an existing entry");
        };
        assert_eq!(&hit, path);
        drop(pin);
        assert_eq!(r.names(), [entry(&d)]);
        let list = cache.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].digest.clone(), list[0].in_use), (d, false));
        assert!(list[0].size >= 8);
        assert!(cache.free_space().unwrap().available > 0);
    }

    #[test]
    fn abort_and_drop_remove_the_output_and_the_lock() {
        let r = Root::new("abort", None);
        let cache = r.open();
        let d = digest('b');
        let pin = cache.pin(&d, far()).unwrap();
        for explicit in [true, false] {
            let Import::Slot(slot) = cache
                .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
                .unwrap()
            else {
                panic!("hit");
            };
            fs::write(slot.temp_path(), b"partial").unwrap();
            if explicit {
                slot.abort();
            } else {
                drop(slot);
            }
            assert_eq!(r.names(), [CacheFile::UseLock(d.clone()).name()]);
            assert_eq!(cache.lookup(&pin).unwrap(), None);
        }
        // An import that produced nothing: commit fails clearly and cleans up.
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
            .unwrap()
        else {
            panic!("hit");
        };
        let err = slot.commit(1 << 30, far()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        drop(pin);
        assert!(r.names().is_empty(), "{:?}", r.names());
    }

    #[test]
    fn waiting_for_another_importer_is_reported_and_bounded() {
        let r = Root::new("wait", None);
        let cache = r.open();
        let d = digest('c');
        let pin = cache.pin(&d, far()).unwrap();
        let Import::Slot(_slot) = cache
            .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
            .unwrap()
        else {
            panic!("hit");
        };
        // A second open file (as another step would have) waits, hears about it, and
        // gives up at its deadline.
        let other = r.open();
        let pin2 = other.pin(&d, far()).unwrap();
        let mut waits = Vec::new();
        let started = Instant::now();
        let err = other
            .begin_import_every(
                &pin2,
                JobId(1),
                StepId(2),
                started + Duration::from_millis(350),
                Duration::from_millis(100),
                &mut |w| waits.push(w),
            )
            .unwrap_err();
        assert!(matches!(err, CacheError::ImportTimeout { .. }), "{err}");
        assert!(err.to_string().contains("another step importing"), "{err}");
        assert!(!waits.is_empty() && waits.iter().all(|w| w.what == WaitFor::Importer));
        assert!(waits[0].elapsed < Duration::from_millis(50), "{waits:?}");
        assert!(waits.len() >= 2, "{waits:?}");
    }

    #[test]
    fn concurrent_importers_of_one_digest_import_once() {
        const N: u32 = 6;
        let r = Root::new("coalesce", None);
        let d = digest('d');
        let (mut status_r, status_w) = pipe_files();
        let (go_r, mut go_w) = pipe_files();
        let mut children = Vec::new();
        for i in 0..N {
            let (root, uid, d) = (r.root.clone(), r.uid, d.clone());
            let (mut status, mut go) = (status_w.try_clone().unwrap(), go_r.try_clone().unwrap());
            children.push(spawn(move || {
                let cache = UserCache::open(&root, uid).unwrap();
                let pin = cache.pin(&d, far()).unwrap();
                let mut told = false;
                let import = cache
                    .begin_import(&pin, JobId(9), StepId(i), far(), &mut |w| {
                        assert_eq!(w.what, WaitFor::Importer);
                        if !told {
                            status.write_all(b"W").unwrap();
                            told = true;
                        }
                    })
                    .unwrap();
                match import {
                    Import::Slot(slot) => {
                        status.write_all(b"I").unwrap();
                        go.read_exact(&mut [0]).unwrap();
                        fs::write(slot.temp_path(), vec![1u8; KIB64]).unwrap();
                        slot.commit(1 << 30, far()).is_ok()
                    }
                    Import::Hit(path) => {
                        status.write_all(b"H").unwrap();
                        fs::read(path).unwrap().len() == KIB64
                    }
                }
            }));
        }
        drop((status_w, go_r));
        // Each child's first word: the importer's "I" or a waiter's "W". The importer
        // holds the lock until told to go on, so every other child must wait.
        let mut first = vec![0u8; N as usize];
        status_r.read_exact(&mut first).unwrap();
        go_w.write_all(&[0; N as usize]).unwrap();
        for child in children {
            assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        }
        // Everything the children wrote is in the pipe now. Not read to EOF: children
        // forked by tests running in parallel may hold copies of the write end.
        let mut rest = [0u8; 64];
        nix::fcntl::fcntl(&status_r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        let n = status_r.read(&mut rest).unwrap_or(0);
        let rest = &rest[..n];
        let all: Vec<u8> = first.iter().chain(rest).copied().collect();
        let count = |c: u8| all.iter().filter(|b| **b == c).count();
        assert_eq!(
            (count(b'I'), count(b'W'), count(b'H')),
            (1, N as usize - 1, N as usize - 1),
            "{:?}",
            String::from_utf8_lossy(&all)
        );
        assert_eq!(r.names(), [entry(&d)]);
    }

    #[test]
    fn a_killed_importer_leaves_no_entry_and_the_next_one_cleans_up() {
        let r = Root::new("kill", None);
        let d = digest('e');
        let (mut status_r, status_w) = pipe_files();
        let (root, uid, dc) = (r.root.clone(), r.uid, d.clone());
        let mut status = status_w.try_clone().unwrap();
        let child = spawn(move || {
            let cache = UserCache::open(&root, uid).unwrap();
            let pin = cache.pin(&dc, far()).unwrap();
            let Import::Slot(slot) = cache
                .begin_import(&pin, JobId(5), StepId(0), far(), &mut |_| {})
                .unwrap()
            else {
                return false;
            };
            fs::write(slot.temp_path(), b"half an image").unwrap();
            status.write_all(b"I").unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        drop(status_w);
        status_r.read_exact(&mut [0]).unwrap();
        kill(child, Signal::SIGKILL).unwrap();
        assert_eq!(
            waitpid(child, None).unwrap(),
            WaitStatus::Signaled(child, Signal::SIGKILL, false)
        );
        let temp = format!(".{}.5.0.{child}.tmp", d.stem());
        let names = r.names();
        assert!(!names.contains(&entry(&d)), "{names:?}");
        assert!(names.contains(&temp), "{names:?}");
        // The next importer does not wait for the dead one and removes its output.
        let cache = r.open();
        let pin = cache.pin(&d, far()).unwrap();
        assert_eq!(cache.lookup(&pin).unwrap(), None);
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(6), StepId(0), far(), &mut |w| {
                panic!("waited for a dead importer: {w:?}")
            })
            .unwrap()
        else {
            panic!("hit on a partial import");
        };
        assert!(!r.dir().join(&temp).exists());
        fs::write(slot.temp_path(), b"whole").unwrap();
        slot.commit(1 << 30, far()).unwrap();
        drop(pin);
        assert_eq!(r.names(), [entry(&d)]);
    }

    #[test]
    fn eviction_takes_the_least_recently_used_unused_entries() {
        let r = Root::new("evict", None);
        let cache = r.open();
        let [a, b, c, n, m] = ['a', 'b', 'c', 'd', 'e'].map(digest);
        let mut size = 0;
        for (i, d) in [&a, &b, &c].into_iter().enumerate() {
            let Committed::Cached { path, size: s, .. } = import(&cache, d, KIB64, u64::MAX) else {
                panic!()
            };
            size = s;
            set_mtime(&path, 1000 + i as u64);
        }
        assert!(size >= KIB64 as u64);
        // Another process uses the oldest entry, a.
        let (mut status_r, status_w) = pipe_files();
        let (go_r, go_w) = pipe_files();
        let (root, uid, ac) = (r.root.clone(), r.uid, a.clone());
        let (mut status, mut go) = (status_w.try_clone().unwrap(), go_r.try_clone().unwrap());
        let user = spawn(move || {
            let cache = UserCache::open(&root, uid).unwrap();
            let pin = cache.pin(&ac, far()).unwrap();
            status.write_all(b"P").unwrap();
            let _ = go.read(&mut [0]);
            drop(pin);
            true
        });
        drop((status_w, go_r));
        status_r.read_exact(&mut [0]).unwrap();
        let listed = cache.list().unwrap();
        let lru: Vec<_> = listed
            .iter()
            .map(|e| (e.digest.clone(), e.in_use))
            .collect();
        assert_eq!(
            lru,
            [(a.clone(), true), (b.clone(), false), (c.clone(), false)]
        );

        // Room for three: b (oldest unused) goes, not a.
        let got = import(&cache, &n, KIB64, 3 * size);
        let Committed::Cached {
            evicted,
            over_bound,
            total,
            ..
        } = &got
        else {
            panic!("{got:?}")
        };
        assert_eq!(
            evicted.iter().map(|e| e.digest.clone()).collect::<Vec<_>>(),
            vec![b.clone()]
        );
        assert_eq!((*total, *over_bound), (3 * size, false));
        assert!(!r.dir().join(entry(&b)).exists());
        assert!(!r.dir().join(CacheFile::UseLock(b.clone()).name()).exists());
        // Room for one: every unused entry goes, a stays, and that is reported.
        let got = import(&cache, &m, KIB64, size);
        let Committed::Cached {
            evicted,
            over_bound,
            total,
            ..
        } = &got
        else {
            panic!("{got:?}")
        };
        let mut gone: Vec<_> = evicted.iter().map(|e| e.digest.clone()).collect();
        gone.sort();
        assert_eq!(gone, [c.clone(), n.clone()]);
        assert_eq!((*total, *over_bound), (2 * size, true));
        assert_eq!(
            r.names(),
            [entry(&a), CacheFile::UseLock(a.clone()).name(), entry(&m)]
        );

        // A byte, not EOF: parallel tests' children may hold copies of the write end.
        (&go_w).write_all(b"x").unwrap();
        assert_eq!(waitpid(user, None).unwrap(), WaitStatus::Exited(user, 0));
        // Unused now: the next insert may take it.
        let got = import(&cache, &b, KIB64, 2 * size);
        let Committed::Cached {
            evicted,
            over_bound: false,
            ..
        } = &got
        else {
            panic!("{got:?}")
        };
        assert_eq!(
            evicted.iter().map(|e| e.digest.clone()).collect::<Vec<_>>(),
            vec![a.clone()]
        );
        assert_eq!(r.names(), [entry(&b), entry(&m)]);
    }

    #[test]
    fn an_image_larger_than_the_bound_is_for_one_step_only() {
        let r = Root::new("alone", None);
        let cache = r.open();
        let small = digest('1');
        let Committed::Cached { size, .. } = import(&cache, &small, KIB64, u64::MAX) else {
            panic!()
        };
        let big = digest('2');
        let pin = cache.pin(&big, far()).unwrap();
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(8), StepId(1), far(), &mut |_| {})
            .unwrap()
        else {
            panic!()
        };
        fs::write(slot.temp_path(), vec![2u8; 2 * KIB64]).unwrap();
        let got = slot.commit(size + 1, far()).unwrap();
        let Committed::StepOnly { path, .. } = &got else {
            panic!("{got:?}")
        };
        let name = format!(".{}.8.1.{}.step", big.stem(), std::process::id());
        assert_eq!(path, &r.dir().join(&name));
        assert_eq!(fs::read(got.path()).unwrap().len(), 2 * KIB64);
        // Not an entry, nothing evicted for it, import lock released.
        assert_eq!(cache.lookup(&pin).unwrap(), None);
        assert!(r.dir().join(entry(&small)).exists());
        assert!(!r
            .dir()
            .join(CacheFile::ImportLock(big.clone()).name())
            .exists());
        // Another importer of the same digest leaves it alone (it is not a temp).
        let Import::Slot(again) = cache
            .begin_import(&pin, JobId(8), StepId(2), far(), &mut |_| {})
            .unwrap()
        else {
            panic!()
        };
        assert!(path.exists());
        drop(again);
        // Step end.
        let removed = cache.remove_step_temps(JobId(8), StepId(1)).unwrap();
        assert_eq!(
            removed,
            Removed {
                removed: vec![name],
                failed: vec![]
            }
        );
        drop(pin);
        assert_eq!(r.names(), [entry(&small)]);
    }

    /// Plants a symlink to `target`, a dangling symlink, a FIFO or a directory.
    fn plant(kind: usize, at: &Path, target: &Path) -> &'static str {
        match kind {
            0 => std::os::unix::fs::symlink(target, at).unwrap(),
            1 => std::os::unix::fs::symlink(target.with_extension("new"), at).unwrap(),
            2 => nix::unistd::mkfifo(at, Mode::from_bits_truncate(0o600)).unwrap(),
            _ => fs::create_dir(at).unwrap(),
        }
        ["a symlink", "a dangling symlink", "a FIFO", "a directory"][kind]
    }

    fn unplant(at: &Path) {
        if fs::symlink_metadata(at).unwrap().is_dir() {
            fs::remove_dir(at).unwrap();
        } else {
            fs::remove_file(at).unwrap();
        }
    }

    #[test]
    fn files_planted_at_every_name_are_refused_or_replaced_never_followed() {
        let r = Root::new("plant", None);
        let cache = r.open();
        let target = r.root.join("target");
        fs::write(&target, "keep").unwrap();
        let d = digest('f');
        let at = |f: CacheFile| r.dir().join(f.name());
        for kind in 0..4 {
            // At the entry name: a miss; the import replaces it, except a directory,
            // which makes the commit fail and clean up.
            let p = at(CacheFile::Entry(d.clone()));
            let what = plant(kind, &p, &target);
            let pin = cache.pin(&d, far()).unwrap();
            assert_eq!(cache.lookup(&pin).unwrap(), None, "{what}");
            assert!(cache.list().unwrap().is_empty(), "{what}");
            let Import::Slot(slot) = cache
                .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
                .unwrap()
            else {
                panic!("{what}: hit")
            };
            fs::write(slot.temp_path(), b"img").unwrap();
            let res = slot.commit(1 << 30, far());
            if kind == 3 {
                let err = res.unwrap_err();
                let want = format!("couldn't move the import output to {}", p.display());
                assert!(err.to_string().starts_with(&want), "{err}");
                assert_eq!(
                    r.names(),
                    [entry(&d), CacheFile::UseLock(d.clone()).name()],
                    "{what}"
                );
                unplant(&p);
            } else {
                res.unwrap();
                assert!(fs::symlink_metadata(&p).unwrap().is_file(), "{what}");
                fs::remove_file(&p).unwrap();
            }
            drop(pin);

            // At the use lock and the import lock: refused.
            let p = at(CacheFile::UseLock(d.clone()));
            plant(kind, &p, &target);
            assert!(cache.pin(&d, far()).is_err(), "{what}");
            unplant(&p);
            let pin = cache.pin(&d, far()).unwrap();
            let p = at(CacheFile::ImportLock(d.clone()));
            plant(kind, &p, &target);
            assert!(
                cache
                    .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
                    .is_err(),
                "{what}"
            );
            unplant(&p);

            // At the commit lock: the commit fails and removes the output.
            let Import::Slot(slot) = cache
                .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
                .unwrap()
            else {
                panic!()
            };
            fs::write(slot.temp_path(), b"img").unwrap();
            let p = r.dir().join(COMMIT_LOCK);
            let _ = fs::remove_file(&p);
            plant(kind, &p, &target);
            assert!(slot.commit(1 << 30, far()).is_err(), "{what}");
            unplant(&p);
            assert_eq!(r.names(), [CacheFile::UseLock(d.clone()).name()], "{what}");

            // At our own output (the import wrote a link): refused, removed.
            let Import::Slot(slot) = cache
                .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
                .unwrap()
            else {
                panic!()
            };
            let temp = slot.temp_path();
            plant(kind, &temp, &target);
            let err = slot.commit(1 << 30, far()).unwrap_err();
            assert!(
                err.to_string().contains("not a regular file"),
                "{what}: {err}"
            );
            if kind == 3 {
                unplant(&temp);
            }
            assert_eq!(r.names(), [CacheFile::UseLock(d.clone()).name()], "{what}");

            // At a dead importer's output: removed as a name (a directory is left).
            let stale = at(CacheFile::Temp(StepFile {
                digest: d.clone(),
                job: JobId(3),
                step: StepId(3),
                pid: 3,
            }));
            plant(kind, &stale, &target);
            let Import::Slot(slot) = cache
                .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(fs::symlink_metadata(&stale).is_ok(), kind == 3, "{what}");
            drop(slot);
            if kind == 3 {
                unplant(&stale);
            }
            drop(pin);
            assert!(r.names().is_empty(), "{what}: {:?}", r.names());
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(!target.with_extension("new").exists());
    }

    #[test]
    fn an_entry_whose_use_lock_cannot_be_taken_is_never_evicted() {
        let r = Root::new("unprobed", None);
        let cache = r.open();
        let (old, new) = (digest('7'), digest('8'));
        import(&cache, &old, KIB64, u64::MAX);
        nix::unistd::mkfifo(
            &r.dir().join(CacheFile::UseLock(old.clone()).name()),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(cache.list().unwrap()[0].in_use);
        let got = import(&cache, &new, KIB64, 1 << 16);
        let Committed::Cached {
            evicted,
            over_bound: true,
            ..
        } = &got
        else {
            panic!("{got:?}")
        };
        assert!(evicted.is_empty());
        assert!(r.dir().join(entry(&old)).exists());
    }

    #[test]
    fn prune_removes_unused_entries_and_leftovers_only() {
        let r = Root::new("prune", None);
        let cache = r.open();
        let [a, b, c, dead] = ['a', 'b', 'c', '9'].map(digest);
        for (i, d) in [&a, &b, &c].into_iter().enumerate() {
            let committed = import(&cache, d, KIB64, u64::MAX);
            set_mtime(committed.path(), 100 + i as u64);
        }
        let busy = cache.pin(&a, far()).unwrap();
        // Leftovers of a killed import of `dead` and of a killed step of job 4.
        let stale_temp = CacheFile::Temp(StepFile {
            digest: dead.clone(),
            job: JobId(4),
            step: StepId(0),
            pid: 77,
        })
        .name();
        let step_file = CacheFile::StepOnly(StepFile {
            digest: dead.clone(),
            job: JobId(4),
            step: StepId(0),
            pid: 77,
        })
        .name();
        for n in [
            &stale_temp,
            &step_file,
            &CacheFile::ImportLock(dead.clone()).name(),
            &CacheFile::UseLock(dead.clone()).name(),
        ] {
            fs::write(r.dir().join(n), "").unwrap();
        }
        let size = cache.list().unwrap()[0].size;
        let pruned = cache.prune(size * 2, far()).unwrap();
        assert_eq!(
            pruned
                .evicted
                .iter()
                .map(|e| e.digest.clone())
                .collect::<Vec<_>>(),
            vec![b.clone()]
        );
        assert_eq!(pruned.total, 2 * size);
        let mut stale = pruned.stale_removed.clone();
        stale.sort();
        let mut want = vec![
            stale_temp,
            CacheFile::ImportLock(dead.clone()).name(),
            CacheFile::UseLock(dead.clone()).name(),
        ];
        want.sort();
        assert_eq!(stale, want);
        assert_eq!(pruned.step_files, vec![step_file.clone()]);
        let pruned = cache.prune(0, far()).unwrap();
        assert_eq!(
            pruned
                .evicted
                .iter()
                .map(|e| e.digest.clone())
                .collect::<Vec<_>>(),
            vec![c.clone()]
        );
        assert_eq!(
            r.names(),
            [step_file, entry(&a), CacheFile::UseLock(a.clone()).name()]
        );
        drop(busy);
        cache.remove_job_temps(JobId(4)).unwrap();
        cache.prune(0, far()).unwrap();
        assert!(r.names().is_empty(), "{:?}", r.names());
    }

    /// As root in CI: the directory belongs to an unprivileged uid, like a real user's.
    fn other_uid() -> Option<u32> {
        nix::unistd::geteuid().is_root().then_some(65534)
    }

    #[test]
    fn remove_step_temps_as_root_unlinks_only_that_steps_files() {
        let r = Root::new("rootrm", other_uid());
        let cache = r.open();
        let target = r.root.join("target");
        fs::write(&target, "keep").unwrap();
        let d = digest('5');
        let sf = |job, step, pid| StepFile {
            digest: d.clone(),
            job: JobId(job),
            step: StepId(step),
            pid,
        };
        let dir = r.dir();
        let link = CacheFile::Temp(sf(7, 3, 100)).name();
        let plain = CacheFile::StepOnly(sf(7, 3, 101)).name();
        let subdir = CacheFile::Temp(sf(7, 3, 102)).name();
        std::os::unix::fs::symlink(&target, dir.join(&link)).unwrap();
        fs::write(dir.join(&plain), "").unwrap();
        fs::create_dir(dir.join(&subdir)).unwrap();
        let stem = d.stem();
        let keep: Vec<Vec<u8>> = [
            format!(".{stem}.07.3.1.tmp"),
            format!(".{stem}.7.3.1.tmp\n"),
            format!(".{stem}.7.3.1.tmp.x"),
            format!("..{stem}.7.3.1.tmp"),
            format!("{stem}.7.3.1.tmp"),
            format!(".{stem}.7.3.tmp"),
            format!(".{stem}.7.4.1.tmp"),
            format!(".{stem}.8.3.1.tmp"),
            format!(".{stem}.17.3.1.tmp"),
            entry(&d),
            CacheFile::UseLock(d.clone()).name(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .chain([
            [b".", stem.as_bytes(), b".7.3.\xff.tmp"].concat(),
            b"\xff.tmp".to_vec(),
        ])
        .collect();
        for name in &keep {
            let path = dir.join(std::ffi::OsStr::from_bytes(name));
            fs::write(&path, "x").unwrap();
            std::os::unix::fs::lchown(&path, Some(r.uid), None).unwrap();
        }
        if nix::unistd::geteuid().as_raw() != r.uid {
            // Root may clean up, but never creates files in the user's directory.
            let err = cache.pin(&d, far()).unwrap_err();
            assert!(matches!(err, CacheError::NotAsUser { .. }), "{err}");
            assert!(cache.prune(0, far()).is_err());
        }
        let mut removed = cache.remove_step_temps(JobId(7), StepId(3)).unwrap();
        removed.removed.sort();
        let mut want = vec![link.clone(), plain.clone()];
        want.sort();
        assert_eq!(removed.removed, want);
        assert_eq!(removed.failed.len(), 1);
        assert_eq!(removed.failed[0].0, subdir);
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        for name in &keep {
            assert!(
                fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(name))).is_ok(),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(dir.join(&subdir).is_dir());
        // The whole job: its other step goes too, job 8 and 17 stay.
        let removed = cache.remove_job_temps(JobId(7)).unwrap();
        assert_eq!(removed.removed, [format!(".{stem}.7.4.1.tmp")]);
        assert!(dir.join(format!(".{stem}.8.3.1.tmp")).exists());
        assert!(dir.join(format!(".{stem}.17.3.1.tmp")).exists());
        // list works as root too and follows nothing.
        assert_eq!(cache.list().unwrap().len(), 1);
    }

    #[test]
    fn an_unprivileged_user_runs_the_whole_cycle() {
        let r = Root::new("asuser", other_uid());
        let (root, uid) = (r.root.clone(), r.uid);
        let d = digest('6');
        let dc = d.clone();
        let child = spawn(move || {
            if nix::unistd::geteuid().as_raw() != uid {
                let id = nix::unistd::Uid::from_raw(uid);
                let gid = nix::unistd::Gid::from_raw(uid);
                nix::unistd::setgroups(&[gid]).unwrap();
                nix::unistd::setresgid(gid, gid, gid).unwrap();
                nix::unistd::setresuid(id, id, id).unwrap();
            }
            let cache = UserCache::open(&root, uid).unwrap();
            let committed = import(&cache, &dc, KIB64, u64::MAX);
            let pin = cache.pin(&dc, far()).unwrap();
            let hit = cache.lookup(&pin).unwrap();
            hit.as_deref() == Some(committed.path())
        });
        assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        let meta = fs::metadata(r.dir().join(entry(&d))).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));
        assert_eq!(r.names(), [entry(&d)]);
    }
}
