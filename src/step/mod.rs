//! A containerised step on one node: what slurmstepd and its tasks do with the container.
//!
//! The hooks in `hooks/stepd.rs` call into this module in order:
//! [`Step::new`] (`init_post_opt`, root) → [`Step::prepare`] (`user_init`, euid = user)
//! → [`Step::enter`] (`task_init`, each task as the user) → [`Step::finish`] (`task_exit`
//! of the last task, root). Each phase lives in its own file.

mod create;
mod finish;
mod join;
mod prepare;

use std::ffi::OsString;
use std::path::PathBuf;

use tracing::info;

use crate::core::args::Args;
use crate::core::config::Config;
use crate::core::envfilter::{enroot_env, EnrootEnvInput};
use crate::core::image::classify;
use crate::core::list::ListError;
use crate::core::marker::{marker_name, StepMarker, JOBS_DIR};
use crate::core::naming::{container_name, temp_squashfs_name, JobId, StepId};
use crate::core::plan::{Fetch, PlanError};
use crate::error::log_block;
use crate::spank::{Spank, SpankError};
use crate::sys::container::StartError;
use crate::sys::dirs::{Dir, DirError};
use crate::sys::fs::FsError;
use crate::sys::ns::{ContainerNamespaces, NsError};
use crate::sys::runner::{Credentials, Invocation, RunError};
use crate::sys::seccomp::SeccompError;
use crate::sys::shm::{SharedStep, ShmError};

/// The pyxis release whose behaviour we reproduce (`PYXIS_VERSION` for enroot hooks).
pub const PYXIS_VERSION: &str = "0.24.0";
/// `SLURM_BATCH_SCRIPT`: the step id of the batch step.
pub const BATCH_STEP: u32 = 0xffff_fffb;
/// The container's first process stops itself once enroot finished setting it up.
const STOP_COMMAND: [&str; 3] = ["sh", "-c", "kill -STOP $$ ; exit 0"];
const ENROOT: &str = "enroot";

