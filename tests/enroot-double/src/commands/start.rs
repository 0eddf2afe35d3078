//! `enroot start [options] NAME|IMAGE [COMMAND...]`: the core of the double.
//!
//! Runs in the process pyxis forked and ends in `execve` of the container command, in this order
//! (enroot's `runtime::start`): resolve and validate everything on the host; create the namespaces;
//! mount a private tmpfs on `$ENROOT_RUNTIME_PATH` for the working files; bind the root filesystem
//! onto itself; under the rootfs lock build the environment file, perform the system mounts, run
//! the hooks and mount what they asked for, then the user mounts; remount read-only unless
//! writable; pivot into the root filesystem and execute.

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{getegid, geteuid, getpid};

use crate::cli::StartArgs;
use crate::conf::{Output, Script};
use crate::config::{self, Config};
use crate::env::{self, Environment};
use crate::error::{Error, Result};
use crate::fstab::Entry;
use crate::hooks;
use crate::mount::Mounter;
use crate::ns;
use crate::squashfs;
use crate::switchroot::{self, Launch};
use crate::sys;
use crate::util;

/// What `start` runs.
enum Target {
    /// A container directory under the data path.
    Dir(PathBuf),
    /// A squashfs image started directly (changes are discarded).
    Image(PathBuf),
}

/// How long to wait for another `start` configuring the same root filesystem.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

fn resolve_target(cfg: &Config, arg: &OsStr) -> Result<Target> {
    if arg.is_empty() {
        return Err(Error::msg("Invalid argument"));
    }
    let as_path = Path::new(arg);
    if as_path.is_file() && squashfs::is_squashfs(as_path) {
        let image = util::realpath(as_path)
            .map_err(|_| Error::msg(format!("No such file or directory: {}", as_path.display())))?;
        return Ok(Target::Image(image));
    }
    let rootfs = util::existing_container(cfg, arg)?;
    Ok(Target::Dir(rootfs))
}

/// `-m` arguments are checked like enroot's `^[^[:space:]]+(:[^[:space:]]+)*$`, which amounts
/// to "non-empty and without blanks" (a colon is itself a non-blank character).
pub fn valid_mount_arg(arg: &OsStr) -> bool {
    let b = arg.as_bytes();
    !b.is_empty() && !b.iter().any(u8::is_ascii_whitespace)
}

/// Apply `#ENROOT_*` directives found in the configuration script (they override everything).
fn apply_directives(cfg: &mut Config, conf: &Path) -> Result<()> {
    let Ok(text) = fs::read(conf) else {
        return Ok(());
    };
    let mut changed = false;
    for line in text.split(|c| *c == b'\n') {
        let trimmed = line.strip_prefix(b"#").map(|l| {
            let start = l
                .iter()
                .position(|c| *c != b' ' && *c != b'\t')
                .unwrap_or(l.len());
            l.get(start..).unwrap_or_default()
        });
        let Some(directive) = trimmed.filter(|l| l.starts_with(b"ENROOT_")) else {
            continue;
        };
        if let Some((key, raw)) = config::parse_line(directive) {
            let value = cfg.expand(raw)?;
            cfg.set(&key, value);
            changed = true;
        }
    }
    if changed {
        let off: Vec<String> = cfg
            .vars()
            .filter(|(k, v)| k.as_bytes().starts_with(b"ENROOT_") && config::is_false(v.as_bytes()))
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for k in off {
            cfg.unset(&k);
        }
    }
    Ok(())
}

/// Mount something at a host path (runtime tmpfs, rootfs binds) with the fstab machinery.
fn host_mount(
    userns: bool,
    source: &str,
    target: &Path,
    fstype: &str,
    options: &str,
) -> Result<()> {
    Mounter::new(Path::new("/"), userns).mount_entry(&Entry {
        source: OsString::from(source),
        target: target.as_os_str().to_os_string(),
        fstype: fstype.to_string(),
        options: options.to_string(),
        passno: 0,
    })
}

