//! The job epilog (job-script context, root): remove what the job's containerised steps
//! left on this node.
//!
//! Every containerised step leaves a marker in the root-only `<runtime_path>/jobs`
//! (`core::marker`); a step that finished cleanly removes its own (job-scope markers stay
//! until here). So a job that never used a container costs one directory read (W9), and
//! the epilog acts only on what root wrote, never on a file the user could plant.
//!
//! pyxis failed the epilog — and Slurm drained the node — whenever `enroot list` failed,
//! which a user can cause by breaking their own enroot directories. Here the epilog
//! fails only when a container of this job exists and could not be removed; everything
//! else is logged.

use std::ffi::{OsStr, OsString};

use tracing::{debug, error, info};

use super::HookResult;
use crate::core::config::{parse_config, Config};
use crate::core::envfilter::is_shell_startup;
use crate::core::marker::{is_marker_of, Cleanup, StepMarker, JOBS_DIR, MAX_MARKER_LEN};
use crate::core::naming::{is_step_file, JobId};
use crate::core::text::log_block;
use crate::error::PluginError;
use crate::spank::Spank;
use crate::sys::cache::UserCache;
use crate::sys::dirs::Dir;
use crate::sys::fs::NameLock;
use crate::sys::runner::{self, Credentials, Invocation, Watch};

pub fn job_epilog(h: &Spank<'_>) -> HookResult {
    let config = parse_config(h.plugin_args()).map_err(PluginError::Config)?;
    let spank_err = |what| move |source| PluginError::Spank { what, source };
    let uid = h
        .job_uid()
        .map_err(spank_err("epilog: couldn't get job uid"))?;
    let gid = h
        .job_gid()
        .map_err(spank_err("epilog: couldn't get job gid"))?;
    let job = JobId(
        h.job_id()
            .map_err(spank_err("epilog: couldn't get job ID"))?,
    );
    let Some(found) = Markers::find(&config, job, uid) else {
        return Ok(());
    };
    remove_user_files(&config, &found.cleanup, job, uid);
    let creds = Credentials {
        uid,
        gid,
        groups: Vec::new(),
    };
    let removed = if found.cleanup.needs_enroot() {
        remove_containers(&config, &found.cleanup, job, &creds)
    } else {
        Ok(())
    };
    found.remove();
    removed
}

/// The markers of one job on this node.
struct Markers {
    jobs: Dir,
    names: Vec<OsString>,
    cleanup: Cleanup,
}

impl Markers {
    /// `None` when there is nothing to do, or the marker directory cannot be trusted
    /// (logged: that is the admin's to fix, not a reason to fail the job).
    fn find(config: &Config, job: JobId, uid: u32) -> Option<Markers> {
        let jobs = Dir::open_trusted(&config.runtime_path.join(JOBS_DIR), 0)
            .map_err(|e| debug!("epilog: no job markers: {e}"))
            .ok()?;
        let names: Vec<OsString> = jobs
            .names()
            .map_err(|e| error!("epilog: {e}"))
            .ok()?
            .into_iter()
            .filter(|n| n.to_str().is_some_and(|n| is_marker_of(n, job)))
            .collect();
        if names.is_empty() {
            return None;
        }
        let mut markers = Vec::new();
        for name in &names {
            let parsed = jobs
                .read_file(name, MAX_MARKER_LEN)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    StepMarker::parse(&String::from_utf8_lossy(&bytes)).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(m) if m.uid == uid => markers.push(m),
                Ok(m) => error!(
                    "epilog: job marker {} is for uid {}, not the job's uid {uid}; ignored",
                    name.to_string_lossy(),
                    m.uid
                ),
                Err(e) => error!("epilog: job marker {}: {e}", name.to_string_lossy()),
            }
        }
        Some(Markers {
            cleanup: Cleanup::of(&markers, uid),
            jobs,
            names,
        })
    }

    fn remove(self) {
        for name in &self.names {
            if let Err(e) = self.jobs.unlink(name) {
                error!("epilog: {e}");
            }
        }
    }
}