/// Failures of a containerised step, in pyxis's words.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("couldn't get job {item}: {source}")]
    JobItem {
        item: &'static str,
        #[source]
        source: SpankError,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error(transparent)]
    Shm(#[from] ShmError),
    #[error("couldn't get sbatch script: argc == 0")]
    NoBatchScript,
    #[error("couldn't get list of existing container filesystems")]
    List(#[source] RunError),
    #[error(transparent)]
    ListParse(#[from] ListError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("container {0} changed while attaching to it, try again")]
    AttachRace(String),
    #[error("{what}")]
    Enroot {
        what: String,
        #[source]
        source: RunError,
    },
    #[error("{source}")]
    Start {
        source: StartError,
        entrypoint: bool,
    },
    #[error("{what}")]
    Importer {
        what: String,
        #[source]
        source: RunError,
    },
    #[error("importer did not return a squashfs path")]
    ImporterNoPath { importer: String, log: String },
    #[error(transparent)]
    NameLock(#[from] crate::sys::fs::LockError),
    #[error("--container-unshare={0}: enroot did not create the namespace; this enroot is too old for --container-unshare (it needs a release with ENROOT_UNSHARE_NET/IPC/UTS support)")]
    EnrootTooOld(&'static str),
    #[error("container was not started successfully by another task")]
    NotStarted,
    #[error("couldn't get container namespaces")]
    Namespaces(#[source] NsError),
    #[error(transparent)]
    Join(NsError),
    #[error("couldn't create enroot start configuration script: {0}")]
    ConfScript(String),
    #[error("--container-mounts: source path does not exist: {0}")]
    MountSource(String),
    #[error("failed to set {name}: {source}")]
    SetEnv {
        name: String,
        #[source]
        source: SpankError,
    },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("couldn't chdir to {dir}: {source}")]
    Chdir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container export: relative path used, but job's cwd is unset")]
    SaveNoCwd,
    #[error("failed to export container {name} to {path}")]
    Export {
        name: String,
        path: String,
        #[source]
        source: RunError,
    },
}

impl StepError {
    pub fn details(&self) -> Vec<String> {
        match self {
            StepError::Enroot { source, .. }
            | StepError::List(source)
            | StepError::Export { source, .. } => log_block(
                "printing enroot log file:",
                source.log().unwrap_or_default(),
            ),
            StepError::Start { source, entrypoint } => {
                let mut lines = Vec::new();
                if *entrypoint {
                    lines.push("if the image has an unusual entrypoint, try using --no-container-entrypoint".to_owned());
                }
                lines.extend(log_block(
                    "printing enroot log file:",
                    source.log().unwrap_or_default(),
                ));
                lines
            }
            StepError::Importer { source, .. } => log_block(
                "printing importer log file:",
                source.log().unwrap_or_default(),
            ),
            StepError::ImporterNoPath { log, .. } => log_block("printing importer log file:", log),
            _ => Vec::new(),
        }
    }
}

/// What Slurm tells us about the job, collected once in `init_post_opt`.
#[derive(Clone, Debug)]
struct JobInfo {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    job: JobId,
    step: StepId,
    node_id: u32,
    local_tasks: u32,
    total_tasks: u32,
    /// `PWD` of the job environment: relative `--container-save` paths resolve there.
    cwd: Option<String>,
}

/// How this step gets its container.
enum Plan {
    /// Fetch the image and create the filesystem (or start the file directly), then start.
    Create(Fetch),
    /// Start from the existing filesystem of a named container.
    ReuseRootfs,
    /// Join a running named container; its namespaces were opened in `user_init`.
    Attach(ContainerNamespaces),
}

/// A containerised step on this node.
pub struct Step {
    job: JobInfo,
    config: Config,
    args: Args,
    /// `<runtime_path>/<uid>`, checked by root (W4); the tasks use it by path, as the
    /// user, root only removes the step's own files in it through this fd.
    runtime: Dir,
    runtime_dir: PathBuf,
    /// `<runtime_path>/jobs` (root only) and this step's marker in it.
    jobs: Dir,
    /// The enroot container name (`pyxis_...`).
    name: String,
    named: bool,
    plan: Option<Plan>,
    /// use_squashfuse: started straight from a squashfs file; the helper must stay
    /// alive for the whole step and there is no filesystem to remove.
    direct: bool,
    shm: Option<SharedStep>,
    /// The job environment at `user_init`: what every task starts from.
    job_env: Vec<String>,
    deferred: Option<StepError>,
    completed: u32,
}

impl Step {
    /// `init_post_opt` (root): job information, the user's private runtime directory and
    /// the step's job marker (what the job epilog cleans up if this step cannot).
    pub fn new(h: &Spank<'_>, config: Config, args: Args) -> Result<Step, StepError> {
        let job = job_info(h)?;
        let top = Dir::open_trusted(&config.runtime_path, 0)?;
        let runtime = top.user_subdir(job.uid, job.gid)?;
        let jobs = top.private_subdir(JOBS_DIR, 0)?;
        let scope = config.container_scope;
        let unnamed = args.name.is_none();
        let marker = StepMarker {
            uid: job.uid,
            scope,
            container: unnamed.then(|| container_name(scope, job.job, None, job.step)),
            lock: args
                .name
                .as_ref()
                .map(|n| container_name(scope, job.job, Some(&n.name), job.step)),
        };
        jobs.create_file(&marker_name(job.job, job.step), marker.render().as_bytes())?;
        Ok(Step {
            job,
            config,
            args,
            runtime_dir: runtime.path().to_owned(),
            runtime,
            jobs,
            name: String::new(),
            named: false,
            plan: None,
            direct: false,
            shm: None,
            job_env: Vec::new(),
            deferred: None,
            completed: 0,
        })
    }

    /// Keeps a `user_init` error for `task_init`.
    pub fn defer(&mut self, e: StepError) {
        self.deferred = Some(e);
    }

    /// `exit` (root): the shared state is freed once every task is gone.
    pub fn close(self) {
        if let Some(shm) = self.shm {
            shm.destroy();
        }
    }
}

fn job_info(h: &Spank<'_>) -> Result<JobInfo, StepError> {
    let item = |item: &'static str| move |source| StepError::JobItem { item, source };
    Ok(JobInfo {
        uid: h.job_uid().map_err(item("uid"))?,
        gid: h.job_gid().map_err(item("gid"))?,
        groups: h.supplementary_gids().map_err(item("supplementary gids"))?,
        job: JobId(h.job_id().map_err(item("ID"))?),
        step: StepId(h.step_id().map_err(item("step ID"))?),
        node_id: h.node_id().map_err(item("node ID"))?,
        local_tasks: h.local_task_count().map_err(item("local task count"))?,
        total_tasks: h.total_task_count().map_err(item("total task count"))?,
        cwd: match h.getenv("PWD") {
            Ok(cwd) => cwd,
            Err(e) => {
                info!("couldn't get job cwd path: {e}");
                None
            }
        },
    })
}

impl Step {
    /// Runs enroot as the job user. The supplementary groups are applied by the runner
    /// only when the caller is root (`task_exit`); from `user_init` (euid = user) and the
    /// tasks, the groups Slurm already set are inherited.
    fn user(&self) -> Credentials {
        Credentials {
            uid: self.job.uid,
            gid: self.job.gid,
            groups: self.job.groups.clone(),
        }
    }

    /// How the image is fetched, from the options and the configuration.
    fn fetch(&self) -> Fetch {
        let source = classify(self.args.image.as_deref().unwrap_or_default());
        Fetch::choose(
            source,
            self.config.use_enroot_load,
            self.config.importer.is_some(),
        )
    }

    fn importer_path(&self) -> String {
        self.config
            .importer
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// An importer command line: same environment as enroot (§5.11), no PATH search.
    fn importer(&self, argv: &[&str], job_env: &[String]) -> Invocation {
        let mut inv = self.enroot(argv, job_env);
        inv.program = self.importer_path().into();
        inv
    }

    fn temp_squashfs(&self) -> PathBuf {
        self.runtime_dir
            .join(temp_squashfs_name(self.job.job, self.job.step))
    }

    /// An enroot command line with the environment pyxis gives enroot (§5.20).
    fn enroot(&self, argv: &[&str], job_env: &[String]) -> Invocation {
        let host_path = std::env::var("PATH").ok();
        let env = enroot_env(&EnrootEnvInput {
            job_env,
            host_path: host_path.as_deref(),
            uid: self.job.uid,
            gid: self.job.gid,
            args: &self.args,
            runtime_path: &self.config.runtime_path,
            version: PYXIS_VERSION,
        });
        Invocation {
            program: ENROOT.into(),
            args: argv.iter().map(OsString::from).collect(),
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }
}