fn host_bind(userns: bool, path: &Path, options: &str) -> Result<()> {
    Mounter::new(Path::new("/"), userns).mount_entry(&Entry {
        source: path.as_os_str().to_os_string(),
        target: path.as_os_str().to_os_string(),
        fstype: "none".to_string(),
        options: options.to_string(),
        passno: 0,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| Error::io(format!("Could not write {}", path.display()), &e))
}

fn read_optional(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_default()
}

/// Run `enroot start`.
pub fn run(mut cfg: Config, args: StartArgs) -> Result<Infallible> {
    if let Some(conf) = &args.conf {
        apply_directives(&mut cfg, Path::new(conf))?;
    }
    for (flag, key) in [
        (args.root, "ENROOT_REMAP_ROOT"),
        (args.rw, "ENROOT_ROOTFS_WRITABLE"),
        (args.net, "ENROOT_UNSHARE_NET"),
        (args.pid, "ENROOT_UNSHARE_PID"),
        (args.ipc, "ENROOT_UNSHARE_IPC"),
        (args.uts, "ENROOT_UNSHARE_UTS"),
    ] {
        if flag {
            cfg.set(key, "y");
        }
    }
    // Emulates enroot 4.1.2 and older, which ignore ENROOT_UNSHARE_* (only the
    // variables; the command-line flags did not exist): lets the tests check how pyxis-rs
    // reports an enroot too old for --container-unshare.
    if std::env::var_os("ENROOT_DOUBLE_IGNORE_UNSHARE").is_some_and(|v| v == "1") {
        for key in [
            "ENROOT_UNSHARE_NET",
            "ENROOT_UNSHARE_IPC",
            "ENROOT_UNSHARE_UTS",
        ] {
            cfg.unset(key);
        }
    }
    if cfg.is_on("ENROOT_UNSHARE_PID") {
        // A PID namespace needs a fork, which would break the one-process contract pyxis relies on.
        return Err(Error::msg(
            "PID namespaces are not supported by the enroot test double",
        ));
    }

    let target = resolve_target(&cfg, &args.target)?;
    for m in &args.mounts {
        if !valid_mount_arg(m) {
            return Err(Error::msg(format!(
                "Invalid argument: {}",
                m.to_string_lossy()
            )));
        }
    }
    for e in &args.env {
        if !env::valid_cli_env(e) {
            return Err(Error::msg(format!(
                "Invalid argument: {}",
                e.to_string_lossy()
            )));
        }
    }
    let rc_from_file = match &args.rc {
        Some(rc) => {
            let path = util::realpath(Path::new(rc)).map_err(|_| {
                Error::msg(format!(
                    "No such file or directory: {}",
                    rc.to_string_lossy()
                ))
            })?;
            let content = fs::read(&path).map_err(|_| {
                Error::msg(format!("No such file or directory: {}", path.display()))
            })?;
            Some(content)
        }
        None => None,
    };
    let script = args
        .conf
        .as_deref()
        .map(|c| Script::open(Path::new(c)))
        .transpose()?;

    let euid = geteuid().as_raw();
    let egid = getegid().as_raw();
    let userns = !(euid == 0 && cfg.is_on("ENROOT_ALLOW_SUPERUSER"));
    let remap_root = cfg.is_on("ENROOT_REMAP_ROOT");
    ns::create(ns::Request {
        user: userns,
        remap_root,
        net: cfg.is_on("ENROOT_UNSHARE_NET"),
        ipc: cfg.is_on("ENROOT_UNSHARE_IPC"),
        uts: cfg.is_on("ENROOT_UNSHARE_UTS"),
    })?;

    // A private scratch area: the environment and fstab files hooks may append to.
    let runtime = cfg.path("ENROOT_RUNTIME_PATH");
    host_mount(
        userns,
        "tmpfs",
        &runtime,
        "tmpfs",
        "x-create=dir,mode=700,slave",
    )?;
    let rootfs = match target {
        Target::Dir(dir) => dir,
        Target::Image(image) => {
            let dir = runtime.join("rootfs");
            squashfs::extract(&cfg, &image, &dir, true)?;
            dir
        }
    };
    host_bind(userns, &rootfs, "bind,nosuid,nodev,slave")?;

    let environ_file = runtime.join("environment");
    let mounts_file = runtime.join("fstab");
    let mut child_env = cfg.clone();
    child_env.unset("BASH_ENV");
    child_env.set("ENROOT_PID", getpid().as_raw().to_string());
    child_env.set("ENROOT_ROOTFS", rootfs.as_os_str());
    child_env.set("ENROOT_ENVIRON", environ_file.as_os_str());
    child_env.set("ENROOT_MOUNTS", mounts_file.as_os_str());
    let lookup = |name: &str| child_env.get(name).map(|v| v.as_bytes().to_vec());

    let lock_path = rootfs.join(".lock");
    let lock = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("Could not open {}", lock_path.display()), &e))?;
    match sys::flock_exclusive(lock.as_fd(), LOCK_TIMEOUT) {
        Ok(true) => {}
        _ => return Err(Error::msg("Could not acquire rootfs lock")),
    }

    let sysconf = cfg.path("ENROOT_SYSCONF_PATH");
    let userconf = cfg.path("ENROOT_CONFIG_PATH");
    let conf_dirs = |sub: &str| vec![sysconf.join(sub), userconf.join(sub)];

    // 1. Environment: image, environ.d, environ(), -e.
    let mut environ = env::envsubst(&read_optional(&rootfs.join("etc/environment")), lookup);
    environ.push(b'\n');
    environ.extend(hooks::terminal_env(child_env.get("TERM")));
    for file in hooks::config_files(&conf_dirs("environ.d"), ".env") {
        environ.extend(env::envsubst(&read_optional(&file), lookup));
        environ.push(b'\n');
    }
    if let Some(s) = &script {
        environ.extend(s.call("environ", child_env.vars(), Output::Capture)?);
        environ.push(b'\n');
    }
    for e in &args.env {
        environ.extend(env::expand_cli_env(e, |k| {
            child_env.get(&k.to_string_lossy()).map(OsStr::to_os_string)
        }));
    }
    write_file(&environ_file, &env::envfmt(&environ))?;

    // 2. System mounts (pass -1): image fstab, built-in table, mounts.d.
    let mut system_fstab = env::envsubst(&read_optional(&rootfs.join("etc/fstab")), lookup);
    system_fstab.push(b'\n');
    system_fstab.extend_from_slice(hooks::SYSTEM_FSTAB.as_bytes());
    for file in hooks::config_files(&conf_dirs("mounts.d"), ".fstab") {
        system_fstab.extend(env::envsubst(&read_optional(&file), lookup));
        system_fstab.push(b'\n');
    }
    if cfg.is_on("ENROOT_UNSHARE_NET") {
        system_fstab.extend_from_slice(hooks::NET_FSTAB.as_bytes());
    }
    let mounter = Mounter::new(&rootfs, userns);
    mounter.mount_text(&system_fstab, "system fstab", -1)?;

    // 3. Hooks; what they append to $ENROOT_MOUNTS is mounted right after them.
    write_file(&mounts_file, b"")?;
    let home = child_env.get("HOME").map(OsStr::to_os_string);
    let ctx = hooks::Context {
        rootfs: &rootfs,
        mounter: &mounter,
        environ_file: &environ_file,
        mounts_file: &mounts_file,
        uid: euid,
        gid: egid,
        remap_root,
        home: home.as_deref(),
    };
    hooks::shadow(&ctx)?;
    if cfg.is_on("ENROOT_MOUNT_HOME") {
        hooks::home(&ctx)?;
    }
    hooks::devices(
        &ctx,
        cfg.is_on("ENROOT_RESTRICT_DEV"),
        cfg.is_on("ENROOT_UNSHARE_IPC"),
    )?;
    for hook in hooks::config_files(&conf_dirs("hooks.d"), ".sh") {
        crate::conf::run_hook(&hook, child_env.vars())?;
    }
    if let Some(s) = &script {
        s.call("hooks", child_env.vars(), Output::Discard)?;
    }
    mounter.mount_text(
        &read_optional(&mounts_file),
        &mounts_file.to_string_lossy(),
        0,
    )?;
    write_file(&environ_file, &env::envfmt(&read_optional(&environ_file)))?;

    // 4. Remaining mounts (pass 0): image/mounts.d entries, then mounts() and -m, so that the
    //    user's mounts come last and can replace or detach earlier ones.
    let mut user_fstab = system_fstab;
    if let Some(s) = &script {
        user_fstab.extend(s.call("mounts", child_env.vars(), Output::Capture)?);
        user_fstab.push(b'\n');
    }
    for m in &args.mounts {
        let line: Vec<u8> = m
            .as_bytes()
            .iter()
            .map(|&c| if c == b':' { b' ' } else { c })
            .collect();
        user_fstab.extend(line);
        user_fstab.push(b'\n');
    }
    mounter.mount_text(&user_fstab, "mount configuration", 0)?;

    // 5. Command script.
    let rc = match rc_from_file {
        Some(content) => Some(content),
        None => match &script {
            Some(s) => s.rc_body(child_env.vars())?,
            None => None,
        },
    };
    drop(lock);

    if !cfg.is_on("ENROOT_ROOTFS_WRITABLE") {
        host_mount(
            userns,
            "none",
            &rootfs,
            "none",
            "remount,bind,nosuid,nodev,ro",
        )?;
    }
    if lock_path.is_file() {
        host_bind(userns, &lock_path, "bind,nosuid,nodev,noexec,ro,private")?;
    }

    let env = Environment::parse(&read_optional(&environ_file));
    switchroot::launch(Launch {
        rootfs,
        env,
        rc,
        login: cfg.is_on("ENROOT_LOGIN_SHELL"),
        command: args.command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_argument_validation() {
        assert!(valid_mount_arg(OsStr::new("/a:/b")));
        assert!(valid_mount_arg(OsStr::new("/a:/b:ro,nosuid")));
        assert!(valid_mount_arg(OsStr::new("tmpfs:/t")));
        assert!(!valid_mount_arg(OsStr::new("")));
        assert!(!valid_mount_arg(OsStr::new("/a b:/c")));
        assert!(!valid_mount_arg(OsStr::new("/a\t:/c")));
    }

    #[test]
    fn directives_override_and_can_turn_off() {
        let dir =
            std::env::temp_dir().join(format!("enroot-double-directives-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("conf");
        fs::write(
            &conf,
            "#ENROOT_REMAP_ROOT=n\n# ENROOT_ROOTFS_WRITABLE yes\n#NOT_ENROOT=1\n",
        )
        .unwrap();
        let mut cfg =
            Config::from_vars([(OsString::from("ENROOT_REMAP_ROOT"), OsString::from("y"))]);
        apply_directives(&mut cfg, &conf).unwrap();
        assert!(!cfg.is_on("ENROOT_REMAP_ROOT"));
        assert!(cfg.is_on("ENROOT_ROOTFS_WRITABLE"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
