//! Running enroot (and the importer) as the job user.
//!
//! Called from slurmstepd (`user_init` with euid = user, `task_exit` as root; both
//! multithreaded processes) and from task processes (fully the user). So the child is
//! set up only with async-signal-safe syscalls in one `pre_exec`: `oom_score_adj` reset,
//! every inherited fd >= 3 marked close-on-exec, then setgroups (only when root) →
//! setresgid → setresuid. `Command::uid/gid` are not used: they run first and would
//! wipe the supplementary groups. argv and envp are built before the fork; nothing goes
//! through a shell. stdout and stderr go to one in-memory log (memfd) that is printed only
//! when something fails, as pyxis does.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::memfd::{memfd_create, MFdFlags};

/// Who the child runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Applied only when the caller is root (slurmstepd in `task_exit`); otherwise the
    /// groups Slurm already set on the caller are inherited.
    pub groups: Vec<u32>,
}

/// One command line with its complete environment.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

impl Credentials {
    /// The calling process's own ids (tests run commands as themselves).
    #[cfg(test)]
    pub(crate) fn current() -> Credentials {
        let gid = nix::unistd::getgid().as_raw();
        Credentials {
            uid: nix::unistd::getuid().as_raw(),
            gid,
            groups: vec![gid],
        }
    }
}

impl Invocation {
    /// The command line as pyxis logs it (`running enroot command: "..."`).
    pub fn display(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// Why running a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("couldn't create in-memory log file: {0}")]
    Log(#[source] std::io::Error),
    #[error("couldn't execute {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not wait for child {pid}: {source}")]
    Wait {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed with error code: {code}")]
    Exit {
        program: String,
        code: i32,
        log: String,
    },
    #[error("{program} terminated with signal {signal}")]
    Signal {
        program: String,
        signal: i32,
        log: String,
    },
}

impl RunError {
    /// The captured output of the failed command, if it ran.
    pub fn log(&self) -> Option<&str> {
        match self {
            RunError::Exit { log, .. } | RunError::Signal { log, .. } => Some(log),
            _ => None,
        }
    }
}

/// A child that was started and its log.
pub struct Running {
    pub child: Child,
    log: File,
    /// Set when stdout is captured apart from the log.
    stdout: Option<File>,
    program: String,
}

impl Running {
    /// Reads everything the child wrote so far.
    pub fn read_log(&mut self) -> String {
        read_all(&mut self.log)
    }

    /// Waits for the child and turns a non-zero status into an error carrying the log.
    pub fn finish(mut self) -> Result<String, RunError> {
        let pid = self.child.id();
        let status = self
            .child
            .wait()
            .map_err(|source| RunError::Wait { pid, source })?;
        let log = self.read_log();
        status_result(&self.program, status, log)
    }
}

/// Turns an exit status into success (the log) or the matching error.
pub fn status_result(program: &str, status: ExitStatus, log: String) -> Result<String, RunError> {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(log),
        (Some(code), _) => Err(RunError::Exit {
            program: program.to_owned(),
            code,
            log,
        }),
        (None, Some(signal)) => Err(RunError::Signal {
            program: program.to_owned(),
            signal,
            log,
        }),
        (None, None) => Err(RunError::Exit {
            program: program.to_owned(),
            code: -1,
            log,
        }),
    }
}

/// Runs `inv` to completion as `creds`; the result is the captured output.
pub fn run(inv: &Invocation, creds: &Credentials) -> Result<String, RunError> {
    spawn(inv, creds, &[])?.finish()
}

/// Starts `inv` as `creds` with stdout+stderr captured. `keep_fds` are inherited by the
/// child (everything else above stderr is closed at exec).
pub fn spawn(inv: &Invocation, creds: &Credentials, keep_fds: &[i32]) -> Result<Running, RunError> {
    spawn_with(inv, creds, keep_fds, None, false)
}

/// Runs `inv` to completion with stdout kept apart from the log (stderr): the importer
/// protocol answers on stdout. Returns `(stdout, log)`.
pub fn run_split(inv: &Invocation, creds: &Credentials) -> Result<(String, String), RunError> {
    let mut running = spawn_with(inv, creds, &[], None, true)?;
    let pid = running.child.id();
    let status = running
        .child
        .wait()
        .map_err(|source| RunError::Wait { pid, source })?;
    let stdout = running.stdout.as_mut().map(read_all).unwrap_or_default();
    let log = running.read_log();
    status_result(&running.program, status, log).map(|log| (stdout, log))
}

/// Like [`spawn`], but the command runs as a *grandchild*: the direct child only waits
/// for it to stop or exit, reports that on `report` as [`DetachedReport`] bytes and
/// exits. The command is then reparented away from the caller, which is what the
/// container helper needs (W13): the creator task later execs the user's program, which
/// must not inherit a child it never started.
pub fn spawn_detached(
    inv: &Invocation,
    creds: &Credentials,
    report: &OwnedFd,
) -> Result<Running, RunError> {
    spawn_with(inv, creds, &[], Some(report.as_raw_fd()), false)
}

/// What the intermediate process of [`spawn_detached`] writes: the grandchild's pid,
/// then how it ended up (0 stopped, 1 exited with `value`, 2 killed by signal `value`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetachedReport {
    pub pid: i32,
    pub kind: i32,
    pub value: i32,
}

impl DetachedReport {
    pub const SIZE: usize = 12;

