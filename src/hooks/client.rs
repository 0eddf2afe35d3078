//! srun (local context) and sbatch/salloc (allocator context): register the options,
//! apply `PYXIS_CONTAINER_*` defaults, warn about options that have no effect. Nothing
//! runs on the submission host.

use tracing::{debug, error};

use std::path::PathBuf;

use super::{environment, register_options, HookResult};
use crate::core::bytes::decode_os;
use crate::core::config::parse_config;
use crate::core::hints;
use crate::error::PluginError;
use crate::spank::Spank;
use crate::state;
use crate::sys::edf::Reader;

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

pub fn init_post_opt(h: &Spank<'_>) -> HookResult {
    state::client(|c| {
        // Values that are not UTF-8 are mapped, not dropped (crate::core::bytes).
        let env = |name: &str| std::env::var_os(name).map(|v| decode_os(&v));
        for e in c.args.apply_env(env) {
            for line in e.log_lines() {
                error!("{line}");
            }
        }
        if let Some(name) = environment::requested(&c.args, env("PYXIS_ENVIRONMENT")) {
            let admin_dir = match &c.config {
                Some(config) => config.environment_path.clone(),
                None => environment::admin_dir_of(h.plugin_args()),
            };
            let reader = Reader {
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                groups: Vec::new(),
                home: std::env::var_os("HOME").map(PathBuf::from),
                admin_dir,
                cwd: std::env::current_dir().ok(),
            };
            environment::apply(&mut c.args, &name, &reader, &env)?;
        }
        if let Some(note) = c.args.image.as_deref().and_then(hints::conversion_note) {
            debug!("{note}");
        }
        for warning in c.args.ignored_option_warnings() {
            error!("{warning}");
        }
        Ok(())
    })
}
