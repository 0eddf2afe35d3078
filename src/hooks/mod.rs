//! The SPANK callbacks, dispatched by the context of the process that loaded us.
//!
//! | context | process | file |
//! |---|---|---|
//! | local | srun | `client.rs` |
//! | allocator | sbatch, salloc | `client.rs` |
//! | slurmd | slurmd | `slurmd.rs` |
//! | job script | the job epilog | `epilog.rs` |
//! | remote | slurmstepd and its tasks | `stepd.rs` |

mod client;
mod environment;
mod epilog;
mod slurmd;
pub mod stepd;

use crate::core::args::OptionId;
use crate::error::PluginError;
use crate::spank::{Context, Spank};
use crate::state;

type HookResult = Result<(), PluginError>;

pub fn init(h: &Spank<'_>) -> HookResult {
    match Context::current() {
        Context::Local => client::init(h, false),
        Context::Allocator => client::init(h, true),
        Context::Slurmd => slurmd::init(h),
        Context::Remote => stepd::init(h),
        _ => Ok(()),
    }
}

pub fn init_post_opt(h: &Spank<'_>) -> HookResult {
    match Context::current() {
        Context::Local | Context::Allocator => client::init_post_opt(h),
        Context::Remote => stepd::init_post_opt(h),
        _ => Ok(()),
    }
}

pub fn user_init(h: &Spank<'_>) -> HookResult {
    match Context::current() {
        Context::Remote => stepd::user_init(h),
        _ => Ok(()),
    }
}

pub fn task_init(h: &Spank<'_>) -> HookResult {
    match Context::current() {
        Context::Remote => stepd::task_init(h),
        _ => Ok(()),
    }
}

pub fn task_exit(h: &Spank<'_>) -> HookResult {
    match Context::current() {
        Context::Remote => stepd::task_exit(h),
        _ => Ok(()),
    }
}

pub fn exit(_: &Spank<'_>) -> HookResult {
    match Context::current() {
        Context::Remote => stepd::exit(),
        _ => {
            state::take();
            Ok(())
        }
    }
}

pub fn slurmd_exit(_: &Spank<'_>) -> HookResult {
    Ok(())
}

pub fn job_epilog(h: &Spank<'_>) -> HookResult {
    epilog::job_epilog(h)
}

/// Every `--container-*` option, in srun/sbatch/salloc and again in slurmstepd (where
/// Slurm replays the forwarded arguments).
pub fn option(val: i32, arg: Option<&str>, _remote: bool) -> HookResult {
    let id = OptionId::from_index(val).ok_or(PluginError::UnknownOption(val))?;
    state::args(|a| a.apply(id, arg)).map_err(PluginError::from)
}

/// Registers the options with Slurm.
fn register_options(h: &Spank<'_>) -> HookResult {
    crate::spank::options::register_all(h, crate::option_callback).map_err(PluginError::Register)
}
