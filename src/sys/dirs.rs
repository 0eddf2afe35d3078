//! Directories that root creates, writes or cleans: `runtime_path` and `image_cache_path`
//! (slurmd `init`), the per-user directories below them (slurmstepd `init_post_opt`),
//! the root-only job markers (`init_post_opt`, `task_exit`, the job epilog) and the
//! cleanup of a user's leftovers (`task_exit`, the epilog).
//!
//! Every path under a directory a user can write is hostile: a symlink, a FIFO or a
//! directory can be planted at any name, ahead of time (job ids are predictable). So
//! root never resolves such a path by name. A [`Dir`] is an open directory fd that was
//! checked with `fstat` after opening it without following symlinks; everything below it
//! goes through `*at` calls relative to that fd:
//! - a *trusted* directory (and every ancestor) is owned by root and writable by nobody
//!   else (an ancestor may be sticky, like /tmp), so nobody else can change what its
//!   names refer to; symlinks are followed only where they sit in a trusted directory
//!   (`/var/run -> /run`);
//! - a *user* directory is owned by the job user with mode 0700: root only creates it,
//!   and afterwards only unlinks names in it (`unlinkat` never follows anything and
//!   never opens the file) — it never creates, truncates, chmods or chowns inside it.
//!
//! See `docs/root-files.md` for the list of every root-side file operation.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

/// Why a directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("couldn't {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is {why}; refusing to use it")]
    Untrusted { path: PathBuf, why: String },
    /// W4: `<runtime_path>/<uid>` (or the cache's) must be private to the user.
    #[error("{path} is not a directory owned by uid {uid} with mode 0700 (found {found}); refusing to use it")]
    NotPrivate {
        path: PathBuf,
        uid: u32,
        found: String,
    },
}

impl DirError {
    fn io(op: &'static str, path: &Path, e: impl Into<io::Error>) -> DirError {
        DirError::Io {
            op,
            path: path.to_owned(),
            source: e.into(),
        }
    }
}

