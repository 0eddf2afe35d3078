//! Environment composition: what enroot and the importer see, and how the
//! container's environment is merged into each task's.
//!
//! Decides the complete, explicit environment of every enroot/importer
//! process (behaviour spec §5.20 step 4, §5.18) — the spawner uses it with
//! `env_clear()` — and which variables of the container environment each
//! task receives (§5.13 step 3, §5.5 step 6). Used by slurmstepd in
//! `user_init`, `task_init` and `task_exit` (`src/sys` spawns, `src/hooks`
//! applies the task actions through `spank_setenv`).
//!
//! Fixes over pyxis 0.24.0:
//! * W10: `ENROOT_UNSHARE_PID` is removed as well, because with it enroot
//!   forks a PID-1 child and the namespaces pyxis opens belong to the parent.
//! * W12: a container variable is not written into a task whose own value
//!   differs from the job-environment snapshot (a per-task variable such as
//!   `PMI_RANK`, `SLURM_PROCID` or `CUDA_VISIBLE_DEVICES`); pyxis gave every
//!   task the value of the task that started the container.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::core::args::Args;

/// An environment as `(name, value)` pairs, byte-exact: Slurm passes user-chosen bytes
/// (a working directory, a comment) that need not be UTF-8, and pyxis passed them on.
pub type EnvPairs = Vec<(OsString, OsString)>;

/// Job-environment entries never passed to enroot (§5.20): the user's search
/// paths, per-task ranks (the helper is shared by all tasks), enroot
/// settings that belong to the administrator, and `ENROOT_UNSHARE_PID` (W10).
pub const DENY_PREFIXES: &[&str] = &[
    "PATH=",
    "LD_LIBRARY_PATH=",
    "LD_PRELOAD=",
    "SLURM_PROCID=",
    "SLURM_LOCALID=",
    "SLURM_TASK_PID=",
    "PMIX_RANK=",
    "PMI_FD=",
    "ENROOT_LIBRARY_PATH=",
    "ENROOT_SYSCONF_PATH=",
    "ENROOT_RUNTIME_PATH=",
    "ENROOT_CACHE_PATH=",
    "ENROOT_DATA_PATH=",
    "ENROOT_TEMP_PATH=",
    "ENROOT_ZSTD_OPTIONS=",
    "ENROOT_TRANSFER_RETRIES=",
    "ENROOT_CONNECT_TIMEOUT=",
    "ENROOT_MAX_CONNECTIONS=",
    "ENROOT_ALLOW_HTTP=",
    "ENROOT_UNSHARE_PID=",
];

/// enroot is a bash script: nothing from the job (or the epilog's environment) may run
/// code in it or change how bash reads it (issue 11 item 3).
pub const SHELL_STARTUP_PREFIXES: &[&str] = &[
    "BASH_ENV=",
    "ENV=",
    "BASH_FUNC_",
    "SHELLOPTS=",
    "BASHOPTS=",
    "PS4=",
    "CDPATH=",
    "GLOBIGNORE=",
    "POSIXLY_CORRECT=",
];

/// True for a `NAME=VALUE` entry that bash would act on when enroot starts.
pub fn is_shell_startup(entry: &OsStr) -> bool {
    let bytes = entry.as_bytes();
    SHELL_STARTUP_PREFIXES
        .iter()
        .any(|p| bytes.starts_with(p.as_bytes()))
}

/// True for a job-environment entry that must not reach enroot.
fn denied_for_enroot(entry: &OsStr) -> bool {
    let bytes = entry.as_bytes();
    DENY_PREFIXES
        .iter()
        .any(|p| bytes.starts_with(p.as_bytes()))
        || is_shell_startup(entry)
        || bytes.contains(&0)
}

/// `PATH` for enroot when slurmstepd has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Locale variables removed from every task unless listed in `--container-env`
/// (§5.13 step 1).
pub const LOCALE_VARS: [&str; 3] = ["LANG", "LANGUAGE", "LC_ALL"];

