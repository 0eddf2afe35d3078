//! slurmstepd (remote context): where a step enters its container.
//!
//! | callback | process | what |
//! |---|---|---|
//! | `init` | slurmstepd, root | parse the plugstack arguments, register the options |
//! | option callbacks | slurmstepd, root | Slurm replays the arguments srun/sbatch forwarded |
//! | `init_post_opt` | slurmstepd, root | `PYXIS_CONTAINER_*`, job info, the user's runtime dir |
//! | `user_init` | slurmstepd, euid = user | shared state, container lookup and plan |
//! | `task_init` | each forked task, the user | first task creates+starts, every task joins |
//! | `task_exit` | slurmstepd, root | the last one exports and removes |
//! | `exit` | slurmstepd, root | free the shared state |
//!
//! Errors in `user_init` are kept and returned from `task_init`: Slurm ignores a failing
//! `user_init` (SchedMD bug 7573), so the step would otherwise run outside the container.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{debug, error, info};

use super::{register_options, HookResult};
use crate::core::args::Args;
use crate::core::args::NameFlag;
use crate::core::conf_script::ConfScript;
use crate::core::config::{parse_config, Config, Scope};
use crate::core::envfilter::{
    enroot_env, pytorch_remap, task_env_overrides, EnrootEnvInput, EnvAction, LOCALE_VARS,
};
use crate::core::image::classify;
use crate::core::list::{find_container, ContainerState, ListError};
use crate::core::mount::{add_unique, batch_script_mount};
use crate::core::naming::{container_name, temp_squashfs_name, JobId, StepId};
use crate::core::plan::{decide_named, Decision, Fetch, PlanError};
use crate::error::{log_block, PluginError};
use crate::spank::log::{USER, USER_RAW};
use crate::spank::{Spank, SpankError};
use crate::state;
use crate::sys::container::{self, StartError};
use crate::sys::fs::{ensure_user_runtime_dir, process_cwd, process_environ, FsError, NameLock};
use crate::sys::ns::{ContainerNamespaces, Kernel, NsError};
use crate::sys::runner::{self, Credentials, Invocation, RunError};
use crate::sys::seccomp::{self, SeccompError};
use crate::sys::shm::{Setup, SharedStep, ShmError};

/// The pyxis release whose behaviour we reproduce (`PYXIS_VERSION` for enroot hooks).
pub const PYXIS_VERSION: &str = "0.24.0";
/// `SLURM_BATCH_SCRIPT`: the step id of the batch step.
const BATCH_STEP: u32 = 0xffff_fffb;
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
    runtime_dir: PathBuf,
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

pub fn init(h: &Spank<'_>) -> HookResult {
    let config = parse_config(h.plugin_args()).map_err(PluginError::Config)?;
    state::with(|s| s.config = Some(config));
    register_options(h)
}

pub fn init_post_opt(h: &Spank<'_>) -> HookResult {
    state::with(|s| {
        for e in s.args.apply_env(|name| h.getenv(name).ok().flatten()) {
            error!("{e}");
        }
        let config = s.config.clone().unwrap_or_default();
        // sbatch_support=0 must also hold on the node: options can reach the batch step
        // through PYXIS_CONTAINER_* or _SLURM_SPANK_OPTION_pyxis_* (W23).
        if s.args.enabled() && !config.sbatch_support && h.step_id().ok() == Some(BATCH_STEP) {
            info!("sbatch_support=0: the batch step runs outside a container");
            return Ok(());
        }
        if !s.args.enabled() {
            for warning in s.args.ignored_option_warnings() {
                error!("{warning}");
            }
            return Ok(());
        }
        let job = job_info(h)?;
        let runtime_dir = ensure_user_runtime_dir(&config.runtime_path, job.uid, job.gid)
            .map_err(StepError::Fs)?;
        if config.container_scope == Scope::Job {
            // Tells the job epilog this job has containers to clean up on this node.
            let marker = super::epilog::marker(&config.runtime_path, job.uid, job.job);
            if let Err(e) = std::fs::write(&marker, b"") {
                info!("couldn't create {}: {e}", marker.display());
            }
        }
        s.step = Some(Step {
            job,
            config,
            args: s.args.clone(),
            runtime_dir,
            name: String::new(),
            named: false,
            plan: None,
            direct: false,
            shm: None,
            job_env: Vec::new(),
            deferred: None,
            completed: 0,
        });
        Ok(())
    })
}

