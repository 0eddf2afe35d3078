//! The container start handshake: `enroot start ... sh -c 'kill -STOP $$ ; exit 0'`.
//!
//! Runs in the creator task (as the user). enroot turns the process we fork into the
//! container's first process, which stops itself once the container is fully set up;
//! `waitpid(WUNTRACED)` tells us so. Its namespaces, cwd and environment are then what
//! every task of the step joins, and a SIGCONT lets it exit.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::runner::{self, Credentials, DetachedReport, Invocation, Running, Watch};

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
    #[error("the container did not start within {} s and was stopped (an admin can raise the bound with the plugstack key {key})", limit.as_secs())]
    Timeout {
        limit: Duration,
        key: &'static str,
        log: String,
    },
}

impl StartError {
    pub fn log(&self) -> Option<&str> {
        match self {
            StartError::Failed { log, .. }
            | StartError::TooSoon { log }
            | StartError::Timeout { log, .. } => Some(log),
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

/// A helper process as soon as it exists (before it stopped itself): its pid and its
/// start time in clock ticks since boot (`/proc/PID/stat` field 22, 0 if unread), so a
/// later look can tell it from a process that got the same pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawned {
    pub pid: u32,
    pub start: u64,
}

/// Starts the helper and waits until it stopped itself; `spawned` learns the helper's
/// pid first, so that whoever outlives this process can kill a helper it left behind.
///
/// The helper runs as a grandchild (see [`runner::spawn_detached`]): pyxis forked it from
/// the creator task, so once the task exec'd the user's program, the helper's exit
/// delivered a SIGCHLD and left a zombie child the program never started (W13).
///
/// The start (enroot's hooks, the image's entrypoint) is bounded by `watch.timeout`;
/// past it, or when the intermediate process dies before reporting how the helper
/// ended up, the helper's process group is stopped like any overrunning command.
pub fn start(
    inv: &Invocation,
    creds: &Credentials,
    watch: &Watch<'_>,
    spawned: &dyn Fn(Spawned),
) -> Result<Helper, StartError> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StartError::Wait)?;
    let mut running: Running =
        runner::spawn_detached(inv, creds, &write).map_err(StartError::Spawn)?;
    drop(write);
    let deadline = Instant::now() + watch.timeout;
    let mut buf = [0u8; DetachedReport::SIZE];
    let (head, tail) = buf.split_at_mut(4);
    let mut got = read_until(&read, head, deadline);
    let mut pid = 0;
    if got == Read::Full {
        pid = head
            .first_chunk::<4>()
            .map(|w| i32::from_ne_bytes(*w))
            .unwrap_or(0);
        if let Some(p) = u32::try_from(pid).ok().filter(|p| *p > 0) {
            let start = ProcStat::read(p).map_or(0, |s| s.start);
            spawned(Spawned { pid: p, start });
        }
        got = read_until(&read, tail, deadline);
    }
    if got != Read::Full {
        // Past the deadline, or the intermediate process was killed: the helper, in its
        // own session, would otherwise run on with nobody waiting for it.
        if pid > 0 {
            stop_group(Pid::from_raw(pid));
        }
        let _ = running.child.kill();
        let _ = running.child.wait();
        return Err(match got {
            Read::TimedOut => StartError::Timeout {
                limit: watch.timeout,
                key: watch.key,
                log: running.read_log(),
            },
            _ => StartError::Wait(nix::Error::EIO),
        });
    }
    // The intermediate process exits right after reporting; reap it.
    let _ = running.child.wait();
    let report = DetachedReport::decode(&buf);
    let log = running.read_log();
    match report.kind {
        0 => Ok(Helper {
            pid: u32::try_from(report.pid).unwrap_or(0),
            log,
        }),
        1 if report.value != 0 => Err(StartError::Failed {
            code: report.value,
            log,
        }),
        _ => Err(StartError::TooSoon { log }),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Full,
    Short,
    TimedOut,
}

/// Reads exactly `buf.len()` bytes before `deadline`, retrying interrupted reads.
fn read_until(fd: &OwnedFd, buf: &mut [u8], deadline: Instant) -> Read {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Read::TimedOut;
        }
        let ms = u16::try_from(left.as_millis().clamp(1, 1000)).unwrap_or(1000);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return Read::Short,
        }
        match nix::unistd::read(fd, rest) {
            Ok(0) => return Read::Short,
            Ok(n) => done += n,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return Read::Short,
        }
    }
    Read::Full
}

