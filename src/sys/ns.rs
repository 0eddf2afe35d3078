//! Opening a container's namespaces and joining them from a task.
//!
//! Runs in the task processes slurmstepd forks (`task_init`, single-threaded, as the
//! user) and, to pin an already running container (W1), in slurmstepd's `user_init`.
//! Namespaces are opened as `OwnedFd` (O_CLOEXEC) while the target process is known to
//! be the container, so a later exit or pid reuse cannot redirect the join. The join
//! itself goes through [`NsOps`] so its order is unit-tested with a recording fake.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::sched::CloneFlags;

use crate::core::args::Unshare;

/// The namespace kinds pyxis deals with, in join order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsKind {
    User,
    Cgroup,
    Mount,
    Ipc,
    Uts,
    Net,
}

impl NsKind {
    fn proc_name(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Cgroup => "cgroup",
            NsKind::Mount => "mnt",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Net => "net",
        }
    }

    /// How pyxis names it in messages.
    fn label(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Cgroup => "cgroup",
            NsKind::Mount => "mount",
            NsKind::Ipc => "IPC",
            NsKind::Uts => "UTS",
            NsKind::Net => "network",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            NsKind::User => CloneFlags::CLONE_NEWUSER,
            NsKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            NsKind::Mount => CloneFlags::CLONE_NEWNS,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Net => CloneFlags::CLONE_NEWNET,
        }
    }
}

/// Errors opening or joining namespaces, worded as pyxis's.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("unable to open {} namespace file: {source}", .kind.label())]
    Open {
        kind: NsKind,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to stat self {} namespace: {source}", .kind.proc_name())]
    StatSelf {
        kind: NsKind,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to fstat container {} namespace: {source}", .kind.proc_name())]
    StatContainer {
        kind: NsKind,
        #[source]
        source: std::io::Error,
    },
    #[error("error: --container-unshare={0} requested but the container is not in a separate {1} namespace")]
    NotUnshared(&'static str, &'static str),
    #[error("couldn't join {} namespace: {source}", .kind.label())]
    Join {
        kind: NsKind,
        #[source]
        source: nix::Error,
    },
}

impl NsError {
    /// The process exited before its namespace files could be opened (`ENOENT` for a
    /// pid that is gone or a zombie, `ESRCH` while it is being reaped).
    pub fn process_gone(&self) -> bool {
        match self {
            NsError::Open { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ESRCH)
            ),
            _ => false,
        }
    }
}

/// Open namespace files of one container process.
#[derive(Debug)]
pub struct ContainerNamespaces {
    /// `None` when the container shares our user namespace (privileged mode).
    user: Option<OwnedFd>,
    cgroup: Option<OwnedFd>,
    mount: OwnedFd,
    /// Only those that differ from the caller's own.
    ipc: Option<OwnedFd>,
    uts: Option<OwnedFd>,
    net: Option<OwnedFd>,
}

impl ContainerNamespaces {
    /// Opens `/proc/<pid>/ns/*`. `unshare` lists the namespaces the user asked to be
    /// separate: finding them shared is an error (pyxis's wording).
    ///
    /// A container in our own user namespace was started by enroot in privileged mode
    /// (`ENROOT_ALLOW_SUPERUSER` for root): it is not joined. Deciding from what enroot
    /// actually did, instead of re-deriving enroot's configuration, keeps the two
    /// consistent (W11).
    pub fn open(pid: u32, unshare: Unshare) -> Result<Self, NsError> {
        let user = open_if_different(pid, NsKind::User, false, "user", "user")?;
        let cgroup = match open_ns(pid, NsKind::Cgroup) {
            Ok(fd) => Some(fd),
            Err(NsError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                None
            }
            Err(e) => return Err(e),
        };
        let mount = open_ns(pid, NsKind::Mount)?;
        let ipc = open_if_different(pid, NsKind::Ipc, unshare.ipc, "ipc", "IPC")?;
        let uts = open_if_different(pid, NsKind::Uts, unshare.uts, "uts", "UTS")?;
        let net = open_if_different(pid, NsKind::Net, unshare.net, "net", "network")?;
        Ok(ContainerNamespaces {
            user,
            cgroup,
            mount,
            ipc,
            uts,
            net,
        })
    }

    /// The (st_dev, st_ino) of the container's mount namespace: which container it is.
    /// (0, 0), which no namespace has, if it cannot be read.
    pub fn mount_id(&self) -> (u64, u64) {
        nix::sys::stat::fstat(&self.mount)
            .map(|st| (st.st_dev, st.st_ino))
            .unwrap_or((0, 0))
    }

    /// True when the container shares our user namespace (enroot's privileged mode):
    /// such tasks keep real root and get no seccomp filter.
    pub fn privileged(&self) -> bool {
        self.user.is_none()
    }

