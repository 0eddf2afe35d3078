//! Built-in equivalents of enroot's standard hooks and configuration files.
//!
//! A packaged enroot ships `mounts.d/10-system.fstab`, `20-config.fstab`, `environ.d/10-terminal.env`
//! and the hooks `10-shadow.sh`, `10-home.sh` and `10-devices.sh`. The double provides the same
//! effects natively so that it works without any configuration directory; site-specific additions
//! still go to `$ENROOT_SYSCONF_PATH/{mounts.d,environ.d,hooks.d}` (do not copy enroot's own
//! files there, they would apply twice).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{Error, Result};
use crate::fstab;
use crate::mount::{resolve_in_root, Mounter};

/// System mounts every container gets (mounted before the hooks; pass number -1).
pub const SYSTEM_FSTAB: &str = "\
/proc /proc none x-create=dir,rbind,rw,nosuid,nodev,noexec,rslave 0 -1
/sys /sys none x-create=dir,rbind,ro,nosuid,nodev,noexec,rslave 0 -1
/dev /dev none x-create=dir,rbind,rw,nosuid,noexec,rslave 0 -1
tmpfs /tmp tmpfs x-create=dir,rw,nosuid,nodev,mode=755,slave 0 -1
tmpfs /var/run tmpfs x-create=dir,rw,nosuid,nodev,mode=755,slave 0 -1
tmpfs /var/lock tmpfs x-create=dir,rw,nosuid,nodev,mode=755,slave 0 -1
/dev/shm /dev/shm none x-create=dir,bind,rw,nosuid,nodev,noexec,rslave 0 -1
/etc/hosts /etc/hosts none x-create=file,bind,ro,nosuid,nodev,noexec,private 0 -1
/etc/hostname /etc/hostname none x-create=file,bind,ro,nosuid,nodev,noexec,private,nofail,silent 0 -1
/etc/resolv.conf /etc/resolv.conf none x-create=file,bind,ro,nosuid,nodev,noexec,private,nofail,silent 0 -1
/etc/machine-id /etc/machine-id none x-create=file,bind,ro,nosuid,nodev,noexec,private,nofail,silent 0 -1
";

/// A fresh sysfs replaces the host's in a new network namespace, so that it shows that
/// namespace's interfaces.
pub const NET_FSTAB: &str = "\
none /sys none x-create=dir,x-detach,nofail,silent 0 -1
sysfs /sys sysfs x-create=dir,ro,nosuid,nodev,noexec,private 0 -1
";

/// A minimal `/dev` (with `ENROOT_RESTRICT_DEV` or a new IPC namespace).
const RESTRICTED_DEV: &str = "\
none /dev none x-detach,nofail,silent
tmpfs /dev tmpfs x-create=dir,rw,nosuid,noexec,mode=755,slave
/dev/zero /dev/zero none x-create=file,bind,rw,nosuid,noexec,private
/dev/null /dev/null none x-create=file,bind,rw,nosuid,noexec,private
/dev/full /dev/full none x-create=file,bind,rw,nosuid,noexec,private
/dev/urandom /dev/urandom none x-create=file,bind,rw,nosuid,noexec,private
/dev/random /dev/random none x-create=file,bind,rw,nosuid,noexec,private
devpts /dev/pts devpts x-create=dir,rw,nosuid,noexec,newinstance,ptmxmode=0666,mode=620,slave
/dev/tty /dev/tty none x-create=file,bind,rw,nosuid,noexec,private,nofail,silent
";

const PRIVATE_IPC_DEV: &str = "\
none /dev/shm none x-create=dir,x-detach,nofail,silent
tmpfs /dev/shm tmpfs x-create=dir,rw,nosuid,noexec,nodev,mode=1777,private
none /dev/mqueue none x-create=dir,x-detach,nofail,silent
mqueue /dev/mqueue mqueue x-create=dir,rw,nosuid,noexec,nodev,private,nofail,silent
";

const SHARED_IPC_DEV: &str = "\
/dev/shm /dev/shm none x-create=dir,bind,rw,nosuid,noexec,nodev,rslave
/dev/mqueue /dev/mqueue none x-create=dir,bind,rw,nosuid,noexec,nodev,rslave,nofail,silent
";

const EXTRA_DEV: &str = "\
/dev/hugepages /dev/hugepages none x-create=dir,bind,rw,nosuid,noexec,nodev,rslave,nofail,silent
/dev/log /dev/log none x-create=file,bind,rw,nosuid,noexec,nodev,private,nofail,silent
";

