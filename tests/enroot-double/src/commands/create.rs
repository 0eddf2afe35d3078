//! `enroot create [-n NAME] [-f] IMAGE`: unpack a squashfs image into `$ENROOT_DATA_PATH/NAME`.
//!
//! The image is extracted into a hidden temporary directory of the data path and renamed into
//! place, so a failed or interrupted create leaves no half-populated container behind and `list`
//! never shows one.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{renameat2, RenameFlags};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::squashfs;
use crate::util::{self, TempPath};

/// The default container name: the image file name without a `.sqsh` suffix.
pub fn default_name(image: &Path) -> OsString {
    let name = image.file_name().unwrap_or(image.as_os_str()).as_bytes();
    let name = name.strip_suffix(b".sqsh").unwrap_or(name);
    OsStr::from_bytes(name).to_os_string()
}

/// Run `enroot create`.
pub fn run(cfg: &Config, image: &OsStr, name: Option<&OsStr>, force: bool) -> Result<()> {
    let force = force || cfg.is_on("ENROOT_FORCE_OVERRIDE");
    if image.is_empty() {
        return Err(Error::msg("Invalid argument"));
    }
    let image = util::realpath(Path::new(image)).map_err(|_| {
        Error::msg(format!(
            "No such file or directory: {}",
            image.to_string_lossy()
        ))
    })?;
    if !image.is_file() {
        return Err(Error::msg(format!(
            "No such file or directory: {}",
            image.display()
        )));
    }
    if !squashfs::is_squashfs(&image) {
        return Err(Error::msg(format!(
            "Invalid image format: {}",
            image.display()
        )));
    }
    let name = name.map_or_else(|| default_name(&image), OsStr::to_os_string);
    if !util::valid_name(&name) || name.is_empty() {
        return Err(Error::msg(format!(
            "Invalid argument: {}",
            name.to_string_lossy()
        )));
    }
    let joined = cfg.path("ENROOT_DATA_PATH").join(&name);
    let rootfs = util::realpath(&joined)
        .map_err(|_| Error::msg(format!("No such file or directory: {}", joined.display())))?;
    let exists = std::fs::symlink_metadata(&rootfs).is_ok();
    if exists && !force {
        return Err(Error::msg(format!(
            "File already exists: {}",
            rootfs.display()
        )));
    }

    eprintln!("[INFO] Extracting squashfs filesystem...");
    let temp = TempPath::new(util::sibling_temp(&rootfs, "create"));
    squashfs::extract(cfg, &image, temp.path(), false)?;
    util::fix_permissions(temp.path());
    if exists {
        util::remove_tree(&rootfs)
            .map_err(|e| Error::io(format!("Could not remove {}", rootfs.display()), &e))?;
    }
    // RENAME_NOREPLACE: a concurrent create of the same name must fail, not merge.
    match renameat2(
        None,
        temp.path(),
        None,
        &rootfs,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => {
            return Err(Error::msg(format!(
                "File already exists: {}",
                rootfs.display()
            )));
        }
        Err(e) => {
            return Err(Error::errno(
                format!("Could not create {}", rootfs.display()),
                e,
            ))
        }
    }
    temp.disarm();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(
            default_name(Path::new("/a/ubuntu.sqsh")),
            OsString::from("ubuntu")
        );
        assert_eq!(
            default_name(Path::new("/a/ubuntu.squashfs")),
            OsString::from("ubuntu.squashfs")
        );
        assert_eq!(
            default_name(Path::new("x.sqsh.sqsh")),
            OsString::from("x.sqsh")
        );
    }
}
