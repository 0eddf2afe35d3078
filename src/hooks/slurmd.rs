//! slurmd (root): announce the version and create `runtime_path` (with its root-only
//! `jobs` directory of job markers) and `image_cache_path`, the parents of every user's
//! private directories.
//!
//! A `runtime_path` that cannot be created fails slurmd's start, as in pyxis (an admin
//! error). One that exists but could be changed by someone other than root is only
//! logged: a user may have made it (e.g. under /tmp before slurmd started), and a user
//! must not be able to stop slurmd; every containerised step then fails with the same
//! message instead. A missing or untrusted image cache only disables the cache.

use tracing::{error, info};

use super::HookResult;
use crate::core::config::parse_config;
use crate::core::marker::JOBS_DIR;
use crate::error::PluginError;
use crate::spank::Spank;
use crate::sys::dirs::{Dir, DirError};

pub fn init(h: &Spank<'_>) -> HookResult {
    info!(
        "version v{} (pyxis-rs {})",
        crate::step::PYXIS_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    let config = parse_config(h.plugin_args()).map_err(PluginError::Config)?;
    match Dir::ensure_trusted(&config.runtime_path, 0o755, 0)
        .and_then(|rt| rt.private_subdir(JOBS_DIR, 0))
    {
        Ok(_) => {}
        Err(e @ DirError::Io { .. }) => return Err(PluginError::Slurmd(e)),
        Err(e) => error!("slurmd: {e}"),
    }
    if let Some(cache) = config.image_cache() {
        if let Err(e) = Dir::ensure_trusted(cache, 0o755, 0) {
            error!("slurmd: image cache disabled: {e}");
        }
    }
    Ok(())
}
