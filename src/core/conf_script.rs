//! The enroot `--conf` script: the one place where user data meets a shell.
//!
//! Decides the text of the bash configuration script that slurmstepd's
//! creator task writes before `enroot start --conf <script>` (behaviour spec
//! §5.7): a `mounts()` function printing the `--container-mounts` fstab
//! lines, a `hooks()` function disabling the image entrypoint, and an
//! `environ()` function forwarding `--container-env` variables. enroot sources
//! the script as the user inside the new namespaces.
//!
//! Fixes over pyxis 0.24.0:
//! * W5: every user string is emitted through [`sh_quote`] (single quotes)
//!   and printed with `printf '%s'`, so `"`, `$`, backticks and `'` in paths
//!   are data, never code. Variable names are re-checked as identifiers here
//!   even though `--container-env` already validates them.
//! * W7: the entrypoint is disabled without writing into the container's
//!   root filesystem. `hooks()` writes `exec "$@"` into a file under
//!   `${ENROOT_RUNTIME_PATH}` (a tmpfs enroot mounts privately for each
//!   start) and asks enroot, through `${ENROOT_MOUNTS}`, to bind-mount it
//!   read-only over `/etc/rc.local` for this start only. enroot's `/etc/rc`
//!   sources `/etc/rc.local` before the entrypoint, so the effect inside the
//!   container is the same as pyxis's, but named containers and
//!   `--container-save` exports keep their original `rc.local`. The mount is
//!   added when the image has an `/etc/rc.local` or an `/etc/rc` (enroot
//!   creates both for every Docker image); without `/etc/rc` there is no
//!   entrypoint wrapper to short-circuit.

use thiserror::Error;

use crate::core::args::is_identifier;
use crate::core::mount::MountEntry;
use crate::core::text::printable;

/// Name of the per-start file holding the rc.local override, under
/// `${ENROOT_RUNTIME_PATH}`.
pub const RC_LOCAL_OVERRIDE: &str = "pyxis-rc.local";

/// What goes into the script.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfScript {
    /// `--container-mounts` entries (plus the batch-script mount).
    pub mounts: Vec<MountEntry>,
    /// True when the image entrypoint must not run (§5.17).
    pub disable_entrypoint: bool,
    /// `--container-env` names.
    pub env_names: Vec<String>,
    /// `[env]` of the environment file: literal `NAME=VALUE` entries, after the
    /// forwarded names so that the file's value wins.
    pub env_values: Vec<(String, String)>,
}

/// Why the script could not be rendered safely.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfScriptError {
    /// A `--container-env` name that is not a shell identifier.
    #[error("invalid environment variable name for the enroot configuration: {}", printable(.0))]
    InvalidEnvName(String),
    /// Mount flags that would split the fstab line.
    #[error("invalid mount flags for the enroot configuration: {}", printable(.0))]
    InvalidMountFlags(String),
}

/// Quotes `s` as one POSIX shell word: always single-quoted, each `'`
/// written as `'\''`; the empty string becomes `''`.
pub fn sh_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

