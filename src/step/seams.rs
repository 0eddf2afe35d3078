//! The seams of a step: what it needs from Slurm ([`Slurm`]), from enroot and the
//! importer ([`Enroot`]) and from the task process ([`Host`]), with the production
//! implementations (the SPANK handle, the runner, the kernel). Unit tests drive whole
//! steps through scripted fakes of the three (`step/tests`).

use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::core::args::Unshare;
use crate::core::envfilter::EnvPairs;
use crate::core::plan::DirectSupport;
use crate::spank::{Spank, SpankError};
use crate::sys::container::{self, Helper, Spawned, StartError};
use crate::sys::fs::{process_cwd, process_environ, FsError};
use crate::sys::ns::{ContainerNamespaces, Kernel, NsError};
use crate::sys::probe;
use crate::sys::runner::{self, Credentials, Invocation, RunError, Watch};
use crate::sys::seccomp::{self, SeccompError};

/// What a step asks Slurm (remote context: slurmstepd and its tasks).
pub trait Slurm {
    fn job_uid(&self) -> Result<u32, SpankError>;
    fn job_gid(&self) -> Result<u32, SpankError>;
    fn supplementary_gids(&self) -> Result<Vec<u32>, SpankError>;
    fn job_id(&self) -> Result<u32, SpankError>;
    fn step_id(&self) -> Result<u32, SpankError>;
    fn node_id(&self) -> Result<u32, SpankError>;
    fn local_task_count(&self) -> Result<u32, SpankError>;
    fn total_task_count(&self) -> Result<u32, SpankError>;
    /// `S_JOB_ENV`: the job environment (in `task_init`, the task's).
    fn job_env(&self) -> Result<Vec<OsString>, SpankError>;
    fn job_argv(&self) -> Result<Vec<OsString>, SpankError>;
    fn getenv(&self, name: &str) -> Result<Option<OsString>, SpankError>;
    fn setenv(&self, name: &OsStr, value: &OsStr, overwrite: bool) -> Result<bool, SpankError>;
    fn unsetenv(&self, name: &str) -> Result<(), SpankError>;
}

/// Running enroot (and the importer) as the job user.
pub trait Enroot {
    /// To completion, bounded by `watch`; the result is the captured stdout+stderr.
    fn run(
        &self,
        inv: &Invocation,
        creds: &Credentials,
        watch: &mut Watch<'_>,
    ) -> Result<String, RunError>;
    /// To completion, stdout apart from the log: `(stdout, log)`.
    fn run_split(
        &self,
        inv: &Invocation,
        creds: &Credentials,
        watch: &mut Watch<'_>,
    ) -> Result<(String, String), RunError>;
    /// `enroot start ... sh -c 'kill -STOP $$'` until the helper stopped itself;
    /// `spawned` learns the helper's pid as soon as it exists.
    fn start(
        &self,
        inv: &Invocation,
        creds: &Credentials,
        watch: &Watch<'_>,
        spawned: &dyn Fn(Spawned),
    ) -> Result<Helper, StartError>;
}

/// What a task does to itself and to the container's processes.
pub trait Host {
    fn open_namespaces(&self, pid: u32, unshare: Unshare) -> Result<ContainerNamespaces, NsError>;
    fn join(&self, ns: &ContainerNamespaces) -> Result<(), NsError>;
    /// The helper's working directory, as seen inside the container.
    fn helper_cwd(&self, pid: u32) -> Result<OsString, FsError>;
    /// The helper's environment: the container's.
    fn helper_environ(&self, pid: u32) -> Result<EnvPairs, FsError>;
    fn chdir(&self, dir: &Path) -> std::io::Result<()>;
    fn install_seccomp(&self) -> Result<(), SeccompError>;
    /// SIGCONT: the stopped helper exits.
    fn release(&self, pid: u32) -> nix::Result<()>;
    /// SIGKILL, if `pid` is still a stopped process of `uid` (a helper nobody released,
    /// or a direct start's, which holds the squashfuse mount), with every process of
    /// its session when it leads one (enroot's fuse daemons); the session, if so.
    fn kill_stopped_helper(&self, pid: u32, uid: u32) -> Option<u32>;
    /// SIGKILL for the session of a helper the creator forked but never published (it
    /// died in `enroot start`), if it is still that process of `uid`; the session.
    fn kill_unpublished_helper(&self, helper: Spawned, uid: u32) -> Option<u32>;
    /// What the node offers for a direct start (`sys::probe`), for enroot's `PATH`.
    fn direct_support(&self, path: Option<&OsStr>, uid: u32, gid: u32) -> DirectSupport;
    /// Whether a live process of session `sid` is left.
    fn session_alive(&self, sid: u32) -> bool;
    fn sleep(&self, d: std::time::Duration);
}

