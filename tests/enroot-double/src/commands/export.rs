//! `enroot export [-o FILE] [-f] NAME`: pack a container root filesystem into a squashfs image.
//!
//! Like enroot, the rootfs lock file, everything below `/dev` and unused mount points (mode 0000
//! entries that are empty or directories, created by `x-create`) are left out; files are stored
//! as owned by root. The image is written to a temporary file next to the destination and renamed
//! over it, so a failure never leaves a truncated image.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::squashfs;
use crate::util::{self, TempPath};

/// Paths (relative to `root`) that must not go into the image.
pub fn exclusions(root: &Path) -> Vec<OsString> {
    let mut out = Vec::new();
    if root.join(".lock").is_file() {
        out.push(OsString::from(".lock"));
    }
    if let Ok(entries) = fs::read_dir(root.join("dev")) {
        for e in entries.flatten() {
            let mut p = OsString::from("dev/");
            p.push(e.file_name());
            out.push(p);
        }
    }
    walk_unused_mount_points(root, Path::new(""), &mut out);
    out
}

fn walk_unused_mount_points(root: &Path, rel: &Path, out: &mut Vec<OsString>) {
    let Ok(entries) = fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in entries.flatten() {
        let rel_child: PathBuf = rel.join(e.file_name());
        if rel_child.as_os_str().as_bytes() == b"dev" {
            continue;
        }
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        let unused = meta.permissions().mode() & 0o7777 == 0
            && !meta.file_type().is_symlink()
            && (meta.is_dir() || meta.len() == 0);
        if unused {
            out.push(rel_child.into_os_string());
        } else if meta.is_dir() {
            walk_unused_mount_points(root, &rel_child, out);
        }
    }
}

/// Run `enroot export`.
pub fn run(cfg: &Config, name: &OsStr, output: Option<&OsStr>, force: bool) -> Result<()> {
    let force = force || cfg.is_on("ENROOT_FORCE_OVERRIDE");
    if name.is_empty() {
        return Err(Error::msg("Invalid argument"));
    }
    let rootfs = util::existing_container(cfg, name)?;
    let requested = match output {
        Some(o) => PathBuf::from(o),
        None => {
            let mut n = rootfs.file_name().unwrap_or(name).to_os_string();
            n.push(".sqsh");
            PathBuf::from(n)
        }
    };
    let filename = util::realpath(&requested).map_err(|_| {
        Error::msg(format!(
            "No such file or directory: {}",
            requested.display()
        ))
    })?;
    if fs::symlink_metadata(&filename).is_ok() && !force {
        return Err(Error::msg(format!(
            "File already exists: {}",
            filename.display()
        )));
    }

    eprintln!("[INFO] Creating squashfs filesystem...");
    let temp = TempPath::new(util::sibling_temp(&filename, "export"));
    squashfs::create(cfg, &rootfs, temp.path(), &exclusions(&rootfs))?;
    fs::rename(temp.path(), &filename)
        .map_err(|e| Error::io(format!("Could not create {}", filename.display()), &e))?;
    temp.disarm();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn exclusions_cover_lock_dev_and_unused_mount_points() {
        let r = std::env::temp_dir().join(format!("enroot-double-export-{}", std::process::id()));
        let _ = util::remove_tree(&r);
        fs::create_dir_all(r.join("dev/pts")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::create_dir_all(r.join("mnt/point")).unwrap();
        fs::write(r.join(".lock"), b"").unwrap();
        fs::write(r.join("etc/hosts"), b"").unwrap();
        fs::write(r.join("etc/keep"), b"x").unwrap();
        fs::set_permissions(r.join("etc/hosts"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(r.join("mnt/point"), fs::Permissions::from_mode(0o000)).unwrap();
        let mut got = exclusions(&r);
        got.sort();
        let want: Vec<OsString> = [".lock", "dev/pts", "etc/hosts", "mnt/point"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(got, want);
        fs::set_permissions(r.join("mnt/point"), fs::Permissions::from_mode(0o755)).unwrap();
        util::remove_tree(&r).unwrap();
    }
}