    /// Joins every open namespace in pyxis's order: user, cgroup, mount, ipc, uts, net.
    /// Joining the mount namespace also moves root and cwd to the container's root.
    pub fn join(&self, ops: &mut impl NsOps) -> Result<(), NsError> {
        let order = [
            (NsKind::User, self.user.as_ref()),
            (NsKind::Cgroup, self.cgroup.as_ref()),
            (NsKind::Mount, Some(&self.mount)),
            (NsKind::Ipc, self.ipc.as_ref()),
            (NsKind::Uts, self.uts.as_ref()),
            (NsKind::Net, self.net.as_ref()),
        ];
        for (kind, fd) in order {
            if let Some(fd) = fd {
                ops.setns(fd.as_fd(), kind)
                    .map_err(|source| NsError::Join { kind, source })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl ContainerNamespaces {
    /// This process's own namespaces, presented as those of an unprivileged container
    /// (a user namespace to join): what the step tests' fake host opens.
    pub(crate) fn own_as_container() -> Result<Self, NsError> {
        let mut ns = Self::open(std::process::id(), Unshare::default())?;
        ns.user = Some(open_ns(std::process::id(), NsKind::User)?);
        Ok(ns)
    }
}

fn open_ns(pid: u32, kind: NsKind) -> Result<OwnedFd, NsError> {
    // std opens with O_CLOEXEC.
    File::open(format!("/proc/{pid}/ns/{}", kind.proc_name()))
        .map(OwnedFd::from)
        .map_err(|source| NsError::Open { kind, source })
}

fn open_if_different(
    pid: u32,
    kind: NsKind,
    requested: bool,
    opt: &'static str,
    what: &'static str,
) -> Result<Option<OwnedFd>, NsError> {
    let fd = open_ns(pid, kind)?;
    let mine = std::fs::metadata(format!("/proc/self/ns/{}", kind.proc_name()))
        .map_err(|source| NsError::StatSelf { kind, source })?;
    let theirs = File::from(
        fd.try_clone()
            .map_err(|source| NsError::StatContainer { kind, source })?,
    )
    .metadata()
    .map_err(|source| NsError::StatContainer { kind, source })?;
    if (mine.dev(), mine.ino()) == (theirs.dev(), theirs.ino()) {
        if requested {
            return Err(NsError::NotUnshared(opt, what));
        }
        return Ok(None);
    }
    Ok(Some(fd))
}

/// The process-changing syscalls of a join, behind a seam for unit tests.
pub trait NsOps {
    fn setns(&mut self, fd: BorrowedFd<'_>, kind: NsKind) -> nix::Result<()>;
}

/// The real kernel.
pub struct Kernel;

impl NsOps for Kernel {
    fn setns(&mut self, fd: BorrowedFd<'_>, kind: NsKind) -> nix::Result<()> {
        nix::sched::setns(fd, kind.flag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<NsKind>);

    impl NsOps for Recorder {
        fn setns(&mut self, _: BorrowedFd<'_>, kind: NsKind) -> nix::Result<()> {
            self.0.push(kind);
            Ok(())
        }
    }

    fn fd() -> OwnedFd {
        OwnedFd::from(File::open("/proc/self/ns/mnt").unwrap())
    }

    #[test]
    fn joins_in_pyxis_order_and_skips_missing() {
        let ns = ContainerNamespaces {
            user: Some(fd()),
            cgroup: None,
            mount: fd(),
            ipc: None,
            uts: Some(fd()),
            net: Some(fd()),
        };
        let mut rec = Recorder::default();
        ns.join(&mut rec).unwrap();
        assert_eq!(
            rec.0,
            vec![NsKind::User, NsKind::Mount, NsKind::Uts, NsKind::Net]
        );
    }

    #[test]
    fn own_user_namespace_is_not_joined() {
        let ns = ContainerNamespaces::open(std::process::id(), Unshare::default()).unwrap();
        assert!(ns.user.is_none());
        // Our own ipc/uts/net are identical to ourselves: nothing to join.
        assert!(ns.ipc.is_none() && ns.uts.is_none() && ns.net.is_none());
    }

    #[test]
    fn unshare_requested_but_shared_is_pyxis_error() {
        let unshare = Unshare {
            net: true,
            ..Unshare::default()
        };
        let err = ContainerNamespaces::open(std::process::id(), unshare).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error: --container-unshare=net requested but the container is not in a separate network namespace"
        );
    }

    #[test]
    fn missing_process_is_an_open_error() {
        let err = ContainerNamespaces::open(u32::MAX - 1, Unshare::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unable to open user namespace file"),
            "{err}"
        );
        assert!(err.process_gone(), "{err:?}");
        let other = NsError::NotUnshared("net", "network");
        assert!(!other.process_gone());
    }
}
