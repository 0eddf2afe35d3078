//! The plugin's per-process state, one typed owner per Slurm context.
//!
//! Each Slurm process loads its own copy of the plugin; tasks inherit a copy-on-write
//! snapshot of slurmstepd's at fork time, so what a task changes is invisible to
//! slurmstepd and the other tasks (that is what `sys::shm` is for). The plugin starts no
//! threads; the mutex only gives the static a safe interior.

use std::sync::{Mutex, PoisonError};

use crate::core::args::Args;
use crate::core::config::Config;
use crate::spank::boundary::Rendered;
use crate::step::seams::Io;
use crate::step::{Prepared, Step, StepError};

/// What one process holds.
#[derive(Default)]
pub enum State {
    #[default]
    Empty,
    /// srun, sbatch, salloc.
    Client(Box<Client>),
    /// slurmstepd, and each task process it forks.
    Stepd(Box<Stepd>),
}

/// srun, sbatch, salloc: the options as the user gave them.
#[derive(Default)]
pub struct Client {
    /// sbatch/salloc only (srun does not parse the plugstack arguments).
    pub config: Option<Config>,
    pub args: Args,
}

/// slurmstepd: the configuration, the options Slurm replayed, and the step.
pub struct Stepd {
    pub config: Config,
    pub args: Args,
    pub phase: Phase,
}

/// Where the step is.
#[derive(Default)]
pub enum Phase {
    /// Options are being delivered (`init` until `init_post_opt`), or the step has no
    /// container options: the plugin stays out of its way.
    #[default]
    Inert,
    /// `init_post_opt` failed. Failing `init_post_opt` fails the launch, which can
    /// drain the node, so every task reports the error instead.
    SetupFailed(Rendered),
    /// After `init_post_opt`.
    Configured(Step),
    /// After `user_init`.
    Ready(Box<Prepared>),
    /// `user_init` failed; Slurm ignores that (SchedMD bug 7573), so every task reports
    /// it, and `task_exit` still cleans up.
    PrepareFailed { step: Step, error: Rendered },
}

impl Phase {
    /// `user_init`.
    pub fn prepare(&mut self, io: Io<'_>) {
        *self = match std::mem::take(self) {
            Phase::Configured(step) => match step.prepare(io) {
                Ok(prepared) => Phase::Ready(Box::new(prepared)),
                Err(failed) => {
                    let (step, e) = *failed;
                    tracing::debug!(
                        "user_init() failed with rc=-1; postponing error for now, will report later"
                    );
                    Phase::PrepareFailed {
                        step,
                        error: Rendered::of(&StepError::from(e)),
                    }
                }
            },
            other => other,
        };
    }

    /// `task_init` (in the task's own copy of the state).
    pub fn enter(&mut self, io: Io<'_>) -> Result<(), StepError> {
        match self {
            Phase::Inert | Phase::Configured(_) => Ok(()),
            Phase::SetupFailed(e) | Phase::PrepareFailed { error: e, .. } => {
                Err(StepError::Deferred(e.clone()))
            }
            Phase::Ready(prepared) => prepared.enter(io).map_err(StepError::from),
        }
    }

    /// `task_exit` (slurmstepd).
    pub fn task_exited(&mut self, io: Io<'_>) -> Result<(), StepError> {
        match self {
            Phase::Ready(prepared) => prepared.task_exited(io).map_err(StepError::from),
            Phase::PrepareFailed { step, .. } => {
                step.task_exited_unprepared(io);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `exit` (slurmstepd).
    pub fn close(self) {
        if let Phase::Ready(prepared) = self {
            prepared.close();
        }
    }
}

static STATE: Mutex<State> = Mutex::new(State::Empty);

/// Runs `f` on the state. A panic caught by the boundary while the lock was held leaves
/// the state as it was; it is used as is rather than refusing every later callback.
fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    f(&mut STATE.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Replaces the state (each context's `init`).
pub fn set(state: State) {
    with(|s| *s = state);
}

/// The client state (srun, sbatch, salloc), created on first use.
pub fn client<R>(f: impl FnOnce(&mut Client) -> R) -> R {
    with(|s| {
        if !matches!(s, State::Client(_)) {
            *s = State::Client(Box::default());
        }
        match s {
            State::Client(c) => f(c),
            _ => f(&mut Client::default()),
        }
    })
}

/// The slurmstepd state; `None` before `init` set it up.
pub fn stepd<R>(f: impl FnOnce(&mut Stepd) -> R) -> Option<R> {
    with(|s| match s {
        State::Stepd(d) => Some(f(d)),
        _ => None,
    })
}

/// The options being filled, in whichever context (the option callback).
pub fn args<R>(f: impl FnOnce(&mut Args) -> R) -> R {
    with(|s| match s {
        State::Stepd(d) => f(&mut d.args),
        State::Client(c) => f(&mut c.args),
        State::Empty => {
            let mut c = Box::<Client>::default();
            let r = f(&mut c.args);
            *s = State::Client(c);
            r
        }
    })
}

/// Drops everything (the `exit` callback).
pub fn take() -> State {
    with(std::mem::take)
}