/// The three seams a step phase works with.
#[derive(Clone, Copy)]
pub struct Io<'a> {
    pub slurm: &'a dyn Slurm,
    pub enroot: &'a dyn Enroot,
    pub host: &'a dyn Host,
}

impl Slurm for Spank<'_> {
    fn job_uid(&self) -> Result<u32, SpankError> {
        Spank::job_uid(self)
    }
    fn job_gid(&self) -> Result<u32, SpankError> {
        Spank::job_gid(self)
    }
    fn supplementary_gids(&self) -> Result<Vec<u32>, SpankError> {
        Spank::supplementary_gids(self)
    }
    fn job_id(&self) -> Result<u32, SpankError> {
        Spank::job_id(self)
    }
    fn step_id(&self) -> Result<u32, SpankError> {
        Spank::step_id(self)
    }
    fn node_id(&self) -> Result<u32, SpankError> {
        Spank::node_id(self)
    }
    fn local_task_count(&self) -> Result<u32, SpankError> {
        Spank::local_task_count(self)
    }
    fn total_task_count(&self) -> Result<u32, SpankError> {
        Spank::total_task_count(self)
    }
    fn job_env(&self) -> Result<Vec<OsString>, SpankError> {
        Spank::job_env(self)
    }
    fn job_argv(&self) -> Result<Vec<OsString>, SpankError> {
        Spank::job_argv(self)
    }
    fn getenv(&self, name: &str) -> Result<Option<OsString>, SpankError> {
        Spank::getenv(self, name)
    }
    fn setenv(&self, name: &OsStr, value: &OsStr, overwrite: bool) -> Result<bool, SpankError> {
        Spank::setenv(self, name, value, overwrite)
    }
    fn unsetenv(&self, name: &str) -> Result<(), SpankError> {
        Spank::unsetenv(self, name)
    }
}

/// The real enroot, through `sys::runner`.
pub struct Runner;

impl Enroot for Runner {
    fn run(
        &self,
        inv: &Invocation,
        creds: &Credentials,
        watch: &mut Watch<'_>,
    ) -> Result<String, RunError> {
        runner::run(inv, creds, watch)
    }
    fn run_split(
        &self,
        inv: &Invocation,
        creds: &Credentials,
        watch: &mut Watch<'_>,
    ) -> Result<(String, String), RunError> {
        runner::run_split(inv, creds, watch)
    }
    fn start(
        &self,
        inv: &Invocation,
        creds: &Credentials,
        watch: &Watch<'_>,
        spawned: &dyn Fn(Spawned),
    ) -> Result<Helper, StartError> {
        container::start(inv, creds, watch, spawned)
    }
}

/// The real task process.
pub struct Process;

impl Host for Process {
    fn open_namespaces(&self, pid: u32, unshare: Unshare) -> Result<ContainerNamespaces, NsError> {
        ContainerNamespaces::open(pid, unshare)
    }
    fn join(&self, ns: &ContainerNamespaces) -> Result<(), NsError> {
        ns.join(&mut Kernel)
    }
    fn helper_cwd(&self, pid: u32) -> Result<OsString, FsError> {
        process_cwd(pid)
    }
    fn helper_environ(&self, pid: u32) -> Result<EnvPairs, FsError> {
        process_environ(pid)
    }
    fn chdir(&self, dir: &Path) -> std::io::Result<()> {
        std::env::set_current_dir(dir)
    }
    fn install_seccomp(&self) -> Result<(), SeccompError> {
        seccomp::install()
    }
    fn release(&self, pid: u32) -> nix::Result<()> {
        container::release(pid)
    }
    fn kill_stopped_helper(&self, pid: u32, uid: u32) -> Option<u32> {
        container::kill_stopped_helper(pid, uid)
    }
    fn kill_unpublished_helper(&self, helper: Spawned, uid: u32) -> Option<u32> {
        container::kill_unpublished_helper(helper, uid)
    }
    fn direct_support(&self, path: Option<&OsStr>, uid: u32, gid: u32) -> DirectSupport {
        probe::direct_support(path, uid, gid)
    }
    fn session_alive(&self, sid: u32) -> bool {
        container::session_alive(sid)
    }
    fn sleep(&self, d: std::time::Duration) {
        std::thread::sleep(d);
    }
}
