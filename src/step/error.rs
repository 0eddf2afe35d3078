//! Failures of a containerised step, one enum per phase, in pyxis's words. The
//! boundary prints each once: the line with its causes, then [`StepError::details`]
//! (the captured enroot or importer log).

use crate::core::hints::{self, Phase};
use crate::core::list::ListError;
use crate::core::plan::PlanError;
use crate::core::text::log_block;
use crate::spank::boundary::{Rendered, Report};
use crate::spank::SpankError;
use crate::sys::cache::CacheError;
use crate::sys::container::StartError;
use crate::sys::dirs::DirError;
use crate::sys::fs::{FsError, LockError};
use crate::sys::hints as probe;
use crate::sys::ns::NsError;
use crate::sys::runner::RunError;
use crate::sys::seccomp::SeccompError;
use crate::sys::shm::ShmError;

/// Any phase.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Setup(Box<SetupError>),
    #[error(transparent)]
    Prepare(Box<PrepareError>),
    #[error(transparent)]
    Join(Box<JoinError>),
    #[error(transparent)]
    Finish(Box<FinishError>),
    /// An `init_post_opt` or `user_init` error, reported again by each task.
    #[error(transparent)]
    Deferred(Rendered),
}

macro_rules! boxed_from {
    ($($phase:ident => $variant:ident),*) => {$(
        impl From<$phase> for StepError {
            fn from(e: $phase) -> Self {
                StepError::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from!(SetupError => Setup, PrepareError => Prepare, JoinError => Join, FinishError => Finish);

/// `init_post_opt` (root).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("couldn't get job {item}: {source}")]
    JobItem {
        item: &'static str,
        #[source]
        source: SpankError,
    },
    #[error(transparent)]
    Dir(#[from] DirError),
}

/// `user_init` (euid = user).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("couldn't get job {item}: {source}")]
    JobItem {
        item: &'static str,
        #[source]
        source: SpankError,
    },
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
    #[error("couldn't get container namespaces")]
    Namespaces(#[source] NsError),
    #[error("container {0} changed while attaching to it, try again")]
    AttachRace(String),
}

/// The creator task: fetch, create and start.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    NameLock(#[from] LockError),
    /// The named container changed under the lock; deciding again failed.
    #[error(transparent)]
    Recheck(#[from] PrepareError),
    #[error("failed to import docker image: {image}")]
    Import {
        image: String,
        #[source]
        source: RunError,
    },
    #[error("failed to create container filesystem for image: {image}")]
    Create {
        image: String,
        #[source]
        source: RunError,
    },
    #[error("failed to import docker image: {image} (importer: {importer})")]
    Importer {
        image: String,
        importer: String,
        #[source]
        source: RunError,
    },
    #[error("importer did not return a squashfs path")]
    ImporterNoPath { importer: String, log: String },
    #[error("--container-mounts: source path does not exist: {0}")]
    MountSource(String),
    #[error("couldn't create enroot start configuration script: {0}")]
    ConfScript(String),
    #[error("{source}")]
    Start {
        source: StartError,
        entrypoint: bool,
    },
    /// A plan through the cache without the cache (cannot happen: decided together).
    #[error("image cache: the step's cache entry is not pinned")]
    NoCache,
    /// The image cache could not be used (its path is named in the source).
    #[error("image cache: {0}")]
    Cache(#[from] CacheError),
    /// The import into the cache ran out of disk: nothing was kept.
    #[error("failed to import docker image: {image}: no space left in the image cache {path} ({available_mb} MB free); an admin can free space, lower image_cache_size (now {bound_mb} MB) or move image_cache_path to a larger file system")]
    CacheFull {
        image: String,
        path: String,
        available_mb: u64,
        bound_mb: u64,
        #[source]
        source: RunError,
    },
}

/// `task_init` of every task.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("couldn't get job {item}: {source}")]
    JobItem {
        item: &'static str,
        #[source]
        source: SpankError,
    },
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// The creator task's own failure.
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error("container was not started successfully by another task")]
    NotStarted,
    #[error("couldn't get container namespaces")]
    Namespaces(#[source] NsError),
    #[error("--container-unshare={0}: enroot did not create the namespace; this enroot is too old for --container-unshare (it needs a release with ENROOT_UNSHARE_NET/IPC/UTS support)")]
    EnrootTooOld(&'static str),
    #[error("container {0} changed while attaching to it, try again")]
    AttachRace(String),
    #[error(transparent)]
    Proc(#[from] FsError),
    #[error(transparent)]
    Join(NsError),
    #[error("failed to set {name}: {source}")]
    SetEnv {
        name: String,
        #[source]
        source: SpankError,
    },
    #[error("couldn't chdir to {dir}: {source}")]
    Chdir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// `task_exit` of the last task (root).
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
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

impl Report for StepError {
    /// The lines printed after the error line: the captured tool log, pyxis's hints.
    fn details(&self) -> Vec<String> {
        match self {
            StepError::Prepare(e) => e.details(),
            StepError::Join(e) => match e.as_ref() {
                JoinError::Create(e) => e.details(),
                _ => Vec::new(),
            },
            StepError::Finish(e) => match e.as_ref() {
                FinishError::Export { source, .. } => enroot_log(source, Phase::Export),
                FinishError::SaveNoCwd => Vec::new(),
            },
            StepError::Deferred(r) => r.details.clone(),
            _ => Vec::new(),
        }
    }
}

impl PrepareError {
    fn details(&self) -> Vec<String> {
        match self {
            PrepareError::List(source) => enroot_log(source, Phase::Other),
            _ => Vec::new(),
        }
    }
}

impl CreateError {
    fn details(&self) -> Vec<String> {
        match self {
            CreateError::Recheck(e) => e.details(),
            CreateError::Import { source, image } => {
                let mut lines = enroot_log(source, Phase::Import);
                lines.extend(fetch_hints(image, source));
                lines
            }
            CreateError::Create { source, .. } => enroot_log(source, Phase::Create),
            // The message names the cache and its keys already.
            CreateError::CacheFull { source, .. } => log_block(
                "printing enroot log file:",
                source.log().unwrap_or_default(),
            ),
            CreateError::Importer { source, image, .. } => {
                let log = source.log().unwrap_or_default();
                let mut lines = log_block("printing importer log file:", log);
                lines.extend(hints::node_hints(
                    Phase::Import,
                    log,
                    probe::max_user_namespaces(),
                ));
                lines.extend(fetch_hints(image, source));
                lines
            }
            CreateError::ImporterNoPath { log, .. } => {
                log_block("printing importer log file:", log)
            }
            CreateError::Start { source, entrypoint } => {
                let mut lines = Vec::new();
                if *entrypoint {
                    lines.push(
                        "if the image has an unusual entrypoint, try using --no-container-entrypoint"
                            .to_owned(),
                    );
                }
                let log = source.log().unwrap_or_default();
                lines.extend(log_block("printing enroot log file:", log));
                if let StartError::Spawn(e) = source {
                    lines.extend(missing_hint(e));
                }
                lines.extend(hints::node_hints(
                    Phase::Other,
                    log,
                    probe::max_user_namespaces(),
                ));
                lines
            }
            _ => Vec::new(),
        }
    }
}

/// The captured log, then what it says about the node (user namespaces, FUSE, disk),
/// or that enroot is not there at all.
fn enroot_log(e: &RunError, phase: Phase) -> Vec<String> {
    let log = e.log().unwrap_or_default();
    let mut lines = log_block("printing enroot log file:", log);
    lines.extend(missing_hint(e));
    lines.extend(hints::node_hints(phase, log, probe::max_user_namespaces()));
    lines
}

/// enroot (or the importer) could not be executed because it does not exist.
fn missing_hint(e: &RunError) -> Option<String> {
    match e {
        RunError::Spawn { program, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Some(if program == "enroot" {
                hints::enroot_missing(&probe::search_path())
            } else {
                format!("{program} does not exist on this node: an admin must install it or fix the plugstack key importer=")
            })
        }
        _ => None,
    }
}

/// What a failed fetch of `image` means (registry answers, file names, `#SBATCH` cuts).
fn fetch_hints(image: &str, e: &RunError) -> Vec<String> {
    hints::fetch_hints(
        image,
        e.log().unwrap_or_default(),
        probe::file_in_cwd(image),
    )
}
