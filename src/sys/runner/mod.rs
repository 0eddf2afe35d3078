//! Running enroot (and the importer) as the job user.
//!
//! Called from slurmstepd (`user_init` with euid = user, `task_exit` as root; both
//! multithreaded processes) and from task processes (fully the user). So the child is
//! set up only with async-signal-safe syscalls in one `pre_exec` (`child.rs`):
//! `oom_score_adj` reset, every inherited fd >= 3 marked close-on-exec, its own process
//! group, then setgroups (only when root) → setresgid → setresuid. `Command::uid/gid`
//! are not used: they run first and would wipe the supplementary groups. argv and envp
//! are built before the fork; nothing goes through a shell. stdout and stderr go to one
//! in-memory log (memfd) that is printed only when something fails, as pyxis does.
//! Every wait has a deadline (`wait.rs`).
#![allow(unsafe_code)]

mod child;
pub mod wait;

pub use wait::{Progress, Watch};

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::{Gid, Pid};

use crate::core::bytes::decode_os;
use child::ChildSetup;
use wait::Stopped;

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
        let mut s = decode_os(&self.program);
        for a in &self.args {
            s.push(' ');
            s.push_str(&decode_os(a));
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
    #[error("{program} did not finish within {} s and was stopped (an admin can raise the bound with the plugstack key {key})", limit.as_secs())]
    Timeout {
        program: String,
        limit: std::time::Duration,
        key: &'static str,
        log: String,
    },
    #[error("{program} was stopped: the step is being cancelled")]
    Cancelled { program: String, log: String },
}

