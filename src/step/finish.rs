//! `task_exit` of the last local task (slurmstepd, root): export, then remove what the
//! step created.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tracing::info;

use super::create::importer_release;
use super::{Plan, Step, StepError};
use crate::core::config::Scope;
use crate::core::marker::marker_name;
use crate::core::naming::is_step_file;
use crate::core::plan::Fetch;
use crate::spank::log::USER;
use crate::sys::fs::NameLock;
use crate::sys::runner;
use crate::sys::shm::{Setup, SharedStep};

impl Step {
    /// `task_exit` (root), once per reaped task: the last one finishes the step.
    pub fn task_exited(&mut self) -> Result<(), StepError> {
        self.completed += 1;
        if self.completed < self.job.local_tasks.max(1) {
            return Ok(());
        }
        finish(self)
    }
}

/// `task_exit` of the last local task (slurmstepd, root).
fn finish(step: &mut Step) -> Result<(), StepError> {
    // A helper nobody released (a task failed before joining) would stay stopped.
    if let Some(Setup::Ready { helper }) = step.shm.as_ref().map(SharedStep::snapshot) {
        if is_stopped_helper(helper, step.job.uid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(helper).unwrap_or(i32::MAX)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let exported = export(step);
    cleanup(step);
    exported
}

fn export(step: &Step) -> Result<(), StepError> {
    let Some(save) = step.args.save.as_deref() else {
        return Ok(());
    };
    // Every node's last task used to export to the same path (W14): only the first
    // node of the step writes it.
    if step.job.node_id != 0 {
        return Ok(());
    }
    // A container some task never entered may be half set up; pyxis skipped the export
    // without a word (W20).
    let started = step.shm.as_ref().map_or(0, SharedStep::started_tasks);
    if started < step.job.local_tasks {
        tracing::error!(
            target: USER,
            "not exporting container {} to {save}: only {started} of {} tasks started in it",
            step.name,
            step.job.local_tasks
        );
        return Ok(());
    }
    let path = if save.starts_with('/') {
        PathBuf::from(save)
    } else {
        Path::new(step.job.cwd.as_deref().ok_or(StepError::SaveNoCwd)?).join(save)
    };
    let out = path.to_string_lossy().into_owned();
    runner::run(
        &step.enroot(&["export", "-f", "-o", &out, &step.name], &step.job_env),
        &step.user(),
    )
    .map_err(|source| StepError::Export {
        name: step.name.clone(),
        path: save.to_owned(),
        source,
    })?;
    tracing::error!(target: USER, "exported container {} to {save}", step.name);
    Ok(())
}

/// Root, in the user's runtime directory: only names of this step are unlinked, through
/// the directory fd checked in `init_post_opt`.
fn cleanup(step: &Step) {
    let (job, id) = (step.job.job, step.job.step);
    match step.runtime.names() {
        Ok(names) => {
            for name in names
                .iter()
                .filter(|n| n.to_str().is_some_and(|n| is_step_file(n, job, Some(id))))
            {
                if let Err(e) = step.runtime.unlink(name) {
                    info!("{e}");
                }
            }
        }
        Err(e) => info!("{e}"),
    }
    if let Some(Plan::Create(Fetch::Importer { .. })) = &step.plan {
        importer_release(step, &step.job_env);
    }
    // A creator task killed while holding the named-container lock leaves its file.
    if step.named {
        if let Err(e) = NameLock::remove_stale(&step.runtime, &step.name) {
            info!("{e}");
        }
    }
    let mut left_container = false;
    if !step.named && !step.direct && step.plan.is_some() {
        info!("removing container filesystem: {}", step.name);
        let removed = runner::run(
            &step.enroot(&["remove", "-f", &step.name], &step.job_env),
            &step.user(),
        );
        if let Err(e) = removed {
            // A step that failed before creating it has nothing to remove.
            if !e
                .log()
                .is_some_and(|l| l.contains("No such file or directory"))
            {
                info!("failed to remove container filesystem: {}: {e}", step.name);
                left_container = true;
            }
        }
    }
    // Job-scope markers stay for the job epilog, which removes the named containers;
    // otherwise the marker only matters if this step left its container behind.
    if step.config.container_scope == Scope::Global && !left_container {
        if let Err(e) = step.jobs.unlink(OsStr::new(&marker_name(job, id))) {
            info!("{e}");
        }
    }
}

/// Removes the imported squashfs; it is normally gone already in cleanup.
pub(super) fn remove_temp_squashfs(path: &Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            info!("could not remove squashfs {}: {e}", path.display());
        }
        _ => {}
    }
}

/// True if `pid` is a stopped process of the job user (the helper, not a recycled pid).
fn is_stopped_helper(pid: u32, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(format!("/proc/{pid}")) else {
        return false;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    meta.uid() == uid && state == Some("T")
}
