//! The last step of `enroot start` (enroot-switchroot): enter the root filesystem, drop what must
//! not leak into the container, apply login defaults and `execve` the shell.
//!
//! Nothing here forks: the process that ran `enroot start` becomes the container's first process.

use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{access, chdir, chroot, execve, fchdir, geteuid, pivot_root, AccessFlags};

use crate::env::Environment;
use crate::error::{Error, Result};
use crate::{ns, sys};

/// `PATH` when neither the environment nor `/etc/login.defs` provide one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to launch the container process.
pub struct Launch {
    pub rootfs: PathBuf,
    pub env: Environment,
    /// Contents of the command script (`--rc` or the `rc()` function), if any.
    pub rc: Option<Vec<u8>>,
    /// `ENROOT_LOGIN_SHELL`.
    pub login: bool,
    pub command: Vec<OsString>,
}

/// What the argv builder needs to know about the first command word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub exists: bool,
    pub executable: bool,
}

/// The shell's argv, following enroot-switchroot: the command script when there is one, else the
/// command through `exec "$@"` (or as `-c` text when it contains a space, or as a script file when
/// it exists but is not executable), else an interactive shell.
pub fn build_argv(
    shell: &OsStr,
    login: bool,
    rc: Option<&OsStr>,
    command: &[OsString],
    probe: impl Fn(&OsStr) -> Probe,
) -> Vec<OsString> {
    let base = Path::new(shell)
        .file_name()
        .map_or_else(|| shell.to_os_string(), OsStr::to_os_string);
    let mut arg0 = OsString::from(if login { "-" } else { "" });
    arg0.push(&base);
    let mut argv = vec![arg0];
    if let Some(rc) = rc {
        argv.push(rc.to_os_string());
        argv.extend(command.iter().cloned());
        return argv;
    }
    let Some((first, rest)) = command.split_first() else {
        return argv;
    };
    if first.as_bytes().contains(&b' ') {
        argv.push("-c".into());
        argv.push(first.clone());
        argv.push(base);
        argv.extend(rest.iter().cloned());
        return argv;
    }
    let p = probe(first);
    if !p.exists || p.executable {
        argv.push("-c".into());
        argv.push("exec \"$@\"".into());
        argv.push(base);
    }
    argv.extend(command.iter().cloned());
    argv
}

/// A passwd entry's interesting fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passwd {
    pub name: OsString,
    pub home: OsString,
    pub shell: OsString,
}

/// Find the entry of `uid` in passwd text.
pub fn passwd_lookup(text: &[u8], uid: u32) -> Option<Passwd> {
    text.split(|c| *c == b'\n').find_map(|line| {
        let f: Vec<&[u8]> = line.split(|c| *c == b':').collect();
        let id: u32 = std::str::from_utf8(f.get(2)?).ok()?.parse().ok()?;
        (id == uid).then(|| Passwd {
            name: OsStr::from_bytes(f.first().copied().unwrap_or_default()).to_os_string(),
            home: OsStr::from_bytes(f.get(5).copied().unwrap_or_default()).to_os_string(),
            shell: OsStr::from_bytes(f.get(6).copied().unwrap_or_default()).to_os_string(),
        })
    })
}