impl RunError {
    /// The captured output of the failed command, if it ran.
    pub fn log(&self) -> Option<&str> {
        match self {
            RunError::Exit { log, .. }
            | RunError::Signal { log, .. }
            | RunError::Timeout { log, .. }
            | RunError::Cancelled { log, .. } => Some(log),
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

    /// Waits for the child under `watch` and turns a non-zero status into an error
    /// carrying the log.
    pub fn finish(mut self, watch: &mut Watch<'_>) -> Result<String, RunError> {
        let status = self.wait(watch)?;
        let log = self.read_log();
        status_result(&self.program, status, log)
    }

    fn wait(&mut self, watch: &mut Watch<'_>) -> Result<ExitStatus, RunError> {
        let pid = self.child.id();
        let log = &mut self.log;
        let result = wait::wait(&mut self.child, watch, &mut || read_all(log));
        result.map_err(|stopped| match stopped {
            Stopped::Timeout(limit) => RunError::Timeout {
                program: self.program.clone(),
                limit,
                key: watch.key,
                log: read_all(&mut self.log),
            },
            Stopped::Cancelled => RunError::Cancelled {
                program: self.program.clone(),
                log: read_all(&mut self.log),
            },
            Stopped::Wait(source) => RunError::Wait { pid, source },
        })
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

/// Runs `inv` to completion as `creds` under `watch`; the result is the captured output.
pub fn run(
    inv: &Invocation,
    creds: &Credentials,
    watch: &mut Watch<'_>,
) -> Result<String, RunError> {
    spawn(inv, creds, &[])?.finish(watch)
}

/// Starts `inv` as `creds` with stdout+stderr captured. `keep_fds` are inherited by the
/// child (everything else above stderr is closed at exec).
pub fn spawn(
    inv: &Invocation,
    creds: &Credentials,
    keep_fds: &[BorrowedFd<'_>],
) -> Result<Running, RunError> {
    spawn_with(inv, creds, keep_fds, None, false)
}

/// Runs `inv` to completion with stdout kept apart from the log (stderr): the importer
/// protocol answers on stdout. Returns `(stdout, log)`.
pub fn run_split(
    inv: &Invocation,
    creds: &Credentials,
    watch: &mut Watch<'_>,
) -> Result<(String, String), RunError> {
    let mut running = spawn_with(inv, creds, &[], None, true)?;
    let status = running.wait(watch)?;
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

/// What the intermediate process of [`spawn_detached`] writes: the grandchild's pid at
/// once, then how it ended up (0 stopped, 1 exited with `value`, 2 killed by signal
/// `value`).
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
    keep_fds: &[BorrowedFd<'_>],
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
        groups: creds.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
        keep_fds: keep_fds.iter().map(AsRawFd::as_raw_fd).collect(),
        detach_report,
        parent: Pid::this(),
    };
    // SAFETY: the closure only makes async-signal-safe syscalls (open/write/close,
    // close_range, fcntl, setpgid, setgroups, setresgid, setresuid, prctl, fork,
    // waitpid) on data prepared before the fork, and allocates nothing, so it is sound
    // in the child of a multithreaded parent.
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

fn read_all(f: &mut File) -> String {
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.read_to_end(&mut buf);
    }
    // Mapped, not lossy (crate::core::bytes): a path the importer prints, a container
    // `enroot list` shows, come back exactly.
    crate::core::bytes::decode(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn me() -> Credentials {
        Credentials::current()
    }

    fn bound() -> Watch<'static> {
        Watch::new(std::time::Duration::from_secs(30), "command_timeout")
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
        let out = run(
            &inv("sh", &["-c", "echo out; echo err >&2"]),
            &me(),
            &mut bound(),
        )
        .unwrap();
        assert_eq!(out, "out\nerr\n");
    }

    #[test]
    fn the_child_does_not_inherit_blocked_signals() {
        use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
        // like slurmstepd's threads: SIGTERM blocked in the forking thread
        let mut term = SigSet::empty();
        term.add(Signal::SIGTERM);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&term), None).unwrap();
        let out = run(
            &inv("grep", &["^SigBlk:", "/proc/self/status"]),
            &me(),
            &mut bound(),
        );
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&term), None).unwrap();
        assert_eq!(
            out.unwrap().split_whitespace().nth(1),
            Some("0000000000000000")
        );
    }

    #[test]
    fn environment_is_exactly_the_given_one() {
        let out = run(&inv("env", &[]), &me(), &mut bound()).unwrap();
        let mut lines: Vec<_> = out.lines().collect();
        lines.sort();
        assert_eq!(lines, vec!["ONLY=this", "PATH=/usr/bin:/bin"]);
    }

    #[test]
    fn non_zero_exit_keeps_the_log() {
        let err = run(
            &inv("sh", &["-c", "echo '[ERROR] nope' >&2; exit 3"]),
            &me(),
            &mut bound(),
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
        let out = run(&inv("sh", &["-c", &script]), &me(), &mut bound()).unwrap();
        assert_eq!(out, "closed\n");
    }

    #[test]
    fn kept_fds_are_inherited() {
        let f = File::open("/proc/self/status").unwrap();
        let fd = f.as_raw_fd();
        let script = format!("test -e /proc/self/fd/{fd} && echo kept");
        let out = spawn(&inv("sh", &["-c", &script]), &me(), &[f.as_fd()])
            .unwrap()
            .finish(&mut bound())
            .unwrap();
        assert_eq!(out, "kept\n");
    }

    #[test]
    fn a_command_past_its_deadline_is_stopped_with_its_group() {
        let marker = std::env::temp_dir().join(format!("pyxis-rs-run-{}", std::process::id()));
        let script = format!(
            "echo '[INFO] Downloading 3 missing layers...' >&2; sleep 100 & echo $! > {}; wait",
            marker.display()
        );
        let mut seen = Vec::new();
        let mut progress = |p: &Progress| seen.push(p.clone());
        let started = std::time::Instant::now();
        let err = run(
            &inv("sh", &["-c", &script]),
            &me(),
            &mut Watch::new(std::time::Duration::from_secs(6), "import_timeout")
                .with_progress(&mut progress),
        )
        .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        match &err {
            RunError::Timeout { limit, key, .. } => {
                assert_eq!((limit.as_secs(), *key), (6, "import_timeout"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string().contains("plugstack key import_timeout"),
            "{err}"
        );
        // one progress report (at 5 s), with the command's last line
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            seen[0].last_line.as_deref(),
            Some("[INFO] Downloading 3 missing layers...")
        );
        let pid = std::fs::read_to_string(&marker).unwrap().trim().to_owned();
        let _ = std::fs::remove_file(&marker);
        let alive = || {
            std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z")
        };
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            !alive()
        });
        assert!(gone, "the background sleep {pid} survived");
    }

    #[test]
    #[allow(unsafe_code)] // fork, to block SIGTERM in a child of its own
    fn a_pending_sigterm_cancels_the_command() {
        use nix::sys::signal::{raise, sigprocmask, SigSet, SigmaskHow, Signal};
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        // SAFETY: the child only blocks a signal, runs one command and _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let mut set = SigSet::empty();
                set.add(Signal::SIGTERM);
                let ok = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_ok()
                    && raise(Signal::SIGTERM).is_ok()
                    && matches!(
                        run(&inv("sleep", &["30"]), &me(), &mut bound()),
                        Err(RunError::Cancelled { .. })
                    );
                // SAFETY: leave the forked test child without unwinding.
                unsafe { libc::_exit(i32::from(!ok)) };
            }
            ForkResult::Parent { child } => {
                let started = std::time::Instant::now();
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
                assert!(started.elapsed() < std::time::Duration::from_secs(15));
            }
        }
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&inv("/nonexistent/enroot", &[]), &me(), &mut bound()).unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }), "{err:?}");
    }
}
