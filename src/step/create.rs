//! The creator task (the first local task in `task_init`, as the user): fetch the image,
//! create the container filesystem and start the helper whose namespaces every task
//! joins.

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{debug, info};

use super::cache::{CacheUse, Timing};
use super::seams::Io;
use super::{CreateError, Prepared, Step, STOP_COMMAND};
use crate::core::bytes::{self, decode_os, to_path};
use crate::core::conf_script::ConfScript;
use crate::core::naming::{conf_script_prefix, temp_squashfs_name, JobId, StepId};
use crate::core::plan::{ContainerPlan, Rootfs, Source};
use crate::core::text::{log_block, printable};
use crate::spank::log::{USER, USER_RAW};
use crate::sys::container::Spawned;
use crate::sys::fs::NameLock;
use crate::sys::ns::ContainerNamespaces;
use crate::sys::runner::Progress;

/// What the creator hands to every task.
pub(super) struct Started {
    /// The helper: its environment and working directory become the tasks'.
    pub helper: u32,
    /// A running container found under the name lock: its namespaces, pinned here.
    pub attached: Option<(u32, ContainerNamespaces)>,
}

impl Prepared {
    /// The creator task: create the filesystem if needed, then start the helper.
    pub(super) fn create_and_start(
        &self,
        io: Io<'_>,
        task_env: &[OsString],
    ) -> Result<Started, CreateError> {
        let step = &self.step;
        // Steps of this user on this node that create or start the same named container
        // are serialised, so neither enroot's "File already exists" nor its 30 s rootfs
        // lock can fail one of them (W2).
        let _lock = match self.plan.named {
            true => Some(NameLock::acquire(
                &step.runtime_dir(),
                &self.plan.name,
                step.setup_bound(),
            )?),
            false => None,
        };
        // Under the lock the named container may have been created or started by
        // another step since user_init looked: decide again (an attach stays an attach).
        let (plan, attached) = match (&self.plan.rootfs, self.plan.named) {
            (Rootfs::Create(_) | Rootfs::Reuse, true) => {
                let (plan, attached) =
                    step.plan(io, task_env, self.batch_script.as_deref(), &self.facts)?;
                if plan.rootfs != self.plan.rootfs {
                    step.announce_plan(&plan);
                }
                (Cow::Owned(plan), attached)
            }
            _ => (Cow::Borrowed(&self.plan), None),
        };
        let mut timing = self.timing.clone();
        let cache = self.cache.as_ref();
        let target = match &plan.rootfs {
            Rootfs::Attach { .. } | Rootfs::Reuse => Target::Name,
            Rootfs::Create(source) => {
                let started = Instant::now();
                step.create(io, &plan, source, task_env, cache, &mut timing)?;
                info!(
                    "completed container setup in {} ms",
                    started.elapsed().as_millis()
                );
                Target::Name
            }
            Rootfs::Direct(source) => {
                step.fetch_direct(io, &plan, source, task_env, cache, &mut timing)?
            }
        };
        let starting = Instant::now();
        let started = step.start(io, &plan, task_env, &target, &|h| self.shm.note_spawned(h));
        timing.add(
            match target {
                Target::Name => "enroot start",
                Target::File(_) => "enroot start (direct)",
            },
            starting.elapsed(),
        );
        if started.is_err() && plan.helper_lives_with_step() && plan.uses_importer() {
            step.importer_release(io, task_env);
        }
        let helper = started?;
        info!("setup timing: {}", timing.line());
        Ok(Started { helper, attached })
    }
}

/// What `enroot start` is given.
enum Target {
    /// The container by name.
    Name,
    /// A squashfs file started directly.
    File(String),
}

impl Step {
    pub(super) fn announce(&self) {
        if self.job.total_tasks <= 1 {
            tracing::error!(target: USER, "importing docker image: {}", self.image());
        }
    }

    pub(super) fn imported(&self) {
        tracing::error!(target: USER, "imported docker image: {}", self.image());
    }

