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

use std::path::PathBuf;

use super::{environment, register_options, HookResult};
use crate::core::bytes::decode_os;
use crate::core::config::parse_config;
use crate::core::hints;
use crate::error::PluginError;
use crate::spank::boundary::Rendered;
use crate::spank::{Spank, BATCH_STEP};
use crate::state::{self, Phase, State, Stepd};
use crate::step::seams::{Io, Process, Runner};
use crate::step::{Step, StepError};
use crate::sys::edf::Reader;

/// The seams of a hook: this callback's SPANK handle, the real enroot and process.
fn io<'a>(h: &'a Spank<'_>) -> Io<'a> {
    Io {
        slurm: h,
        enroot: &Runner,
        host: &Process,
    }
}

pub fn init(h: &Spank<'_>) -> HookResult {
    let config = parse_config(h.plugin_args()).map_err(PluginError::Config)?;
    state::set(State::Stepd(Box::new(Stepd {
        config,
        args: Default::default(),
        phase: Phase::Inert,
    })));
    register_options(h)
}

pub fn init_post_opt(h: &Spank<'_>) -> HookResult {
    state::stepd(|s| {
        for e in s
            .args
            .apply_env(|name| h.getenv(name).ok().flatten().map(|v| decode_os(&v)))
        {
            for line in e.log_lines() {
                error!("{line}");
            }
        }
        if let Err(e) = apply_environment(h, s) {
            s.phase = Phase::SetupFailed(Rendered::of(&e));
            return;
        }
        // sbatch_support=0 must also hold on the node: options can reach the batch step
        // through PYXIS_CONTAINER_* or _SLURM_SPANK_OPTION_pyxis_* (W23).
        if s.args.enabled() && !s.config.sbatch_support && h.step_id().ok() == Some(BATCH_STEP) {
            info!("sbatch_support=0: the batch step runs outside a container");
            return;
        }
        if !s.args.enabled() {
            for warning in s.args.ignored_option_warnings() {
                error!("{warning}");
            }
            return;
        }
        if let Some(note) = s.args.image.as_deref().and_then(hints::conversion_note) {
            debug!("{note}");
        }
        s.phase = match Step::new(h, s.config.clone(), s.args.clone()) {
            Ok(step) => Phase::Configured(step),
            Err(e) => {
                debug!("init_post_opt() failed; postponing error for now, will report later");
                Phase::SetupFailed(Rendered::of(&StepError::from(e)))
            }
        };
    });
    Ok(())
}

/// `--environment` / `PYXIS_ENVIRONMENT` (job env), read as the job user. Values that are
/// not UTF-8 are mapped, not dropped ([`crate::core::bytes`]).
fn apply_environment(h: &Spank<'_>, s: &mut Stepd) -> Result<(), PluginError> {
    let job_env_os = |name: &str| h.getenv(name).ok().flatten();
    let job_env = |name: &str| job_env_os(name).map(|v| decode_os(&v));
    let Some(name) = environment::requested(&s.args, job_env("PYXIS_ENVIRONMENT")) else {
        return Ok(());
    };
    let item = |what: &'static str| move |source| PluginError::Spank { what, source };
    let reader = Reader {
        uid: h.job_uid().map_err(item("couldn't get job uid"))?,
        gid: h.job_gid().map_err(item("couldn't get job gid"))?,
        groups: h
            .supplementary_gids()
            .map_err(item("couldn't get job supplementary gids"))?,
        home: job_env_os("HOME").map(PathBuf::from),
        admin_dir: s.config.environment_path.clone(),
        cwd: job_env_os("PWD").map(PathBuf::from),
    };
    environment::apply(&mut s.args, &name, &reader, &job_env)
}

pub fn user_init(h: &Spank<'_>) -> HookResult {
    state::stepd(|s| s.phase.prepare(io(h)));
    Ok(())
}

pub fn task_init(h: &Spank<'_>) -> HookResult {
    state::stepd(|s| s.phase.enter(io(h)))
        .unwrap_or(Ok(()))
        .map_err(PluginError::from)
}

pub fn task_exit(h: &Spank<'_>) -> HookResult {
    state::stepd(|s| s.phase.task_exited(io(h)))
        .unwrap_or(Ok(()))
        .map_err(PluginError::from)
}

pub fn exit() -> HookResult {
    if let State::Stepd(s) = state::take() {
        s.phase.close();
    }
    Ok(())
}
