//! Running squashfs-tools, the image format enroot uses.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::error::{Error, Result};

/// Whether `file` is a squashfs image (`unsquashfs -s` succeeds on it).
pub fn is_squashfs(file: &Path) -> bool {
    Command::new("unsquashfs")
        .arg("-s")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn processors(cfg: &Config) -> Option<OsString> {
    cfg.get("ENROOT_MAX_PROCESSORS")
        .filter(|p| !p.is_empty() && *p != "0")
        .map(|p| p.to_os_string())
}

/// Extract `image` into the directory `dest`, which must not exist yet.
///
/// Extended attributes are skipped: an unprivileged user cannot set most of them and the double
/// has no use for them. `tolerate_partial` accepts exit status 2 (non-fatal errors such as
/// ownership changes to ids that are not mapped in a user namespace).
pub fn extract(cfg: &Config, image: &Path, dest: &Path, tolerate_partial: bool) -> Result<()> {
    let mut cmd = Command::new("unsquashfs");
    cmd.args(["-no-progress", "-quiet", "-no-xattrs"]);
    if let Some(p) = processors(cfg) {
        cmd.arg("-processors").arg(p);
    }
    cmd.arg("-d").arg(dest).arg(image).stdin(Stdio::null());
    let output = cmd
        .output()
        .map_err(|e| Error::io("Could not run unsquashfs", &e))?;
    let code = output.status.code();
    let ok = code == Some(0) || (tolerate_partial && code == Some(2));
    if !ok {
        // unsquashfs' own diagnostics explain the failure; enroot shows them too.
        eprint!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        return Err(Error::msg(format!(
            "Failed to extract squashfs image: {}",
            image.display()
        )));
    }
    Ok(())
}

/// Pack `source` into the new file `dest` with `ENROOT_SQUASH_OPTIONS`, all files owned by root,
/// skipping the entries in `exclude` (paths relative to `source`).
pub fn create(cfg: &Config, source: &Path, dest: &Path, exclude: &[OsString]) -> Result<()> {
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(source)
        .arg(dest)
        .args(["-all-root", "-no-progress", "-noappend"]);
    if let Some(p) = processors(cfg) {
        cmd.arg("-processors").arg(p);
    }
    let options = cfg
        .get("ENROOT_SQUASH_OPTIONS")
        .map(|o| o.to_string_lossy().into_owned())
        .unwrap_or_else(|| crate::config::DEFAULT_SQUASH_OPTIONS.to_string());
    cmd.args(options.split_whitespace());
    if !exclude.is_empty() {
        cmd.arg("-e").args(exclude);
    }
    // mksquashfs reports progress on stdout; keep stdout clean like enroot (`>&2`).
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("Could not run mksquashfs", &e))?;
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        return Err(Error::msg(format!(
            "Failed to create squashfs image: {}",
            dest.display()
        )));
    }
    Ok(())
}