/// The terminal type the container inherits (enroot's `10-terminal.env` is `TERM=${TERM}`); an
/// unset host `TERM` leaves the login default (`dumb`).
pub fn terminal_env(term: Option<&OsStr>) -> Vec<u8> {
    match term {
        Some(t) if !t.is_empty() => {
            let mut l = b"TERM=".to_vec();
            l.extend_from_slice(t.as_bytes());
            l.push(b'\n');
            l
        }
        _ => Vec::new(),
    }
}

/// Everything the built-in hooks need.
pub struct Context<'a> {
    pub rootfs: &'a Path,
    pub mounter: &'a Mounter,
    /// `$ENROOT_ENVIRON`.
    pub environ_file: &'a Path,
    /// `$ENROOT_MOUNTS`.
    pub mounts_file: &'a Path,
    /// The invoking user outside the namespace.
    pub uid: u32,
    pub gid: u32,
    pub remap_root: bool,
    /// `HOME` of enroot's environment, if set.
    pub home: Option<&'a OsStr>,
}

fn append(file: &Path, bytes: &[u8]) -> Result<()> {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Error::io(format!("Could not write {}", file.display()), &e))
}

/// `10-devices.sh`: a minimal `/dev` when asked for, private `/dev/shm` and `/dev/mqueue` with a
/// new IPC namespace, plus the usual `/dev` symbolic links.
pub fn devices(ctx: &Context<'_>, restrict: bool, private_ipc: bool) -> Result<()> {
    if !restrict && !private_ipc {
        return Ok(());
    }
    ctx.mounter
        .mount_text(RESTRICTED_DEV.as_bytes(), "10-devices", 0)?;
    let ipc = if private_ipc {
        PRIVATE_IPC_DEV
    } else {
        SHARED_IPC_DEV
    };
    ctx.mounter.mount_text(ipc.as_bytes(), "10-devices", 0)?;
    ctx.mounter
        .mount_text(EXTRA_DEV.as_bytes(), "10-devices", 0)?;
    let dev = ctx.rootfs.join("dev");
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("ptmx", "/dev/pts/ptmx"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = dev.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(target, &link)
                .map_err(|e| Error::io(format!("Could not create {}", link.display()), &e))?;
        }
    }
    Ok(())
}

/// `10-home.sh` with `ENROOT_MOUNT_HOME`: bind the user's home at `/root` (remapped to root) or at
/// the same path, and point `HOME` there.
pub fn home(ctx: &Context<'_>) -> Result<()> {
    let home: OsString = match ctx.home.filter(|h| !h.is_empty()) {
        Some(h) => h.to_os_string(),
        None => User::from_uid(Uid::from_raw(ctx.uid))
            .ok()
            .flatten()
            .map(|u| u.dir.into_os_string())
            .ok_or_else(|| Error::msg("Could not find the home directory of the current user"))?,
    };
    let target = if ctx.remap_root {
        OsString::from("/root")
    } else {
        home.clone()
    };
    append(
        ctx.mounts_file,
        &fstab::line(&home, &target, "none", "x-create=dir,bind,rw,nosuid"),
    )?;
    let mut env = b"HOME=".to_vec();
    env.extend_from_slice(target.as_bytes());
    env.push(b'\n');
    append(ctx.environ_file, &env)
}

/// One passwd-style line split into fields.
fn name_of(line: &[u8]) -> &[u8] {
    line.split(|c| *c == b':').next().unwrap_or_default()
}

