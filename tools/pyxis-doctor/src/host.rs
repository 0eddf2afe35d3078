//! The kernel and disk side of the node check: user namespaces, `/dev/fuse` and the
//! FUSE programs enroot starts squashfs images with, the runtime and image cache
//! directories and what each user keeps in the cache. Directories are opened with the
//! plugin's own checks (`sys::dirs`, `sys::cache`), so the doctor refuses exactly what
//! the plugin refuses.

use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::statvfs::statvfs;
use spank_pyxis::core::config::Config;
use spank_pyxis::sys::cache::UserCache;
use spank_pyxis::sys::dirs::Dir;
use spank_pyxis::sys::probe;

use crate::node::search_path;
use crate::report::{human, Check};

/// The uid an unprivileged probe runs as when root runs the doctor (`nobody`).
const NOBODY: u32 = 65534;

/// Free space below which the runtime directory gets a warning.
const RUNTIME_MIN_FREE: u64 = 1 << 30;

/// The hidden subcommand the user-namespace probe re-executes the doctor with: it
/// creates a user and a mount namespace and maps the caller to root, as enroot does.
pub const USERNS_PROBE: &str = "__probe-userns";

/// Runs in the re-executed doctor (as the probed user): 0 when enroot's first steps work.
pub fn userns_probe_main() -> i32 {
    use nix::sched::{unshare, CloneFlags};
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        eprintln!("unshare(CLONE_NEWUSER|CLONE_NEWNS): {e}");
        return 1;
    }
    let writes = [
        ("/proc/self/setgroups", "deny".to_owned()),
        ("/proc/self/uid_map", format!("0 {uid} 1\n")),
        ("/proc/self/gid_map", format!("0 {gid} 1\n")),
    ];
    for (file, data) in writes {
        if let Err(e) = std::fs::write(file, data) {
            eprintln!("write {file}: {e}");
            return 2;
        }
    }
    0
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// User namespaces: the sysctls, then a real attempt as an unprivileged user.
pub fn check_userns(out: &mut Vec<Check>) {
    let max = read_sysctl("/proc/sys/user/max_user_namespaces");
    if max.as_deref() == Some("0") {
        out.push(Check::fail(
            "user-namespaces",
            "/proc/sys/user/max_user_namespaces is 0: enroot cannot start any container",
            "sysctl -w user.max_user_namespaces=65536 (and persist it in /etc/sysctl.d/)",
        ));
        return;
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        out.push(Check::fail(
            "user-namespaces",
            "kernel.unprivileged_userns_clone is 0: users cannot create user namespaces",
            "sysctl -w kernel.unprivileged_userns_clone=1 (and persist it in /etc/sysctl.d/)",
        ));
        return;
    }
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = match std::env::current_exe() {
        Ok(exe) => Command::new(exe),
        Err(e) => {
            out.push(Check::warn(
                "user-namespaces",
                format!("cannot find this program to run the probe: {e}"),
                "",
            ));
            return;
        }
    };
    cmd.arg(USERNS_PROBE)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if root {
        use std::os::unix::process::CommandExt;
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let who = if root { "uid 65534" } else { "this user" };
    match cmd.output() {
        Ok(o) if o.status.success() => out.push(Check::pass(
            "user-namespaces",
            format!(
                "{who} can create a user namespace (max_user_namespaces={})",
                max.as_deref().unwrap_or("?")
            ),
        )),
        Ok(o) => {
            let apparmor = read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
                .as_deref()
                == Some("1");
            out.push(Check::fail(
                "user-namespaces",
                format!(
                    "{who} cannot create a user namespace: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                if apparmor {
                    "kernel.apparmor_restrict_unprivileged_userns=1: install enroot's AppArmor profile or \
                     sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
                } else {
                    "enable unprivileged user namespaces (sysctl user.max_user_namespaces, \
                     kernel.unprivileged_userns_clone)"
                },
            ));
        }
        Err(e) => out.push(Check::warn(
            "user-namespaces",
            format!("cannot run the probe: {e}"),
            "",
        )),
    }
}

/// `/dev/fuse` and squashfuse/fuse-overlayfs, which enroot needs to start a squashfs
/// image without unpacking it (`use_squashfuse`, on by default).
pub fn check_fuse(config: &Config, out: &mut Vec<Check>) {
    let needed = config.use_squashfuse;
    let problem = |detail: String, fix: &str| {
        if needed {
            Check::fail(
                "fuse",
                format!("{detail}: steps fall back to unpacking every image (slow, needs disk)"),
                fix,
            )
        } else {
            Check::warn(
                "fuse",
                format!("{detail} (only needed with use_squashfuse=1)"),
                fix,
            )
        }
    };
    let fuse_fix =
        "chmod 0666 /dev/fuse (persist it with a udev rule: KERNEL==\"fuse\", MODE=\"0666\"); \
                    modprobe fuse if it is missing";
    match std::fs::metadata("/dev/fuse") {
        Err(e) => {
            out.push(problem(format!("/dev/fuse: {e}"), fuse_fix));
            return;
        }
        Ok(m) if !m.file_type().is_char_device() => {
            out.push(problem(
                "/dev/fuse is not a character device".into(),
                fuse_fix,
            ));
            return;
        }
        Ok(m) if m.mode() & 0o006 != 0o006 => {
            out.push(problem(
                format!(
                    "/dev/fuse has mode {:04o}: users cannot open it",
                    m.mode() & 0o7777
                ),
                fuse_fix,
            ));
            return;
        }
        Ok(_) => {}
    }
    let path = search_path();
    let path = OsStr::new(&path);
    if probe::find_program(path, "squashfuse").is_none() {
        out.push(problem(
            "squashfuse is not installed".into(),
            "install squashfuse (Debian/Ubuntu: apt install squashfuse; EL: dnf install squashfuse)",
        ));
        return;
    }
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (NOBODY, NOBODY)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let native = probe::native_overlay_works(uid, gid);
    let fuse_overlayfs = probe::find_program(path, "fuse-overlayfs").is_some();
    if !native && !fuse_overlayfs {
        out.push(problem(
            "neither kernel overlayfs in a user namespace (Linux >= 5.11) nor fuse-overlayfs"
                .into(),
            "install fuse-overlayfs",
        ));
        return;
    }
    out.push(Check::pass(
        "fuse",
        format!(
            "/dev/fuse usable, squashfuse, overlay: {}",
            if native {
                "kernel overlayfs in a user namespace"
            } else {
                "fuse-overlayfs"
            }
        ),
    ));
}

fn free(path: &Path) -> Option<(u64, u64)> {
    let st = statvfs(path).ok()?;
    let frag = st.fragment_size();
    Some((
        st.blocks_available().saturating_mul(frag),
        st.blocks().saturating_mul(frag),
    ))
}

/// The per-user subdirectories of a root directory (names that are uids).
fn user_dirs(root: &Path) -> Vec<u32> {
    let mut uids: Vec<u32> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    uids.sort_unstable();
    uids
}

/// The uids whose directories this caller checks: everyone's as root, its own otherwise.
fn visible_uids(root: &Path) -> Vec<u32> {
    let me = nix::unistd::getuid().as_raw();
    let all = user_dirs(root);
    if nix::unistd::geteuid().is_root() {
        all
    } else {
        all.into_iter().filter(|u| *u == me).collect()
    }
}

/// `runtime_path` and the users' private directories in it.
pub fn check_runtime_dir(config: &Config, out: &mut Vec<Check>) {
    let path = &config.runtime_path;
    let shown = path.display();
    let fix_owner =
        format!("chown root:root {shown} && chmod 0755 {shown} (slurmd creates it at start)");
    let dir = match Dir::open_trusted(path, 0) {
        Ok(d) => d,
        Err(e) => {
            let fix = match std::fs::symlink_metadata(path) {
                Err(_) => {
                    format!("restart slurmd (it creates {shown}), or install -d -m 0755 {shown}")
                }
                Ok(m) if !m.is_dir() => {
                    format!("remove {shown} (not a directory) and restart slurmd, which creates it")
                }
                Ok(_) => fix_owner,
            };
            out.push(Check::fail(
                "runtime-dir",
                format!("runtime_path: {e}"),
                fix,
            ));
            return;
        }
    };
    let mode = std::fs::metadata(path)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(0);
    if mode & 0o001 == 0 {
        out.push(Check::fail(
            "runtime-dir",
            format!("{shown} has mode {mode:04o}: users cannot reach their directories in it"),
            fix_owner,
        ));
        return;
    }
    let mut bad = Vec::new();
    for uid in visible_uids(path) {
        if let Err(e) = dir.existing_user_subdir(uid) {
            bad.push(e.to_string());
        }
    }
    if !bad.is_empty() {
        out.push(Check::fail(
            "runtime-dir",
            bad.join("; "),
            "remove the directory (rm -rf) when no job of that user runs; slurmstepd recreates it",
        ));
        return;
    }
    match free(path) {
        Some((avail, _)) if avail < RUNTIME_MIN_FREE => out.push(Check::warn(
            "runtime-dir",
            format!("{shown} has only {} free", human(avail)),
            "enlarge the file system or move runtime_path= to a larger one",
        )),
        Some((avail, size)) => out.push(Check::pass(
            "runtime-dir",
            format!(
                "{shown}: root-owned, mode {mode:04o}, {} free of {}",
                human(avail),
                human(size)
            ),
        )),
        None => out.push(Check::pass(
            "runtime-dir",
            format!("{shown}: root-owned, mode {mode:04o}"),
        )),
    }
}

/// `image_cache_path` and, per user, what the cache holds.
pub fn check_image_cache(config: &Config, out: &mut Vec<Check>) {
    let Some(path) = config.image_cache() else {
        out.push(Check::pass(
            "image-cache",
            "disabled (image_cache_path=none or image_cache_size=0)",
        ));
        return;
    };
    let shown = path.display();
    if let Err(e) = Dir::open_trusted(path, 0) {
        let missing = !path.exists();
        out.push(Check::warn(
            "image-cache",
            format!("image_cache_path: {e}: the cache is disabled"),
            if missing {
                format!("restart slurmd (it creates {shown}), or install -d -m 0755 {shown}")
            } else {
                format!("chown root:root {shown} && chmod 0755 {shown}")
            },
        ));
        return;
    }
    let bound = config.image_cache_size;
    let (avail, size) = free(path).unwrap_or((u64::MAX, 0));
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut over = Vec::new();
    for uid in visible_uids(path) {
        let entries = UserCache::open(path, uid).and_then(|c| c.list());
        match entries {
            Ok(entries) => {
                let total: u64 = entries.iter().map(|e| e.size).sum();
                let in_use = entries.iter().filter(|e| e.in_use).count();
                let who = nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map_or_else(|| format!("uid {uid}"), |u| format!("{} ({uid})", u.name));
                lines.push(format!(
                    "{who}: {} images, {}, {in_use} in use",
                    entries.len(),
                    human(total)
                ));
                if total > bound {
                    over.push(who);
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let summary = format!(
        "{shown}: bound {} per user, {} free of {}{}{}",
        human(bound),
        human(avail),
        human(size),
        if lines.is_empty() { "" } else { "; " },
        lines.join("; ")
    );
    if !problems.is_empty() {
        out.push(Check::fail(
            "image-cache",
            problems.join("; "),
            "remove that user's cache directory (rm -rf) when no job of the user runs",
        ));
    } else if avail < bound {
        out.push(Check::warn(
            "image-cache",
            format!("{summary}: less free space than one user's bound"),
            "lower image_cache_size= or move image_cache_path= to a larger file system",
        ));
    } else if !over.is_empty() {
        out.push(Check::warn(
            "image-cache",
            format!(
                "{summary}: over the bound (entries in use): {}",
                over.join(", ")
            ),
            "pyxis-doctor cache prune (as that user) once its jobs ended",
        ));
    } else {
        out.push(Check::pass("image-cache", summary));
    }
}