    pub fn decode(buf: &[u8; Self::SIZE]) -> DetachedReport {
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(buf.get(i..i + 4).unwrap_or(&[0; 4]));
            i32::from_ne_bytes(w)
        };
        DetachedReport {
            pid: word(0),
            kind: word(4),
            value: word(8),
        }
    }
}

fn spawn_with(
    inv: &Invocation,
    creds: &Credentials,
    keep_fds: &[i32],
    detach_report: Option<i32>,
    split_stdout: bool,
) -> Result<Running, RunError> {
    tracing::debug!("running enroot command: \"{}\"", inv.display());
    let log: OwnedFd =
        memfd_create(c"enroot-log", MFdFlags::MFD_CLOEXEC).map_err(|e| RunError::Log(e.into()))?;
    let log = File::from(log);
    let stdout = if split_stdout {
        let fd: OwnedFd = memfd_create(c"enroot-stdout", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| RunError::Log(e.into()))?;
        Some(File::from(fd))
    } else {
        None
    };
    let out = match &stdout {
        Some(f) => f.try_clone(),
        None => log.try_clone(),
    }
    .map_err(RunError::Log)?;
    let err = log.try_clone().map_err(RunError::Log)?;

    let mut cmd = Command::new(&inv.program);
    cmd.args(&inv.args)
        .env_clear()
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // The cwd is inherited on purpose: enroot resolves relative paths (mount sources,
    // `./image.sqsh`) against its own cwd, which must be the task's.
    let child_setup = ChildSetup {
        uid: creds.uid,
        gid: creds.gid,
        groups: creds.groups.clone(),
        keep_fds: keep_fds.to_vec(),
        detach_report,
        parent: i32::try_from(std::process::id()).unwrap_or(0),
    };
    // SAFETY: the closure only makes async-signal-safe syscalls (open/write/close,
    // close_range, fcntl, setgroups, setresgid, setresuid) on data prepared before the
    // fork, and allocates nothing, so it is sound in the child of a multithreaded parent.
    unsafe {
        cmd.pre_exec(move || child_setup.apply());
    }
    let program = inv.program.to_string_lossy().into_owned();
    let child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    Ok(Running {
        child,
        log,
        stdout,
        program,
    })
}

/// Everything the child needs, owned before the fork.
struct ChildSetup {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    keep_fds: Vec<i32>,
    /// Write end of the report pipe of a detached start.
    detach_report: Option<i32>,
    /// Our pid, to detect a parent that died before `PR_SET_PDEATHSIG` took effect.
    parent: i32,
}