/// Put `generated` first, then the existing lines minus those redefining a generated name and
/// minus `_apt` (apt would try to drop privileges to it and fail with a single-id mapping).
pub fn merge_database(existing: &[u8], generated: &[Vec<u8>]) -> Vec<u8> {
    let mut names: Vec<&[u8]> = Vec::new();
    let mut out = Vec::new();
    for l in generated {
        // The invoking user may itself be root or nobody: keep the first definition only.
        if names.contains(&name_of(l)) {
            continue;
        }
        names.push(name_of(l));
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    for l in existing.split(|c| *c == b'\n') {
        if l.is_empty() {
            continue;
        }
        let n = name_of(l);
        if n == b"_apt" || names.contains(&n) {
            continue;
        }
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let temp = crate::util::sibling_temp(path, "enroot");
    let guard = crate::util::TempPath::new(temp);
    fs::write(guard.path(), bytes)
        .and_then(|()| fs::set_permissions(guard.path(), fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(guard.path(), path))
        .map_err(|e| Error::io(format!("Could not update {}", path.display()), &e))?;
    guard.disarm();
    Ok(())
}

fn overflow_id(file: &str) -> u32 {
    fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

/// `10-shadow.sh`: make root, nobody and the invoking user (with their host name, home and shell)
/// the first entries of the container's passwd and group databases, and create the home
/// directory. Login defaults (`HOME`, `SHELL`, `USER`, `LOGNAME`) come from these entries.
pub fn shadow(ctx: &Context<'_>) -> Result<()> {
    let etc = match resolve_in_root(ctx.rootfs, OsStr::new("/etc")) {
        Ok(p) if p.is_dir() => p,
        // Nothing to update in a root filesystem without /etc.
        _ => return Ok(()),
    };
    let Some(user) = User::from_uid(Uid::from_raw(ctx.uid)).ok().flatten() else {
        return Ok(());
    };
    let group_name = Group::from_gid(Gid::from_raw(ctx.gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| user.name.clone());
    let nobody = overflow_id("/proc/sys/kernel/overflowuid");
    let nogroup = overflow_id("/proc/sys/kernel/overflowgid");

    let shell_path = user.shell.clone();
    let shell_ok = resolve_in_root(ctx.rootfs, shell_path.as_os_str())
        .ok()
        .and_then(|p| fs::metadata(p).ok())
        .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let shell: PathBuf = if shell_ok {
        shell_path
    } else {
        PathBuf::from("/bin/sh")
    };
    let shell = shell.as_os_str().as_bytes();
    let home = user.dir.as_os_str().as_bytes();
    let gecos = user.gecos.as_bytes();

    let mut passwd: Vec<Vec<u8>> = vec![
        [b"root:x:0:0:root:/root:".as_slice(), shell].concat(),
        format!("nobody:x:{nobody}:{nogroup}:nobody:/:/sbin/nologin").into_bytes(),
    ];
    let mut group: Vec<Vec<u8>> = vec![
        b"root:x:0:".to_vec(),
        format!("nogroup:x:{nogroup}:").into_bytes(),
    ];
    if ctx.uid != 0 {
        let mut l = format!("{}:x:{}:{}:", user.name, ctx.uid, ctx.gid).into_bytes();
        l.extend_from_slice(gecos);
        l.push(b':');
        l.extend_from_slice(home);
        l.push(b':');
        l.extend_from_slice(shell);
        passwd.push(l);
    }
    if ctx.gid != 0 {
        group.push(format!("{group_name}:x:{}:", ctx.gid).into_bytes());
    }

    let passwd_file = etc.join("passwd");
    let group_file = etc.join("group");
    let old_passwd = fs::read(&passwd_file).unwrap_or_default();
    let old_group = fs::read(&group_file).unwrap_or_default();
    write_atomically(&passwd_file, &merge_database(&old_passwd, &passwd), 0o644)?;
    write_atomically(&group_file, &merge_database(&old_group, &group), 0o644)?;

    // The home directory, created private like `useradd` would, unless it exists.
    if let Ok(dir) = resolve_in_root(ctx.rootfs, OsStr::from_bytes(home)) {
        if fs::symlink_metadata(&dir).is_err() {
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir);
        }
    }
    Ok(())
}

/// Lines of `<dir>/*.<suffix>` files for every configuration directory, in order.
pub fn config_files(dirs: &[PathBuf], suffix: &str) -> Vec<PathBuf> {
    dirs.iter()
        .flat_map(|d| crate::util::sorted_entries_with_suffix(d, suffix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_merge_puts_generated_entries_first() {
        let existing = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/bin/false\n_apt:x:42:65534::/:/bin/false\nalice:x:5:5::/h:/bin/sh\n";
        let generated = vec![
            b"root:x:0:0:root:/root:/bin/sh".to_vec(),
            b"alice:x:1001:1001::/home/alice:/bin/sh".to_vec(),
            b"alice:x:1:1::/:/bin/sh".to_vec(),
        ];
        let merged = String::from_utf8(merge_database(existing, &generated)).unwrap();
        assert_eq!(
            merged,
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\ndaemon:x:1:1::/:/bin/false\n"
        );
    }

    #[test]
    fn built_in_tables_parse() {
        for text in [
            SYSTEM_FSTAB,
            NET_FSTAB,
            RESTRICTED_DEV,
            PRIVATE_IPC_DEV,
            SHARED_IPC_DEV,
            EXTRA_DEV,
        ] {
            for e in fstab::parse(text.as_bytes()) {
                assert!(e.is_ok(), "{e:?}");
            }
        }
        let system: Vec<_> = fstab::parse(SYSTEM_FSTAB.as_bytes());
        assert!(system
            .iter()
            .all(|e| e.as_ref().map(|e| e.passno) == Ok(-1)));
    }

    #[test]
    fn terminal() {
        assert_eq!(
            terminal_env(Some(OsStr::new("xterm"))),
            b"TERM=xterm\n".to_vec()
        );
        assert!(terminal_env(None).is_empty());
        assert!(terminal_env(Some(OsStr::new(""))).is_empty());
    }
}
