//! The forked child of every enroot/importer command, between `fork` and `exec`.
//!
//! The parent is slurmstepd (multithreaded, `user_init` with euid = user or `task_exit`
//! as root) or a task process (the user). So the child is set up with async-signal-safe
//! syscalls only, on data prepared before the fork, and allocates nothing.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    fork, geteuid, getpid, getppid, setgroups, setpgid, setresgid, setresuid, write, ForkResult,
    Gid, Pid, Uid,
};

use super::DetachedReport;

/// Closes every fd from 3 up except `keep`.
fn close_all_but(keep: RawFd) {
    let keep = u32::try_from(keep).unwrap_or(0);
    // SAFETY: close_range only closes fds of this process; nothing here uses them.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
        }
        libc::syscall(
            libc::SYS_close_range,
            keep.saturating_add(1),
            u32::MAX,
            0u32,
        );
    }
}

/// Everything the child needs, owned before the fork.
pub(super) struct ChildSetup {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<Gid>,
    pub keep_fds: Vec<RawFd>,
    /// Write end of the report pipe of a detached start.
    pub detach_report: Option<RawFd>,
    /// Our pid, to detect a parent that died before `PR_SET_PDEATHSIG` took effect.
    pub parent: Pid,
}

impl ChildSetup {
    /// Runs in the forked child before exec. Async-signal-safe syscalls only.
    pub(super) fn apply(&self) -> std::io::Result<()> {
        // slurmstepd forks from threads that block SIGTERM, SIGINT, SIGHUP and more, and
        // a blocked mask survives exec: the parent-death signal below and any SIGTERM
        // would then stay pending forever (enroot outlived a SIGKILLed slurmstepd).
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        // Slurm gives slurmstepd a very low OOM score; enroot should not inherit it.
        // Best effort, as in pyxis (the fd is closed when dropped).
        if let Ok(fd) = open(
            c"/proc/self/oom_score_adj",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            let _ = write(&fd, b"0");
        }
        // Mark every fd >= 3 close-on-exec instead of closing it: the std error pipe
        // (already CLOEXEC) must stay open until exec. nix has no close_range.
        // SAFETY: close_range only changes fd flags of this (child) process.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if rc != 0 {
            let err = Errno::last();
            if err != Errno::ENOSYS && err != Errno::EINVAL {
                return Err(err.into());
            }
        }
        for fd in &self.keep_fds {
            // SAFETY: the parent owns these fds and asked to pass them on; they stay
            // open for the duration of this call.
            let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        // Its own process group, so a deadline can stop enroot and everything it ran.
        setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
        if geteuid().is_root() {
            setgroups(&self.groups)?;
        }
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        setresgid(gid, gid, gid)?;
        setresuid(uid, uid, uid)?;
        if let Some(report) = self.detach_report {
            self.detach(report)?;
        } else {
            // enroot dies with the process waiting for it (a task killed by scancel, as
            // pyxis 0.24 forwarded SIGTERM). Set after the uid change, which clears it.
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            if getppid() != self.parent {
                let _ = kill(getpid(), Signal::SIGTERM);
            }
        }
        Ok(())
    }

    /// Forks once more: the grandchild returns and execs; this process reports the
    /// grandchild's pid at once, then how it stopped or ended, and exits without
    /// returning.
    fn detach(&self, report: RawFd) -> std::io::Result<()> {
        // SAFETY: the report fd was inherited from the parent and stays open here.
        let report_fd = unsafe { BorrowedFd::borrow_raw(report) };
        // SAFETY: fork in a single-threaded child; the grandchild only continues with
        // the exec path, this process only makes async-signal-safe calls and _exits.
        match unsafe { fork() }? {
            ForkResult::Child => {
                // SAFETY: the grandchild must not keep the report pipe open.
                unsafe { libc::close(report) };
                // Its own session, hence its own process group: a deadline stops it and
                // what enroot started with one killpg. A new process group alone would
                // be orphaned with a stopped member when this process exits, and the
                // kernel would send it SIGHUP+SIGCONT; across sessions it does not.
                nix::unistd::setsid()?;
                Ok(())
            }
            ForkResult::Parent { child } => {
                // std's spawn() in the caller waits for this process to exec or exit,
                // reading a close-on-exec pipe; closing every other fd now lets it
                // return, so the caller can bound the start with its own deadline.
                close_all_but(report);
                let _ = write(report_fd, &child.as_raw().to_ne_bytes());
                let (kind, value) = loop {
                    match waitpid(child, Some(WaitPidFlag::WUNTRACED)) {
                        Ok(WaitStatus::Stopped(_, sig)) => break (0, sig as i32),
                        Ok(WaitStatus::Exited(_, code)) => break (1, code),
                        Ok(WaitStatus::Signaled(_, sig, _)) => break (2, sig as i32),
                        Ok(_) | Err(Errno::EINTR) => continue,
                        Err(_) => break (2, 0),
                    }
                };
                let mut buf = [0u8; DetachedReport::SIZE - 4];
                for (i, word) in [kind, value].iter().enumerate() {
                    if let Some(slot) = buf.get_mut(i * 4..i * 4 + 4) {
                        slot.copy_from_slice(&word.to_ne_bytes());
                    }
                }
                let _ = write(report_fd, &buf);
                // SAFETY: leave without running any Rust code of the parent image (no
                // destructors, no return into std's exec path).
                unsafe { libc::_exit(0) }
            }
        }
    }
}
