//! Can this node start a squashfs image directly (issue 7 item 2)? A cheap probe, run
//! by slurmstepd in `user_init` (euid = user) only for steps that would start directly:
//!
//! - `squashfuse` on enroot's PATH (enroot mounts the image with it);
//! - `/dev/fuse` opens read-write as the user;
//! - an overlay on top: kernel overlayfs in a user namespace (`ENROOT_NATIVE_OVERLAYFS=y`,
//!   Linux >= 5.11; it reads faster than FUSE), tried for real in a forked child, or
//!   else `fuse-overlayfs` on enroot's PATH.
//!
//! The decision itself is `core::plan::decide`'s; this only reports what the node offers.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::core::plan::DirectSupport;

/// The longest the overlay probe may take (it normally takes a few milliseconds).
const OVERLAY_PROBE_BOUND: Duration = Duration::from_secs(2);

/// What the node offers, for a user `uid:gid` and enroot's `PATH`.
pub fn direct_support(path_env: Option<&OsStr>, uid: u32, gid: u32) -> DirectSupport {
    let path = path_env.unwrap_or_default();
    if find_program(path, "squashfuse").is_none() {
        return DirectSupport::Unavailable("squashfuse is not on enroot's PATH".into());
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return DirectSupport::Unavailable(format!("cannot open /dev/fuse: {e}"));
    }
    if native_overlay_works(uid, gid) {
        return DirectSupport::Available {
            native_overlay: true,
        };
    }
    if find_program(path, "fuse-overlayfs").is_some() {
        return DirectSupport::Available {
            native_overlay: false,
        };
    }
    DirectSupport::Unavailable(
        "neither kernel overlayfs in a user namespace nor fuse-overlayfs on enroot's PATH".into(),
    )
}

/// The first executable regular file `name` in the `:`-separated `path`.
pub fn find_program(path: &OsStr, name: &str) -> Option<PathBuf> {
    path.as_bytes()
        .split(|b| *b == b':')
        .filter(|dir| dir.first() == Some(&b'/'))
        .map(|dir| Path::new(OsStr::from_bytes(dir)).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Everything the child uses, built before the fork (it must not allocate).
struct OverlayProbe {
    uid: u32,
    gid: u32,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    dirs: [CString; 4],
    data: CString,
}

impl OverlayProbe {
    fn new(uid: u32, gid: u32) -> Option<OverlayProbe> {
        let dir = |s: &str| CString::new(s).ok();
        Some(OverlayProbe {
            uid,
            gid,
            uid_map: format!("0 {uid} 1\n").into_bytes(),
            gid_map: format!("0 {gid} 1\n").into_bytes(),
            dirs: [
                dir("/tmp/l")?,
                dir("/tmp/u")?,
                dir("/tmp/w")?,
                dir("/tmp/m")?,
            ],
            data: CString::new("lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w").ok()?,
        })
    }

    /// In the child: become the user, enter new user+mount namespaces, mount a tmpfs
    /// over /tmp (in the private namespace only) and an overlay inside it. 0 = works.
    fn run(&self) -> i32 {
        // SAFETY: only raw syscalls on data prepared before the fork (async-signal-safe
        // in the child of a multithreaded process); nothing allocates or unwinds.
        unsafe {
            if libc::setresgid(self.gid, self.gid, self.gid) != 0
                || libc::setresuid(self.uid, self.uid, self.uid) != 0
            {
                return 2;
            }
            // The id change made us non-dumpable, which would make /proc/self/*_map root's.
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return 3;
            }
            let write = |path: &std::ffi::CStr, data: &[u8]| {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return false;
                }
                let n = libc::write(fd, data.as_ptr().cast(), data.len());
                libc::close(fd);
                usize::try_from(n).is_ok_and(|n| n == data.len())
            };
            if !write(c"/proc/self/setgroups", b"deny")
                || !write(c"/proc/self/uid_map", &self.uid_map)
                || !write(c"/proc/self/gid_map", &self.gid_map)
            {
                return 4;
            }
            let none = std::ptr::null();
            // mount(2) ignores the source and type of a propagation change; "none" rather
            // than NULL keeps valgrind's check of the type string quiet (docs/memcheck.md)
            if libc::mount(
                none,
                c"/".as_ptr(),
                c"none".as_ptr(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
                || libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ) != 0
            {
                return 5;
            }
            for d in &self.dirs {
                if libc::mkdir(d.as_ptr(), 0o700) != 0 {
                    return 6;
                }
            }
            if libc::mount(
                c"overlay".as_ptr(),
                c"/tmp/m".as_ptr(),
                c"overlay".as_ptr(),
                0,
                self.data.as_ptr().cast(),
            ) != 0
            {
                return 7;
            }
            0
        }
    }
}

/// Whether kernel overlayfs mounts in a user namespace of `uid`, tried in a child.
pub fn native_overlay_works(uid: u32, gid: u32) -> bool {
    let Some(probe) = OverlayProbe::new(uid, gid) else {
        return false;
    };
    // SAFETY: the child only runs `probe.run` (raw syscalls on prepared data) and
    // `_exit`s; it never returns into Rust code of the parent image.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = probe.run();
            // SAFETY: leave without destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(_) => return false,
    };
    let deadline = Instant::now() + OVERLAY_PROBE_BOUND;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code == 0,
            Ok(WaitStatus::StillAlive) | Err(nix::Error::EINTR) => {}
            Ok(_) | Err(_) => return false,
        }
        if Instant::now() >= deadline {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_absolute_path_entries_only() {
        let dir = std::env::temp_dir().join(format!("pyxis-rs-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("squashfuse");
        std::fs::write(&exe, "#!/bin/true\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("fuse-overlayfs"), "not executable").unwrap();
        let path = format!("relative:{}:/nonexistent", dir.display());
        assert_eq!(
            find_program(OsStr::new(&path), "squashfuse"),
            Some(exe.clone())
        );
        assert_eq!(find_program(OsStr::new(&path), "fuse-overlayfs"), None);
        assert_eq!(find_program(OsStr::new("squashfuse"), "squashfuse"), None);
        // without squashfuse nothing else is probed
        assert_eq!(
            direct_support(Some(OsStr::new("/nonexistent")), 0, 0),
            DirectSupport::Unavailable("squashfuse is not on enroot's PATH".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_overlay_probe_agrees_with_unshare_and_mount() {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let started = Instant::now();
        let ours = native_overlay_works(uid, gid);
        assert!(started.elapsed() < OVERLAY_PROBE_BOUND + Duration::from_secs(1));
        // The same experiment with util-linux, as an independent oracle.
        let script = "mount -t tmpfs none /tmp && mkdir /tmp/l /tmp/u /tmp/w /tmp/m && \
                      mount -t overlay overlay -o lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w /tmp/m";
        let oracle = std::process::Command::new("unshare")
            .args(["-Urm", "--propagation", "private", "sh", "-c", script])
            .status()
            .unwrap()
            .success();
        assert_eq!(ours, oracle);
        // the mounts were in the child's private namespace
        assert!(!Path::new("/tmp/u").exists());
    }
}
