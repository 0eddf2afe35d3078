//! srun (local context) and sbatch/salloc (allocator context): register the options,
//! apply `PYXIS_CONTAINER_*` defaults, warn about options that have no effect. Nothing
//! runs on the submission host.

use tracing::{debug, error};

use super::{register_options, HookResult};
use crate::core::config::parse_config;
use crate::core::hints;
use crate::error::PluginError;
use crate::spank::Spank;
use crate::state;

/// `allocator`: sbatch/salloc, where `sbatch_support=0` disables the options.
///
/// srun does not parse the plugstack arguments, exactly as pyxis: a site whose compute
/// nodes reject a key must still be able to run `srun` without containers.
pub fn init(h: &Spank<'_>, allocator: bool) -> HookResult {
    if allocator {
        let config = parse_config(h.plugin_args()).map_err(PluginError::Config)?;
        let enabled = config.sbatch_support;
        state::client(|c| c.config = Some(config));
        if !enabled {
            return Ok(());
        }
    }
    register_options(h)
}

pub fn init_post_opt() -> HookResult {
    state::client(|c| {
        for e in c.args.apply_env(|name| std::env::var(name).ok()) {
            for line in e.log_lines() {
                error!("{line}");
            }
        }
        if let Some(note) = c.args.image.as_deref().and_then(hints::conversion_note) {
            debug!("{note}");
        }
        for warning in c.args.ignored_option_warnings() {
            error!("{warning}");
        }
    });
    Ok(())
}