/// An open, checked directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Symlinks followed while opening one trusted path, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens an absolute path that only root (or `owner`, in tests the caller) can
    /// change: every directory on the way is owned by root or `owner` and not writable
    /// by group or others (sticky directories excepted, but not for the last one).
    pub fn open_trusted(path: &Path, owner: u32) -> Result<Dir, DirError> {
        if !path.is_absolute() {
            return Err(DirError::Untrusted {
                path: path.to_owned(),
                why: "not an absolute path".to_owned(),
            });
        }
        let untrusted = |why: String| DirError::Untrusted {
            path: path.to_owned(),
            why,
        };
        let root = nix::fcntl::open("/", DIR_FLAGS, Mode::empty())
            .map_err(|e| DirError::io("open", Path::new("/"), e))?;
        let root_st = fstat(&root).map_err(|e| DirError::io("stat", Path::new("/"), e))?;
        // Every directory is checked as soon as it is reached, so whatever the walk goes
        // back to (`..`, an absolute link's `/`) was checked too, and a link is only read
        // from a directory that is already known to be trusted.
        if let Some(why) = untrusted_because(&root_st, owner, false) {
            return Err(untrusted(format!("below / which is {why}")));
        }
        let mut stack: Vec<(OwnedFd, FileStat)> = vec![(
            root.try_clone()
                .map_err(|e| DirError::io("open", Path::new("/"), e))?,
            root_st,
        )];
        let mut todo: Vec<OsString> = components(path);
        todo.reverse();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let Some((parent, parent_st)) = stack.last() else {
                break;
            };
            let st = fstatat(parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| DirError::io("stat", path, e))?;
            if is_type(&st, SFlag::S_IFLNK) {
                // In a sticky directory others can write (/tmp), anybody may have made
                // the link: follow only root's or the owner's (as fs.protected_symlinks).
                if parent_st.st_mode & 0o022 != 0 && st.st_uid != 0 && st.st_uid != owner {
                    return Err(untrusted(format!(
                        "reached through a symlink {} owned by uid {} in a directory other users can write",
                        printable_name(&name),
                        st.st_uid
                    )));
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(DirError::io("open", path, Errno::ELOOP));
                }
                let target = readlinkat(parent, name.as_os_str())
                    .map_err(|e| DirError::io("read link", path, e))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                let mut more = components(&target);
                more.reverse();
                todo.extend(more);
                continue;
            }
            let fd = openat(parent, name.as_os_str(), DIR_FLAGS, Mode::empty())
                .map_err(|e| DirError::io("open", path, e))?;
            let st = fstat(&fd).map_err(|e| DirError::io("stat", path, e))?;
            if let Some(why) = untrusted_because(&st, owner, false) {
                return Err(untrusted(format!(
                    "reached through {} which is {why}",
                    printable_name(&name)
                )));
            }
            stack.push((fd, st));
        }
        let (fd, st) = stack
            .pop()
            .ok_or_else(|| DirError::io("open", path, Errno::ENOENT))?;
        // The directory itself must not be writable by others even when sticky.
        if let Some(why) = untrusted_because(&st, owner, true) {
            return Err(untrusted(why));
        }
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// Creates `path` (mode `mode`, whatever the umask) if it is missing, in a trusted
    /// parent, then opens it as trusted. The parent must exist.
    pub fn ensure_trusted(path: &Path, mode: u32, owner: u32) -> Result<Dir, DirError> {
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            let parent = Dir::open_trusted(parent, owner)?;
            if parent.mkdir(name, path)? {
                // Ours, fresh, in a directory nobody else can write: give it its mode.
                let fd = parent.open_dir(name, path)?;
                fchmod(&fd, Mode::from_bits_truncate(mode))
                    .map_err(|e| DirError::io("chmod", path, e))?;
            }
        }
        Dir::open_trusted(path, owner)
    }

    /// A root-only subdirectory (created 0700 if missing; an existing one must be owned
    /// by `owner` and closed to everybody else).
    pub fn private_subdir(&self, name: &str, owner: u32) -> Result<Dir, DirError> {
        self.subdir(OsStr::new(name), owner)
    }

    fn subdir(&self, name: &OsStr, owner: u32) -> Result<Dir, DirError> {
        let path = self.path.join(name);
        self.mkdir(name, &path)?;
        let fd = self.open_dir(name, &path)?;
        let st = fstat(&fd).map_err(|e| DirError::io("stat", &path, e))?;
        if !is_type(&st, SFlag::S_IFDIR) || st.st_uid != owner || st.st_mode & 0o077 != 0 {
            return Err(DirError::Untrusted {
                path,
                why: format!(
                    "owned by uid {} with mode {:04o}, not private to uid {owner}",
                    st.st_uid,
                    st.st_mode & 0o7777
                ),
            });
        }
        Ok(Dir { fd, path })
    }

    /// `<self>/<uid>`: created 0700 and given to the user if missing; an existing one
    /// must be a real directory owned by `uid` with no access for others (W4).
    pub fn user_subdir(&self, uid: u32, gid: u32) -> Result<Dir, DirError> {
        let name = OsString::from(uid.to_string());
        let created = self.mkdir(&name, &self.path.join(&name))?;
        self.open_user_subdir(uid, Some(gid).filter(|_| created))
    }

    /// An existing `<self>/<uid>`, checked like [`user_subdir`](Self::user_subdir).
    pub fn existing_user_subdir(&self, uid: u32) -> Result<Dir, DirError> {
        self.open_user_subdir(uid, None)
    }

    /// Opens `<uid>`; `give_to` = the gid when root just created it.
    fn open_user_subdir(&self, uid: u32, give_to: Option<u32>) -> Result<Dir, DirError> {
        let name = OsString::from(uid.to_string());
        let path = self.path.join(&name);
        let fd = match openat(&self.fd, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let found = match fstatat(&self.fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                {
                    Ok(st) if is_type(&st, SFlag::S_IFLNK) => "a symlink",
                    _ => "not a directory",
                };
                return Err(DirError::NotPrivate {
                    path,
                    uid,
                    found: found.to_owned(),
                });
            }
            Err(e) => return Err(DirError::io("open", &path, e)),
        };
        if let Some(gid) = give_to {
            let given = fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .and_then(|()| fchmod(&fd, Mode::from_bits_truncate(0o700)));
            if let Err(e) = given {
                let _ = unlinkat(&self.fd, name.as_os_str(), UnlinkatFlags::RemoveDir);
                return Err(DirError::io("chown", &path, e));
            }
        }
        let st = fstat(&fd).map_err(|e| DirError::io("stat", &path, e))?;
        if st.st_uid != uid || st.st_mode & 0o077 != 0 {
            return Err(DirError::NotPrivate {
                path,
                uid,
                found: format!(
                    "a directory owned by uid {} with mode {:04o}",
                    st.st_uid,
                    st.st_mode & 0o7777
                ),
            });
        }
        Ok(Dir { fd, path })
    }

    fn mkdir(&self, name: &OsStr, path: &Path) -> Result<bool, DirError> {
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(DirError::io("mkdir", path, e)),
        }
    }

    fn open_dir(&self, name: &OsStr, path: &Path) -> Result<OwnedFd, DirError> {
        openat(&self.fd, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => DirError::Untrusted {
                path: path.to_owned(),
                why: "not a directory".to_owned(),
            },
            e => DirError::io("open", path, e),
        })
    }

    /// Creates `name` with `contents` (0600) unless it exists. Only for directories no
    /// user can write (the job markers): the file is opened `O_EXCL|O_NOFOLLOW` anyway.
    pub fn create_file(&self, name: &str, contents: &[u8]) -> Result<bool, DirError> {
        let path = self.path.join(name);
        let flags = OFlag::O_WRONLY
            .union(OFlag::O_CREAT)
            .union(OFlag::O_EXCL)
            .union(OFlag::O_NOFOLLOW)
            .union(OFlag::O_CLOEXEC);
        let fd = match openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => return Ok(false),
            Err(e) => return Err(DirError::io("create", &path, e)),
        };
        let mut file = std::fs::File::from(fd);
        io::Write::write_all(&mut file, contents).map_err(|e| DirError::io("write", &path, e))?;
        Ok(true)
    }

    /// Opens `name` for reading if it is a regular file (`None` if it is missing or
    /// anything else). Safe in a user directory: a symlink is not followed, a FIFO does
    /// not block the open, and a regular file opened read-only changes nothing.
    pub fn open_regular(&self, name: &OsStr) -> Result<Option<std::fs::File>, DirError> {
        let path = self.path.join(name);
        let flags = OFlag::O_RDONLY
            .union(OFlag::O_NOFOLLOW)
            .union(OFlag::O_NONBLOCK)
            .union(OFlag::O_NOCTTY)
            .union(OFlag::O_CLOEXEC);
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(DirError::io("open", &path, e)),
        };
        let st = fstat(&fd).map_err(|e| DirError::io("stat", &path, e))?;
        Ok(is_type(&st, SFlag::S_IFREG).then(|| std::fs::File::from(fd)))
    }

    /// Reads a small regular file of a root-only directory (at most `limit` bytes).
    pub fn read_file(&self, name: &OsStr, limit: u64) -> Result<Vec<u8>, DirError> {
        let path = self.path.join(name);
        let file = self
            .open_regular(name)?
            .ok_or_else(|| DirError::Untrusted {
                path: path.clone(),
                why: "missing or not a regular file".to_owned(),
            })?;
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(file, limit), &mut buf)
            .map_err(|e| DirError::io("read", &path, e))?;
        Ok(buf)
    }

    /// Removes the name `name` (whatever it is, except a directory); a missing name is
    /// not an error. Never follows or opens anything, so it is safe in a user directory.
    pub fn unlink(&self, name: &OsStr) -> Result<(), DirError> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(DirError::io("remove", &self.path.join(name), e)),
        }
    }

    /// The names in the directory (without `.` and `..`).
    pub fn names(&self) -> Result<Vec<OsString>, DirError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| DirError::io("read", &self.path, e))?;
        let mut dir =
            nix::dir::Dir::from_fd(fd).map_err(|e| DirError::io("read", &self.path, e))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| DirError::io("read", &self.path, e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn is_type(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// Why a directory on a trusted path is not trustworthy, if it is not.
/// A directory entry's name for a message (user bytes escaped).
fn printable_name(name: &OsStr) -> String {
    name.as_bytes().escape_ascii().to_string()
}

fn untrusted_because(st: &FileStat, owner: u32, last: bool) -> Option<String> {
    let mode = st.st_mode & 0o7777;
    if !is_type(st, SFlag::S_IFDIR) {
        Some("not a directory".to_owned())
    } else if st.st_uid != 0 && st.st_uid != owner {
        Some(format!("a directory owned by uid {}", st.st_uid))
    } else if mode & 0o022 != 0 && (last || mode & 0o1000 == 0) {
        Some(format!(
            "a directory writable by other users (mode {mode:04o})"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};

    fn me() -> (u32, u32) {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    /// A private scratch directory (0700, ours) under the system temp directory.
    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("pyxis-rs-dirs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::DirBuilder::new().mode(0o755).create(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn links_in_directories_others_can_write_are_not_followed() {
        let (uid, _) = me();
        let root = scratch("links");
        let a = root.join("a");
        Dir::ensure_trusted(&a, 0o755, uid).unwrap();
        // a world-writable (not sticky) directory: whatever is reached through it is
        // refused, an absolute link back to a trusted place or a relative `..` one alike
        let w = root.join("w");
        std::fs::create_dir(&w).unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(&a, w.join("abs")).unwrap();
        std::os::unix::fs::symlink("../a", w.join("rel")).unwrap();
        for link in ["abs", "rel"] {
            let err = Dir::open_trusted(&w.join(link), uid).unwrap_err();
            assert!(
                matches!(&err, DirError::Untrusted { why, .. } if why.contains("writable by other users")),
                "{link}: {err}"
            );
        }
        Dir::open_trusted(&w.join("..").join("a"), uid).unwrap_err();
        // a sticky one (like /tmp): the owner's links are followed, anybody else's are not
        let t = root.join("t");
        std::fs::create_dir(&t).unwrap();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::symlink(&a, t.join("mine")).unwrap();
        assert_eq!(
            Dir::open_trusted(&t.join("mine"), uid).unwrap().path(),
            t.join("mine")
        );
        if uid == 0 {
            std::os::unix::fs::symlink(&a, t.join("theirs")).unwrap();
            std::os::unix::fs::lchown(t.join("theirs"), Some(4242), None).unwrap();
            let err = Dir::open_trusted(&t.join("theirs"), uid).unwrap_err();
            assert!(err.to_string().contains("owned by uid 4242"), "{err}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn trusted_path_checks_every_ancestor() {
        let (uid, _) = me();
        let root = scratch("trust");
        let a = root.join("a");
        let dir = Dir::ensure_trusted(&a, 0o755, uid).unwrap();
        assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(dir.path(), a);
        // a symlink in a trusted directory is followed
        std::os::unix::fs::symlink(&a, root.join("link")).unwrap();
        Dir::open_trusted(&root.join("link"), uid).unwrap();
        Dir::open_trusted(&root.join("a/../a"), uid).unwrap();
        // writable by others: refused, also below it
        std::fs::create_dir(a.join("b")).unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Dir::open_trusted(&a.join("b"), uid).unwrap_err();
        assert!(err.to_string().contains("writable by other users"), "{err}");
        // sticky is fine for an ancestor, not for the directory itself
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o1777)).unwrap();
        Dir::open_trusted(&a.join("b"), uid).unwrap();
        assert!(Dir::open_trusted(&a, uid).is_err());
        // relative paths and non-directories are refused
        assert!(Dir::open_trusted(Path::new("tmp"), uid).is_err());
        std::fs::write(root.join("f"), "").unwrap();
        assert!(Dir::open_trusted(&root.join("f"), uid).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn user_subdir_is_created_private_and_checked() {
        let (uid, gid) = me();
        let root = scratch("user");
        let top = Dir::open_trusted(&root, uid).unwrap();
        let user = top.user_subdir(uid, gid).unwrap();
        let p = root.join(uid.to_string());
        assert_eq!(user.path(), p);
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o700);
        top.user_subdir(uid, gid).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = top.user_subdir(uid, gid).unwrap_err();
        assert!(
            err.to_string().contains("is not a directory owned by uid"),
            "{err}"
        );
        std::fs::remove_dir(&p).unwrap();
        std::os::unix::fs::symlink("/tmp", &p).unwrap();
        let err = top.user_subdir(uid, gid).unwrap_err();
        assert!(err.to_string().contains("(found a symlink)"), "{err}");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "").unwrap();
        let err = top.user_subdir(uid, gid).unwrap_err();
        assert!(err.to_string().contains("(found not a directory)"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn files_are_created_exclusively_and_never_through_links() {
        let (uid, _) = me();
        let root = scratch("files");
        let top = Dir::open_trusted(&root, uid).unwrap();
        let jobs = top.private_subdir("jobs", uid).unwrap();
        assert!(jobs.create_file("12.0", b"uid=1\n").unwrap());
        assert!(!jobs.create_file("12.0", b"other").unwrap());
        assert_eq!(jobs.read_file(OsStr::new("12.0"), 100).unwrap(), b"uid=1\n");
        assert_eq!(jobs.read_file(OsStr::new("12.0"), 3).unwrap(), b"uid");
        // a planted symlink is neither followed for writing nor for reading
        let victim = root.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("jobs/13.0")).unwrap();
        assert!(jobs.create_file("13.0", b"x").is_ok_and(|c| !c));
        assert!(jobs.read_file(OsStr::new("13.0"), 100).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let mut names = jobs.names().unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("12.0"), OsString::from("13.0")]);
        // unlink removes the link itself, and a missing name is fine
        jobs.unlink(OsStr::new("13.0")).unwrap();
        jobs.unlink(OsStr::new("13.0")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // a FIFO is not opened for reading (it would block)
        nix::unistd::mkfifo(&root.join("jobs/fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(jobs.read_file(OsStr::new("fifo"), 100).is_err());
        // an existing jobs directory open to others is refused
        std::fs::set_permissions(root.join("jobs"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert!(top.private_subdir("jobs", uid).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
