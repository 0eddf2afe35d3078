//! slurmstepd (remote context): where a step enters its container.
//!
//! | callback | process | what |
//! |---|---|---|
//! | `init` | slurmstepd, root | parse the plugstack arguments, register the options |
//! | option callbacks | slurmstepd, root | Slurm replays the arguments srun/sbatch forwarded |
//! | `init_post_opt` | slurmstepd, root | `PYXIS_CONTAINER_*`, job info, the user's runtime dir |
//! | `user_init` | slurmstepd, euid = user | shared state, container lookup and plan |
//! | `task_init` | each forked task, the user | first task creates+starts, every task joins |
//! | `task_exit` | slurmstepd, root | the last one exports and removes |
//! | `exit` | slurmstepd, root | free the shared state |
//!
//! Errors in `init_post_opt` and `user_init` are kept and returned from `task_init`: a
//! failing `init_post_opt` fails the launch (Slurm may drain the node for it), and Slurm
//! ignores a failing `user_init` (SchedMD bug 7573), so the step would otherwise run
//! outside the container.

use tracing::{debug, error, info};

use super::{register_options, HookResult};
use crate::core::config::parse_config;
use crate::error::PluginError;
use crate::spank::Spank;
use crate::state;
use crate::step::{Step, BATCH_STEP};

pub fn init(h: &Spank<'_>) -> HookResult {
    let config = parse_config(h.plugin_args()).map_err(PluginError::Config)?;
    state::with(|s| s.config = Some(config));
    register_options(h)
}

pub fn init_post_opt(h: &Spank<'_>) -> HookResult {
    state::with(|s| {
        for e in s.args.apply_env(|name| h.getenv(name).ok().flatten()) {
            error!("{e}");
        }
        let config = s.config.clone().unwrap_or_default();
        // sbatch_support=0 must also hold on the node: options can reach the batch step
        // through PYXIS_CONTAINER_* or _SLURM_SPANK_OPTION_pyxis_* (W23).
        if s.args.enabled() && !config.sbatch_support && h.step_id().ok() == Some(BATCH_STEP) {
            info!("sbatch_support=0: the batch step runs outside a container");
            return Ok(());
        }
        if !s.args.enabled() {
            for warning in s.args.ignored_option_warnings() {
                error!("{warning}");
            }
            return Ok(());
        }
        match Step::new(h, config, s.args.clone()) {
            Ok(step) => s.step = Some(step),
            Err(e) => {
                debug!("init_post_opt() failed; postponing error for now, will report later");
                s.failed_setup = Some(e);
            }
        }
        Ok(())
    })
}

pub fn user_init(h: &Spank<'_>) -> HookResult {
    state::with(|s| {
        if let Some(step) = s.step.as_mut() {
            // Slurm ignores a failing user_init (SchedMD bug 7573): keep the error and
            // fail every task with it instead.
            if let Err(e) = step.prepare(h) {
                debug!(
                    "user_init() failed with rc=-1; postponing error for now, will report later"
                );
                step.defer(e);
            }
        }
        Ok(())
    })
}

pub fn task_init(h: &Spank<'_>) -> HookResult {
    state::with(|s| {
        if let Some(e) = s.failed_setup.take() {
            return Err(e.into());
        }
        match s.step.as_mut() {
            Some(step) => step.enter(h).map_err(PluginError::from),
            None => Ok(()),
        }
    })
}

pub fn task_exit(_: &Spank<'_>) -> HookResult {
    state::with(|s| match s.step.as_mut() {
        Some(step) => step.task_exited().map_err(PluginError::from),
        None => Ok(()),
    })
}

pub fn exit() -> HookResult {
    if let Some(step) = state::take().and_then(|s| s.step) {
        step.close();
    }
    Ok(())
}
