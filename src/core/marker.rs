//! Job markers: what a containerised step may leave on a node, recorded by root where no
//! user can write (`<runtime_path>/jobs/<job>.<step>`), so the job epilog can clean up
//! after a step that did not (its slurmstepd was killed) and skips jobs that never used
//! a container (W9).
//!
//! Written by slurmstepd (`init_post_opt`, root) for every containerised step, removed by
//! its `task_exit` when the step left nothing, read by the job epilog (root). A user can
//! neither create nor change a marker, so the epilog acts only on what root wrote.

use crate::core::config::Scope;
use crate::core::naming::{JobId, StepId};

/// The root-only directory of the markers, below `runtime_path`.
pub const JOBS_DIR: &str = "jobs";

/// The largest marker the epilog reads.
pub const MAX_MARKER_LEN: u64 = 4096;

/// What one step of a job may leave on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepMarker {
    /// The job user: the epilog acts only for the job's own user.
    pub uid: u32,
    /// `Job`: the epilog removes every `pyxis_<job>_*` container of the user.
    pub scope: Scope,
    /// The unnamed container of the step, removed by the step itself unless it died.
    pub container: Option<String>,
    /// The named container whose lock file (`<name>.lock` in the user's runtime
    /// directory) the step takes.
    pub lock: Option<String>,
}

/// Why a marker could not be read back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    #[error("malformed job marker line: {0:?}")]
    Line(String),
    #[error("job marker without uid")]
    NoUid,
}

/// `<job>.<step>`: the marker's file name.
pub fn marker_name(job: JobId, step: StepId) -> String {
    format!("{job}.{step}")
}

/// True for the file name of a marker of `job`.
pub fn is_marker_of(name: &str, job: JobId) -> bool {
    name.strip_prefix(&format!("{job}."))
        .is_some_and(|step| !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()))
}

impl StepMarker {
    /// `key=value` lines. A container name never holds a newline: names with control
    /// characters or whitespace are refused when the option is parsed (W8).
    pub fn render(&self) -> String {
        let mut s = format!("uid={}\n", self.uid);
        s.push_str(match self.scope {
            Scope::Job => "scope=job\n",
            Scope::Global => "scope=global\n",
        });
        if let Some(c) = &self.container {
            s.push_str(&format!("container={c}\n"));
        }
        if let Some(l) = &self.lock {
            s.push_str(&format!("lock={l}\n"));
        }
        s
    }

    /// The inverse of [`render`](Self::render); anything else is an error.
    pub fn parse(text: &str) -> Result<StepMarker, MarkerError> {
        let mut uid = None;
        let mut marker = StepMarker {
            uid: 0,
            scope: Scope::Global,
            container: None,
            lock: None,
        };
        for line in text.lines() {
            let bad = || MarkerError::Line(line.to_owned());
            let (key, value) = line.split_once('=').ok_or_else(bad)?;
            let valid_name = !value.is_empty() && !value.chars().any(char::is_control);
            match key {
                "uid" => uid = Some(value.parse::<u32>().map_err(|_| bad())?),
                "scope" if value == "job" => marker.scope = Scope::Job,
                "scope" if value == "global" => marker.scope = Scope::Global,
                "container" if valid_name => marker.container = Some(value.to_owned()),
                "lock" if valid_name => marker.lock = Some(value.to_owned()),
                _ => return Err(bad()),
            }
        }
        marker.uid = uid.ok_or(MarkerError::NoUid)?;
        Ok(marker)
    }
}

/// What the job epilog does for the markers of one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// A job-scope step ran: every `pyxis_<job>_*` container goes.
    pub job_scope: bool,
    /// Unnamed containers of steps that did not remove them.
    pub containers: Vec<String>,
    /// Named-container lock files that may be left behind.
    pub locks: Vec<String>,
}

