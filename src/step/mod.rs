//! A containerised step on one node: what slurmstepd and its tasks do with the container.
//!
//! The hooks in `hooks/stepd.rs` move a step through typed states, one file per phase:
//!
//! | phase | hook, process | type |
//! |---|---|---|
//! | [`Step::new`] (`setup.rs`) | `init_post_opt`, slurmstepd as root | [`Step`] |
//! | [`Step::prepare`] (`prepare.rs`) | `user_init`, slurmstepd with euid = user | [`Prepared`] |
//! | [`Prepared::enter`] (`join.rs`, creator in `create.rs`) | `task_init`, each task as the user | |
//! | [`Prepared::task_exited`] (`finish.rs`) | `task_exit`, slurmstepd as root | |
//!
//! The plan itself is decided in `core::plan`; this module only carries it out, through
//! the seams of `seams.rs` (Slurm, enroot, the task process), so that whole steps are
//! unit-tested with scripted fakes.

// The phase errors carry enroot's captured log and are built at most once per failing
// step: their size on the cold path does not matter.
#![allow(clippy::result_large_err)]

mod cache;
mod create;
mod error;
mod finish;
mod join;
mod prepare;
pub mod seams;
mod setup;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::PathBuf;

pub use error::{CreateError, FinishError, JoinError, PrepareError, SetupError, StepError};

use crate::core::args::Args;
use crate::core::bytes;
use crate::core::config::Config;
use crate::core::envfilter::{enroot_env, EnrootEnvInput};
use crate::core::naming::{JobId, StepId};
use crate::core::plan::ContainerPlan;
use crate::sys::dirs::Dir;
use crate::sys::ns::ContainerNamespaces;
use crate::sys::runner::{Credentials, Invocation, Watch};
use crate::sys::shm::SharedStep;

/// The pyxis release whose behaviour we reproduce (`PYXIS_VERSION` for enroot hooks).
pub const PYXIS_VERSION: &str = "0.24.0";
/// The container's first process stops itself once enroot finished setting it up.
const STOP_COMMAND: [&str; 3] = ["sh", "-c", "kill -STOP $$ ; exit 0"];
const ENROOT: &str = "enroot";

/// What Slurm tells us about the job, collected once in `init_post_opt`.
#[derive(Clone, Debug)]
pub struct JobInfo {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub job: JobId,
    pub step: StepId,
    pub node_id: u32,
    pub local_tasks: u32,
    pub total_tasks: u32,
    /// `PWD` of the job environment: relative `--container-save` paths resolve there.
    pub cwd: Option<OsString>,
}

/// A containerised step after `init_post_opt`: its options, its user's checked runtime
/// directory and its job marker.
pub struct Step {
    job: JobInfo,
    config: Config,
    args: Args,
    /// `<runtime_path>/<uid>`, checked by root (W4). The tasks use it by path, as the
    /// user; root only removes the step's own files in it, through this fd.
    runtime: Dir,
    /// `<runtime_path>/jobs` (root only), where this step's marker is.
    jobs: Dir,
    /// `<image_cache_path>/<uid>`, created and checked by root like `runtime` when the
    /// step's image may go through the image cache; root only removes the step's
    /// temporaries in it.
    cache_dir: Option<Dir>,
    /// `task_exit` calls so far.
    completed: u32,
}

/// A step after `user_init`: the plan, and what the tasks share.
pub struct Prepared {
    step: Step,
    plan: ContainerPlan,
    shm: SharedStep,
    /// The job environment at `user_init`: what enroot calls made by slurmstepd use,
    /// and the snapshot that tells per-task variables apart (W12).
    job_env: Vec<OsString>,
    /// A running container attached to: its namespaces, opened and proven in
    /// `user_init` (W1), inherited by every task.
    pinned: Option<ContainerNamespaces>,
    /// The batch script of the batch step, bind-mounted into the container.
    batch_script: Option<String>,
    /// The image cache and this step's use of its entry (held by slurmstepd until the
    /// last task exited, so the entry is never evicted while the step runs).
    cache: Option<cache::CacheUse>,
    /// The digest and the node's direct-start support, as `user_init` found them.
    facts: prepare::ImageFacts,
    /// What `user_init` spent, for the timing line after setup.
    timing: cache::Timing,
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

    /// The bound on a short enroot/importer call (`list`, `start`, `remove`, `release`).
    fn short(&self) -> Watch<'static> {
        Watch::new(self.config.command_timeout, "command_timeout")
    }

    /// The bound on a long one (`import`, `create`, `load`, `export`, importer `get`).
    fn long(&self) -> Watch<'static> {
        Watch::new(self.config.import_timeout, "import_timeout")
    }

    /// How long a task waits for another one setting the container up: the longest a
    /// fetch, a creation and a start can take.
    fn setup_bound(&self) -> std::time::Duration {
        self.config.import_timeout * 2 + self.config.command_timeout * 3
    }

    fn runtime_dir(&self) -> PathBuf {
        self.runtime.path().to_owned()
    }

    /// An enroot command line with the environment pyxis gives enroot (§5.20). `argv` is
    /// text as `core` handles it: mapped bytes become the original bytes here
    /// (`core::bytes`), so values reach enroot exactly as the user gave them.
    fn enroot(&self, argv: &[&str], job_env: &[OsString]) -> Invocation {
        let host_path = std::env::var_os("PATH");
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
            args: argv.iter().map(|a| bytes::to_os(a)).collect(),
            env,
        }
    }

    /// An importer command line: same environment as enroot (§5.11), no PATH search.
    fn importer(&self, argv: &[&str], job_env: &[OsString]) -> Invocation {
        let mut inv = self.enroot(argv, job_env);
        inv.program = bytes::to_os(&self.importer_path());
        inv
    }

    fn importer_path(&self) -> String {
        self.config
            .importer
            .as_ref()
            .map(|p| bytes::decode_os(p.as_os_str()))
            .unwrap_or_default()
    }

    fn image(&self) -> &str {
        self.args.image.as_deref().unwrap_or_default()
    }
}
