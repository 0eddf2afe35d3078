//! `task_init` of every task (as the user): wait for the creator, then take the
//! container's environment, join its namespaces, change directory, install seccomp.

use tracing::error;

use super::create::create_and_start;
use super::{Plan, Step, StepError};
use crate::core::envfilter::{pytorch_remap, task_env_overrides, EnvAction, LOCALE_VARS};
use crate::spank::Spank;
use crate::sys::container;
use crate::sys::fs::{process_cwd, process_environ};
use crate::sys::ns::{ContainerNamespaces, Kernel, NsError};
use crate::sys::seccomp;
use crate::sys::shm::Setup;

impl Step {
    /// `task_init`: the first task creates and starts the container; every task then
    /// joins it. A `user_init` error is returned here (SchedMD bug 7573).
    pub fn enter(&mut self, h: &Spank<'_>) -> Result<(), StepError> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        enter_container(h, self)
    }
}

fn enter_container(h: &Spank<'_>, step: &mut Step) -> Result<(), StepError> {
    // The task environment now holds the per-task and MPI variables Slurm added.
    let task_env = h.job_env().map_err(|source| StepError::JobItem {
        item: "environment",
        source,
    })?;
    let shm = step.shm.as_ref().ok_or(StepError::NotStarted)?;
    let helper = {
        let mut lock = shm.lock()?;
        if lock.enter() {
            match create_and_start(step, &task_env) {
                Ok(helper) => lock.publish(Setup::Ready { helper }),
                Err(e) => {
                    lock.publish(Setup::Failed);
                    return Err(e);
                }
            }
        }
        match lock.setup() {
            Setup::Ready { helper } => helper,
            _ => return Err(StepError::NotStarted),
        }
    };
    // A running named container was pinned in user_init; otherwise the helper's are ours.
    let opened;
    let ns = match &step.plan {
        Some(Plan::Attach(pinned)) => pinned,
        _ => {
            opened = ContainerNamespaces::open(helper, step.args.unshare).map_err(|e| match e {
                // We asked enroot for the namespace (ENROOT_UNSHARE_*) and it did not
                // create one: it predates the feature (4.1.2 ignores the variables), W22.
                NsError::NotUnshared(opt, _) => StepError::EnrootTooOld(opt),
                e => StepError::Namespaces(e),
            })?;
            &opened
        }
    };
    let cwd = process_cwd(helper)?;
    let container_env = process_environ(helper)?;
    apply_environment(h, step, &task_env, &container_env)?;
    ns.join(&mut Kernel).map_err(StepError::Join)?;
    let dir = step.args.workdir.clone().unwrap_or(cwd);
    std::env::set_current_dir(&dir).map_err(|source| StepError::Chdir { dir, source })?;
    if !ns.privileged() {
        seccomp::install()?;
    }
    // The last task lets the helper exit, except when it holds a squashfuse mount.
    if shm.lock()?.started() >= step.job.local_tasks && !step.direct {
        if let Err(e) = container::release(helper) {
            error!("couldn't send SIGCONT to container process: {e}");
        }
    }
    Ok(())
}

/// The per-task environment: the container's variables over the task's, pyxis §5.13.
fn apply_environment(
    h: &Spank<'_>,
    step: &Step,
    task_env: &[String],
    container_env: &[(String, String)],
) -> Result<(), StepError> {
    let names = &step.args.env_names;
    for var in LOCALE_VARS
        .iter()
        .filter(|v| !names.iter().any(|n| n == *v))
    {
        h.unsetenv(var).map_err(|source| StepError::SetEnv {
            name: (*var).to_owned(),
            source,
        })?;
    }
    let task = pairs(task_env);
    let snapshot = pairs(&step.job_env);
    for action in task_env_overrides(container_env, &task, &snapshot, names) {
        let (name, value, overwrite) = match &action {
            EnvAction::Set { name, value } => (name, value, true),
            EnvAction::SetIfAbsent { name, value } => (name, value, false),
        };
        h.setenv(name, value, overwrite)
            .map_err(|source| StepError::SetEnv {
                name: name.clone(),
                source,
            })?;
    }
    let updated = h.job_env().map_err(|source| StepError::JobItem {
        item: "environment",
        source,
    })?;
    for (name, value) in pytorch_remap(&pairs(&updated)) {
        h.setenv(&name, &value, true)
            .map_err(|source| StepError::SetEnv { name, source })?;
    }
    Ok(())
}

pub(super) fn pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