impl Cleanup {
    /// Folds the markers of one job; markers of another user are ignored (the caller
    /// logs them).
    pub fn of<'m>(markers: impl IntoIterator<Item = &'m StepMarker>, uid: u32) -> Cleanup {
        let mut c = Cleanup::default();
        for m in markers.into_iter().filter(|m| m.uid == uid) {
            c.job_scope |= m.scope == Scope::Job;
            c.containers.extend(m.container.iter().cloned());
            c.locks.extend(m.lock.iter().cloned());
        }
        c.containers.sort();
        c.containers.dedup();
        c.locks.sort();
        c.locks.dedup();
        c
    }

    /// True when enroot has to be asked at all.
    pub fn needs_enroot(&self) -> bool {
        self.job_scope || !self.containers.is_empty()
    }

    /// The containers of `enroot list` output to remove.
    pub fn to_remove<'l>(&self, listing: &'l str, job: JobId) -> Vec<&'l str> {
        listing
            .lines()
            .filter(|l| {
                (self.job_scope && crate::core::naming::epilog_matches(l, job))
                    || self.containers.iter().any(|c| c == l)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = StepMarker {
            uid: 1000,
            scope: Scope::Job,
            container: Some("pyxis_12_12.0".into()),
            lock: Some("pyxis_12_x".into()),
        };
        assert_eq!(
            m.render(),
            "uid=1000\nscope=job\ncontainer=pyxis_12_12.0\nlock=pyxis_12_x\n"
        );
        assert_eq!(StepMarker::parse(&m.render()), Ok(m));
        let bare = StepMarker {
            uid: 7,
            scope: Scope::Global,
            container: None,
            lock: None,
        };
        assert_eq!(StepMarker::parse(&bare.render()), Ok(bare));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "scope=job\n",
            "uid=x\n",
            "uid=1\nscope=Job\n",
            "uid=1\nnope=1\n",
            "uid=1\ncontainer=\n",
            "uid=1\njunk\n",
            "uid=-1\n",
        ] {
            assert!(StepMarker::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn cleanup_of_a_job() {
        let m = |uid, scope, container: Option<&str>, lock: Option<&str>| StepMarker {
            uid,
            scope,
            container: container.map(str::to_owned),
            lock: lock.map(str::to_owned),
        };
        let markers = [
            m(5, Scope::Global, Some("pyxis_12.0"), None),
            m(5, Scope::Global, None, Some("pyxis_foo")),
            m(5, Scope::Global, Some("pyxis_12.0"), None),
            m(6, Scope::Job, Some("pyxis_12.9"), Some("pyxis_bar")),
        ];
        let c = Cleanup::of(&markers, 5);
        assert_eq!(
            c,
            Cleanup {
                job_scope: false,
                containers: vec!["pyxis_12.0".into()],
                locks: vec!["pyxis_foo".into()],
            }
        );
        assert!(c.needs_enroot());
        let listing = "pyxis_12.0\npyxis_12.1\npyxis_12_x\nother\n";
        assert_eq!(c.to_remove(listing, JobId(12)), vec!["pyxis_12.0"]);
        let job = Cleanup::of(&[m(5, Scope::Job, None, None)], 5);
        assert_eq!(job.to_remove(listing, JobId(12)), vec!["pyxis_12_x"]);
        let nothing = Cleanup::of(&[m(5, Scope::Global, None, Some("pyxis_x"))], 5);
        assert!(!nothing.needs_enroot());
        assert_eq!(Cleanup::of(&markers, 7), Cleanup::default());
    }

    #[test]
    fn names() {
        assert_eq!(marker_name(JobId(12), StepId(0)), "12.0");
        assert!(is_marker_of("12.0", JobId(12)));
        assert!(is_marker_of("12.4294967291", JobId(12)));
        assert!(!is_marker_of("123.0", JobId(12)));
        assert!(!is_marker_of("12.", JobId(12)));
        assert!(!is_marker_of("12.0.tmp", JobId(12)));
        assert!(!is_marker_of("1.0", JobId(12)));
    }
}