impl ConfScript {
    /// The bash text of the script; body lines are indented with one TAB.
    pub fn render(&self) -> Result<String, ConfScriptError> {
        let mut out = String::new();

        if !self.mounts.is_empty() {
            out.push_str("mounts() {\n");
            for entry in &self.mounts {
                if !entry.flags_are_safe() {
                    return Err(ConfScriptError::InvalidMountFlags(entry.flags.clone()));
                }
                out.push_str("\tprintf '%s\\n' ");
                out.push_str(&sh_quote(&entry.fstab_line()));
                out.push('\n');
            }
            out.push_str("}\n");
        }

        if self.disable_entrypoint {
            let file = format!("\"${{ENROOT_RUNTIME_PATH}}/{RC_LOCAL_OVERRIDE}\"");
            out.push_str("hooks() {\n");
            out.push_str(
                "\tif [ -e \"${ENROOT_ROOTFS}/etc/rc.local\" ] || \
                 [ -e \"${ENROOT_ROOTFS}/etc/rc\" ]; then\n",
            );
            out.push_str(&format!(
                "\t\tprintf '%s\\n' {} > {file}\n",
                sh_quote("exec \"$@\"")
            ));
            out.push_str(&format!(
                "\t\tprintf '%s %s none x-create=file,bind,ro,nosuid,nodev,private\\n' \
                 {file} /etc/rc.local >> \"${{ENROOT_MOUNTS}}\"\n"
            ));
            out.push_str("\tfi\n");
            out.push_str("}\n");
        }

        if !self.env_names.is_empty() || !self.env_values.is_empty() {
            out.push_str("environ() {\n");
            for name in &self.env_names {
                if !is_identifier(name) {
                    return Err(ConfScriptError::InvalidEnvName(name.clone()));
                }
                // `|| :` keeps the function's status 0 under `set -e`.
                out.push_str(&format!(
                    "\t[ -n \"${{{name}-}}\" ] && printf '%s=%s\\n' {name} \"${{{name}}}\" || :\n"
                ));
            }
            for (name, value) in &self.env_values {
                if !is_identifier(name) || value.contains('\n') {
                    return Err(ConfScriptError::InvalidEnvName(name.clone()));
                }
                out.push_str("\tprintf '%s\\n' ");
                out.push_str(&sh_quote(&format!("{name}={value}")));
                out.push('\n');
            }
            out.push_str("}\n");
        }

        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "pyxis-core-conf-{}-{n}-{nanos}",
                std::process::id()
            ));
            fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Sources the rendered script in `bash -euo pipefail` and calls `func`.
    fn run(script: &str, func: &str, dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
        let file = dir.join("conf");
        // As the creator task writes it: mapped bytes as the bytes they stand for.
        fs::write(&file, crate::core::bytes::encode(script)).unwrap();
        let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
        assert!(check.status.success(), "bash -n failed: {check:?}");
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg("set -euo pipefail; source \"$1\"; \"$2\"")
            .arg("bash")
            .arg(&file)
            .arg(func)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{func} failed: {out:?}");
        out
    }

    fn mount(source: &str, target: &str, flags: &str) -> MountEntry {
        MountEntry {
            source: source.into(),
            target: target.into(),
            flags: flags.into(),
        }
    }

    #[test]
    fn quoting() {
        let cases = [
            ("", "''"),
            ("abc", "'abc'"),
            ("a b", "'a b'"),
            ("it's", "'it'\\''s'"),
            ("'", "''\\'''"),
            ("$(x) `y` \"z\" \\", "'$(x) `y` \"z\" \\'"),
        ];
        for (s, want) in cases {
            assert_eq!(sh_quote(s), want, "{s:?}");
        }
    }

    #[test]
    fn quoting_round_trips_through_bash() {
        let dir = TempDir::new();
        let marker = dir.path().join("pwned");
        let m = marker.display();
        let hostile = [
            String::new(),
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!("'; touch {m}; '"),
            format!("\"; touch {m}; \""),
            "a\nb\tc\\d $HOME ${PATH} 'q' \"dq\" ; & | < > * ? [x] ~ # !".to_owned(),
            "é ☃ \u{1}".to_owned(),
        ];
        for s in &hostile {
            let out = Command::new("bash")
                .arg("-c")
                .arg(format!("printf '%s' {}", sh_quote(s)))
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8(out.stdout).unwrap(), *s);
        }
        assert!(!marker.exists());
    }

    #[test]
    fn empty_config_is_empty() {
        assert_eq!(ConfScript::default().render().unwrap(), "");
    }

    #[test]
    fn layout() {
        let script = ConfScript {
            mounts: vec![mount("/a b", "/c", "x-create=auto,rbind,ro")],
            disable_entrypoint: true,
            env_names: vec!["FOO".into()],
            env_values: vec![],
        }
        .render()
        .unwrap();
        let want = "mounts() {\n\
            \tprintf '%s\\n' '/a\\040b /c x-create=auto,rbind,ro'\n\
            }\n\
            hooks() {\n\
            \tif [ -e \"${ENROOT_ROOTFS}/etc/rc.local\" ] || [ -e \"${ENROOT_ROOTFS}/etc/rc\" ]; then\n\
            \t\tprintf '%s\\n' 'exec \"$@\"' > \"${ENROOT_RUNTIME_PATH}/pyxis-rc.local\"\n\
            \t\tprintf '%s %s none x-create=file,bind,ro,nosuid,nodev,private\\n' \"${ENROOT_RUNTIME_PATH}/pyxis-rc.local\" /etc/rc.local >> \"${ENROOT_MOUNTS}\"\n\
            \tfi\n\
            }\n\
            environ() {\n\
            \t[ -n \"${FOO-}\" ] && printf '%s=%s\\n' FOO \"${FOO}\" || :\n\
            }\n";
        assert_eq!(script, want);
    }

    #[test]
    fn hostile_mounts_are_printed_literally() {
        let dir = TempDir::new();
        let marker = dir.path().join("x");
        let m = marker.display().to_string();
        let sources = [
            format!("/src/$(touch {m})"),
            format!("/src/`touch {m}`"),
            format!("/src/\"; touch {m}; echo \""),
            format!("/src/'; touch {m}; echo '"),
            "/src/a;b&c|d".to_owned(),
            "/src/$HOME/${PATH}/$1/$@".to_owned(),
            "/src/new\nline\ttab back\\slash".to_owned(),
            "/src/it's".to_owned(),
        ];
        let mounts: Vec<MountEntry> = sources
            .iter()
            .map(|s| mount(s, &format!("/dst/{s}"), "x-create=auto,rbind,ro"))
            .collect();
        let script = ConfScript {
            mounts: mounts.clone(),
            ..ConfScript::default()
        }
        .render()
        .unwrap();
        let out = run(&script, "mounts", dir.path(), &[]);
        let expected: String = mounts.iter().map(|e| e.fstab_line() + "\n").collect();
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(printed, expected);
        assert_eq!(printed.lines().count(), mounts.len());
        assert!(!marker.exists(), "command substitution ran");
        // The escaped line for the newline source is what enroot-mount decodes.
        assert_eq!(
            mounts[6].fstab_line(),
            "/src/new\\012line\\011tab\\040back\\134slash \
             /dst//src/new\\012line\\011tab\\040back\\134slash x-create=auto,rbind,ro"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_reach_the_fstab_line_exactly() {
        use crate::core::bytes::decode;
        let dir = TempDir::new();
        // \xff\xfe, a lone \xc3, a space, and the UTF-8 of a reserved code point.
        let source = b"/src/d\xff\xfe/\xc3 x/\xf4\x8f\xba\x80";
        let script = ConfScript {
            mounts: vec![mount(
                &decode(source),
                &decode(b"/mnt\xfe"),
                "x-create=auto,rbind",
            )],
            ..ConfScript::default()
        }
        .render()
        .unwrap();
        for locale in ["C", "C.UTF-8"] {
            let out = run(&script, "mounts", dir.path(), &[("LC_ALL", locale)]);
            assert_eq!(
                out.stdout,
                b"/src/d\xff\xfe/\xc3\\040x/\xf4\x8f\xba\x80 /mnt\xfe x-create=auto,rbind\n",
                "{locale}"
            );
        }
    }

    #[test]
    fn hooks_override_rc_local_without_touching_rootfs() {
        let dir = TempDir::new();
        let rootfs = dir.path().join("rootfs");
        let runtime = dir.path().join("run time"); // survives shell quoting
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::create_dir_all(&runtime).unwrap();
        let original = "# original rc.local\n";
        fs::write(rootfs.join("etc/rc.local"), original).unwrap();
        let mounts_file = dir.path().join("fstab");
        fs::write(&mounts_file, "existing line\n").unwrap();
        let script = ConfScript {
            disable_entrypoint: true,
            ..ConfScript::default()
        }
        .render()
        .unwrap();
        let env = [
            ("ENROOT_ROOTFS", rootfs.to_str().unwrap()),
            ("ENROOT_RUNTIME_PATH", runtime.to_str().unwrap()),
            ("ENROOT_MOUNTS", mounts_file.to_str().unwrap()),
        ];
        run(&script, "hooks", dir.path(), &env);
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/rc.local")).unwrap(),
            original
        );
        assert_eq!(
            fs::read_to_string(runtime.join(RC_LOCAL_OVERRIDE)).unwrap(),
            "exec \"$@\"\n"
        );
        assert_eq!(
            fs::read_to_string(&mounts_file).unwrap(),
            format!(
                "existing line\n{}/{RC_LOCAL_OVERRIDE} /etc/rc.local none \
                 x-create=file,bind,ro,nosuid,nodev,private\n",
                runtime.display()
            )
        );

        // Only /etc/rc present: still overridden.
        fs::remove_file(rootfs.join("etc/rc.local")).unwrap();
        fs::write(rootfs.join("etc/rc"), "exec \"$@\"\n").unwrap();
        fs::write(&mounts_file, "").unwrap();
        run(&script, "hooks", dir.path(), &env);
        assert_eq!(fs::read_to_string(&mounts_file).unwrap().lines().count(), 1);
        assert!(!rootfs.join("etc/rc.local").exists());

        // Neither present: nothing to override, nothing written.
        fs::remove_file(rootfs.join("etc/rc")).unwrap();
        fs::remove_file(runtime.join(RC_LOCAL_OVERRIDE)).unwrap();
        fs::write(&mounts_file, "").unwrap();
        run(&script, "hooks", dir.path(), &env);
        assert_eq!(fs::read_to_string(&mounts_file).unwrap(), "");
        assert!(!runtime.join(RC_LOCAL_OVERRIDE).exists());
    }

    #[test]
    fn environ_forwards_set_values_literally() {
        let dir = TempDir::new();
        let marker = dir.path().join("y");
        let hostile = format!(
            "a$(touch {m})`touch {m}`'\"\\ b\nsecond line",
            m = marker.display()
        );
        let script = ConfScript {
            env_names: vec![
                "HOSTILE".into(),
                "UNSET".into(),
                "EMPTY".into(),
                "_x1".into(),
            ],
            ..ConfScript::default()
        }
        .render()
        .unwrap();
        let out = run(
            &script,
            "environ",
            dir.path(),
            &[("HOSTILE", &hostile), ("EMPTY", ""), ("_x1", "v")],
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("HOSTILE={hostile}\n_x1=v\n")
        );
        assert!(!marker.exists());
        // The last name unset: the function still succeeds under set -e.
        let script = ConfScript {
            env_names: vec!["SET".into(), "UNSET".into()],
            ..ConfScript::default()
        }
        .render()
        .unwrap();
        let out = run(&script, "environ", dir.path(), &[("SET", "1")]);
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "SET=1\n");
        // Environment-file values are printed literally, after the forwarded names.
        let value = format!("$(touch {m}) '`x`' $HOME", m = marker.display());
        let script = ConfScript {
            env_names: vec!["SET".into()],
            env_values: vec![
                ("FILE".into(), value.clone()),
                ("SET".into(), "file".into()),
            ],
            ..ConfScript::default()
        }
        .render()
        .unwrap();
        let out = run(&script, "environ", dir.path(), &[("SET", "1")]);
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("SET=1\nFILE={value}\nSET=file\n")
        );
        assert!(!marker.exists());
    }

    #[test]
    fn unsafe_input_is_refused() {
        let bad_names = ["", "1A", "A-B", "A}", "$(id)", "A B", "A\nB"];
        for name in bad_names {
            let err = ConfScript {
                env_names: vec!["OK".into(), name.into()],
                ..ConfScript::default()
            }
            .render()
            .unwrap_err();
            assert_eq!(err, ConfScriptError::InvalidEnvName(name.into()));
        }
        assert_eq!(
            ConfScriptError::InvalidEnvName("A\nB".into()).to_string(),
            "invalid environment variable name for the enroot configuration: A\\nB"
        );
        for flags in ["", "ro rw", "ro\n/x /y rbind", "ro\t"] {
            let err = ConfScript {
                mounts: vec![mount("/a", "/b", flags)],
                ..ConfScript::default()
            }
            .render()
            .unwrap_err();
            assert_eq!(err, ConfScriptError::InvalidMountFlags(flags.into()));
        }
    }
}
