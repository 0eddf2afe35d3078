//! Performing fstab entries inside the container's mount namespace (`enroot-mount`).
//!
//! Targets are resolved inside the root filesystem with symbolic links interpreted relative to it,
//! and a `..` that would leave it fails with `EXDEV` ("Invalid cross-device link", which pyxis'
//! tests grep for). Inside a user namespace, bind mounts and remounts must keep the flags the
//! kernel locked on the source (`nosuid`, `nodev`, `ro`, ...), so those are read with statvfs and
//! added, as enroot does.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::error::{errno_text, strerror, Error, Result};
use crate::fstab::{self, Create, Entry, MS_PROPAGATION};

/// Resolve `path` as seen from `root`: symbolic links are followed relative to `root`, missing
/// components are allowed, and escaping `root` with `..` fails with `EXDEV`.
pub fn resolve_in_root(root: &Path, path: &OsStr) -> io::Result<PathBuf> {
    const MAX_LINKS: u32 = 40;
    let split = |p: &[u8]| -> VecDeque<OsString> {
        p.split(|c| *c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(|c| OsStr::from_bytes(c).to_os_string())
            .collect()
    };
    let root = fs::canonicalize(root)?;
    let mut pending = split(path.as_bytes());
    let mut resolved: Vec<OsString> = Vec::new();
    // How many trailing components of `resolved` do not exist on disk.
    let mut missing = 0usize;
    let mut links = 0u32;

    while let Some(comp) = pending.pop_front() {
        if comp.as_bytes() == b"." {
            continue;
        }
        if comp.as_bytes() == b".." {
            if resolved.pop().is_none() {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
            missing = missing.saturating_sub(1);
            continue;
        }
        if missing > 0 {
            resolved.push(comp);
            missing += 1;
            continue;
        }
        let mut here = root.clone();
        here.extend(&resolved);
        here.push(&comp);
        match fs::read_link(&here) {
            Ok(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = target.into_os_string();
                if target.as_bytes().first() == Some(&b'/') {
                    resolved.clear();
                }
                let mut again = split(target.as_bytes());
                again.extend(pending);
                pending = again;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => resolved.push(comp),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                resolved.push(comp);
                missing = 1;
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = root;
    out.extend(&resolved);
    Ok(out)
}

/// Create a mount point: parent directories with mode 0755, the point itself with mode 0 like
/// enroot (so that `export` can tell unused mount points apart and skip them).
fn create_mount_point(path: &Path, dir: bool) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let result = if dir {
        fs::DirBuilder::new().mode(0o000).create(path)
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|f| f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o000)))
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Flags the kernel locks on a mount when it is bind-mounted into a less privileged namespace.
fn locked_flags(path: &Path) -> libc::c_ulong {
    let Ok(st) = statvfs(path) else {
        return 0;
    };
    let f = st.flags();
    let mut flags = 0;
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_RDONLY, libc::MS_RDONLY),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f.contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    flags
}

fn ms(flags: libc::c_ulong) -> MsFlags {
    MsFlags::from_bits_retain(flags)
}

/// `root` and `path` joined for messages, without doubling the slash.
fn display_in_root(root: &Path, path: &OsStr) -> String {
    let root = root.to_string_lossy();
    let path = path.to_string_lossy();
    let root = root.trim_end_matches('/');
    if path.starts_with('/') {
        format!("{root}{path}")
    } else {
        format!("{root}/{path}")
    }
}

/// Performs mount entries below a root directory.
pub struct Mounter {
    root: PathBuf,
    /// Whether we run in a user namespace (locked flags must be preserved).
    userns: bool,
}

impl Mounter {
    /// Mount below `root`; `userns` tells whether the caller created a user namespace.
    pub fn new(root: &Path, userns: bool) -> Self {
        Mounter {
            root: root.to_path_buf(),
            userns,
        }
    }

    /// Perform the entries of an fstab text whose pass number equals `passno`; `origin` names the
    /// text in error messages.
    pub fn mount_text(&self, text: &[u8], origin: &str, passno: i32) -> Result<()> {
        for entry in fstab::parse(text) {
            let entry = entry
                .map_err(|e| Error::msg(format!("invalid fstab entry: \"{}\" at {origin}", e.0)))?;
            if entry.passno == passno {
                self.mount_entry(&entry)?;
            }
        }
        Ok(())
    }

    /// Perform one entry; failures are fatal unless `nofail`, and reported unless `silent`.
    pub fn mount_entry(&self, entry: &Entry) -> Result<()> {
        let opts = fstab::parse_options(&entry.options);
        match self.try_mount(entry, &opts) {
            Ok(()) => Ok(()),
            Err(message) if opts.nofail => {
                if !opts.silent || opts.loud {
                    eprintln!("[WARN] {message}");
                }
                Ok(())
            }
            Err(message) => Err(Error::msg(message)),
        }
    }

    fn try_mount(&self, entry: &Entry, opts: &fstab::Options) -> std::result::Result<(), String> {
        let target = resolve_in_root(&self.root, &entry.target).map_err(|e| {
            format!(
                "failed to resolve path: {}: {}",
                display_in_root(&self.root, &entry.target),
                strerror(&e)
            )
        })?;
        let source = Path::new(&entry.source);

        let create = match opts.create {
            Some(Create::Dir) => Some(true),
            Some(Create::File) => Some(false),
            Some(Create::Auto) if opts.flags & libc::MS_BIND == 0 => Some(true),
            Some(Create::Auto) => fs::metadata(source).ok().map(|m| m.is_dir()),
            None => None,
        };
        if let Some(dir) = create {
            create_mount_point(&target, dir).map_err(|e| {
                let what = if dir { "directory" } else { "file" };
                format!(
                    "failed to create {what}: {}: {}",
                    target.display(),
                    strerror(&e)
                )
            })?;
        }

        let flags = opts.flags;
        let needs_mount = (entry.fstype != "none" && !entry.fstype.is_empty())
            || flags & !(MS_PROPAGATION | libc::MS_REC | libc::MS_SILENT) != 0
            || opts.detach
            || opts.move_mount;
        if needs_mount {
            self.mount_generic(source, &target, entry, opts, flags & !MS_PROPAGATION)
                .map_err(|e| {
                    let un = if opts.detach { "un" } else { "" };
                    format!(
                        "failed to {un}mount: {} at {}: {}",
                        entry.source.to_string_lossy(),
                        target.display(),
                        errno_text(e)
                    )
                })?;
        }
        if flags & MS_PROPAGATION != 0 {
            for one in [
                libc::MS_SHARED,
                libc::MS_SLAVE,
                libc::MS_PRIVATE,
                libc::MS_UNBINDABLE,
            ] {
                if flags & one == 0 {
                    continue;
                }
                let rec = if opts.recursive_propagation {
                    libc::MS_REC
                } else {
                    0
                };
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    ms(one | rec | (flags & libc::MS_SILENT)),
                    None::<&str>,
                )
                .map_err(|e| {
                    format!(
                        "failed to set mount propagation: {}: {}",
                        target.display(),
                        errno_text(e)
                    )
                })?;
            }
        }
        Ok(())
    }

    fn mount_generic(
        &self,
        source: &Path,
        target: &Path,
        entry: &Entry,
        opts: &fstab::Options,
        mut flags: libc::c_ulong,
    ) -> nix::Result<()> {
        if opts.detach {
            return umount2(target, MntFlags::MNT_DETACH);
        }
        if opts.move_mount {
            flags |= libc::MS_MOVE;
        }
        if !opts.rbind {
            flags &= !libc::MS_REC;
        }
        if self.userns && flags & (libc::MS_REMOUNT | libc::MS_BIND) != 0 {
            let probe = if flags & libc::MS_REMOUNT != 0 {
                target
            } else {
                source
            };
            flags |= locked_flags(probe);
        }
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        let fstype = Some(entry.fstype.as_str()).filter(|t| !t.is_empty());
        mount(Some(source), target, fstype, ms(flags), data)?;

        if flags & libc::MS_BIND != 0 && flags & libc::MS_REMOUNT == 0 {
            // A bind ignores every other flag; apply them with a remount unless there are none.
            if flags & !(libc::MS_BIND | libc::MS_REC) == 0 && data.is_none() {
                return Ok(());
            }
            mount(
                None::<&str>,
                target,
                None::<&str>,
                ms(flags | libc::MS_REMOUNT),
                data,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("enroot-double-mount-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("usr/lib")).unwrap();
        fs::canonicalize(&d).unwrap()
    }

    #[test]
    fn resolve_plain_missing_and_dotdot() {
        let r = scratch("plain");
        assert_eq!(
            resolve_in_root(&r, OsStr::new("/usr/lib")).unwrap(),
            r.join("usr/lib")
        );
        assert_eq!(
            resolve_in_root(&r, OsStr::new("usr//./lib/")).unwrap(),
            r.join("usr/lib")
        );
        assert_eq!(
            resolve_in_root(&r, OsStr::new("/new/dir")).unwrap(),
            r.join("new/dir")
        );
        assert_eq!(
            resolve_in_root(&r, OsStr::new("/usr/../etc")).unwrap(),
            r.join("etc")
        );
        assert_eq!(
            resolve_in_root(&r, OsStr::new("/a/b/../../c")).unwrap(),
            r.join("c")
        );
        assert_eq!(resolve_in_root(&r, OsStr::new("/")).unwrap(), r);
        let err = resolve_in_root(&r, OsStr::new("../home")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
        let err = resolve_in_root(&r, OsStr::new("/usr/../../x")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
        fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn resolve_follows_links_inside_the_root() {
        let r = scratch("links");
        symlink("/usr/lib", r.join("lib")).unwrap();
        symlink("../usr", r.join("usr/self")).unwrap();
        symlink("/", r.join("up")).unwrap();
        fs::create_dir_all(r.join("run")).unwrap();
        symlink("/run", r.join("usr/var-run")).unwrap();
        assert_eq!(
            resolve_in_root(&r, OsStr::new("/lib/x")).unwrap(),
            r.join("usr/lib/x")
        );
        assert_eq!(
            resolve_in_root(&r, OsStr::new("/usr/self/lib")).unwrap(),
            r.join("usr/lib")
        );
        // An absolute link to "/" stays inside the root instead of reaching the host.
        assert_eq!(
            resolve_in_root(&r, OsStr::new("/up/etc")).unwrap(),
            r.join("etc")
        );
        assert_eq!(
            resolve_in_root(&r, OsStr::new("/usr/var-run")).unwrap(),
            r.join("run")
        );
        symlink("loop", r.join("loop")).unwrap();
        let err = resolve_in_root(&r, OsStr::new("/loop")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn messages_join_paths_once() {
        assert_eq!(
            display_in_root(Path::new("/"), OsStr::new("/tmp/x")),
            "/tmp/x"
        );
        assert_eq!(
            display_in_root(Path::new("/r"), OsStr::new("../home")),
            "/r/../home"
        );
        assert_eq!(
            display_in_root(Path::new("/r"), OsStr::new("/mnt")),
            "/r/mnt"
        );
    }

    #[test]
    fn mount_points_are_created_with_mode_zero() {
        use std::os::unix::fs::PermissionsExt;
        let r = scratch("create");
        create_mount_point(&r.join("a/b/dir"), true).unwrap();
        create_mount_point(&r.join("a/file"), false).unwrap();
        create_mount_point(&r.join("a/file"), false).unwrap();
        assert!(r.join("a/b/dir").is_dir());
        assert_eq!(
            fs::metadata(r.join("a/file")).unwrap().permissions().mode() & 0o777,
            0
        );
        fs::set_permissions(r.join("a/b/dir"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::remove_dir_all(&r).unwrap();
    }
}