/// What killed steps left in the user's runtime directory: their temporary squashfs
/// files and `--conf` scripts, and named-container lock files nobody holds. Root only
/// unlinks exact names through the checked directory fd.
fn remove_user_files(config: &Config, cleanup: &Cleanup, job: JobId, uid: u32) {
    let dir = match Dir::open_trusted(&config.runtime_path, 0)
        .and_then(|t| t.existing_user_subdir(uid))
    {
        Ok(dir) => dir,
        Err(e) => return info!("epilog: {e}"),
    };
    let names = dir.names().unwrap_or_default();
    for name in names
        .iter()
        .filter(|n| n.to_str().is_some_and(|n| is_step_file(n, job, None)))
    {
        debug!("epilog: removing {}", dir.path().join(name).display());
        if let Err(e) = dir.unlink(name) {
            info!("epilog: {e}");
        }
    }
    for lock in &cleanup.locks {
        match NameLock::remove_stale(&dir, lock) {
            Ok(true) => debug!("epilog: removed stale lock of {lock}"),
            Ok(false) => {}
            Err(e) => info!("epilog: {e}"),
        }
    }
    remove_cache_temps(config, job, uid);
}

/// The image-cache temporaries of the job's killed imports (and per-step copies of
/// images too large for the cache): only names that parse strictly as this job's,
/// unlinked through the checked directory fd.
fn remove_cache_temps(config: &Config, job: JobId, uid: u32) {
    let Some(top) = config.image_cache() else {
        return;
    };
    let removed = Dir::open_trusted(top, 0)
        .and_then(|t| t.existing_user_subdir(uid))
        .map_err(|e| e.to_string())
        .and_then(|d| UserCache::from_dir(&d, uid).map_err(|e| e.to_string()))
        .and_then(|c| c.remove_job_temps(job).map_err(|e| e.to_string()));
    match removed {
        Ok(r) => {
            for name in r.removed {
                debug!("epilog: removed image cache temporary {name}");
            }
            for (name, e) in r.failed {
                info!("epilog: couldn't remove image cache temporary {name}: {e}");
            }
        }
        // No cache directory for this user yet is the common case.
        Err(e) => debug!("epilog: image cache: {e}"),
    }
}

fn remove_containers(
    config: &Config,
    cleanup: &Cleanup,
    job: JobId,
    creds: &Credentials,
) -> HookResult {
    let failure = |details: Vec<String>| PluginError::Epilog {
        job: job.0,
        details,
    };
    let Some(listing) = list(config, creds) else {
        return Ok(());
    };
    let mut details = Vec::new();
    for name in cleanup.to_remove(&listing, job) {
        debug!("epilog: removing container {name}");
        match runner::run(
            &epilog_enroot(&["remove", "-f", name]),
            creds,
            &mut watch(config),
        ) {
            Ok(_) => debug!("epilog: removed container {name}"),
            Err(e) => {
                details.push(format!("epilog: failed to remove container {name}"));
                details.extend(log_block(
                    "printing enroot log file:",
                    e.log().unwrap_or_default(),
                ));
            }
        }
    }
    if details.is_empty() {
        return Ok(());
    }
    debug!("epilog: checking for leftover containers");
    let Some(listing) = list(config, creds) else {
        return Ok(());
    };
    let left = cleanup.to_remove(&listing, job);
    if left.is_empty() {
        debug!("epilog: no leftover containers");
        for line in details {
            info!("{line}");
        }
        return Ok(());
    }
    details.extend(
        left.iter()
            .map(|n| format!("epilog: container {n} was not removed")),
    );
    Err(failure(details))
}

/// `enroot list` as the user. A failure is the user's enroot setup (or a missing
/// enroot), not a container that could not be removed: logged, and `None`.
fn list(config: &Config, creds: &Credentials) -> Option<String> {
    match runner::run(&epilog_enroot(&["list"]), creds, &mut watch(config)) {
        Ok(out) => Some(out),
        Err(e) => {
            error!("epilog: couldn't get list of existing containers: {e}");
            for line in log_block("printing enroot log file:", e.log().unwrap_or_default()) {
                error!("{line}");
            }
            None
        }
    }
}

/// The bound on each enroot call of the epilog.
fn watch(config: &Config) -> Watch<'static> {
    Watch::new(config.command_timeout, "command_timeout")
}

/// enroot with the epilog's own environment (as bytes: Slurm puts user-chosen bytes
/// there), `PATH` defaulted and `HOME` dropped (enroot then uses the passwd home, as for
/// the job).
fn epilog_enroot(argv: &[&str]) -> Invocation {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, v)| {
            let mut entry = k.clone();
            entry.push("=");
            entry.push(v);
            k != "HOME" && !is_shell_startup(&entry)
        })
        .collect();
    if !env.iter().any(|(k, _)| k == OsStr::new("PATH")) {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    Invocation {
        program: "enroot".into(),
        args: argv.iter().map(OsString::from).collect(),
        env,
    }
}
