//! `task_init` of every task (as the user): wait for the creator, then take the
//! container's environment, join its namespaces, change directory, install seccomp.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use tracing::error;

use super::seams::Io;
use super::{JoinError, Prepared};
use crate::core::envfilter::{
    pytorch_remap, split_entries, task_env_overrides, EnvAction, LOCALE_VARS,
};
use crate::sys::ns::{ContainerNamespaces, NsError};
use crate::sys::shm::{NsRef, Setup};

impl Prepared {
    /// `task_init`: the first task creates and starts the container; every task then
    /// joins it.
    pub fn enter(&mut self, io: Io<'_>) -> Result<(), JoinError> {
        // The task environment now holds the per-task and MPI variables Slurm added.
        let task_env = io.slurm.job_env().map_err(|source| JoinError::JobItem {
            item: "environment",
            source,
        })?;
        let mut late = None;
        let setup = {
            let mut lock = self.shm.lock(self.step.setup_bound())?;
            if lock.enter() {
                match self.create_and_start(io, &task_env) {
                    Ok(started) => {
                        let ns = started.attached.as_ref().map(|(pid, ns)| NsRef {
                            pid: *pid,
                            mount: ns.mount_id(),
                        });
                        lock.publish(Setup::Ready {
                            helper: started.helper,
                            ns,
                        });
                        late = started.attached.map(|(_, ns)| ns);
                    }
                    Err(e) => {
                        lock.publish(Setup::Failed);
                        return Err(e.into());
                    }
                }
            }
            lock.setup()
        };
        let Setup::Ready { helper, ns } = setup else {
            return Err(JoinError::NotStarted);
        };
        let opened;
        let namespaces = match (&self.pinned, &late, ns) {
            // A running container pinned in user_init (W1) or by the creator.
            (Some(pinned), _, _) | (None, Some(pinned), _) => pinned,
            // Pinned by the creator: the same container, proven by its mount namespace.
            (None, None, Some(reference)) => {
                opened = self.open_attached(io, reference)?;
                &opened
            }
            (None, None, None) => {
                opened = io
                    .host
                    .open_namespaces(helper, self.step.args.unshare)
                    .map_err(|e| match e {
                        // We asked enroot for the namespace (ENROOT_UNSHARE_*) and it did
                        // not create one: it predates the feature (4.1.2 ignores the
                        // variables), W22.
                        NsError::NotUnshared(opt, _) => JoinError::EnrootTooOld(opt),
                        e => JoinError::Namespaces(e),
                    })?;
                &opened
            }
        };
        let cwd = io.host.helper_cwd(helper)?;
        let container_env = io.host.helper_environ(helper)?;
        self.apply_environment(io, &task_env, &container_env)?;
        io.host.join(namespaces).map_err(JoinError::Join)?;
        let dir = match &self.step.args.workdir {
            Some(w) => crate::core::bytes::to_os(w),
            None => cwd,
        };
        io.host
            .chdir(Path::new(&dir))
            .map_err(|source| JoinError::Chdir {
                dir: crate::core::bytes::decode_os(&dir),
                source,
            })?;
        if !namespaces.privileged() {
            io.host.install_seccomp()?;
        }
        // The last task lets the helper exit, except when it holds a squashfuse mount.
        let joined = self.shm.lock(self.step.setup_bound())?.started();
        if joined >= self.step.job.local_tasks && !self.plan.helper_lives_with_step() {
            if let Err(e) = io.host.release(helper) {
                error!("couldn't send SIGCONT to container process: {e}");
            }
        }
        Ok(())
    }

    fn open_attached(&self, io: Io<'_>, r: NsRef) -> Result<ContainerNamespaces, JoinError> {
        let ns = io
            .host
            .open_namespaces(r.pid, self.step.args.unshare)
            .map_err(JoinError::Namespaces)?;
        if ns.mount_id() != r.mount {
            return Err(JoinError::AttachRace(self.plan.name.clone()));
        }
        Ok(ns)
    }

    /// The per-task environment: the container's variables over the task's, pyxis §5.13.
    fn apply_environment(
        &self,
        io: Io<'_>,
        task_env: &[OsString],
        container_env: &[(OsString, OsString)],
    ) -> Result<(), JoinError> {
        let names = &self.step.args.env_names;
        for var in LOCALE_VARS
            .iter()
            .filter(|v| !names.iter().any(|n| n == *v))
        {
            io.slurm.unsetenv(var).map_err(|source| JoinError::SetEnv {
                name: (*var).to_owned(),
                source,
            })?;
        }
        let task = split_entries(task_env);
        let snapshot = split_entries(&self.job_env);
        for action in task_env_overrides(container_env, &task, &snapshot, names) {
            let (name, value, overwrite) = match &action {
                EnvAction::Set { name, value } => (name, value, true),
                EnvAction::SetIfAbsent { name, value } => (name, value, false),
            };
            set(io, name, value, overwrite)?;
        }
        let updated = io.slurm.job_env().map_err(|source| JoinError::JobItem {
            item: "environment",
            source,
        })?;
        for (name, value) in pytorch_remap(&split_entries(&updated)) {
            set(io, &name, &value, true)?;
        }
        Ok(())
    }
}

fn set(io: Io<'_>, name: &OsStr, value: &OsStr, overwrite: bool) -> Result<(), JoinError> {
    io.slurm
        .setenv(name, value, overwrite)
        .map(drop)
        .map_err(|source| JoinError::SetEnv {
            name: name.to_string_lossy().into_owned(),
            source,
        })
}
