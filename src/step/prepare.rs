//! `user_init` (slurmstepd, euid = user): the container plan, decided once per step and
//! node before the tasks fork.

use tracing::info;

use super::{Plan, Step, StepError, BATCH_STEP};
use crate::core::list::{find_container, ContainerState};
use crate::core::mount::{add_unique, batch_script_mount};
use crate::core::naming::container_name;
use crate::core::plan::{decide_named, Decision};
use crate::spank::log::USER;
use crate::spank::Spank;
use crate::sys::ns::ContainerNamespaces;
use crate::sys::runner;
use crate::sys::shm::SharedStep;

impl Step {
    /// `user_init`: everything decided once per step and node, before the tasks fork.
    pub fn prepare(&mut self, h: &Spank<'_>) -> Result<(), StepError> {
        prepare(h, self)
    }
}

fn prepare(h: &Spank<'_>, step: &mut Step) -> Result<(), StepError> {
    step.shm = Some(SharedStep::create()?);
    step.job_env = h.job_env().map_err(|source| StepError::JobItem {
        item: "environment",
        source,
    })?;
    if step.job.step.0 == BATCH_STEP {
        let argv = h.job_argv().map_err(|source| StepError::JobItem {
            item: "argv",
            source,
        })?;
        let script = argv.first().ok_or(StepError::NoBatchScript)?;
        add_unique(&mut step.args.mounts, batch_script_mount(script));
    }
    let scope = step.config.container_scope;
    let (job, stepid) = (step.job.job, step.job.step);
    let plan = match step.args.name.clone() {
        Some(cn) => {
            step.named = true;
            step.name = container_name(scope, job, Some(&cn.name), stepid);
            let found = lookup(step, &step.name)?;
            match decide_named(cn.flag, found, step.args.image.is_some(), &step.name)? {
                Decision::Attach(pid) => {
                    info!("reusing existing container namespaces");
                    Plan::Attach(pin_running(step, pid)?)
                }
                Decision::ReuseRootfs => {
                    info!("reusing existing container filesystem");
                    Plan::ReuseRootfs
                }
                Decision::Create => Plan::Create(step.fetch()),
            }
        }
        None => {
            step.name = container_name(scope, job, None, stepid);
            Plan::Create(step.fetch())
        }
    };
    if matches!(plan, Plan::Attach(_)) && !step.args.mounts.is_empty() {
        tracing::error!(target: USER, "ignoring --container-mounts when attaching to a running container");
        step.args.mounts.clear();
    }
    if let Plan::Create(fetch) = &plan {
        step.direct = fetch.direct_start(
            step.config.use_squashfuse,
            step.named,
            step.args.save.is_some(),
        );
    }
    step.plan = Some(plan);
    Ok(())
}

/// `enroot list -f` → the state of one container.
pub(super) fn lookup(step: &Step, name: &str) -> Result<ContainerState, StepError> {
    let out = runner::run(&step.enroot(&["list", "-f"], &step.job_env), &step.user())
        .map_err(StepError::List)?;
    Ok(find_container(&out, name)?)
}

/// Opens the namespaces of a running container and proves they are its (W1): the pid
/// `enroot list -f` named must still be listed for the container after the namespace
/// files were opened, so a container that exited or a recycled pid is never joined.
fn pin_running(step: &Step, mut pid: u32) -> Result<ContainerNamespaces, StepError> {
    for _ in 0..3 {
        let ns =
            ContainerNamespaces::open(pid, step.args.unshare).map_err(StepError::Namespaces)?;
        match lookup(step, &step.name)? {
            ContainerState::Running(now) if now == pid => return Ok(ns),
            ContainerState::Running(now) => pid = now,
            _ => break,
        }
    }
    Err(StepError::AttachRace(step.name.clone()))
}