/// Everything [`enroot_env`] needs.
#[derive(Clone, Copy, Debug)]
pub struct EnrootEnvInput<'a> {
    /// The job (or task) environment, `KEY=VALUE` entries as Slurm gives them.
    pub job_env: &'a [OsString],
    /// slurmstepd's own `PATH`, used to find `enroot`, as bytes (not UTF-8 is fine).
    pub host_path: Option<&'a OsStr>,
    /// Job user id.
    pub uid: u32,
    /// Job group id.
    pub gid: u32,
    /// The step's options.
    pub args: &'a Args,
    /// `runtime_path` from the plugin configuration.
    pub runtime_path: &'a Path,
    /// The pyxis version reported to enroot and importers.
    pub version: &'a str,
}

/// Inserts or replaces `name`, keeping the position of the first insertion.
fn upsert(env: &mut EnvPairs, name: &OsStr, value: impl Into<OsString>) {
    let value = value.into();
    match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name.to_owned(), value)),
    }
}

/// `y` / `n` as enroot expects for its boolean variables.
fn yes_no(b: bool) -> &'static str {
    if b {
        "y"
    } else {
        "n"
    }
}

/// Splits one `NAME=VALUE` entry; `None` without `=` or with an empty name. The one
/// splitter for `S_JOB_ENV`, `/proc/<pid>/environ` and the epilog's environment.
pub fn split_entry(entry: &OsStr) -> Option<(OsString, OsString)> {
    let bytes = entry.as_bytes();
    let eq = bytes.iter().position(|b| *b == b'=')?;
    let (name, value) = (bytes.get(..eq)?, bytes.get(eq + 1..)?);
    if name.is_empty() {
        return None;
    }
    Some((
        OsStr::from_bytes(name).to_owned(),
        OsStr::from_bytes(value).to_owned(),
    ))
}

/// [`split_entry`] over a whole environment.
pub fn split_entries<S: AsRef<OsStr>>(entries: &[S]) -> EnvPairs {
    entries
        .iter()
        .filter_map(|e| split_entry(e.as_ref()))
        .collect()
}

/// The complete environment of an enroot or importer process, in a
/// deterministic order with unique names; later settings replace earlier
/// ones of the same name (§5.20 step 4).
pub fn enroot_env(input: &EnrootEnvInput<'_>) -> EnvPairs {
    let mut env = Vec::with_capacity(input.job_env.len() + 10);
    upsert(
        &mut env,
        OsStr::new("PATH"),
        input.host_path.unwrap_or(OsStr::new(DEFAULT_PATH)),
    );
    for entry in input.job_env {
        if denied_for_enroot(entry) {
            continue;
        }
        if let Some((name, value)) = split_entry(entry) {
            upsert(&mut env, &name, value);
        }
    }
    upsert(&mut env, OsStr::new("SLURM_JOB_UID"), input.uid.to_string());
    upsert(&mut env, OsStr::new("SLURM_JOB_GID"), input.gid.to_string());
    let args = input.args;
    let tristates = [
        ("ENROOT_MOUNT_HOME", args.mount_home),
        ("ENROOT_REMAP_ROOT", args.remap_root),
        ("ENROOT_ROOTFS_WRITABLE", args.writable),
    ];
    for (name, value) in tristates {
        if let Some(b) = value {
            upsert(&mut env, OsStr::new(name), yes_no(b));
        }
    }
    let unshare = [
        ("ENROOT_UNSHARE_NET", args.unshare.net),
        ("ENROOT_UNSHARE_IPC", args.unshare.ipc),
        ("ENROOT_UNSHARE_UTS", args.unshare.uts),
    ];
    for (name, requested) in unshare {
        if requested {
            upsert(&mut env, OsStr::new(name), yes_no(true));
        }
    }
    upsert(
        &mut env,
        OsStr::new("PYXIS_RUNTIME_PATH"),
        input.runtime_path.as_os_str(),
    );
    upsert(&mut env, OsStr::new("PYXIS_VERSION"), input.version);
    env
}

