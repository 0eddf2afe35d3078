//! The job epilog (job-script context, root): with `container_scope=job`, remove the
//! job's containers (`pyxis_<jobid>_*`) from the node.
//!
//! pyxis ran `enroot list` as the user after *every* job on every node (W9). A
//! containerised step of a job-scope configuration leaves a marker in the user's runtime
//! directory, so jobs that never used a container cost one `stat` here.

use std::ffi::OsString;

use tracing::debug;

use super::HookResult;
use crate::core::config::{parse_config, Scope};
use crate::core::naming::{epilog_marker, epilog_matches, JobId};
use crate::error::{log_block, PluginError};
use crate::spank::Spank;
use crate::sys::runner::{self, Credentials, Invocation};

pub fn job_epilog(h: &Spank<'_>) -> HookResult {
    let config = parse_config(h.plugin_args()).map_err(PluginError::Config)?;
    if config.container_scope != Scope::Job {
        return Ok(());
    }
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
    let marker = epilog_marker(&config.runtime_path, uid, job);
    if !marker.exists() {
        return Ok(());
    }
    let creds = Credentials {
        uid,
        gid,
        groups: Vec::new(),
    };
    let failure = |details: Vec<String>| PluginError::Epilog {
        job: job.0,
        details,
    };
    let list = || {
        runner::run(&epilog_enroot(&["list"]), &creds)
            .map(|out| {
                out.lines()
                    .filter(|l| epilog_matches(l, job))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map_err(|e| {
                let mut d = vec!["epilog: couldn't get list of existing containers".to_owned()];
                d.extend(log_block(
                    "printing enroot log file:",
                    e.log().unwrap_or_default(),
                ));
                failure(d)
            })
    };
    let mut details = Vec::new();
    for name in list()? {
        debug!("epilog: removing container {name}");
        match runner::run(&epilog_enroot(&["remove", "-f", &name]), &creds) {
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
    if !details.is_empty() {
        debug!("epilog: checking for leftover containers");
        let left = list()?;
        if !left.is_empty() {
            details.extend(
                left.iter()
                    .map(|n| format!("epilog: container {n} was not removed")),
            );
            return Err(failure(details));
        }
        debug!("epilog: no leftover containers");
    }
    let _ = std::fs::remove_file(&marker);
    Ok(())
}

/// enroot with the epilog's own environment, `PATH` defaulted and `HOME` dropped (enroot
/// then uses the passwd home, as for the job).
fn epilog_enroot(argv: &[&str]) -> Invocation {
    let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k != "HOME").collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    Invocation {
        program: "enroot".into(),
        args: argv.iter().map(OsString::from).collect(),
        env,
    }
}