    /// Tells the user, every few seconds, that a long fetch still runs and what enroot
    /// said last (`[INFO] Downloading 3 missing layers...`).
    fn progress(&self) -> impl FnMut(&Progress) + '_ {
        move |p: &Progress| {
            let said = p
                .last_line
                .as_deref()
                .map(|l| format!(": {}", printable(l.trim_start_matches("[INFO] "))))
                .unwrap_or_default();
            tracing::error!(
                target: USER,
                "importing docker image: {} ({} s){said}",
                self.image(),
                p.elapsed.as_secs()
            );
        }
    }

    fn temp_squashfs(&self) -> PathBuf {
        self.runtime
            .path()
            .join(temp_squashfs_name(self.job.job, self.job.step))
    }

    /// Fetches the image and creates the container filesystem.
    fn create(
        &self,
        io: Io<'_>,
        plan: &ContainerPlan,
        source: &Source,
        env: &[OsString],
        cache: Option<&CacheUse>,
        timing: &mut Timing,
    ) -> Result<(), CreateError> {
        let started = Instant::now();
        let created = match source {
            Source::File(path) => self.create_from(io, plan, path, env),
            Source::Cached { uri, digest } => {
                let cache = cache.ok_or(CreateError::NoCache)?;
                let path = self.cached_squashfs(io, cache, uri, digest, env, timing)?;
                let started = Instant::now();
                let created = self.create_from(io, plan, &decode_os(path.as_os_str()), env);
                timing.add("enroot create", started.elapsed());
                return created;
            }
            Source::Import { uri } => {
                let tmp = self.import(io, uri, env)?;
                let created = self.create_from(io, plan, &decode_os(tmp.as_os_str()), env);
                remove_temp_squashfs(&tmp);
                created
            }
            Source::Load { uri } => self.load(io, plan, uri, env),
            Source::Importer { uri } => {
                let path = self.importer_get(io, uri, env)?;
                let created = self.create_from(io, plan, &path, env);
                self.importer_release(io, env);
                created
            }
        };
        let what = match source {
            Source::File(_) => "enroot create",
            Source::Load { .. } => "enroot load",
            Source::Importer { .. } => "importer get + enroot create",
            Source::Import { .. } | Source::Cached { .. } => "enroot import + create",
        };
        timing.add(what, started.elapsed());
        created
    }

    /// Fetches the image for a direct start; the file stays until the step ends.
    fn fetch_direct(
        &self,
        io: Io<'_>,
        plan: &ContainerPlan,
        source: &Source,
        env: &[OsString],
        cache: Option<&CacheUse>,
        timing: &mut Timing,
    ) -> Result<Target, CreateError> {
        match source {
            Source::Cached { uri, digest } => {
                let cache = cache.ok_or(CreateError::NoCache)?;
                let path = self.cached_squashfs(io, cache, uri, digest, env, timing)?;
                Ok(Target::File(decode_os(path.as_os_str())))
            }
            Source::File(path) if !to_path(path).is_file() => {
                // enroot start would take a missing file for a container name: let
                // enroot create say what is wrong with the image, as in pyxis.
                self.create_from(io, plan, path, env)?;
                // It appeared meanwhile: the filesystem is not ours to keep.
                self.remove_container(io, &plan.name, env);
                Ok(Target::File(path.clone()))
            }
            Source::File(path) => {
                info!("skipping container creation (squashfuse enabled)");
                Ok(Target::File(path.clone()))
            }
            Source::Import { uri } => self
                .import(io, uri, env)
                .map(|tmp| Target::File(decode_os(tmp.as_os_str()))),
            Source::Importer { uri } => {
                let path = self.importer_get(io, uri, env)?;
                info!("using importer squashfs directly: {path}");
                Ok(Target::File(path))
            }
            Source::Load { uri } => self.load(io, plan, uri, env).map(|()| Target::Name),
        }
    }

    /// `enroot import --output <temp squashfs> <uri>`.
    fn import(&self, io: Io<'_>, uri: &str, env: &[OsString]) -> Result<PathBuf, CreateError> {
        self.announce();
        let tmp = self.temp_squashfs();
        // A killed step may have left it behind (W3); import refuses to overwrite.
        remove_temp_squashfs(&tmp);
        let out = decode_os(tmp.as_os_str());
        let mut progress = self.progress();
        let imported = io.enroot.run(
            &self.enroot(&["import", "--output", &out, uri], env),
            &self.user(),
            &mut self.long().with_progress(&mut progress),
        );
        if let Err(source) = imported {
            remove_temp_squashfs(&tmp);
            return Err(CreateError::Import {
                image: self.image().to_owned(),
                source,
            });
        }
        self.imported();
        Ok(tmp)
    }

    /// `enroot load --name <name> <uri>` (use_enroot_load).
    fn load(
        &self,
        io: Io<'_>,
        plan: &ContainerPlan,
        uri: &str,
        env: &[OsString],
    ) -> Result<(), CreateError> {
        self.announce();
        let mut argv = vec!["load"];
        if !plan.named {
            argv.push("--force");
        }
        argv.extend(["--name", &plan.name, uri]);
        let mut progress = self.progress();
        io.enroot
            .run(
                &self.enroot(&argv, env),
                &self.user(),
                &mut self.long().with_progress(&mut progress),
            )
            .map_err(|source| CreateError::Import {
                image: self.image().to_owned(),
                source,
            })?;
        self.imported();
        Ok(())
    }

    fn create_from(
        &self,
        io: Io<'_>,
        plan: &ContainerPlan,
        squashfs: &str,
        env: &[OsString],
    ) -> Result<(), CreateError> {
        info!("creating container filesystem: {}", plan.name);
        // An unnamed container is ours alone: a leftover of a killed or requeued
        // incarnation of this step is replaced instead of failing with "File already
        // exists" (W3).
        let mut argv = vec!["create"];
        if !plan.named {
            argv.push("--force");
        }
        argv.extend(["--name", &plan.name, squashfs]);
        io.enroot
            .run(&self.enroot(&argv, env), &self.user(), &mut self.long())
            .map(drop)
            .map_err(|source| CreateError::Create {
                image: self.image().to_owned(),
                source,
            })
    }

    /// `importer get <uri>`: the first line of its stdout is the squashfs path (§5.11).
    fn importer_get(&self, io: Io<'_>, uri: &str, env: &[OsString]) -> Result<String, CreateError> {
        self.announce();
        let importer = self.importer_path();
        let inv = self.importer(&["get", uri], env);
        debug!("running importer command: {}", inv.display());
        let mut progress = self.progress();
        let got = io.enroot.run_split(
            &inv,
            &self.user(),
            &mut self.long().with_progress(&mut progress),
        );
        let (stdout, log) = match got {
            Ok(out) => out,
            Err(source) => {
                self.importer_release(io, env);
                return Err(CreateError::Importer {
                    image: self.image().to_owned(),
                    importer,
                    source,
                });
            }
        };
        let path = stdout.lines().next().unwrap_or_default().to_owned();
        if path.is_empty() {
            self.importer_release(io, env);
            return Err(CreateError::ImporterNoPath { importer, log });
        }
        debug!("importer squashfs path: {path}");
        self.imported();
        Ok(path)
    }

    /// `importer release`; idempotent by contract, called again in cleanup. Never fatal.
    pub(super) fn importer_release(&self, io: Io<'_>, env: &[OsString]) {
        let inv = self.importer(&["release"], env);
        debug!("running importer command: {}", inv.display());
        if let Err(e) = io.enroot.run(&inv, &self.user(), &mut self.short()) {
            info!("could not call importer release: {e}");
            for line in log_block("printing importer log file:", e.log().unwrap_or_default()) {
                info!("{line}");
            }
        }
    }

    fn start(
        &self,
        io: Io<'_>,
        plan: &ContainerPlan,
        env: &[OsString],
        target: &Target,
        spawned: &dyn Fn(Spawned),
    ) -> Result<u32, CreateError> {
        let target = match target {
            Target::Name => {
                info!("starting container: {}", plan.name);
                plan.name.as_str()
            }
            Target::File(path) => {
                info!("starting container from squashfs: {path}");
                path.as_str()
            }
        };
        check_mount_sources(plan)?;
        let script = ConfScript {
            mounts: plan.mounts.clone(),
            disable_entrypoint: !plan.entrypoint,
            env_names: self.args.env_names.clone(),
            env_values: self.args.env_values.clone(),
        }
        .render()
        .map_err(|e| CreateError::ConfScript(e.to_string()))?;
        debug!("enroot start configuration script:");
        for line in script.lines() {
            debug!("    {line}");
        }
        let conf = ConfFile::write(self.runtime.path(), self.job.job, self.job.step, &script)?;
        let conf_path = decode_os(conf.path.as_os_str());
        let mut argv = vec!["start", "--conf", &conf_path, target];
        argv.extend(STOP_COMMAND);
        let mut inv = self.enroot(&argv, env);
        if plan.native_overlay && matches!(plan.rootfs, Rootfs::Direct(_)) {
            // Probed in user_init: kernel overlayfs works in a user namespace here.
            inv.env.retain(|(k, _)| k != "ENROOT_NATIVE_OVERLAYFS");
            inv.env.push(("ENROOT_NATIVE_OVERLAYFS".into(), "y".into()));
        }
        let started = io.enroot.start(&inv, &self.user(), &self.short(), spawned);
        drop(conf);
        let helper = started.map_err(|source| CreateError::Start {
            source,
            entrypoint: plan.entrypoint,
        })?;
        if plan.entrypoint && self.args.entrypoint_log == Some(true) {
            for line in helper.log.lines() {
                tracing::error!(target: USER_RAW, "{line}");
            }
        }
        Ok(helper.pid)
    }
}