/// A `/etc/login.defs` value (`KEY value`, blanks or `=` as separator).
pub fn login_def(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix(key)?;
        let rest = rest.strip_prefix([' ', '\t', '='])?;
        let value = rest
            .trim_start_matches([' ', '\t', '=', '"'])
            .split([' ', '\t', '"'])
            .next()?;
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// First line of `/proc/self/uid_map`: (id inside, id outside).
fn uid_map() -> (u32, u32) {
    let text = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let mut f = text.split_whitespace().map(|x| x.parse::<u32>().ok());
    match (f.next().flatten(), f.next().flatten()) {
        (Some(inside), Some(outside)) => (inside, outside),
        _ => (geteuid().as_raw(), geteuid().as_raw()),
    }
}

/// Login defaults applied inside the new root: `TERM`, `HOME`, `SHELL`, `USER`, `LOGNAME` and
/// `PATH`, each only when absent; then change to the home directory when it exists.
fn login(env: &mut Environment) {
    let (inside, outside) = uid_map();
    let passwd = fs::read("/etc/passwd").unwrap_or_default();
    let defs = fs::read_to_string("/etc/login.defs").unwrap_or_default();
    let me = passwd_lookup(&passwd, inside);
    let caller = passwd_lookup(&passwd, outside);

    env.set_default("TERM", OsStr::new("dumb"));
    if let Some(pw) = &me {
        if !pw.home.is_empty() {
            env.set_default("HOME", &pw.home);
        }
        if !pw.shell.is_empty() {
            env.set_default("SHELL", &pw.shell);
        }
        if !pw.name.is_empty() {
            env.set_default("USER", &pw.name);
        }
    }
    if let Some(pw) = caller.filter(|p| !p.name.is_empty()) {
        env.set_default("LOGNAME", &pw.name);
    }
    let key = if inside == 0 {
        "ENV_SUPATH"
    } else {
        "ENV_PATH"
    };
    let path = login_def(&defs, key)
        .map(|v| v.trim_start_matches("PATH=").to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    env.set_default("PATH", OsStr::new(&path));
    // enroot fails when the home directory is missing; the double starts in "/" instead.
    if let Some(home) = env.get("HOME").filter(|h| !h.is_empty()) {
        if chdir(home).is_err() {
            let _ = chdir("/");
        }
    }
}

/// pivot_root(2) into `rootfs` and detach the old root (the "pivot_root(".", ".")" idiom).
fn switch_root(rootfs: &Path) -> Result<()> {
    let fail = |e: nix::errno::Errno| {
        Error::errno(format!("failed to switch root: {}", rootfs.display()), e)
    };
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let old_root = open("/", flags, Mode::empty()).map_err(fail)?;
    let new_root = open(rootfs, flags, Mode::empty()).map_err(fail)?;
    fchdir(new_root).map_err(fail)?;
    pivot_root(".", ".").map_err(fail)?;
    fchdir(old_root).map_err(fail)?;
    // The old root must not propagate its unmount anywhere.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(fail)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail)?;
    fchdir(new_root).map_err(fail)?;
    chroot(".").map_err(fail)?;
    nix::unistd::close(old_root).map_err(fail)?;
    nix::unistd::close(new_root).map_err(fail)?;
    Ok(())
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| Error::msg(format!("Invalid argument: {}", s.to_string_lossy())))
}

/// Restore default SIGPIPE handling: the Rust runtime ignores SIGPIPE, and ignored signals survive
/// execve, which would change how pipelines behave inside the container.
pub fn restore_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_DFL runs no handler code, so no async-signal-safety concern exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Execute `argv` with `env`, never returning on success.
pub fn exec(program: &OsStr, argv: &[OsString], env: &[OsString]) -> Result<Infallible> {
    let program_c = cstring(program)?;
    let argv_c = argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>>>()?;
    let env_c = env.iter().map(|a| cstring(a)).collect::<Result<Vec<_>>>()?;
    restore_sigpipe();
    execve(&program_c, &argv_c, &env_c).map_err(|e| {
        Error::errno(
            format!("failed to execute: {}", program.to_string_lossy()),
            e,
        )
    })
}

fn probe(path: &OsStr) -> Probe {
    Probe {
        exists: access(path, AccessFlags::F_OK).is_ok(),
        executable: access(path, AccessFlags::R_OK | AccessFlags::X_OK).is_ok(),
    }
}

/// Switch into the root filesystem and execute the container command.
pub fn launch(mut l: Launch) -> Result<Infallible> {
    switch_root(&l.rootfs)?;
    ns::unshare_cgroup()?;
    sys::set_no_new_privs().map_err(|e| Error::io("failed to drop privileges", &e))?;
    if !geteuid().is_root() {
        sys::drop_bounding_set().map_err(|e| Error::io("failed to drop privileges", &e))?;
    }
    // No descriptor owned by Rust code is alive here; everything else was inherited by accident.
    sys::close_from(3);

    let rc_path = match l.rc.take() {
        Some(content) => {
            let fd = sys::memfd_inheritable("enroot-rc")
                .map_err(|e| Error::io("failed to copy the command script", &e))?;
            let mut file = fs::File::from(fd);
            file.write_all(&content)
                .map_err(|e| Error::io("failed to copy the command script", &e))?;
            let raw = file.as_raw_fd();
            // Keep the descriptor open across execve so the shell can read the script.
            let _ = file.into_raw_fd();
            Some(OsString::from(format!("/proc/self/fd/{raw}")))
        }
        None => {
            let rc = OsStr::new("/etc/rc");
            access(rc, AccessFlags::F_OK)
                .is_ok()
                .then(|| rc.to_os_string())
        }
    };

    if l.login {
        login(&mut l.env);
    }
    let shell = l
        .env
        .get("SHELL")
        .filter(|s| !s.is_empty() && access(*s, AccessFlags::R_OK | AccessFlags::X_OK).is_ok())
        .map_or_else(|| OsString::from("/bin/sh"), OsStr::to_os_string);
    let argv = build_argv(&shell, l.login, rc_path.as_deref(), &l.command, probe);
    exec(&shell, &argv, &l.env.entries())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    const MISSING: Probe = Probe {
        exists: false,
        executable: false,
    };

    #[test]
    fn pyxis_command_runs_through_exec() {
        let cmd = v(&["sh", "-c", "kill -STOP $$ ; exit 0"]);
        let argv = build_argv(OsStr::new("/bin/sh"), true, None, &cmd, |_| MISSING);
        assert_eq!(
            argv,
            v(&[
                "-sh",
                "-c",
                "exec \"$@\"",
                "sh",
                "sh",
                "-c",
                "kill -STOP $$ ; exit 0"
            ])
        );
    }

    #[test]
    fn rc_script_gets_the_command_as_arguments() {
        let cmd = v(&["sh", "-c", "x"]);
        let argv = build_argv(
            OsStr::new("/bin/bash"),
            false,
            Some(OsStr::new("/etc/rc")),
            &cmd,
            |_| MISSING,
        );
        assert_eq!(argv, v(&["bash", "/etc/rc", "sh", "-c", "x"]));
    }

    #[test]
    fn command_with_space_and_script_file_and_no_command() {
        let argv = build_argv(
            OsStr::new("/bin/sh"),
            false,
            None,
            &v(&["echo hi", "a"]),
            |_| MISSING,
        );
        assert_eq!(argv, v(&["sh", "-c", "echo hi", "sh", "a"]));
        let script = Probe {
            exists: true,
            executable: false,
        };
        let argv = build_argv(
            OsStr::new("/bin/sh"),
            false,
            None,
            &v(&["./run.sh", "a"]),
            |_| script,
        );
        assert_eq!(argv, v(&["sh", "./run.sh", "a"]));
        assert_eq!(
            build_argv(OsStr::new("/bin/sh"), true, None, &[], |_| MISSING),
            v(&["-sh"])
        );
    }

    #[test]
    fn passwd_and_login_defs() {
        let pw = b"root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001:A:/home/alice:/bin/sh\nbad\n";
        assert_eq!(
            passwd_lookup(pw, 1001).map(|p| p.home),
            Some(OsString::from("/home/alice"))
        );
        assert_eq!(
            passwd_lookup(pw, 0).map(|p| p.shell),
            Some(OsString::from("/bin/bash"))
        );
        assert_eq!(passwd_lookup(pw, 5), None);
        let defs =
            "# comment\nENV_SUPATH\tPATH=/usr/sbin:/usr/bin\nENV_PATH PATH=/usr/bin\nUMASK 022\n";
        assert_eq!(
            login_def(defs, "ENV_SUPATH"),
            Some("PATH=/usr/sbin:/usr/bin".to_string())
        );
        assert_eq!(
            login_def(defs, "ENV_PATH"),
            Some("PATH=/usr/bin".to_string())
        );
        assert_eq!(login_def(defs, "MISSING"), None);
    }
}
