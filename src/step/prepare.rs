//! `user_init` (slurmstepd, euid = user): the container plan, decided once per step and
//! node before the tasks fork, and the state the tasks share.

use std::ffi::OsString;

use tracing::info;

use super::seams::Io;
use super::{PrepareError, Prepared, Step};
use crate::core::list::{find_container, ContainerState};
use crate::core::plan::{decide, ContainerPlan, Facts, Rootfs};
use crate::spank::log::USER;
use crate::spank::BATCH_STEP;
use crate::sys::ns::ContainerNamespaces;
use crate::sys::shm::SharedStep;

impl Step {
    /// `user_init`. On failure the step is handed back with the error: Slurm ignores a
    /// failing `user_init` (SchedMD bug 7573), so every task reports it instead, and
    /// `task_exit` still cleans up.
    pub fn prepare(self, io: Io<'_>) -> Result<Prepared, Box<(Step, PrepareError)>> {
        match prepare(&self, io) {
            Ok((plan, shm, job_env, pinned, batch_script)) => Ok(Prepared {
                step: self,
                plan,
                shm,
                job_env,
                pinned,
                batch_script,
            }),
            Err(e) => Err(Box::new((self, e))),
        }
    }
}

type Ready = (
    ContainerPlan,
    SharedStep,
    Vec<OsString>,
    Option<ContainerNamespaces>,
    Option<String>,
);

fn prepare(step: &Step, io: Io<'_>) -> Result<Ready, PrepareError> {
    let shm = SharedStep::create()?;
    let job_env = io.slurm.job_env().map_err(|source| PrepareError::JobItem {
        item: "environment",
        source,
    })?;
    let batch_script = if step.job.step.0 == BATCH_STEP {
        let argv = io
            .slurm
            .job_argv()
            .map_err(|source| PrepareError::JobItem {
                item: "argv",
                source,
            })?;
        let script = argv.first().ok_or(PrepareError::NoBatchScript)?;
        Some(script.to_string_lossy().into_owned())
    } else {
        None
    };
    let plan = step.plan(io, &job_env, batch_script.as_deref())?;
    let pinned = match plan.rootfs {
        Rootfs::Attach { pid } => Some(pin_running(step, io, &job_env, &plan.name, pid)?),
        _ => None,
    };
    Ok((plan, shm, job_env, pinned, batch_script))
}

impl Step {
    /// Looks the named container up and decides; tells the user what the plan means.
    /// Also called by the creator task under the name lock, when the facts may have
    /// changed.
    pub(super) fn plan(
        &self,
        io: Io<'_>,
        job_env: &[OsString],
        batch_script: Option<&str>,
    ) -> Result<ContainerPlan, PrepareError> {
        let existing = match &self.args.name {
            Some(_) => {
                let name = self.container_name();
                self.lookup(io, job_env, &name)?
            }
            None => ContainerState::Absent,
        };
        let plan = decide(&Facts {
            args: &self.args,
            config: &self.config,
            job: self.job.job,
            step: self.job.step,
            node_id: self.job.node_id,
            batch_script,
            existing,
        })?;
        match plan.rootfs {
            Rootfs::Attach { .. } => info!("reusing existing container namespaces"),
            Rootfs::Reuse => info!("reusing existing container filesystem"),
            _ => {}
        }
        for notice in &plan.notices {
            tracing::error!(target: USER, "{}", notice.text());
        }
        Ok(plan)
    }

    fn container_name(&self) -> String {
        crate::core::naming::container_name(
            self.config.container_scope,
            self.job.job,
            self.args.name.as_ref().map(|n| n.name.as_str()),
            self.job.step,
        )
    }

    /// `enroot list -f` → the state of one container.
    pub(super) fn lookup(
        &self,
        io: Io<'_>,
        job_env: &[OsString],
        name: &str,
    ) -> Result<ContainerState, PrepareError> {
        let out = io
            .enroot
            .run(
                &self.enroot(&["list", "-f"], job_env),
                &self.user(),
                &mut self.short(),
            )
            .map_err(PrepareError::List)?;
        Ok(find_container(&out, name)?)
    }
}

/// Opens the namespaces of a running container and proves they are its (W1): the pid
/// `enroot list -f` named must still be listed for the container after the namespace
/// files were opened, so a container that exited or a recycled pid is never joined.
pub(super) fn pin_running(
    step: &Step,
    io: Io<'_>,
    job_env: &[OsString],
    name: &str,
    mut pid: u32,
) -> Result<ContainerNamespaces, PrepareError> {
    for _ in 0..3 {
        let ns = io
            .host
            .open_namespaces(pid, step.args.unshare)
            .map_err(PrepareError::Namespaces)?;
        match step.lookup(io, job_env, name)? {
            ContainerState::Running(now) if now == pid => return Ok(ns),
            ContainerState::Running(now) => pid = now,
            _ => break,
        }
    }
    Err(PrepareError::AttachRace(name.to_owned()))
}