/// SIGTERM, then SIGKILL after a grace period, to a helper's process group.
fn stop_group(group: Pid) {
    let _ = killpg(group, Signal::SIGTERM);
    for _ in 0..250 {
        if kill(group, None).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
}

/// Lets a stopped helper finish (`exit 0` after the stop).
pub fn release(pid: u32) -> nix::Result<()> {
    kill(
        Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
        Signal::SIGCONT,
    )
}

/// SIGKILL for a helper nobody released, if `pid` is still a stopped process of `uid`
/// (not a recycled pid). slurmstepd's `task_exit`, as root.
///
/// When the helper leads its own session, as [`start`] made it, every process of
/// `uid` in that session is killed with it: with a direct start, enroot's start script
/// leaves a "fuse-shim" (its own process group, stopped) with the `squashfuse -f` and
/// `fuse-overlayfs -f` daemons, which would otherwise end only after the kernel's
/// SIGHUP of the orphaned group reached them, and slurmstepd's process tracking waits
/// a second for them before the step ends. Nothing outside the session is touched
/// (the container's tasks are in slurmstepd's sessions). Returns the session killed,
/// for the caller to wait until it is empty.
pub fn kill_stopped_helper(pid: u32, uid: u32) -> Option<u32> {
    let stat = ProcStat::read(pid)?;
    if stat.uid != uid || stat.state != 'T' {
        return None;
    }
    let target = Pid::from_raw(i32::try_from(pid).ok()?);
    if stat.session != pid {
        let _ = kill(target, Signal::SIGKILL);
        return None;
    }
    kill_session_of(uid, pid);
    Some(pid)
}

/// SIGKILL for the session of a helper whose creator never published it (the creator
/// task or the process waiting for the helper was killed while `enroot start` ran),
/// if `s.pid` still leads its own session as a process of `uid` started at `s.start`.
/// slurmstepd's `task_exit`, as root; only `uid`'s processes of that session are
/// touched. Returns the session killed.
pub fn kill_unpublished_helper(s: Spawned, uid: u32) -> Option<u32> {
    let stat = ProcStat::read(s.pid)?;
    if stat.uid != uid || stat.session != s.pid || (s.start != 0 && stat.start != s.start) {
        return None;
    }
    kill_session_of(uid, s.pid);
    Some(s.pid)
}

fn kill_session_of(uid: u32, sid: u32) {
    if let Ok(p) = i32::try_from(sid) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    for member in session_members(sid) {
        if member.uid == uid {
            if let Ok(p) = i32::try_from(member.pid) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }
}

/// Whether a live (not zombie) process of session `sid` is left. Zombies nobody
/// reaped yet hold nothing and no longer count for Slurm's process tracking (they
/// left their cgroup when they exited).
pub fn session_alive(sid: u32) -> bool {
    session_members(sid)
        .iter()
        .any(|m| !matches!(m.state, 'Z' | 'X'))
}

fn session_members(sid: u32) -> Vec<ProcStat> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(ProcStat::read)
        .filter(|s| s.session == sid)
        .collect()
}

/// What we use of one process: `/proc/<pid>/stat` and the owner of `/proc/<pid>`.
struct ProcStat {
    pid: u32,
    uid: u32,
    state: char,
    session: u32,
    /// Clock ticks after boot.
    start: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<ProcStat> {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let _ppid = fields.next()?;
        let _pgrp = fields.next()?;
        let session = fields.next()?.parse().ok()?;
        // fields 7..=21 (tty_nr .. itrealvalue), then 22: starttime
        let start = fields.nth(15)?.parse().ok()?;
        Some(ProcStat {
            pid,
            uid,
            state,
            session,
            start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn me() -> Credentials {
        Credentials::current()
    }

    fn bound() -> Watch<'static> {
        Watch::new(Duration::from_secs(30), "command_timeout")
    }

    fn sh(script: &str) -> Invocation {
        Invocation {
            program: "sh".into(),
            args: ["-c", script].iter().map(OsString::from).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        }
    }

    fn stat_field(pid: u32, index: usize) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        rest.split_whitespace().nth(index).map(str::to_owned)
    }

    #[test]
    fn helper_stops_is_not_our_child_and_exits_on_release() {
        let helper = start(
            &sh("echo starting; kill -STOP $$; exit 0"),
            &me(),
            &bound(),
            &|_| {},
        )
        .unwrap();
        assert_eq!(helper.log, "starting\n");
        assert_eq!(stat_field(helper.pid, 0).as_deref(), Some("T"));
        let ppid: u32 = stat_field(helper.pid, 1).unwrap().parse().unwrap();
        assert_ne!(ppid, std::process::id(), "the helper must not be our child");
        release(helper.pid).unwrap();
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !matches!(
                stat_field(helper.pid, 0).as_deref(),
                Some("T") | Some("S") | Some("R")
            )
        });
        assert!(gone, "helper still alive after SIGCONT");
    }

    #[test]
    fn failing_start_reports_code_and_log() {
        let err = start(
            &sh("echo '[ERROR] No such file or directory: x' >&2; exit 1"),
            &me(),
            &bound(),
            &|_| {},
        )
        .unwrap_err();
        match err {
            StartError::Failed { code, log } => {
                assert_eq!(code, 1);
                assert!(log.contains("[ERROR] No such file"), "{log}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_start_that_never_stops_is_stopped_at_the_deadline() {
        let marker = std::env::temp_dir().join(format!("pyxis-rs-start-{}", std::process::id()));
        let script = format!("sleep 100 & echo $! > {}; wait", marker.display());
        let started = Instant::now();
        let err = start(
            &sh(&script),
            &me(),
            &Watch::new(Duration::from_secs(1), "command_timeout"),
            &|_| {},
        )
        .unwrap_err();
        assert!(matches!(err, StartError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("command_timeout"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(15));
        // the helper's whole process group went, the background sleep included
        let pid = std::fs::read_to_string(&marker).unwrap().trim().to_owned();
        let _ = std::fs::remove_file(&marker);
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !matches!(
                stat_field(pid.parse().unwrap(), 0).as_deref(),
                Some("S" | "R" | "T")
            )
        });
        assert!(gone, "sleep {pid} survived");
    }

    #[test]
    fn killing_a_stopped_helper_takes_its_session() {
        let marker = std::env::temp_dir().join(format!("pyxis-rs-group-{}", std::process::id()));
        // like enroot's fuse-shim: a child in a process group of its own (set -m)
        let script = format!(
            "set -m; sleep 100 & echo $! > {}; kill -STOP $$; exit 0",
            marker.display()
        );
        let mut bash = sh(&script);
        bash.program = "bash".into();
        let helper = start(&bash, &me(), &bound(), &|_| {}).unwrap();
        let sleeper: u32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&marker);
        assert!(session_alive(helper.pid));
        assert_eq!(
            stat_field(sleeper, 2),
            Some(sleeper.to_string()),
            "own group"
        );
        // another uid's process is never touched
        assert_eq!(kill_stopped_helper(helper.pid, helper_uid() + 1), None);
        assert_eq!(
            kill_stopped_helper(helper.pid, helper_uid()),
            Some(helper.pid)
        );
        let gone = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            !session_alive(helper.pid)
        });
        assert!(gone, "the helper's session survived");
        assert!(!matches!(
            stat_field(sleeper, 0).as_deref(),
            Some("S" | "R" | "T")
        ));
        // a released helper is not stopped any more: nothing to kill
        let other = start(&sh("kill -STOP $$; exit 0"), &me(), &bound(), &|_| {}).unwrap();
        release(other.pid).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(kill_stopped_helper(other.pid, helper_uid()), None);
    }

    fn helper_uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    #[test]
    fn exit_zero_before_stopping_is_too_soon() {
        assert!(matches!(
            start(&sh("exit 0"), &me(), &bound(), &|_| {}),
            Err(StartError::TooSoon { .. })
        ));
    }

    #[test]
    fn a_helper_whose_waiting_process_dies_is_stopped_and_reported() {
        // SIGKILL of the intermediate process (the helper's parent) while enroot start
        // still runs: the helper must not run on in its own session.
        let seen = std::cell::Cell::new(None);
        let result = start(&sh("sleep 100"), &me(), &bound(), &|s: Spawned| {
            seen.set(Some(s));
            let ppid: i32 = stat_field(s.pid, 1).unwrap().parse().unwrap();
            kill(Pid::from_raw(ppid), Signal::SIGKILL).unwrap();
        });
        assert!(matches!(result, Err(StartError::Wait(_))), "{result:?}");
        let s = seen.get().expect("the helper's pid was reported");
        assert!(s.start > 0);
        let gone = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            !matches!(stat_field(s.pid, 0).as_deref(), Some("S" | "R" | "T"))
        });
        assert!(gone, "the helper outlived its waiting process");
    }

    #[test]
    fn an_unpublished_helper_is_killed_with_its_session_only_if_it_is_the_same() {
        let seen = std::cell::Cell::new(None);
        let helper = start(&sh("kill -STOP $$; exit 0"), &me(), &bound(), &|s| {
            seen.set(Some(s))
        })
        .unwrap();
        let s = seen.get().unwrap();
        assert_eq!(s.pid, helper.pid);
        // another uid, or a later process that got the same pid, is never touched
        assert_eq!(kill_unpublished_helper(s, helper_uid() + 1), None);
        let later = Spawned {
            start: s.start + 1,
            ..s
        };
        assert_eq!(kill_unpublished_helper(later, helper_uid()), None);
        assert_eq!(kill_unpublished_helper(s, helper_uid()), Some(s.pid));
        let gone = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            !session_alive(s.pid)
        });
        assert!(gone, "the helper's session survived");
    }
}
