//! slurmd: announce the version and create `runtime_path`, the parent of every user's
//! private runtime directory.

use tracing::info;

use super::HookResult;
use crate::core::config::parse_config;
use crate::error::PluginError;
use crate::spank::Spank;
use crate::sys::fs::ensure_runtime_root;

pub fn init(h: &Spank<'_>) -> HookResult {
    info!(
        "version v{} (pyxis-rs {})",
        crate::step::PYXIS_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    let config = parse_config(h.plugin_args()).map_err(PluginError::Config)?;
    ensure_runtime_root(&config.runtime_path).map_err(PluginError::Slurmd)
}
