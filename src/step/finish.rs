//! `task_exit` (slurmstepd, root), once per reaped task: the last one exports, then
//! removes what the step created; `exit` frees the shared state.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::info;

use super::seams::Io;
use super::{FinishError, Prepared, Step};
use crate::core::bytes;
use crate::core::config::Scope;
use crate::core::marker::marker_name;
use crate::core::naming::is_step_file;
use crate::core::plan::ContainerPlan;
use crate::spank::log::USER;
use crate::sys::fs::NameLock;
use crate::sys::shm::Setup;

impl Prepared {
    /// `task_exit`: the last local task finishes the step.
    pub fn task_exited(&mut self, io: Io<'_>) -> Result<(), FinishError> {
        if !self.step.count_exit() {
            return Ok(());
        }
        // A helper nobody released (a task failed before joining, or a direct start
        // whose helper held the squashfuse mount) would stay stopped.
        // A creator that died in `enroot start` (it, or the process waiting for the
        // helper, was killed) never published the helper it forked: with proctrack/
        // linuxproc nothing else would find it in its own session.
        let uid = self.step.job.uid;
        let (helper, killed) = match (self.shm.snapshot(), self.shm.spawned()) {
            (Setup::Ready { helper, .. }, _) => (helper, io.host.kill_stopped_helper(helper, uid)),
            (_, Some(spawned)) => (spawned.pid, io.host.kill_unpublished_helper(spawned, uid)),
            (_, None) => (0, None),
        };
        if let Some(session) = killed {
            let (gone, waited) = wait_session_gone(io, session);
            info!(
                "container helper {helper} killed with its session, {} after {} ms",
                if gone { "all gone" } else { "some still there" },
                waited.as_millis()
            );
        }
        let exported = self.export(io);
        self.step.cleanup(io, Some(&self.plan), &self.job_env);
        // The entry may be evicted again once the step is over.
        self.cache = None;
        exported
    }

    /// `exit` (root): the shared state is freed once every task is gone.
    pub fn close(self) {
        self.shm.destroy();
    }

    fn export(&self, io: Io<'_>) -> Result<(), FinishError> {
        let (plan, step) = (&self.plan, &self.step);
        let Some(save) = plan.export.as_deref() else {
            return Ok(());
        };
        // A container some task never entered may be half set up; pyxis skipped the
        // export without a word (W20).
        let started = self.shm.started_tasks();
        if started < step.job.local_tasks {
            tracing::error!(
                target: USER,
                "not exporting container {} to {save}: only {started} of {} tasks started in it",
                plan.name,
                step.job.local_tasks
            );
            return Ok(());
        }
        let path = if save.starts_with('/') {
            bytes::to_path(save)
        } else {
            PathBuf::from(step.job.cwd.as_deref().ok_or(FinishError::SaveNoCwd)?)
                .join(bytes::to_path(save))
        };
        let out = bytes::decode_os(path.as_os_str());
        io.enroot
            .run(
                &step.enroot(&["export", "-f", "-o", &out, &plan.name], &self.job_env),
                &step.user(),
                &mut step.long(),
            )
            .map_err(|source| FinishError::Export {
                name: plan.name.clone(),
                path: save.to_owned(),
                source,
            })?;
        tracing::error!(target: USER, "exported container {} to {save}", plan.name);
        Ok(())
    }
}

/// Between two looks at a killed helper's session.
const SESSION_POLL: Duration = Duration::from_millis(5);
/// The longest `task_exit` waits for it: enroot's EXIT trap normally takes a few ms.
const SESSION_BOUND: Duration = Duration::from_millis(2500);

/// Waits until no process of the killed helper's session is left, so that slurmstepd's
/// process tracking finds the step's cgroup empty at its first look instead of
/// sleeping a second (issue 7 item 3). Bounded: a process that will not die only costs
/// the bound. `(gone, time waited)`.
fn wait_session_gone(io: Io<'_>, session: u32) -> (bool, Duration) {
    let started = Instant::now();
    let mut polls = SESSION_BOUND.as_millis() / SESSION_POLL.as_millis();
    loop {
        if !io.host.session_alive(session) {
            return (true, started.elapsed());
        }
        if polls == 0 {
            return (false, started.elapsed());
        }
        polls -= 1;
        io.host.sleep(SESSION_POLL);
    }
}

impl Step {
    /// `task_exit` of a step whose `user_init` failed: nothing was created, but the
    /// step's files and marker go.
    pub fn task_exited_unprepared(&mut self, io: Io<'_>) {
        if self.count_exit() {
            self.cleanup(io, None, &[]);
        }
    }

    /// Counts one reaped task; true for the last local one.
    fn count_exit(&mut self) -> bool {
        self.completed += 1;
        self.completed >= self.job.local_tasks.max(1)
    }

    /// Root, in the user's runtime directory: only names of this step are unlinked,
    /// through the directory fd checked in `init_post_opt`.
    fn cleanup(&self, io: Io<'_>, plan: Option<&ContainerPlan>, job_env: &[OsString]) {
        let (job, id) = (self.job.job, self.job.step);
        match self.runtime.names() {
            Ok(names) => {
                for name in names
                    .iter()
                    .filter(|n| n.to_str().is_some_and(|n| is_step_file(n, job, Some(id))))
                {
                    if let Err(e) = self.runtime.unlink(name) {
                        info!("{e}");
                    }
                }
            }
            Err(e) => info!("{e}"),
        }
        self.remove_cache_temps();
        let mut left_container = false;
        if let Some(plan) = plan {
            if plan.uses_importer() {
                self.importer_release(io, job_env);
            }
            // A creator task killed while holding the named-container lock leaves its file.
            if plan.named {
                if let Err(e) = NameLock::remove_stale(&self.runtime, &plan.name) {
                    info!("{e}");
                }
            }
            if plan.remove_at_end {
                left_container = !self.remove_container(io, &plan.name, job_env);
            }
        }
        // Job-scope markers stay for the job epilog, which removes the named containers;
        // otherwise the marker only matters if this step left its container behind.
        if self.config.container_scope == Scope::Global && !left_container {
            if let Err(e) = self.jobs.unlink(OsStr::new(&marker_name(job, id))) {
                info!("{e}");
            }
        }
    }

    /// `enroot remove -f`; false if the container may still be there.
    pub(super) fn remove_container(&self, io: Io<'_>, name: &str, job_env: &[OsString]) -> bool {
        info!("removing container filesystem: {name}");
        match io.enroot.run(
            &self.enroot(&["remove", "-f", name], job_env),
            &self.user(),
            &mut self.short(),
        ) {
            Ok(_) => true,
            // A step that failed before creating it has nothing to remove.
            Err(e)
                if e.log()
                    .is_some_and(|l| l.contains("No such file or directory")) =>
            {
                true
            }
            Err(e) => {
                info!("failed to remove container filesystem: {name}: {e}");
                false
            }
        }
    }
}
