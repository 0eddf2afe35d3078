//! The plugin's per-process state.
//!
//! Each Slurm process loads its own copy of the plugin; tasks inherit a copy-on-write
//! snapshot of slurmstepd's at fork time, so what a task changes is invisible to
//! slurmstepd and the other tasks (that is what `sys::shm` is for). The plugin starts no
//! threads; the mutex only gives the static a safe interior.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::core::args::Args;
use crate::core::config::Config;
use crate::step::Step;

#[derive(Default)]
pub struct State {
    pub config: Option<Config>,
    pub args: Args,
    /// Remote only, from `init_post_opt` of a containerised step.
    pub step: Option<Step>,
    /// Remote only: why `init_post_opt` could not set the step up, reported by every
    /// task instead (failing `init_post_opt` fails the launch, which drains the node).
    pub failed_setup: Option<crate::step::StepError>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Runs `f` on the state. A panic caught by the boundary while the lock was held leaves
/// the state as it was; it is used as is rather than refusing every later callback.
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard: MutexGuard<'_, Option<State>> =
        STATE.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(State::default))
}

/// Drops everything (the `exit` callback).
pub fn take() -> Option<State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner).take()
}
