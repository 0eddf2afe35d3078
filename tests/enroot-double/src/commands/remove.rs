//! `enroot remove [-f] NAME...`: delete container root filesystems.

use std::ffi::OsStr;
use std::io::{BufRead, IsTerminal, Write};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::util;

/// Ask on the terminal like enroot; end of input leaves with status 1 (enroot's `read` under
/// `set -e`), anything but `y`/`Y` keeps the container.
fn confirm(path: &std::path::Path) -> Result<bool> {
    // bash's `read -p` only shows the prompt when reading from a terminal.
    if std::io::stdin().is_terminal() {
        eprint!("Do you really want to delete {}? [y/N] ", path.display());
        let _ = std::io::stderr().flush();
    }
    let mut answer = String::new();
    match std::io::stdin().lock().read_line(&mut answer) {
        Ok(0) | Err(_) => Err(Error::Exit(1)),
        Ok(_) => Ok(matches!(answer.trim_end_matches('\n'), "y" | "Y")),
    }
}

/// Run `enroot remove`.
pub fn run(cfg: &Config, names: &[std::ffi::OsString], force: bool) -> Result<()> {
    let force = force || cfg.is_on("ENROOT_FORCE_OVERRIDE");
    for name in names {
        remove_one(cfg, name, force)?;
    }
    Ok(())
}

fn remove_one(cfg: &Config, name: &OsStr, force: bool) -> Result<()> {
    if name.is_empty() {
        return Err(Error::msg("Invalid argument"));
    }
    let rootfs = util::existing_container(cfg, name)?;
    if force || confirm(&rootfs)? {
        util::remove_tree(&rootfs)
            .map_err(|e| Error::io(format!("Could not remove {}", rootfs.display()), &e))?;
    }
    Ok(())
}
