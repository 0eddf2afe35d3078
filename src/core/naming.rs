//! Names of enroot containers and temporary files (behaviour spec §5.8, §5.2).
//!
//! Decides the enroot container name of a step for both container scopes,
//! the file name of the temporary squashfs under `<runtime_path>/<uid>/`, and
//! which `enroot list` lines the job epilog removes. Used by slurmstepd
//! (`user_init`, `task_exit`) and the slurmd job epilog.

use std::fmt;

use crate::core::config::Scope;

/// A Slurm job id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobId(pub u32);

/// A Slurm step id (the batch step is `0xfffffffb`, printed as 4294967291).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StepId(pub u32);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The enroot container name (§5.8):
///
/// | case | global | job |
/// |---|---|---|
/// | named | `pyxis_NAME` | `pyxis_<job>_NAME` |
/// | unnamed | `pyxis_<job>.<step>` | `pyxis_<job>_<job>.<step>` |
///
/// So `--container-name=<job>.<step>` reaches another step's unnamed
/// container in both scopes, which users and tests rely on.
pub fn container_name(scope: Scope, job: JobId, name: Option<&str>, step: StepId) -> String {
    let base = match name {
        Some(name) => name.to_owned(),
        None => format!("{job}.{step}"),
    };
    match scope {
        Scope::Global => format!("pyxis_{base}"),
        Scope::Job => format!("pyxis_{job}_{base}"),
    }
}

/// The temporary squashfs file name `<job>.<step>.squashfs`.
pub fn temp_squashfs_name(job: JobId, step: StepId) -> String {
    format!("{job}.{step}.squashfs")
}

/// The prefix of the enroot `--conf` scripts of a step (`<job>.<step>.enroot-conf.<pid>`).
pub fn conf_script_prefix(job: JobId, step: StepId) -> String {
    format!("{job}.{step}.enroot-conf.")
}

/// True for a file of the user's runtime directory that a step of `job` (or, with
/// `step`, only that step) writes and removes: its temporary squashfs or a `--conf`
/// script. What a killed step left behind is removed by name, so the match is exact.
pub fn is_step_file(name: &str, job: JobId, step: Option<StepId>) -> bool {
    let Some(rest) = name.strip_prefix(&format!("{job}.")) else {
        return false;
    };
    let Some((digits, tail)) = rest.split_once('.') else {
        return false;
    };
    let step_ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && step.map_or(true, |s| digits.parse::<u32>().ok() == Some(s.0));
    let tail_ok = tail == "squashfs"
        || tail
            .strip_prefix("enroot-conf.")
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    step_ok && tail_ok
}

/// True when an `enroot list` line is a job-scope container of `job`:
/// exactly `pyxis_<decimal job>_<rest>` with a non-empty `rest` without
/// whitespace (what pyxis's `sscanf("pyxis_%u_%*s%n")` plus length check
/// accepts for well-formed names). A `/` or control character in `rest` is refused: no
/// name pyxis gives a container has one (found by tests/fuzz, target `list`).
pub fn epilog_matches(line: &str, job: JobId) -> bool {
    let Some(rest) = line.strip_prefix("pyxis_") else {
        return false;
    };
    let Some((digits, tail)) = rest.split_once('_') else {
        return false;
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u32>().ok() == Some(job.0)
        && !tail.is_empty()
        // no name pyxis makes has a blank, a control character or a `/`, and
        // `enroot remove a/b` would reach below the data directory (found by the `list`
        // fuzz target)
        && !tail
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epilog_refuses_slashes_and_control_characters() {
        assert!(epilog_matches("pyxis_7919_x", JobId(7919)));
        assert!(!epilog_matches("pyxis_7919_x/h", JobId(7919)));
        assert!(!epilog_matches("pyxis_7919_x/../../y", JobId(7919)));
        assert!(!epilog_matches("pyxis_7919_x\u{7f}", JobId(7919)));
        assert!(!epilog_matches("pyxis_7919_x\u{14}", JobId(7919)));
    }

    #[test]
    fn step_files() {
        let (j, s) = (JobId(12), StepId(3));
        assert_eq!(conf_script_prefix(j, s), "12.3.enroot-conf.");
        for name in ["12.3.squashfs", "12.3.enroot-conf.77"] {
            assert!(is_step_file(name, j, Some(s)), "{name}");
            assert!(is_step_file(name, j, None), "{name}");
            assert!(!is_step_file(name, j, Some(StepId(4))), "{name}");
            assert!(!is_step_file(name, JobId(1), None), "{name}");
        }
        for name in [
            "12.3.squashfs.x",
            "12.3.enroot-conf.",
            "12.3.enroot-conf.7x",
            "12..squashfs",
            "123.3.squashfs",
            "12.3",
            "pyxis_x.lock",
        ] {
            assert!(!is_step_file(name, j, None), "{name}");
        }
    }

    #[test]
    fn names() {
        let j = JobId(42);
        let s = StepId(3);
        let batch = StepId(0xffff_fffb);
        let cases = [
            (Scope::Global, Some("foo"), s, "pyxis_foo"),
            (Scope::Job, Some("foo"), s, "pyxis_42_foo"),
            (Scope::Global, None, s, "pyxis_42.3"),
            (Scope::Job, None, s, "pyxis_42_42.3"),
            (Scope::Global, None, batch, "pyxis_42.4294967291"),
            (Scope::Global, Some("42.3"), s, "pyxis_42.3"),
            (Scope::Job, Some("42.3"), s, "pyxis_42_42.3"),
        ];
        for (scope, name, step, want) in cases {
            assert_eq!(container_name(scope, j, name, step), want);
        }
        assert_eq!(temp_squashfs_name(j, batch), "42.4294967291.squashfs");
        assert_eq!(temp_squashfs_name(j, s), "42.3.squashfs");
    }

    #[test]
    fn epilog_matching() {
        let j = JobId(42);
        let yes = [
            "pyxis_42_foo",
            "pyxis_42_42.3",
            "pyxis_42_a_b",
            "pyxis_042_x",
        ];
        let no = [
            "pyxis_42",
            "pyxis_42_",
            "pyxis_43_foo",
            "pyxis_420_foo",
            "pyxis_4_2_foo",
            "pyxis_foo",
            "pyxis_42.3",
            "pyxis__42_foo",
            "xpyxis_42_foo",
            "pyxis_42_foo bar",
            "pyxis_42_foo\t",
            "pyxis_42_a/b",
            "pyxis_42_../x",
            "pyxis_+42_foo",
            "pyxis_ 42_foo",
            "pyxis_99999999999_foo",
            "",
        ];
        for l in yes {
            assert!(epilog_matches(l, j), "{l}");
        }
        for l in no {
            assert!(!epilog_matches(l, j), "{l}");
        }
    }
}