/// One change to a task's environment (applied with `spank_setenv`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvAction {
    /// Set, overwriting the task's value.
    Set {
        /// Variable name.
        name: OsString,
        /// New value.
        value: OsString,
    },
    /// Set only if the task has no value (`--container-env` names).
    SetIfAbsent {
        /// Variable name.
        name: OsString,
        /// Value from the container.
        value: OsString,
    },
}

/// First value of `name` in an environment list.
fn lookup(env: &[(OsString, OsString)], name: impl AsRef<OsStr>) -> Option<&OsStr> {
    let name = name.as_ref();
    env.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_os_str())
}

/// How the container environment (`/proc/<helper>/environ`) is merged into
/// one task (§5.13 step 3, with the W12 fix):
/// * names listed in `--container-env` → [`EnvAction::SetIfAbsent`] (the
///   host value, if any, is kept);
/// * a name whose value in this task differs from `job_env_snapshot` (or
///   that the snapshot lacks) is per-task → no action, the task keeps its own;
/// * everything else → [`EnvAction::Set`] (the container's value wins, e.g.
///   `PATH`, `LD_LIBRARY_PATH`, `CUDA_VERSION`).
///
/// `job_env_snapshot` is the environment the helper container was started
/// from (the creator task's job environment), `task_env` the environment of
/// the task being set up, after the locale variables were removed.
pub fn task_env_overrides(
    container_env: &[(OsString, OsString)],
    task_env: &[(OsString, OsString)],
    job_env_snapshot: &[(OsString, OsString)],
    env_names: &[String],
) -> Vec<EnvAction> {
    let mut actions = Vec::with_capacity(container_env.len());
    for (name, value) in container_env {
        if name.is_empty() {
            continue;
        }
        if env_names.iter().any(|n| n.as_str() == name) {
            actions.push(EnvAction::SetIfAbsent {
                name: name.clone(),
                value: value.clone(),
            });
            continue;
        }
        if let Some(own) = lookup(task_env, name) {
            if lookup(job_env_snapshot, name) != Some(own) {
                continue;
            }
        }
        actions.push(EnvAction::Set {
            name: name.clone(),
            value: value.clone(),
        });
    }
    actions
}

