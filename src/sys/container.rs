//! The container start handshake: `enroot start ... sh -c 'kill -STOP $$ ; exit 0'`.
//!
//! Runs in the creator task (as the user). enroot turns the process we fork into the
//! container's first process, which stops itself once the container is fully set up;
//! `waitpid(WUNTRACED)` tells us so. Its namespaces, cwd and environment are then what
//! every task of the step joins, and a SIGCONT lets it exit.

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::runner::{self, Credentials, Invocation, Running};

/// Why the helper did not reach its stop.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to start container: {0}")]
    Spawn(#[source] runner::RunError),
    #[error("container start error: {0}")]
    Wait(#[source] nix::Error),
    #[error("container start failed with error code: {code}")]
    Failed { code: i32, log: String },
    #[error("container exited too soon")]
    TooSoon { log: String },
}

impl StartError {
    pub fn log(&self) -> Option<&str> {
        match self {
            StartError::Failed { log, .. } | StartError::TooSoon { log } => Some(log),
            StartError::Spawn(e) => e.log(),
            StartError::Wait(_) => None,
        }
    }
}

/// The stopped first process of a started container.
#[derive(Debug)]
pub struct Helper {
    pub pid: u32,
    /// What enroot and the entrypoint printed while starting.
    pub log: String,
}

/// Starts the helper and waits until it stopped itself.
pub fn start(
    inv: &Invocation,
    creds: &Credentials,
    keep_fds: &[i32],
) -> Result<Helper, StartError> {
    let mut running: Running = runner::spawn(inv, creds, keep_fds).map_err(StartError::Spawn)?;
    let pid = running.child.id();
    let npid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    loop {
        match waitpid(npid, Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Stopped(_, _)) => {
                return Ok(Helper {
                    pid,
                    log: running.read_log(),
                })
            }
            Ok(WaitStatus::Exited(_, code)) if code != 0 => {
                return Err(StartError::Failed {
                    code,
                    log: running.read_log(),
                })
            }
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                return Err(StartError::TooSoon {
                    log: running.read_log(),
                })
            }
            // Interrupted waits are retried (pyxis gave up on EINTR: W18).
            Err(nix::Error::EINTR) | Ok(_) => continue,
            Err(e) => return Err(StartError::Wait(e)),
        }
    }
}

/// Lets a stopped helper finish (`exit 0` after the stop).
pub fn release(pid: u32) -> nix::Result<()> {
    kill(
        Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
        Signal::SIGCONT,
    )
}
