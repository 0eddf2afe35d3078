//! Small filesystem and user-database helpers shared by the commands.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Uid, User};

/// `mkdir -p` with mode 0700 for every directory created (enroot runs it under `umask 077`).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The passwd home directory of the effective user (what `~` gives when `HOME` is unset, e.g. in
/// the Slurm epilog).
pub fn passwd_home() -> Option<PathBuf> {
    User::from_uid(Uid::effective())
        .ok()
        .flatten()
        .map(|u| u.dir)
}

/// Files in `dir` whose names end with `suffix`, sorted by name like a shell glob; a missing
/// directory gives nothing.
pub fn sorted_entries_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.as_bytes();
                // Globs skip hidden files; `*.conf` needs at least the suffix itself.
                n.first() != Some(&b'.') && n.ends_with(suffix.as_bytes())
            })
        })
        .collect();
    files.sort();
    files
}

/// `readlink -f`: resolve every symbolic link; only the last component may be missing.
pub fn realpath(path: &Path) -> io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    match fs::canonicalize(&absolute) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let name = absolute
                .file_name()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
            let parent = absolute.parent().unwrap_or(Path::new("/"));
            // A dangling symlink as last component: readlink -f resolves it, keep it simple and
            // report the link path itself.
            Ok(fs::canonicalize(parent)?.join(name))
        }
        Err(e) => Err(e),
    }
}

/// Whether a container name is acceptable (enroot refuses names containing `/`).
/// The root filesystem of an existing container `name` under `ENROOT_DATA_PATH`, with
/// enroot's errors: `Invalid argument: <name>` for a name enroot refuses, `No such file or
/// directory: <path>` when it does not exist.
pub fn existing_container(
    cfg: &crate::config::Config,
    name: &OsStr,
) -> crate::error::Result<std::path::PathBuf> {
    use crate::error::Error;
    if !valid_name(name) {
        return Err(Error::msg(format!(
            "Invalid argument: {}",
            name.to_string_lossy()
        )));
    }
    let joined = cfg.path("ENROOT_DATA_PATH").join(name);
    let rootfs = realpath(&joined)
        .map_err(|_| Error::msg(format!("No such file or directory: {}", joined.display())))?;
    if !rootfs.is_dir() {
        return Err(Error::msg(format!(
            "No such file or directory: {}",
            rootfs.display()
        )));
    }
    Ok(rootfs)
}

pub fn valid_name(name: &OsStr) -> bool {
    !name.as_bytes().contains(&b'/')
}

/// Remove a tree, making read-only directories writable first when the plain removal fails
/// (enroot's `common::rmall`).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_owner_accessible(path);
            fs::remove_dir_all(path)
        }
    }
}

/// `chmod -R u+rwX` restricted to directories, best effort, without following symlinks.
fn make_owner_accessible(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        // Best effort: a failure here shows up as the removal error afterwards.
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_owner_accessible(&entry.path());
        }
    }
}

/// enroot's `common::fixperms`: give the owner read access everywhere and write access to
/// directories, so that an unprivileged user can later export and remove the tree (some
/// distributions ship e.g. `/etc/shadow` as mode 0000 and expect `CAP_DAC_OVERRIDE`).
pub fn fix_permissions(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode();
    let wanted = if meta.is_dir() {
        mode | 0o700
    } else if meta.file_type().is_symlink() {
        return;
    } else if mode & 0o111 != 0 {
        mode | 0o500
    } else {
        mode | 0o400
    };
    if wanted != mode {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(wanted));
    }
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                fix_permissions(&entry.path());
            }
        }
    }
}

/// A unique, not yet existing path next to `target`, used to write temporaries that are renamed
/// into place so that a failure leaves nothing behind.
pub fn sibling_temp(target: &Path, tag: &str) -> PathBuf {
    let name = target.file_name().unwrap_or(OsStr::new("enroot"));
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".{tag}.{}", std::process::id()));
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut candidate = dir.join(&temp);
    let mut n = 0u32;
    while fs::symlink_metadata(&candidate).is_ok() {
        n += 1;
        let mut t = temp.clone();
        t.push(format!(".{n}"));
        candidate = dir.join(t);
    }
    candidate
}

/// Removes a path when dropped unless disarmed: cleans up temporaries on every error path.
pub struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    /// Guard `path`.
    pub fn new(path: PathBuf) -> Self {
        TempPath { path: Some(path) }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Keep the path (it was renamed into place).
    pub fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    let _ = remove_tree(&p);
                }
                Ok(_) => {
                    let _ = fs::remove_file(&p);
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("enroot-double-util-{tag}-{}", std::process::id()));
        let _ = remove_tree(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn remove_tree_handles_read_only_directories() {
        let d = scratch("rm");
        let inner = d.join("a/b");
        fs::create_dir_all(&inner).unwrap();
        fs::write(inner.join("f"), b"x").unwrap();
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(d.join("a"), fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&d).unwrap();
        assert!(!d.exists());
    }

    #[test]
    fn realpath_allows_missing_last_component() {
        let d = scratch("realpath");
        let p = realpath(&d.join("missing")).unwrap();
        assert_eq!(p, fs::canonicalize(&d).unwrap().join("missing"));
        assert!(realpath(&d.join("no/such")).is_err());
        remove_tree(&d).unwrap();
    }

    #[test]
    fn names() {
        assert!(valid_name(OsStr::new("pyxis_1.0")));
        assert!(!valid_name(OsStr::new("a/b")));
    }

    #[test]
    fn temp_path_guard() {
        let d = scratch("guard");
        let t = sibling_temp(&d.join("out.sqsh"), "export");
        fs::write(&t, b"x").unwrap();
        drop(TempPath::new(t.clone()));
        assert!(!t.exists());
        remove_tree(&d).unwrap();
    }
}
