//! The creator task (the first local task in `task_init`, as the user): fetch the image,
//! create the container filesystem and start the helper whose namespaces every task
//! joins.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{debug, info};

use super::finish::remove_temp_squashfs;
use super::{Plan, Step, StepError, STOP_COMMAND};
use crate::core::args::NameFlag;
use crate::core::conf_script::ConfScript;
use crate::core::list::{find_container, ContainerState};
use crate::core::naming::{conf_script_prefix, JobId, StepId};
use crate::core::plan::{Fetch, PlanError};
use crate::error::log_block;
use crate::spank::log::{USER, USER_RAW};
use crate::sys::container;
use crate::sys::fs::NameLock;
use crate::sys::runner;

/// The creator task: create the filesystem if needed, then start the helper.
pub(super) fn create_and_start(step: &Step, task_env: &[String]) -> Result<u32, StepError> {
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
pub(super) fn importer_release(step: &Step, env: &[String]) {
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

/// The enroot `--conf` script of one start, in the user's private runtime directory
/// (not the shared /tmp: W19), removed as soon as the helper stopped.
pub(super) struct ConfFile {
    path: PathBuf,
}

impl ConfFile {
    fn write(dir: &Path, job: JobId, step: StepId, script: &str) -> Result<ConfFile, StepError> {
        let path = dir.join(format!(
            "{}{}",
            conf_script_prefix(job, step),
            std::process::id()
        ));
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
}

impl Drop for ConfFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
