//! Waiting for a command with a deadline: slurmstepd and the tasks never block without
//! bound on enroot or the importer (issue 11 item 3).
//!
//! No threads and no signal handlers (slurmstepd owns those): the child's exit is
//! awaited on a pidfd with `poll` (Linux >= 5.3), or by polling `waitpid(WNOHANG)` with
//! short sleeps where pidfds do not exist. Every few seconds the caller's progress
//! callback sees the elapsed time and the command's last output line. When the deadline
//! passes, or when Slurm's SIGTERM is pending but blocked in this process (scancel
//! while slurmstepd has signals masked), the command's whole process group gets
//! SIGTERM (enroot's EXIT traps clean up), then SIGKILL after a grace period.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How often the progress callback runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Between SIGTERM and SIGKILL of a command that overran.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// What a progress callback is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub elapsed: Duration,
    /// The command's last non-empty output line so far.
    pub last_line: Option<String>,
}

/// The bound on one command, and who to tell while it runs.
pub struct Watch<'a> {
    pub timeout: Duration,
    /// The plugstack key that sets `timeout`, for the message when it passes.
    pub key: &'static str,
    pub progress: Option<&'a mut dyn FnMut(&Progress)>,
}

impl<'a> Watch<'a> {
    pub fn new(timeout: Duration, key: &'static str) -> Watch<'a> {
        Watch {
            timeout,
            key,
            progress: None,
        }
    }

    pub fn with_progress<'b>(self, progress: &'b mut dyn FnMut(&Progress)) -> Watch<'b> {
        Watch {
            timeout: self.timeout,
            key: self.key,
            progress: Some(progress),
        }
    }
}

/// How the wait ended when the command did not end by itself.
#[derive(Debug)]
pub enum Stopped {
    /// The deadline passed; the process group was killed.
    Timeout(Duration),
    /// SIGTERM or SIGINT is pending for this process; the process group was killed.
    Cancelled,
    Wait(std::io::Error),
}

/// Waits for `child` (the leader of its own process group) under `watch`. `log` gives
/// the output so far, for progress lines.
pub fn wait(
    child: &mut Child,
    watch: &mut Watch<'_>,
    log: &mut dyn FnMut() -> String,
) -> Result<ExitStatus, Stopped> {
    let started = Instant::now();
    let deadline = started + watch.timeout;
    let mut next_report = started + PROGRESS_EVERY;
    let pidfd = pidfd_open(child.id());
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().map_err(Stopped::Wait)? {
            return Ok(status);
        }
        let now = Instant::now();
        if now >= deadline {
            stop_group(child);
            return Err(Stopped::Timeout(watch.timeout));
        }
        if termination_pending() {
            stop_group(child);
            return Err(Stopped::Cancelled);
        }
        if now >= next_report {
            next_report = now + PROGRESS_EVERY;
            if let Some(report) = watch.progress.as_mut() {
                let text = log();
                report(&Progress {
                    elapsed: now - started,
                    last_line: text
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(str::to_owned),
                });
            }
        }
        // Wake at the child's exit, the next report or the deadline, whichever is
        // first, and at least every second to look at pending signals.
        let slice = deadline
            .min(next_report)
            .saturating_duration_since(now)
            .min(Duration::from_secs(1));
        match &pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN)];
                let ms = u16::try_from(slice.as_millis().max(1)).unwrap_or(u16::MAX);
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(Stopped::Wait(e.into())),
                }
            }
            None => {
                std::thread::sleep(nap.min(slice));
                nap = (nap * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// SIGTERM to the command's process group, SIGKILL after the grace period, and reap.
pub fn stop_group(child: &mut Child) {
    let group = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = killpg(group, Signal::SIGTERM);
    let until = Instant::now() + KILL_GRACE;
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            // The leader is gone; what it started in the group goes too.
            let _ = killpg(group, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

/// A pidfd of `pid`, or `None` where the kernel has none (before 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; nix has no
    // wrapper for it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True when SIGTERM or SIGINT is pending for this process (blocked, since it would
/// have ended us otherwise).
fn termination_pending() -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending writes a sigset_t into the buffer; nix has no wrapper.
    if unsafe { libc::sigpending(set.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialised by the successful sigpending above.
    let set = unsafe { set.assume_init() };
    // SAFETY: sigismember only reads the set.
    unsafe {
        libc::sigismember(&set, libc::SIGTERM) == 1 || libc::sigismember(&set, libc::SIGINT) == 1
    }
}
