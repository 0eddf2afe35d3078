//! `enroot exec [-e KEY[=VAL]] PID COMMAND...`: run a command inside a running container.
//!
//! Joins the user, mount, network, IPC, UTS and cgroup namespaces of `PID` (those that differ
//! from ours), takes its environment from `/proc/PID/environ` plus `-e`, changes to its working
//! directory and executes the command, looked up in the container's `PATH`.

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sys::signal::kill;
use nix::sys::stat::Mode;
use nix::unistd::{access, fchdir, AccessFlags, Pid};

use crate::config::Config;
use crate::env::{self, Environment};
use crate::error::{Error, Result};
use crate::ns;
use crate::switchroot::{self, DEFAULT_PATH};

/// Find `program` in `path` (a colon-separated list) unless it contains a slash.
pub fn search_path(
    program: &OsStr,
    path: &OsStr,
    executable: impl Fn(&Path) -> bool,
) -> Option<OsString> {
    if program.as_bytes().contains(&b'/') {
        return Some(program.to_os_string());
    }
    path.as_bytes()
        .split(|c| *c == b':')
        .map(|dir| {
            if dir.is_empty() {
                Path::new(".")
            } else {
                Path::new(OsStr::from_bytes(dir))
            }
        })
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
        .map(std::path::PathBuf::into_os_string)
}

/// Run `enroot exec`.
pub fn run(
    cfg: &Config,
    pid: &OsStr,
    extra_env: &[OsString],
    command: &[OsString],
) -> Result<Infallible> {
    for e in extra_env {
        if !env::valid_cli_env(e) {
            return Err(Error::msg(format!(
                "Invalid argument: {}",
                e.to_string_lossy()
            )));
        }
    }
    let not_found = || Error::msg(format!("Process not found: {}", pid.to_string_lossy()));
    let pid: u32 = pid
        .to_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(not_found)?;
    let raw = i32::try_from(pid).map_err(|_| not_found())?;
    kill(Pid::from_raw(raw), None).map_err(|_| not_found())?;

    let mut text: Vec<u8> = fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| Error::io(format!("Could not read the environment of {pid}"), &e))?
        .into_iter()
        .map(|c| if c == 0 { b'\n' } else { c })
        .collect();
    text.push(b'\n');
    for e in extra_env {
        text.extend(env::expand_cli_env(e, |k| {
            cfg.get(&k.to_string_lossy()).map(OsStr::to_os_string)
        }));
    }
    let environment = Environment::parse(&text);

    // Opened before joining: the path is only meaningful in our own mount namespace.
    let cwd = open(
        format!("/proc/{pid}/cwd").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::errno("failed to open the working directory", e))?;
    ns::join(pid)?;
    fchdir(cwd).map_err(|e| Error::errno("failed to change directory", e))?;
    let _ = nix::unistd::close(cwd);

    let (program, _) = command
        .split_first()
        .ok_or_else(|| Error::msg("Invalid argument"))?;
    let path = environment.get("PATH").unwrap_or(OsStr::new(DEFAULT_PATH));
    let resolved = search_path(program, path, |p| {
        access(p, AccessFlags::X_OK).is_ok() && p.is_file()
    })
    .ok_or_else(|| {
        Error::msg(format!(
            "failed to execute: {}: No such file or directory",
            program.to_string_lossy()
        ))
    })?;
    switchroot::exec(&resolved, command, &environment.entries())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search() {
        let exists = |p: &Path| p == Path::new("/usr/bin/id");
        assert_eq!(
            search_path(OsStr::new("id"), OsStr::new("/bin:/usr/bin"), exists),
            Some(OsString::from("/usr/bin/id"))
        );
        assert_eq!(
            search_path(OsStr::new("nope"), OsStr::new("/bin"), exists),
            None
        );
        assert_eq!(
            search_path(OsStr::new("./x"), OsStr::new("/bin"), exists),
            Some(OsString::from("./x"))
        );
    }
}
