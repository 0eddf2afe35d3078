//! `user_init` (slurmstepd, euid = user): the container plan, decided once per step and
//! node before the tasks fork, and the state the tasks share.

use std::ffi::OsString;

use tracing::info;

use std::time::Instant;

use super::cache::{CacheUse, Timing};
use super::seams::Io;
use super::{PrepareError, Prepared, Step};
use crate::core::cache::Digest;
use crate::core::list::{find_container, ContainerState};
use crate::core::plan::{
    cache_uri, decide, may_start_direct, ContainerPlan, DirectSupport, Facts, Rootfs,
};
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
            Ok(r) => Ok(Prepared {
                step: self,
                plan: r.plan,
                shm: r.shm,
                job_env: r.job_env,
                pinned: r.pinned,
                batch_script: r.batch_script,
                cache: r.cache,
                facts: r.facts,
                timing: r.timing,
            }),
            Err(e) => Err(Box::new((self, e))),
        }
    }
}

struct Ready {
    plan: ContainerPlan,
    shm: SharedStep,
    job_env: Vec<OsString>,
    pinned: Option<ContainerNamespaces>,
    batch_script: Option<String>,
    cache: Option<CacheUse>,
    facts: ImageFacts,
    timing: Timing,
}

/// What `user_init` learnt about the image and the node, for every decision of the
/// step (also the one under the name lock).
#[derive(Clone, Debug)]
pub(super) struct ImageFacts {
    /// The pinned digest of a registry image going through the cache.
    pub(super) digest: Option<Digest>,
    pub(super) direct: DirectSupport,
}

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
        Some(crate::core::bytes::decode_os(script))
    } else {
        None
    };
    let existing = step.existing(io, &job_env)?;
    let mut timing = Timing::default();
    let uri = cache_uri(&step.args, &step.config).filter(|_| existing == ContainerState::Absent);
    let digest = match (uri, &step.cache_dir) {
        (Some(uri), Some(_)) => step.resolve_digest(io, &job_env, &uri, &mut timing),
        _ => None,
    };
    let cache = digest.as_ref().and_then(|d| step.pin(d));
    let direct = if may_start_direct(&step.args, &step.config) {
        let started = Instant::now();
        let path = step
            .enroot(&[], &job_env)
            .env
            .into_iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v);
        let support = io
            .host
            .direct_support(path.as_deref(), step.job.uid, step.job.gid);
        timing.add("direct-start probe", started.elapsed());
        support
    } else {
        DirectSupport::NotProbed
    };
    let facts = ImageFacts {
        digest: digest.filter(|_| cache.is_some()),
        direct,
    };
    let (plan, pinned) = step.settle(io, &job_env, existing, batch_script.as_deref(), &facts)?;
    step.announce_plan(&plan);
    let pinned = pinned.map(|(_, ns)| ns);
    Ok(Ready {
        plan,
        shm,
        job_env,
        pinned,
        batch_script,
        cache,
        facts,
        timing,
    })
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
        facts: &ImageFacts,
    ) -> Result<(ContainerPlan, Option<(u32, ContainerNamespaces)>), PrepareError> {
        let existing = self.existing(io, job_env)?;
        self.settle(io, job_env, existing, batch_script, facts)
    }

    /// Decides, and pins the namespaces of a running container the plan attaches to. A
    /// container that stops between `enroot list` and the pin is decided again from
    /// what `enroot list` says then (reused, or created if it was removed), instead of
    /// failing the step.
    fn settle(
        &self,
        io: Io<'_>,
        job_env: &[OsString],
        mut existing: ContainerState,
        batch_script: Option<&str>,
        facts: &ImageFacts,
    ) -> Result<(ContainerPlan, Option<(u32, ContainerNamespaces)>), PrepareError> {
        for _ in 0..3 {
            let mut plan = self.decide(existing, batch_script, facts)?;
            let Rootfs::Attach { pid } = plan.rootfs else {
                return Ok((plan, None));
            };
            match pin_running(self, io, job_env, &plan.name, pid)? {
                Pin::Running(pid, ns) => {
                    plan.rootfs = Rootfs::Attach { pid };
                    return Ok((plan, Some((pid, ns))));
                }
                Pin::Gone(now) => {
                    info!("container {} stopped while attaching to it", plan.name);
                    existing = now;
                }
            }
        }
        Err(PrepareError::AttachRace(self.container_name()))
    }

    /// What `enroot list -f` says of the named container; `Absent` when unnamed.
    fn existing(&self, io: Io<'_>, job_env: &[OsString]) -> Result<ContainerState, PrepareError> {
        match &self.args.name {
            Some(_) => {
                let name = self.container_name();
                self.lookup(io, job_env, &name)
            }
            None => Ok(ContainerState::Absent),
        }
    }

    fn decide(
        &self,
        existing: ContainerState,
        batch_script: Option<&str>,
        facts: &ImageFacts,
    ) -> Result<ContainerPlan, PrepareError> {
        Ok(decide(&Facts {
            args: &self.args,
            config: &self.config,
            job: self.job.job,
            step: self.job.step,
            node_id: self.job.node_id,
            batch_script,
            existing,
            digest: facts.digest.as_ref(),
            direct: &facts.direct,
        })?)
    }

    /// Tells the log and the user what the plan means; once per decision that is used.
    pub(super) fn announce_plan(&self, plan: &ContainerPlan) {
        match plan.rootfs {
            Rootfs::Attach { .. } => info!("reusing existing container namespaces"),
            Rootfs::Reuse => info!("reusing existing container filesystem"),
            _ => {}
        }
        if let Some(why) = &plan.fallback {
            info!("not starting the image directly ({why}): creating the container instead");
        }
        for notice in &plan.notices {
            tracing::error!(target: USER, "{}", notice.text());
        }
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

/// What pinning a running container found.
enum Pin {
    /// The namespaces of the container's process, proven to be its.
    Running(u32, ContainerNamespaces),
    /// The container stopped (or was removed) meanwhile: what `enroot list -f` says now.
    Gone(ContainerState),
}

/// Opens the namespaces of a running container and proves they are its (W1): the pid
/// `enroot list -f` named must still be listed for the container after the namespace
/// files were opened, so a container that exited or a recycled pid is never joined.
fn pin_running(
    step: &Step,
    io: Io<'_>,
    job_env: &[OsString],
    name: &str,
    mut pid: u32,
) -> Result<Pin, PrepareError> {
    for _ in 0..3 {
        let opened = match io.host.open_namespaces(pid, step.args.unshare) {
            Ok(ns) => Some(ns),
            // It may have exited after enroot listed it: ask again.
            Err(e) if e.process_gone() => None,
            Err(e) => return Err(PrepareError::Namespaces(e)),
        };
        match (step.lookup(io, job_env, name)?, opened) {
            (ContainerState::Running(now), Some(ns)) if now == pid => {
                return Ok(Pin::Running(pid, ns))
            }
            (ContainerState::Running(now), _) => pid = now,
            (now, _) => return Ok(Pin::Gone(now)),
        }
    }
    Err(PrepareError::AttachRace(name.to_owned()))
}