/// Removes the imported squashfs as the user; it is normally gone already at cleanup.
fn remove_temp_squashfs(path: &Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            info!("could not remove squashfs {}: {e}", path.display());
        }
        _ => {}
    }
}

/// Absolute mount sources must exist (pyxis 0.24): a clear message instead of enroot's.
fn check_mount_sources(plan: &ContainerPlan) -> Result<(), CreateError> {
    for m in plan.mounts.iter().filter(|m| m.source.starts_with('/')) {
        match std::fs::metadata(to_path(&m.source)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Err(CreateError::MountSource(m.source.clone()))
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
/// (not the shared /tmp: W19), removed as soon as the helper stopped. Written by the
/// creator task, as the user.
struct ConfFile {
    path: PathBuf,
}

impl ConfFile {
    fn write(dir: &Path, job: JobId, step: StepId, script: &str) -> Result<ConfFile, CreateError> {
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
            .map_err(|e| CreateError::ConfScript(format!("{}: {e}", path.display())))?;
        let conf = ConfFile { path };
        // The script is text with mapped bytes (paths that are not UTF-8): written as
        // the bytes they stand for, so enroot mounts exactly the user's paths.
        file.write_all(&bytes::encode(script))
            .map_err(|e| CreateError::ConfScript(format!("{}: {e}", conf.path.display())))?;
        Ok(conf)
    }
}

impl Drop for ConfFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