impl ChildSetup {
    /// Runs in the forked child before exec. Async-signal-safe syscalls only.
    fn apply(&self) -> std::io::Result<()> {
        // Slurm gives slurmstepd a very low OOM score; enroot should not inherit it.
        // Best effort, as in pyxis.
        // SAFETY: open/write/close on a static NUL-terminated path and a static buffer.
        unsafe {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        // Mark every fd >= 3 close-on-exec instead of closing it: the std error pipe
        // (already CLOEXEC) must stay open until exec.
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
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOSYS) && err.raw_os_error() != Some(libc::EINVAL)
            {
                return Err(err);
            }
        }
        for fd in &self.keep_fds {
            // SAFETY: clearing FD_CLOEXEC on an fd the parent owns and asked to pass on.
            if unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: plain credential syscalls; the group list was allocated before fork.
        unsafe {
            if libc::geteuid() == 0 && libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setresgid(self.gid, self.gid, self.gid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setresuid(self.uid, self.uid, self.uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(report) = self.detach_report {
            self.detach(report)?;
        } else {
            // enroot dies with the process waiting for it (a task killed by scancel, as
            // pyxis 0.24 forwarded SIGTERM). Set after the uid change, which clears it.
            // SAFETY: prctl/getppid/kill are async-signal-safe and act on this process.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() != self.parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
            }
        }
        Ok(())
    }

    /// Forks once more: the grandchild returns and execs; this process waits for it to
    /// stop or end, writes a [`DetachedReport`] and exits without returning.
    fn detach(&self, report: i32) -> std::io::Result<()> {
        // SAFETY: fork is async-signal-safe; the child continues with the exec path.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: the grandchild must not keep the report pipe open.
            unsafe { libc::close(report) };
            return Ok(());
        }
        let mut status: libc::c_int = 0;
        let (kind, value) = loop {
            // SAFETY: waiting for our own child; WUNTRACED reports its self-stop.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
            if rc == pid {
                if libc::WIFSTOPPED(status) {
                    break (0, libc::WSTOPSIG(status));
                } else if libc::WIFEXITED(status) {
                    break (1, libc::WEXITSTATUS(status));
                } else if libc::WIFSIGNALED(status) {
                    break (2, libc::WTERMSIG(status));
                }
            } else if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                break (2, 0);
            }
        };
        let mut buf = [0u8; DetachedReport::SIZE];
        for (i, word) in [pid, kind, value].iter().enumerate() {
            if let Some(slot) = buf.get_mut(i * 4..i * 4 + 4) {
                slot.copy_from_slice(&word.to_ne_bytes());
            }
        }
        // SAFETY: write to the inherited pipe, then leave without running any Rust
        // code of the parent image (no destructors, no return into std's exec path).
        unsafe {
            let _ = libc::write(report, buf.as_ptr().cast(), buf.len());
            libc::_exit(0);
        }
    }
}

fn read_all(f: &mut File) -> String {
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Credentials {
        Credentials::current()
    }

    fn inv(program: &str, args: &[&str]) -> Invocation {
        Invocation {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("ONLY".into(), "this".into()),
            ],
        }
    }

    #[test]
    fn captures_stdout_and_stderr_in_one_log() {
        let out = run(&inv("sh", &["-c", "echo out; echo err >&2"]), &me()).unwrap();
        assert_eq!(out, "out\nerr\n");
    }

    #[test]
    fn environment_is_exactly_the_given_one() {
        let out = run(&inv("env", &[]), &me()).unwrap();
        let mut lines: Vec<_> = out.lines().collect();
        lines.sort();
        assert_eq!(lines, vec!["ONLY=this", "PATH=/usr/bin:/bin"]);
    }

    #[test]
    fn non_zero_exit_keeps_the_log() {
        let err = run(
            &inv("sh", &["-c", "echo '[ERROR] nope' >&2; exit 3"]),
            &me(),
        )
        .unwrap_err();
        match err {
            RunError::Exit { code, log, .. } => {
                assert_eq!(code, 3);
                assert_eq!(log, "[ERROR] nope\n");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn stdin_is_null_and_extra_fds_are_closed() {
        let f = File::open("/proc/self/status").unwrap();
        let fd = f.as_raw_fd();
        let script = format!("cat; test -e /proc/self/fd/{fd} && echo leaked || echo closed");
        let out = run(&inv("sh", &["-c", &script]), &me()).unwrap();
        assert_eq!(out, "closed\n");
    }

    #[test]
    fn kept_fds_are_inherited() {
        let f = File::open("/proc/self/status").unwrap();
        let fd = f.as_raw_fd();
        let script = format!("test -e /proc/self/fd/{fd} && echo kept");
        let out = spawn(&inv("sh", &["-c", &script]), &me(), &[fd])
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(out, "kept\n");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&inv("/nonexistent/enroot", &[]), &me()).unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }), "{err:?}");
    }
}