pub fn user_init(h: &Spank<'_>) -> HookResult {
    state::with(|s| {
        let Some(step) = s.step.as_mut() else {
            return Ok(());
        };
        if let Err(e) = prepare(h, step) {
            debug!("user_init() failed with rc=-1; postponing error for now, will report later");
            step.deferred = Some(e);
        }
        Ok(())
    })
}

pub fn task_init(h: &Spank<'_>) -> HookResult {
    state::with(|s| {
        let Some(step) = s.step.as_mut() else {
            return Ok(());
        };
        if let Some(e) = step.deferred.take() {
            return Err(e.into());
        }
        enter_container(h, step).map_err(PluginError::from)
    })
}

pub fn task_exit(_: &Spank<'_>) -> HookResult {
    state::with(|s| {
        let Some(step) = s.step.as_mut() else {
            return Ok(());
        };
        step.completed += 1;
        if step.completed < step.job.local_tasks.max(1) {
            return Ok(());
        }
        finish(step).map_err(PluginError::from)
    })
}

pub fn exit() -> HookResult {
    if let Some(step) = state::take().and_then(|s| s.step) {
        if let Some(shm) = step.shm {
            shm.destroy();
        }
    }
    Ok(())
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

/// `user_init`: everything decided once per step and node, before the tasks fork.
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
fn lookup(step: &Step, name: &str) -> Result<ContainerState, StepError> {
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

/// `task_init`: the first task creates and starts the container; every task then joins.
fn enter_container(h: &Spank<'_>, step: &mut Step) -> Result<(), StepError> {
    // The task environment now holds the per-task and MPI variables Slurm added.
    let task_env = h.job_env().map_err(|source| StepError::JobItem {
        item: "environment",
        source,
    })?;
    let shm = step.shm.as_ref().ok_or(StepError::NotStarted)?;
    let (helper, ns_pid) = {
        let mut lock = shm.lock()?;
        if lock.enter() {
            match create_and_start(step, &task_env) {
                Ok(helper) => lock.publish(Setup::Ready {
                    helper,
                    ns_pid: helper,
                }),
                Err(e) => {
                    lock.publish(Setup::Failed);
                    return Err(e);
                }
            }
        }
        match lock.setup() {
            Setup::Ready { helper, ns_pid } => (helper, ns_pid),
            _ => return Err(StepError::NotStarted),
        }
    };
    let opened;
    let ns = match &step.plan {
        Some(Plan::Attach(pinned)) => pinned,
        _ => {
            opened = ContainerNamespaces::open(ns_pid, step.args.unshare).map_err(|e| match e {
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

/// The creator task: create the filesystem if needed, then start the helper.
fn create_and_start(step: &Step, task_env: &[String]) -> Result<u32, StepError> {
    // Steps of this user on this node that create or start the same named container are
    // serialised, so neither enroot's "File already exists" nor its 30 s rootfs lock can
    // fail one of them (W2).
    let _lock = if step.named {
        Some(NameLock::acquire(&step.runtime_dir, &step.name)?)
    } else {
        None
    };
    let target = match &step.plan {
        Some(Plan::Create(fetch)) => {
            if step.named && created_meanwhile(step, task_env)? {
                StartTarget::Name
            } else {
                let started = Instant::now();
                let target = create(step, fetch, task_env)?;
                if matches!(target, StartTarget::Name) {
                    info!(
                        "completed container setup in {} ms",
                        started.elapsed().as_millis()
                    );
                }
                target
            }
        }
        _ => StartTarget::Name,
    };
    let started = start(step, task_env, &target);
    if let (Err(_), Some(Plan::Create(Fetch::Importer { .. })), true) =
        (&started, &step.plan, step.direct)
    {
        importer_release(step, task_env);
    }
    started
}

/// What `enroot start` is given.
enum StartTarget {
    /// The container by name.
    Name,
    /// A squashfs file started directly (use_squashfuse).
    File(String),
}

/// Under the name lock: did another step create the container after our `user_init`
/// looked? Then its filesystem is reused, unless `:create` demanded a new one.
fn created_meanwhile(step: &Step, env: &[String]) -> Result<bool, StepError> {
    let out =
        runner::run(&step.enroot(&["list", "-f"], env), &step.user()).map_err(StepError::List)?;
    match find_container(&out, &step.name)? {
        ContainerState::Absent => Ok(false),
        _ if step
            .args
            .name
            .as_ref()
            .is_some_and(|n| n.flag == NameFlag::Create) =>
        {
            Err(PlanError::CreateExists.into())
        }
        _ => {
            info!("reusing existing container filesystem");
            Ok(true)
        }
    }
}

fn create(step: &Step, fetch: &Fetch, env: &[String]) -> Result<StartTarget, StepError> {
    let image = step.args.image.clone().unwrap_or_default();
    let announce = || {
        if step.job.total_tasks <= 1 {
            tracing::error!(target: USER, "importing docker image: {image}");
        }
    };
    let import_failed = |source| StepError::Enroot {
        what: format!("failed to import docker image: {image}"),
        source,
    };
    match fetch {
        Fetch::Squashfs(path) if step.direct => {
            info!("skipping container creation (squashfuse enabled)");
            Ok(StartTarget::File(path.clone()))
        }
        Fetch::Squashfs(path) => create_from(step, path, env).map(|()| StartTarget::Name),
        Fetch::Import { uri } => {
            announce();
            let tmp = step.temp_squashfs();
            // A killed step may have left it behind (W3); import refuses to overwrite.
            let _ = std::fs::remove_file(&tmp);
            let out = tmp.to_string_lossy().into_owned();
            let imported = runner::run(
                &step.enroot(&["import", "--output", &out, uri], env),
                &step.user(),
            );
            if let Err(source) = imported {
                let _ = std::fs::remove_file(&tmp);
                return Err(import_failed(source));
            }
            tracing::error!(target: USER, "imported docker image: {image}");
            let created = create_from(step, &out, env);
            remove_temp_squashfs(&tmp);
            created.map(|()| StartTarget::Name)
        }
        Fetch::Load { uri } => {
            announce();
            let mut argv = vec!["load"];
            if !step.named {
                argv.push("--force");
            }
            argv.extend(["--name", &step.name, uri]);
            runner::run(&step.enroot(&argv, env), &step.user()).map_err(import_failed)?;
            tracing::error!(target: USER, "imported docker image: {image}");
            Ok(StartTarget::Name)
        }
        Fetch::Importer { uri } => {
            announce();
            let path = match importer_get(step, uri, env) {
                Ok(path) => path,
                Err(e) => {
                    importer_release(step, env);
                    return Err(e);
                }
            };
            tracing::error!(target: USER, "imported docker image: {image}");
            if step.direct {
                info!("using importer squashfs directly: {path}");
                return Ok(StartTarget::File(path));
            }
            let created = create_from(step, &path, env);
            importer_release(step, env);
            created.map(|()| StartTarget::Name)
        }
    }
}

fn create_from(step: &Step, squashfs: &str, env: &[String]) -> Result<(), StepError> {
    info!("creating container filesystem: {}", step.name);
    // An unnamed container is ours alone: a leftover of a killed or requeued incarnation
    // of this step is replaced instead of failing with "File already exists" (W3).
    let mut argv = vec!["create"];
    if !step.named {
        argv.push("--force");
    }
    argv.extend(["--name", &step.name, squashfs]);
    runner::run(&step.enroot(&argv, env), &step.user())
        .map(drop)
        .map_err(|source| StepError::Enroot {
            what: format!(
                "failed to create container filesystem for image: {}",
                step.args.image.as_deref().unwrap_or_default()
            ),
            source,
        })
}

/// `importer get <uri>`: the first line of its stdout is the squashfs path (§5.11).
fn importer_get(step: &Step, uri: &str, env: &[String]) -> Result<String, StepError> {
    let image = step.args.image.clone().unwrap_or_default();
    let importer = step.importer_path();
    let inv = step.importer(&["get", uri], env);
    debug!("running importer command: {}", inv.display());
    let failed = |source| StepError::Importer {
        what: format!("failed to import docker image: {image} (importer: {importer})"),
        source,
    };
    let (stdout, log) = runner::run_split(&inv, &step.user()).map_err(failed)?;
    let path = stdout.lines().next().unwrap_or_default().to_owned();
    if path.is_empty() {
        return Err(StepError::ImporterNoPath { importer, log });
    }
    debug!("importer squashfs path: {path}");
    Ok(path)
}

/// `importer release`; idempotent by contract, called again in cleanup. Never fatal.
fn importer_release(step: &Step, env: &[String]) {
    let inv = step.importer(&["release"], env);
    debug!("running importer command: {}", inv.display());
    if let Err(e) = runner::run(&inv, &step.user()) {
        info!("could not call importer release: {e}");
        for line in log_block("printing importer log file:", e.log().unwrap_or_default()) {
            info!("{line}");
        }
    }
}

fn start(step: &Step, env: &[String], target: &StartTarget) -> Result<u32, StepError> {
    let target = match target {
        StartTarget::Name => {
            info!("starting container: {}", step.name);
            step.name.as_str()
        }
        StartTarget::File(path) => {
            info!("starting container from squashfs: {path}");
            path.as_str()
        }
    };
    check_mount_sources(step)?;
    let entrypoint = step
        .args
        .entrypoint
        .unwrap_or(step.config.execute_entrypoint);
    let script = ConfScript {
        mounts: step.args.mounts.clone(),
        disable_entrypoint: !entrypoint,
        env_names: step.args.env_names.clone(),
    }
    .render()
    .map_err(|e| StepError::ConfScript(e.to_string()))?;
    debug!("enroot start configuration script:");
    for line in script.lines() {
        debug!("    {line}");
    }
    let conf = ConfFile::write(&step.runtime_dir, step.job.job, step.job.step, &script)?;
    let conf_path = conf.path.to_string_lossy().into_owned();
    let mut argv = vec!["start", "--conf", &conf_path, target];
    argv.extend(STOP_COMMAND);
    let started = container::start(&step.enroot(&argv, env), &step.user());
    drop(conf);
    let helper = started.map_err(|source| StepError::Start { source, entrypoint })?;
    if entrypoint && step.args.entrypoint_log == Some(true) {
        for line in helper.log.lines() {
            tracing::error!(target: USER_RAW, "{line}");
        }
    }
    Ok(helper.pid)
}

/// Absolute mount sources must exist (pyxis 0.24): a clear message instead of enroot's.
fn check_mount_sources(step: &Step) -> Result<(), StepError> {
    for m in step
        .args
        .mounts
        .iter()
        .filter(|m| m.source.starts_with('/'))
    {
        match std::fs::metadata(&m.source) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Err(StepError::MountSource(m.source.clone()))
            }
            Err(e) => info!(
                "--container-mounts: cannot stat source path {}: {e}",
                m.source
            ),
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

fn pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `task_exit` of the last local task (slurmstepd, root).
fn finish(step: &mut Step) -> Result<(), StepError> {
    // A helper nobody released (a task failed before joining) would stay stopped.
    if let Some(Setup::Ready { helper, .. }) = step.shm.as_ref().map(SharedStep::snapshot) {
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

fn cleanup(step: &Step) {
    remove_temp_squashfs(&step.temp_squashfs());
    ConfFile::sweep(&step.runtime_dir, step.job.job, step.job.step);
    if let Some(Plan::Create(Fetch::Importer { .. })) = &step.plan {
        importer_release(step, &step.job_env);
    }
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
            }
        }
    }
}

/// Removes the imported squashfs; it is normally gone already in cleanup.
fn remove_temp_squashfs(path: &Path) {
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
            env,
        }
    }
}

/// The enroot `--conf` script of one start, in the user's private runtime directory
/// (not the shared /tmp: W19), removed as soon as the helper stopped.
struct ConfFile {
    path: PathBuf,
}

impl ConfFile {
    fn prefix(job: JobId, step: StepId) -> String {
        format!("{job}.{step}.enroot-conf.")
    }

    fn write(dir: &Path, job: JobId, step: StepId, script: &str) -> Result<ConfFile, StepError> {
        let path = dir.join(format!("{}{}", Self::prefix(job, step), std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| StepError::ConfScript(format!("{}: {e}", path.display())))?;
        let conf = ConfFile { path };
        file.write_all(script.as_bytes())
            .map_err(|e| StepError::ConfScript(format!("{}: {e}", conf.path.display())))?;
        Ok(conf)
    }

    /// Removes the files a killed creator task left behind.
    fn sweep(dir: &Path, job: JobId, step: StepId) {
        let prefix = Self::prefix(job, step);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for ConfFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
