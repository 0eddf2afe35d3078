//! Creating and joining namespaces in the calling process (enroot-nsenter).
//!
//! `enroot start` must turn the very process pyxis forked into the container: pyxis waits for
//! *its* child to stop and then opens `/proc/<pid>/ns/*`. So namespaces are created with
//! `unshare(2)` in-process, never by forking. `unshare(CLONE_NEWUSER)` requires a single-threaded
//! caller, which the double is.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{getegid, geteuid};

use crate::error::{Error, Result};
use crate::sys;

/// Which namespaces `start` creates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// A user namespace (everything except privileged superuser mode).
    pub user: bool,
    /// Map the caller to uid/gid 0 instead of to itself.
    pub remap_root: bool,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// The single-id mapping line written to `uid_map`/`gid_map`.
pub fn map_line(outside: u32, remap_root: bool) -> String {
    let inside = if remap_root { 0 } else { outside };
    format!("{inside} {outside} 1\n")
}

/// Create the requested namespaces in the calling process.
pub fn create(req: Request) -> Result<()> {
    let uid = geteuid().as_raw();
    let gid = getegid().as_raw();
    if req.user {
        // The user namespace comes first so that it owns the others, which lets an unprivileged
        // caller create them.
        unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(|e| Error::errno("failed to create user namespace", e))?;
        // An unprivileged writer must deny setgroups(2) before writing a gid map.
        let write = |file: &str, content: &str| {
            fs::write(file, content).map_err(|e| Error::io(format!("failed to write {file}"), &e))
        };
        write("/proc/self/setgroups", "deny")?;
        write("/proc/self/uid_map", &map_line(uid, req.remap_root))?;
        write("/proc/self/gid_map", &map_line(gid, req.remap_root))?;
    }
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::errno("failed to create mount namespace", e))?;
    // Nothing mounted from now on may propagate back to the host; in a user namespace the kernel
    // already turned shared mounts into slaves, privileged mode needs it explicitly.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::errno("failed to set mount propagation", e))?;
    if req.net {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::errno("failed to create network namespace", e))?;
        sys::loopback_up().map_err(|e| Error::io("failed to bring up loopback interface", &e))?;
    }
    if req.ipc {
        unshare(CloneFlags::CLONE_NEWIPC)
            .map_err(|e| Error::errno("failed to create IPC namespace", e))?;
    }
    if req.uts {
        unshare(CloneFlags::CLONE_NEWUTS)
            .map_err(|e| Error::errno("failed to create UTS namespace", e))?;
    }
    Ok(())
}

/// Enter a new cgroup namespace after the root switch, tolerating kernels without them.
pub fn unshare_cgroup() -> Result<()> {
    match unshare(CloneFlags::CLONE_NEWCGROUP) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(Error::errno("failed to create cgroup namespace", e)),
    }
}

/// Join the namespaces of `pid` (user first, then mount, network, IPC, UTS and cgroup), skipping
/// those we already share. All descriptors are opened before joining anything, because entering
/// the mount namespace changes what `/proc` shows.
pub fn join(pid: u32) -> Result<()> {
    let kinds = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("mnt", CloneFlags::CLONE_NEWNS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ];
    let mut opened = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if name == "cgroup" && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("failed to open {name} namespace"), &e)),
        };
        let theirs = file
            .metadata()
            .map_err(|e| Error::io(format!("failed to stat {name} namespace"), &e))?;
        let ours = fs::metadata(format!("/proc/self/ns/{name}"))
            .map_err(|e| Error::io(format!("failed to stat {name} namespace"), &e))?;
        if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
            opened.push((name, flag, file));
        }
    }
    for (name, flag, file) in opened {
        setns(file.as_fd(), flag)
            .map_err(|e| Error::errno(format!("failed to join {name} namespace"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_lines() {
        assert_eq!(map_line(1001, true), "0 1001 1\n");
        assert_eq!(map_line(1001, false), "1001 1001 1\n");
        assert_eq!(map_line(0, false), "0 0 1\n");
    }
}