/// PyTorch rank variables (§5.5 step 6): when the task environment has
/// `PYTORCH_VERSION`, `RANK` = `SLURM_PROCID` and `LOCAL_RANK` =
/// `SLURM_LOCALID`, each only if the source variable exists.
pub fn pytorch_remap(task_env: &[(OsString, OsString)]) -> EnvPairs {
    if lookup(task_env, "PYTORCH_VERSION").is_none() {
        return Vec::new();
    }
    [("RANK", "SLURM_PROCID"), ("LOCAL_RANK", "SLURM_LOCALID")]
        .iter()
        .filter_map(|(dst, src)| lookup(task_env, src).map(|v| (OsString::from(dst), v.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::args::OptionId;
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;

    fn pairs(p: &[(&str, &str)]) -> EnvPairs {
        p.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    fn env_for(job_env: &[&str], host_path: Option<&OsStr>, args: &Args) -> EnvPairs {
        let job_env: Vec<OsString> = job_env.iter().map(OsString::from).collect();
        let runtime = PathBuf::from("/run/pyxis");
        enroot_env(&EnrootEnvInput {
            job_env: &job_env,
            host_path,
            uid: 1000,
            gid: 100,
            args,
            runtime_path: &runtime,
            version: "0.24.0",
        })
    }

    #[test]
    fn deny_list_and_fixed_variables() {
        let mut job: Vec<String> = DENY_PREFIXES.iter().map(|p| format!("{p}bad")).collect();
        job.extend(
            [
                "HOME=/home/u",
                "ENROOT_SQUASH_OPTIONS=-comp zstd",
                "NOEQUALS",
                "=novalue",
                "EMPTY=",
                "A=b=c",
                "PATHX=ok",
                "SLURM_JOB_UID=0",
                "PYXIS_VERSION=evil",
                "ENROOT_MOUNT_HOME=y",
            ]
            .map(String::from),
        );
        let refs: Vec<&str> = job.iter().map(String::as_str).collect();
        let env = env_for(&refs, Some(OsStr::new("/sbin:/bin")), &Args::default());
        assert_eq!(
            env,
            pairs(&[
                ("PATH", "/sbin:/bin"),
                ("HOME", "/home/u"),
                ("ENROOT_SQUASH_OPTIONS", "-comp zstd"),
                ("EMPTY", ""),
                ("A", "b=c"),
                ("PATHX", "ok"),
                ("SLURM_JOB_UID", "1000"),
                ("PYXIS_VERSION", "0.24.0"),
                ("ENROOT_MOUNT_HOME", "y"),
                ("SLURM_JOB_GID", "100"),
                ("PYXIS_RUNTIME_PATH", "/run/pyxis"),
            ])
        );
    }

    #[test]
    fn default_path_and_option_variables() {
        let mut args = Args::default();
        args.apply(OptionId::NoMountHome, None).unwrap();
        args.apply(OptionId::RemapRoot, None).unwrap();
        args.apply(OptionId::Readonly, None).unwrap();
        args.apply(OptionId::Unshare, Some("net,uts")).unwrap();
        let env = env_for(
            &["ENROOT_MOUNT_HOME=y", "ENROOT_UNSHARE_IPC=y"],
            None,
            &args,
        );
        assert_eq!(
            env,
            pairs(&[
                ("PATH", DEFAULT_PATH),
                ("ENROOT_MOUNT_HOME", "n"),
                ("ENROOT_UNSHARE_IPC", "y"),
                ("SLURM_JOB_UID", "1000"),
                ("SLURM_JOB_GID", "100"),
                ("ENROOT_REMAP_ROOT", "y"),
                ("ENROOT_ROOTFS_WRITABLE", "n"),
                ("ENROOT_UNSHARE_NET", "y"),
                ("ENROOT_UNSHARE_UTS", "y"),
                ("PYXIS_RUNTIME_PATH", "/run/pyxis"),
                ("PYXIS_VERSION", "0.24.0"),
            ])
        );
        let mut names: Vec<&OsString> = env.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), env.len());
    }

    #[test]
    fn duplicate_job_entries_last_wins() {
        let env = env_for(
            &["X=1", "Y=2", "X=3"],
            Some(OsStr::new("/bin")),
            &Args::default(),
        );
        assert_eq!(&env[1..3], &pairs(&[("X", "3"), ("Y", "2")])[..]);
    }

    #[test]
    fn task_overrides() {
        let container = pairs(&[
            ("PATH", "/usr/local/nvidia/bin:/usr/bin"),
            ("CUDA_VERSION", "12.4"),
            ("PMI_RANK", "0"),
            ("CUDA_VISIBLE_DEVICES", "0"),
            ("FOO", "container"),
            ("KEEP", "container"),
            ("ONLY_IN_CONTAINER", "c"),
        ]);
        let snapshot = pairs(&[
            ("PATH", "/usr/bin:/bin"),
            ("PMI_RANK", "0"),
            ("CUDA_VISIBLE_DEVICES", "0"),
            ("FOO", "host"),
            ("KEEP", "host"),
        ]);
        // Task 1 (another task than the creator).
        let task = pairs(&[
            ("PATH", "/usr/bin:/bin"),
            ("PMI_RANK", "1"),
            ("CUDA_VISIBLE_DEVICES", "1"),
            ("FOO", "host"),
            ("KEEP", "host"),
            ("PER_TASK_NEW", "x"),
        ]);
        let names = vec!["KEEP".to_owned()];
        let set = |n: &str, v: &str| EnvAction::Set {
            name: n.into(),
            value: v.into(),
        };
        assert_eq!(
            task_env_overrides(&container, &task, &snapshot, &names),
            vec![
                set("PATH", "/usr/local/nvidia/bin:/usr/bin"),
                set("CUDA_VERSION", "12.4"),
                set("FOO", "container"),
                EnvAction::SetIfAbsent {
                    name: "KEEP".into(),
                    value: "container".into()
                },
                set("ONLY_IN_CONTAINER", "c"),
            ]
        );
        // The creator task: its values equal the snapshot, so everything is set.
        let actions = task_env_overrides(&container, &snapshot, &snapshot, &names);
        assert_eq!(actions.len(), container.len());
        // A task variable absent from the snapshot is per-task.
        let container = pairs(&[("PER_TASK_NEW", "c")]);
        assert!(task_env_overrides(&container, &task, &snapshot, &[]).is_empty());
    }

    #[test]
    fn pytorch() {
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Pairs, Pairs)] = &[
            (&[("SLURM_PROCID", "3"), ("SLURM_LOCALID", "1")], &[]),
            (
                &[
                    ("PYTORCH_VERSION", "2.3"),
                    ("SLURM_PROCID", "3"),
                    ("SLURM_LOCALID", "1"),
                ],
                &[("RANK", "3"), ("LOCAL_RANK", "1")],
            ),
            (
                &[("PYTORCH_VERSION", ""), ("SLURM_LOCALID", "1")],
                &[("LOCAL_RANK", "1")],
            ),
            (&[("PYTORCH_VERSION", "2.3")], &[]),
        ];
        for (env, want) in cases {
            assert_eq!(pytorch_remap(&pairs(env)), pairs(want), "{env:?}");
        }
    }

    #[test]
    fn shell_start_up_variables_never_reach_enroot() {
        let env = env_for(
            &[
                "BASH_ENV=/tmp/evil",
                "ENV=/tmp/evil",
                "BASH_FUNC_mkdir%%=() { :; }",
                "SHELLOPTS=xtrace",
                "PS4=$(evil)",
                "ENVIRONMENT=kept",
            ],
            None,
            &Args::default(),
        );
        let names: Vec<_> = env
            .iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"ENVIRONMENT".to_owned()), "{names:?}");
        for bad in ["BASH_ENV", "ENV", "BASH_FUNC_mkdir%%", "SHELLOPTS", "PS4"] {
            assert!(!names.contains(&bad.to_owned()), "{bad} passed");
        }
    }

    #[test]
    fn bytes_pass_through() {
        let job = vec![
            OsString::from_vec(b"PWD=/home/u/\xff\xfe".to_vec()),
            OsString::from_vec(b"\xff=v".to_vec()),
        ];
        let runtime = PathBuf::from("/run/pyxis");
        let env = enroot_env(&EnrootEnvInput {
            job_env: &job,
            host_path: None,
            uid: 1,
            gid: 1,
            args: &Args::default(),
            runtime_path: &runtime,
            version: "0.24.0",
        });
        assert_eq!(
            env[1],
            (
                "PWD".into(),
                OsString::from_vec(b"/home/u/\xff\xfe".to_vec())
            )
        );
        assert_eq!(env[2].0, OsString::from_vec(b"\xff".to_vec()));
    }

    #[test]
    fn a_host_path_that_is_not_utf8_reaches_enroot_unchanged() {
        let path = OsString::from_vec(b"/opt/\xe9t\xe9/bin:/usr/bin".to_vec());
        let env = env_for(&[], Some(&path), &Args::default());
        assert_eq!(env[0], ("PATH".into(), path));
    }

    #[test]
    fn entries() {
        assert_eq!(
            split_entries(&["A=1", "B", "=x", "C=", "D=e=f"]),
            pairs(&[("A", "1"), ("C", ""), ("D", "e=f")])
        );
        assert_eq!(LOCALE_VARS, ["LANG", "LANGUAGE", "LC_ALL"]);
    }
}
