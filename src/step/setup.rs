//! `init_post_opt` (slurmstepd, root): the job's facts, the user's private runtime
//! directory and the step's job marker.

use super::seams::Slurm;
use super::{JobInfo, SetupError, Step};
use crate::core::args::Args;
use crate::core::config::Config;
use crate::core::marker::{marker_name, StepMarker, JOBS_DIR};
use crate::core::naming::{container_name, JobId, StepId};
use crate::core::plan::cache_uri;
use crate::sys::dirs::Dir;

impl Step {
    /// `init_post_opt` (root). The marker tells the job epilog what this step may leave
    /// on the node if it cannot clean up itself (its slurmstepd killed).
    pub fn new(slurm: &dyn Slurm, config: Config, args: Args) -> Result<Step, SetupError> {
        let job = job_info(slurm)?;
        // Root in production; the owner the trusted path must have.
        let me = nix::unistd::geteuid().as_raw();
        let top = Dir::open_trusted(&config.runtime_path, me)?;
        let runtime = top.user_subdir(job.uid, job.gid)?;
        let jobs = top.private_subdir(JOBS_DIR, me)?;
        let scope = config.container_scope;
        let name = args.name.as_ref().map(|n| n.name.as_str());
        let full_name = container_name(scope, job.job, name, job.step);
        let marker = StepMarker {
            uid: job.uid,
            scope,
            container: name.is_none().then(|| full_name.clone()),
            lock: name.map(|_| full_name),
        };
        jobs.create_file(&marker_name(job.job, job.step), marker.render().as_bytes())?;
        let cache_dir = cache_dir(&config, &args, &job, me);
        Ok(Step {
            job,
            config,
            args,
            runtime,
            jobs,
            cache_dir,
            completed: 0,
        })
    }
}

/// `<image_cache_path>/<uid>`, created 0700 for the user if missing and checked like
/// the runtime directory (W4), when the step's image may go through the cache. The
/// top directory is slurmd's (created in `init`). A cache that cannot be used costs
/// the step its speed, never its run: the image is then imported as pyxis does.
fn cache_dir(config: &Config, args: &Args, job: &JobInfo, me: u32) -> Option<Dir> {
    let top = config.image_cache()?;
    cache_uri(args, config)?;
    match Dir::open_trusted(top, me).and_then(|d| d.user_subdir(job.uid, job.gid)) {
        Ok(dir) => Some(dir),
        Err(e) => {
            tracing::info!("not using the image cache: {e}");
            None
        }
    }
}

fn job_info(slurm: &dyn Slurm) -> Result<JobInfo, SetupError> {
    let item = |item: &'static str| move |source| SetupError::JobItem { item, source };
    Ok(JobInfo {
        uid: slurm.job_uid().map_err(item("uid"))?,
        gid: slurm.job_gid().map_err(item("gid"))?,
        groups: slurm
            .supplementary_gids()
            .map_err(item("supplementary gids"))?,
        job: JobId(slurm.job_id().map_err(item("ID"))?),
        step: StepId(slurm.step_id().map_err(item("step ID"))?),
        node_id: slurm.node_id().map_err(item("node ID"))?,
        local_tasks: slurm.local_task_count().map_err(item("local task count"))?,
        total_tasks: slurm.total_task_count().map_err(item("total task count"))?,
        cwd: match slurm.getenv("PWD") {
            Ok(cwd) => cwd,
            Err(e) => {
                tracing::info!("couldn't get job cwd path: {e}");
                None
            }
        },
    })
}
