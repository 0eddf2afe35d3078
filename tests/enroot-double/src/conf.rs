//! The `--conf` script of `enroot start`: a bash file that may define `mounts`, `environ`, `hooks`
//! and `rc` functions (pyxis writes one per container start, §5.7).
//!
//! enroot sources the script in its own bash process. The double runs each function in a fresh
//! `bash` that sources the script, inside the container's namespaces and with enroot's environment
//! (including `ENROOT_ROOTFS`, `ENROOT_ENVIRON`, `ENROOT_MOUNTS`, `ENROOT_PID`), under the same
//! `errexit`/`nounset`/`pipefail` options enroot runs with, so failures behave alike.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Where a function's standard output goes.
pub enum Output {
    /// Captured and returned.
    Capture,
    /// Discarded (enroot redirects hooks to /dev/null).
    Discard,
}

/// A validated configuration script.
pub struct Script {
    path: PathBuf,
}

fn bash() -> Command {
    let mut c = Command::new("bash");
    c.args(["--norc", "--noprofile"]);
    c
}

impl Script {
    /// Check that the script exists and parses (`bash -n`), with enroot's error messages.
    pub fn open(path: &Path) -> Result<Self> {
        let path = crate::util::realpath(path)
            .map_err(|_| Error::msg(format!("No such file or directory: {}", path.display())))?;
        if !path.is_file() {
            return Err(Error::msg(format!(
                "No such file or directory: {}",
                path.display()
            )));
        }
        let out = bash()
            .arg("-n")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .map_err(|e| Error::io("Could not run bash", &e))?;
        if !out.status.success() {
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                eprintln!("[WARN] {line}");
            }
            return Err(Error::msg(format!("Invalid argument: {}", path.display())));
        }
        Ok(Script { path })
    }

    /// Run function `name` if the script defines it. Returns its output when captured.
    pub fn call<'a>(
        &self,
        name: &str,
        env: impl IntoIterator<Item = (&'a OsString, &'a OsString)>,
        output: Output,
    ) -> Result<Vec<u8>> {
        // `declare -F` keeps an undefined function from being an error, as in enroot.
        let program = format!("source \"$1\"; if declare -F {name} >/dev/null; then {name}; fi");
        let mut cmd = bash();
        cmd.args(["-euo", "pipefail", "-c", &program, "enroot"])
            .arg(&self.path)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        match output {
            Output::Capture => cmd.stdout(Stdio::piped()),
            Output::Discard => cmd.stdout(Stdio::null()),
        };
        let out = cmd
            .output()
            .map_err(|e| Error::io("Could not run bash", &e))?;
        if !out.status.success() {
            return Err(Error::msg(format!(
                "{}: {name}() failed with {}",
                self.path.display(),
                describe_status(out.status)
            )));
        }
        Ok(out.stdout)
    }

    /// The body of the `rc` function, if defined (enroot extracts it with `declare -f`).
    pub fn rc_body<'a>(
        &self,
        env: impl IntoIterator<Item = (&'a OsString, &'a OsString)>,
    ) -> Result<Option<Vec<u8>>> {
        let program = "source \"$1\"; if declare -F rc >/dev/null; then declare -f rc; fi";
        let out = bash()
            .args(["-c", program, "enroot"])
            .arg(&self.path)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::io("Could not run bash", &e))?;
        if !out.status.success() {
            return Err(Error::msg(format!(
                "{}: could not read rc()",
                self.path.display()
            )));
        }
        Ok(function_body(&out.stdout))
    }
}

/// Strip `declare -f`'s header (`rc ()` and `{`) and closing brace.
pub fn function_body(declared: &[u8]) -> Option<Vec<u8>> {
    let lines: Vec<&[u8]> = declared.split(|c| *c == b'\n').collect();
    // Trailing newline produces an empty last element.
    let lines: &[&[u8]] = match lines.split_last() {
        Some((&b"", rest)) => rest,
        _ => &lines,
    };
    if lines.len() < 3 {
        return None;
    }
    let body = lines.get(2..lines.len() - 1)?;
    let mut out = Vec::new();
    for l in body {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    Some(out)
}

/// "exit code N" / "signal N".
pub fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("return code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".to_string(),
    }
}

/// Run a system hook script (`hooks.d/*.sh`) like enroot's run-parts: executed directly when it is
/// executable, skipped otherwise, stdout discarded, failure fatal.
pub fn run_hook<'a>(
    script: &Path,
    env: impl IntoIterator<Item = (&'a OsString, &'a OsString)>,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::metadata(script).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
    if !executable {
        return Ok(());
    }
    let status = Command::new(script)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| Error::io(format!("Could not run {}", script.display()), &e))?;
    if !status.success() {
        return Err(Error::msg(format!(
            "{} exited with {}",
            script.display(),
            describe_status(status)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc_body_extraction() {
        let declared = b"rc () \n{ \n    cd /tmp;\n    exec \"$@\"\n}\n";
        assert_eq!(
            function_body(declared),
            Some(b"    cd /tmp;\n    exec \"$@\"\n".to_vec())
        );
        assert_eq!(function_body(b""), None);
    }

    #[test]
    fn functions_run_with_enroot_env_and_errexit() {
        let dir = std::env::temp_dir().join(format!("enroot-double-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("conf");
        std::fs::write(
            &script,
            "mounts() {\n\techo \"/a\\040b /c x-create=auto,rbind\"\n}\n\
             environ() {\n\t[ -n \"${FOO-}\" ] && echo \"FOO=${FOO}\" || :\n}\n\
             hooks() {\n\tfalse\n\techo not reached\n}\n\
             rc() {\n\techo hi\n}\n",
        )
        .unwrap();
        let s = Script::open(&script).unwrap();
        let env = [
            (OsString::from("PATH"), OsString::from("/usr/bin:/bin")),
            (OsString::from("FOO"), OsString::from("bar")),
        ];
        let env_ref = || env.iter().map(|(k, v)| (k, v));
        assert_eq!(
            s.call("mounts", env_ref(), Output::Capture).unwrap(),
            b"/a\\040b /c x-create=auto,rbind\n".to_vec()
        );
        assert_eq!(
            s.call("environ", env_ref(), Output::Capture).unwrap(),
            b"FOO=bar\n".to_vec()
        );
        assert!(s.call("hooks", env_ref(), Output::Discard).is_err());
        assert_eq!(
            s.call("undefined", env_ref(), Output::Capture).unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(
            s.rc_body(env_ref()).unwrap(),
            Some(b"    echo hi\n".to_vec())
        );

        std::fs::write(&script, "mounts() {\n").unwrap();
        assert!(Script::open(&script).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
